//! `y = x * s`, with `s` either the same shape as `x` or one value per channel (`1 x 1`
//! spatial): squeeze-excitation and attention scaling. Kernel: `shaders/eltwise.wgsl` (`mul`).

use super::{boxed_op, check_same_shape, check_view, distinct, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{eltwise, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Mul {
    pub x: View,
    pub s: View,
    pub y: View,
}

impl Operator for Mul {
    fn kind(&self) -> &'static str {
        "mul"
    }
    fn inputs(&self) -> Vec<View> {
        vec![self.x, self.s]
    }
    fn outputs(&self) -> Vec<View> {
        vec![self.y]
    }
    fn views_mut(&mut self) -> Vec<&mut View> {
        vec![&mut self.x, &mut self.s, &mut self.y]
    }
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        let (x, s, y) = (self.x, self.s, self.y);
        for v in [x, s, y] {
            check_view(g, name, v)?;
        }
        distinct(g, name, x, y)?;
        distinct(g, name, s, y)?;
        check_same_shape(g, name, x, y)?;
        if s.c != x.c || (g.hw(s) != g.hw(x) && g.hw(s) != (1, 1)) {
            return Err(Error::op(name, format!("multiplier {}x{:?} does not broadcast to {}x{:?}", s.c, g.hw(s), x.c, g.hw(x))));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w) as u64
    }
    fn describe_params(&self, g: &Graph) -> String {
        let (h, w) = g.hw(self.s);
        format!(" by {}x{h}x{w}", self.s.c)
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        vec![reference(&read(self.x), &read(self.s), h * w)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.s, self.y], self.y.c, cuts)
            .map(|segs| segs.into_iter().map(|(a, b)| Box::new(Mul { x: sub(self.x, a, b), s: sub(self.s, a, b), y: sub(self.y, a, b) }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo), (ss, so)) = (cx.resolve(self.x)?, cx.resolve(self.y)?, cx.resolve(self.s)?);
        if super::same_slot(&ss, &xs) || super::same_slot(&ss, &ys) {
            return Err(Error::op(name, "the multiplier shares a binding with the input or output; the mul kernel binds them separately"));
        }
        let (h, w) = cx.graph.hw(self.x);
        let (sh, sw) = cx.graph.hw(self.s);
        let (mp, groups, entry) = eltwise::prepare_mul(self, h * w, sh * sw, xo, yo, so);
        let u = cx.uniform(&mp);
        // `mul` reads no parameters
        let slots = [xs, cx.dummy(), ys, ss, Slot::whole(&u)];
        let dispatch = cx.dispatch(Shader::Eltwise, entry, &slots, groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// `x * s` over `[c, hw]`, `s` either `[c, hw]` or `[c]`.
pub fn reference(x: &[f32], s: &[f32], hw: usize) -> Vec<f32> {
    let per_channel = s.len() * hw == x.len() && hw != 1;
    x.iter().enumerate().map(|(i, &v)| v * if per_channel { s[i / hw] } else { s[i] }).collect()
}

/// Test problems: per-channel and element-wise multipliers over odd sizes, small planes and
/// planes of `eltwise::PLANE_MIN` elements or more.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize)> =
        if bench { vec![(120, 64, 64)] } else { (0..10).map(|i| if i < 6 { (rng.range(1, 7), rng.range(1, 11), rng.range(2, 11)) } else { (rng.range(1, 5), rng.range(16, 40), rng.range(16, 40)) }).collect() };
    let mut out = vec![];
    for (i, (c, h, w)) in shapes.into_iter().enumerate() {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ts = if i % 2 == 0 { g.tensor("s", c, 1, 1) } else { g.tensor("s", c, h, w) };
        let ty = g.tensor("y", c, h, w);
        if g.mul("mul", g.all(tx), g.all(ts), g.all(ty)).is_err() {
            continue;
        }
        out.push(super::problem(format!("mul {c}x{h}x{w} by {:?}", (g.tensors[ts].h, g.tensors[ts].w)), g, &mut rng, 1e-6 + 2.0 * f32::EPSILON, 0.0));
    }
    out
}
