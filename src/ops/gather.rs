//! `y[c] = x[perm[c]]`: channel shuffle and any other channel permutation or gather. Kernel:
//! `shaders/eltwise.wgsl` (`gather`; the permutation travels as exactly representable floats).

use super::{boxed_op, check_view, distinct, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use super::{segments, view_cuts};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{eltwise, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Gather {
    pub x: View,
    pub y: View,
    pub perm: Vec<usize>,
}

impl Operator for Gather {
    fn kind(&self) -> &'static str {
        "gather"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        let (x, y, perm) = (self.x, self.y, &self.perm);
        check_view(g, name, x)?;
        check_view(g, name, y)?;
        distinct(g, name, x, y)?;
        if g.hw(x) != g.hw(y) || perm.len() != y.c || perm.iter().any(|&p| p >= x.c) {
            return Err(Error::op(name, format!("permutation of {} entries from {} channels into {}", perm.len(), x.c, y.c)));
        }
        Ok(())
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        vec![reference(&read(self.x), &self.perm, h * w)]
    }
    /// Splits the output where it is cut and where consecutive sources lie in different chunks of
    /// the input; each piece reads the smallest input range holding its sources.
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        let o = self;
        if view_cuts(o.x, cuts).is_empty() && view_cuts(o.y, cuts).is_empty() {
            return Ok(None);
        }
        // chunks of x as absolute channel ranges
        let xt = cuts(o.x.tensor);
        let chunk_of = |c: usize| xt.iter().filter(|&&k| k <= c).count();
        let mut out_cuts = view_cuts(o.y, cuts);
        for j in 1..o.perm.len() {
            if chunk_of(o.x.c0 + o.perm[j]) != chunk_of(o.x.c0 + o.perm[j - 1]) {
                out_cuts.push(j);
            }
        }
        let pieces = segments(o.y.c, out_cuts)
            .into_iter()
            .map(|(a, b)| {
                let src: Vec<usize> = o.perm[a..b].iter().map(|&p| o.x.c0 + p).collect();
                let (lo, hi) = (*src.iter().min().expect("non-empty"), *src.iter().max().expect("non-empty"));
                let x = View { tensor: o.x.tensor, c0: lo, c: hi + 1 - lo };
                Box::new(Gather { x, y: sub(o.y, a, b), perm: src.iter().map(|&p| p - lo).collect() }) as Box<dyn Operator>
            })
            .collect();
        Ok(Some(pieces))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let (gp, prm, groups, entry) = eltwise::prepare_gather(self, h * w, xo, yo);
        let prm = cx.storage(name, &prm)?;
        let u = cx.uniform(&gp);
        let slots = [xs, Slot::whole(&prm), ys, cx.dummy(), Slot::whole(&u)];
        let dispatch = cx.dispatch(Shader::Eltwise, entry, &slots, groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![prm, u] })
    }
    boxed_op!();
}

/// `y[c] = x[perm[c]]` over `[c, hw]`.
pub fn reference(x: &[f32], perm: &[usize], hw: usize) -> Vec<f32> {
    perm.iter().flat_map(|&p| x[p * hw..(p + 1) * hw].iter().copied()).collect()
}

/// Test problems: random permutations and gathers (repeats allowed) over odd sizes, small planes
/// and planes of `eltwise::PLANE_MIN` elements or more; or
/// ESPNetv2's channel shuffle for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, usize)> = if bench {
        vec![(128, 128, 48, 48)]
    } else {
        (0..9).map(|i| if i < 6 { (rng.range(1, 9), rng.range(1, 9), rng.range(1, 9), rng.range(1, 9)) } else { (rng.range(1, 6), rng.range(1, 6), rng.range(16, 40), rng.range(16, 40)) }).collect()
    };
    let mut out = vec![];
    for (cx_, cy, h, w) in shapes {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", cx_, h, w);
        let ty = g.tensor("y", cy + 1, h, w);
        let perm: Vec<usize> = (0..cy).map(|i| if bench { (i * 2) % cx_ + (i * 2) / cx_ } else { rng.range(0, cx_ - 1) }).collect();
        if g.gather("gather", g.all(tx), g.slice(ty, 1, cy), perm).is_err() {
            continue;
        }
        out.push(super::problem(format!("gather {cx_} -> {cy} channels of {h}x{w}"), g, &mut rng, 0.0, 0.0));
    }
    out
}
