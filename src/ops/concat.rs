//! Concatenation along channels: `y = [x0, x1, ...]`. The in-place pass
//! ([`crate::passes::concat_in_place`]) normally removes it by having each producer write its
//! channel range of `y` directly; where it cannot, the concatenation is lowered to one channel
//! copy per input (an [`Affine`] identity map each), so it has no kernel of its own.

use super::{boxed_op, check_view, distinct, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::ops::Affine;

#[derive(Clone, Debug)]
pub struct Concat {
    pub xs: Vec<View>,
    pub y: View,
}

impl Concat {
    /// The channel copies this concatenation amounts to.
    pub fn copies(&self) -> Vec<Affine> {
        let mut c0 = self.y.c0;
        self.xs
            .iter()
            .map(|&x| {
                let y = View { tensor: self.y.tensor, c0, c: x.c };
                c0 += x.c;
                Affine { x, add: None, y, scale: vec![1.0; x.c], shift: vec![0.0; x.c], act: Act::None }
            })
            .collect()
    }
}

impl Operator for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }
    fn inputs(&self) -> Vec<View> {
        self.xs.clone()
    }
    fn outputs(&self) -> Vec<View> {
        vec![self.y]
    }
    fn views_mut(&mut self) -> Vec<&mut View> {
        let mut v: Vec<&mut View> = self.xs.iter_mut().collect();
        v.push(&mut self.y);
        v
    }
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_view(g, name, self.y)?;
        if self.xs.is_empty() {
            return Err(Error::op(name, "concatenation of nothing"));
        }
        let mut c = 0;
        for &x in &self.xs {
            check_view(g, name, x)?;
            distinct(g, name, x, self.y)?;
            if g.hw(x) != g.hw(self.y) {
                return Err(Error::op(name, format!("input of size {:?} concatenated into {:?}", g.hw(x), g.hw(self.y))));
            }
            c += x.c;
        }
        if c != self.y.c {
            return Err(Error::op(name, format!("inputs have {c} channels, the output view {}", self.y.c)));
        }
        Ok(())
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" of {} inputs", self.xs.len())
    }
    fn reference(&self, _g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        vec![self.xs.iter().flat_map(|&x| read(x)).collect()]
    }
    /// Always lowered: one copy per input (each split further at any cuts by the caller).
    fn split(&self, _cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(Some(self.copies().into_iter().map(|a| Box::new(a) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, _cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        Err(Error::op(name, "a concatenation is lowered to copies before encoding"))
    }
    boxed_op!();
}

/// Test problems: two to four inputs of odd channel counts into a range of a larger tensor.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![];
    for _ in 0..if bench { 1 } else { 4 } {
        let (h, w) = if bench { (90, 120) } else { (rng.range(1, 9), rng.range(1, 9)) };
        let mut g = Graph::new(1, 1, 1);
        let cs: Vec<usize> = (0..rng.range(2, 4)).map(|_| if bench { 32 } else { rng.range(1, 5) }).collect();
        let ts: Vec<usize> = cs.iter().enumerate().map(|(i, &c)| g.tensor(&format!("x{i}"), c, h, w)).collect();
        let xs: Vec<View> = ts.iter().map(|&t| g.all(t)).collect();
        let total: usize = cs.iter().sum();
        let ty = g.tensor("y", total + 1, h, w);
        if g.concat("concat", xs, g.slice(ty, 1, total)).is_err() {
            continue;
        }
        out.push(super::problem(format!("concat {cs:?} of {h}x{w}"), g, &mut rng, 0.0, 0.0));
    }
    out
}
