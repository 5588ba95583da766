//! Softmax over channels, per pixel: the class probabilities (for a declared sigmoid head, the
//! sigmoid: the probability of class 1). A graph head that
//! [`crate::session`] appends after the logits when probabilities are asked for. It needs the
//! logits in one binding. Kernel: `shaders/softmax.wgsl`.

use super::{boxed_op, check_unary, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{softmax, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Softmax {
    pub x: View,
    pub y: View,
    /// A single channel that is a sigmoid's input (see [`crate::graph::Graph::sigmoid_head`]):
    /// the output is the sigmoid, the probability of class 1.
    pub sigmoid: bool,
}

impl Operator for Softmax {
    fn kind(&self) -> &'static str {
        "softmax"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_unary(g, name, self.x, self.y)?;
        if g.hw(self.x) != g.hw(self.y) {
            return Err(Error::op(name, "softmax keeps the size"));
        }
        if self.sigmoid && self.x.c != 1 {
            return Err(Error::op(name, "a sigmoid head has one channel"));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.x);
        (self.x.c * h * w * 4) as u64
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        let x = read(self.x);
        if self.sigmoid {
            return vec![sigmoid(&x)];
        }
        vec![reference(&x, self.x.c, h * w)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        if view_cuts(self.x, cuts).is_empty() && view_cuts(self.y, cuts).is_empty() {
            return Ok(None);
        }
        Err(Error::Input("per-class probabilities need the logits in one binding; these logits are split across bindings (use the class map, or a smaller input)".into()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let (mut p, groups) = softmax::prepare(self.x.c, h * w, xo, yo);
        p.sigmoid = self.sigmoid as u32;
        let u = cx.uniform(&p);
        let dispatch = cx.dispatch(Shader::Softmax, "softmax", &[xs, ys, Slot::whole(&u)], groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// The sigmoid, element-wise (float64).
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| (1.0 / (1.0 + (-(v as f64)).exp())) as f32).collect()
}

/// Softmax over channels of `[c, hw]` (float64 sums).
pub fn reference(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut y = vec![0f32; c * hw];
    for p in 0..hw {
        let m = (0..c).map(|k| x[k * hw + p] as f64).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..c).map(|k| (x[k * hw + p] as f64 - m).exp()).sum();
        for k in 0..c {
            y[k * hw + p] = ((x[k * hw + p] as f64 - m).exp() / s) as f32;
        }
    }
    y
}

/// Test problems: random logits over odd sizes; or CamVid-sized ones for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, bool)> =
        if bench { vec![(12, 360, 480, false)] } else { (0..4).map(|_| (rng.range(1, 21), rng.range(1, 9), rng.range(1, 11), false)).chain([(1, 5, 7, true), (1, 3, 3, false)]).collect() };
    let mut out = vec![];
    for (c, h, w, sigmoid) in shapes {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ty = g.tensor("probs", c, h, w);
        if g.push("softmax", Softmax { x: g.all(tx), y: g.all(ty), sigmoid }).is_err() {
            continue;
        }
        out.push(super::problem(format!("softmax {c}x{h}x{w} sigmoid={sigmoid}"), g, &mut rng, 1e-6, 4.0 * c as f32 * f32::EPSILON));
    }
    out
}
