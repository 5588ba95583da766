//! Spatial crop: `y[c, i, j] = x[c, top + i, left + j]` (FCN's alignment crops). A copy kernel for
//! now: consumers cannot yet read a spatial window in place. Kernel: `shaders/pool.wgsl` (`crop`).

use super::{boxed_op, check_unary, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{pool, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Crop {
    pub x: View,
    pub y: View,
    pub top: usize,
    pub left: usize,
}

impl Operator for Crop {
    fn kind(&self) -> &'static str {
        "crop"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_unary(g, name, self.x, self.y)?;
        let ((h, w), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        if self.top + oh > h || self.left + ow > w {
            return Err(Error::op(name, format!("a {oh}x{ow} crop at ({}, {}) does not fit in {h}x{w}", self.top, self.left)));
        }
        Ok(())
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" at ({}, {})", self.top, self.left)
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((h, w), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        let x = read(self.x);
        let mut y = Vec::with_capacity(self.x.c * oh * ow);
        for c in 0..self.x.c {
            for i in 0..oh {
                let row = (c * h + self.top + i) * w + self.left;
                y.extend_from_slice(&x[row..row + ow]);
            }
        }
        vec![y]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts).map(|segs| segs.into_iter().map(|(a, b)| Box::new(Crop { x: sub(self.x, a, b), y: sub(self.y, a, b), ..*self }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (mut pp, groups) = pool::per_element(self.y.c, cx.graph.hw(self.x), cx.graph.hw(self.y), xo, yo);
        (pp.pad_h, pp.pad_w) = (self.top as u32, self.left as u32);
        let u = cx.uniform(&pp);
        let dispatch = cx.dispatch(Shader::Pool, "crop", &[xs, ys, Slot::whole(&u), cx.dummy()], groups, name, 0, cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Test problems: random windows of odd sizes.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![];
    for _ in 0..if bench { 1 } else { 5 } {
        let (c, h, w) = if bench { (21, 564, 564) } else { (rng.range(1, 5), rng.range(1, 13), rng.range(1, 13)) };
        let (oh, ow) = if bench { (500, 500) } else { (rng.range(1, h), rng.range(1, w)) };
        let (top, left) = (rng.range(0, h - oh), rng.range(0, w - ow));
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ty = g.tensor("y", c, oh, ow);
        if g.push("crop", Crop { x: g.all(tx), y: g.all(ty), top, left }).is_err() {
            continue;
        }
        out.push(super::problem(format!("crop {c}x{h}x{w} -> {oh}x{ow} at ({top}, {left})"), g, &mut rng, 0.0, 0.0));
    }
    out
}
