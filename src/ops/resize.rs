//! Bilinear resize to the output view's size; `align_corners` as in PyTorch (and TFLite's
//! `align_corners=True, half_pixel_centers=False`). Kernel: `shaders/resize.wgsl` (`bilinear`).

use super::{boxed_op, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::Result;
use crate::graph::{Graph, View};
use crate::kernels::{resize, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Resize {
    pub x: View,
    pub y: View,
    pub align_corners: bool,
}

impl Operator for Resize {
    fn kind(&self) -> &'static str {
        "resize"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        super::check_unary(g, name, self.x, self.y)
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w) as u64 * 6
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" align_corners={}", self.align_corners)
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((ih, iw), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        vec![reference(&read(self.x), self.x.c, ih, iw, oh, ow, self.align_corners)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts)
            .map(|segs| segs.into_iter().map(|(a, b)| Box::new(Resize { x: sub(self.x, a, b), y: sub(self.y, a, b), align_corners: self.align_corners }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (rp, entry, groups, constants) = resize::prepare(self, cx.graph.hw(self.x), cx.graph.hw(self.y), xo, yo);
        let u = cx.uniform(&rp);
        let dispatch = cx.dispatch_specialized(Shader::Resize, entry, &constants, &[xs, ys, Slot::whole(&u), cx.dummy()], groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Bilinear resize `[c, ih, iw]` to `[c, oh, ow]`, PyTorch's arithmetic (float32 source
/// coordinates, as its CPU kernel for float tensors).
pub fn reference(x: &[f32], c: usize, ih: usize, iw: usize, oh: usize, ow: usize, align_corners: bool) -> Vec<f32> {
    let coord = |o: usize, n_in: usize, n_out: usize| -> (usize, usize, f32) {
        let src = if align_corners {
            if n_out > 1 {
                o as f32 * ((n_in - 1) as f32 / (n_out - 1) as f32)
            } else {
                0.0
            }
        } else {
            ((o as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, src - i0 as f32)
    };
    let mut y = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            let (y0, y1, ly) = coord(oy, ih, oh);
            for ox in 0..ow {
                let (x0, x1, lx) = coord(ox, iw, ow);
                let at = |yy: usize, xx: usize| x[(ch * ih + yy) * iw + xx] as f64;
                let (ly, lx) = (ly as f64, lx as f64);
                let v = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
                y[(ch * oh + oy) * ow + ox] = v as f32;
            }
        }
    }
    y
}

/// Test problems: up and down by odd factors, both corner conventions; or ESPNet-sized logits
/// upsampled 8x for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, usize, usize)> = if bench {
        vec![(21, 33, 33, 257, 257)]
    } else {
        // the last four upsample rows of at least 64 outputs (`bilinear_rows`, some of them
        // `bilinear_rows8`, in workgroups of 8 to 64 invocations), two
        // of them by a scale near or at 1 (a source column for each output)
        (0..12)
            .map(|i| match i {
                0..8 => (rng.range(1, 5), rng.range(1, 9), rng.range(1, 9), rng.range(1, 17), rng.range(1, 17)),
                8 | 9 => (rng.range(1, 4), rng.range(1, 9), rng.range(1, 40), rng.range(1, 9), rng.range(64, 200)),
                _ => {
                    let ow = rng.range(64, 200);
                    (rng.range(1, 4), rng.range(1, 9), ow - rng.range(0, 3), rng.range(1, 9), ow)
                }
            })
            // `bilinear_rows8` (kernels::resize::by_8): 8x with a partial last invocation, and a
            // scale just below 4/7 (8 outputs reading exactly 6 columns)
            .chain([(2, 5, 19, 7, 139), (1, 3, 73, 4, 130), (2, 4, 74, 5, 131)])
            .collect()
    };
    let mut out = vec![];
    for (i, (c, ih, iw, oh, ow)) in shapes.into_iter().enumerate() {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, ih, iw);
        let ty = g.tensor("y", c, oh, ow);
        let ac = i % 2 == 0;
        if g.resize("resize", g.all(tx), g.all(ty), ac).is_err() {
            continue;
        }
        out.push(super::problem(format!("resize {c}x{ih}x{iw} -> {oh}x{ow} align_corners={ac}"), g, &mut rng, 1e-5, 0.0));
    }
    out
}
