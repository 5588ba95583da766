//! Nearest-neighbour resize to the output view's size: `src = floor(dst * in / out)` in exact
//! integer arithmetic (PyTorch's `nearest`; Keras' UpSampling2D for integer factors). Kernel:
//! `shaders/resize.wgsl` (`nearest`).

use super::{boxed_op, check_unary, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::Result;
use crate::graph::{Graph, View};
use crate::kernels::{grid_1d, resize, Shader, Slot};

#[derive(Clone, Debug)]
pub struct UpsampleNearest {
    pub x: View,
    pub y: View,
}

impl Operator for UpsampleNearest {
    fn kind(&self) -> &'static str {
        "upsample_nearest"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_unary(g, name, self.x, self.y)
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((h, w), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        let x = read(self.x);
        let mut y = Vec::with_capacity(self.x.c * oh * ow);
        for c in 0..self.x.c {
            for i in 0..oh {
                for j in 0..ow {
                    y.push(x[(c * h + i * h / oh) * w + j * w / ow]);
                }
            }
        }
        vec![y]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts).map(|segs| segs.into_iter().map(|(a, b)| Box::new(UpsampleNearest { x: sub(self.x, a, b), y: sub(self.y, a, b) }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let ((h, w), (oh, ow)) = (cx.graph.hw(self.x), cx.graph.hw(self.y));
        let (groups, row) = grid_1d(self.y.c * oh * ow, resize::WG);
        let rp = resize::ResizeParams { c: self.y.c as u32, in_h: h as u32, in_w: w as u32, in_off: xo, out_h: oh as u32, out_w: ow as u32, out_off: yo, row, ..Default::default() };
        let u = cx.uniform(&rp);
        let dispatch = cx.dispatch(Shader::Resize, "nearest", &[xs, ys, Slot::whole(&u), cx.dummy()], groups, name, 0, cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Test problems: x2 (U-Net), odd factors and downscaling.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![];
    for i in 0..if bench { 1 } else { 5 } {
        let (c, h, w) = if bench { (64, 64, 64) } else { (rng.range(1, 5), rng.range(1, 9), rng.range(1, 9)) };
        let (oh, ow) = if bench || i == 0 { (2 * h, 2 * w) } else { (rng.range(1, 20), rng.range(1, 20)) };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ty = g.tensor("y", c, oh, ow);
        if g.push("up", UpsampleNearest { x: g.all(tx), y: g.all(ty) }).is_err() {
            continue;
        }
        out.push(super::problem(format!("upsample_nearest {c}x{h}x{w} -> {oh}x{ow}"), g, &mut rng, 0.0, 0.0));
    }
    out
}
