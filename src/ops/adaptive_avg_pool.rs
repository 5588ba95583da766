//! Adaptive average pooling to the output view's size (PyTorch's windows: output `i` of `m`
//! averages input `[floor(i*n/m), ceil((i+1)*n/m))`). Global average pooling is the 1x1 case.
//! Kernel: `shaders/pool.wgsl` (`adaptive_avg_pool2d`).

use super::{boxed_op, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::Result;
use crate::graph::{Graph, View};
use crate::kernels::{pool, Shader, Slot};

#[derive(Clone, Debug)]
pub struct AdaptiveAvgPool {
    pub x: View,
    pub y: View,
}

impl Operator for AdaptiveAvgPool {
    fn kind(&self) -> &'static str {
        "adaptive_avg_pool2d"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        super::check_unary(g, name, self.x, self.y)
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.x);
        (self.x.c * h * w) as u64
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((ih, iw), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        vec![reference(&read(self.x), self.x.c, ih, iw, oh, ow)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts).map(|segs| segs.into_iter().map(|(a, b)| Box::new(AdaptiveAvgPool { x: sub(self.x, a, b), y: sub(self.y, a, b) }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let ((ih, iw), (oh, ow)) = (cx.graph.hw(self.x), cx.graph.hw(self.y));
        if (oh, ow) == (1, 1) {
            // global pooling: a workgroup per channel, with subgroup operations where the device has them
            let (mp, groups) = pool::prepare_mean(self.x.c, ih * iw, xo, yo);
            let u = cx.uniform(&mp);
            let (shader, entry) = if cx.kernels.subgroups() { (Shader::MeanSubgroup, "plane_mean_subgroup") } else { (Shader::Mean, "plane_mean") };
            let dispatch = cx.dispatch(shader, entry, &[xs, ys, Slot::whole(&u)], groups, name, self.flops(cx.graph), cx.act_bytes(self));
            return Ok(Encoded { dispatch, buffers: vec![u] });
        }
        let (pp, groups) = pool::prepare_adaptive(self, (ih, iw), (oh, ow), xo, yo);
        let u = cx.uniform(&pp);
        let dispatch = cx.dispatch(Shader::Pool, "adaptive_avg_pool2d", &[xs, ys, Slot::whole(&u), cx.dummy()], groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Adaptive average pooling `[c, ih, iw]` to `[c, oh, ow]`.
pub fn reference(x: &[f32], c: usize, ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    let mut y = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            let (y0, y1) = (oy * ih / oh, ((oy + 1) * ih).div_ceil(oh));
            for ox in 0..ow {
                let (x0, x1) = (ox * iw / ow, ((ox + 1) * iw).div_ceil(ow));
                let mut s = 0f64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        s += x[(ch * ih + yy) * iw + xx] as f64;
                    }
                }
                y[(ch * oh + oy) * ow + ox] = (s / ((y1 - y0) * (x1 - x0)) as f64) as f32;
            }
        }
    }
    y
}

/// Test problems: global and adaptive windows over odd sizes; or a global pool of 960 channels
/// (MobileNetV3's head) for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, usize, usize)> = if bench {
        vec![(960, 33, 33, 1, 1)]
    } else {
        (0..10)
            .map(|i| match i {
                0..6 => (rng.range(1, 5), rng.range(1, 13), rng.range(1, 13), if i % 2 == 0 { 1 } else { rng.range(1, 6) }, rng.range(1, 6)),
                // global pooling (a workgroup per channel) over planes smaller and larger than it
                6 => (rng.range(1, 4), rng.range(1, 7), rng.range(1, 9), 1, 1),
                7 => (rng.range(1, 4), rng.range(9, 40), rng.range(9, 40), 1, 1),
                // rows of half a workgroup or more (the grid of rows)
                _ => {
                    let iw = rng.range(40, 90);
                    (rng.range(1, 4), rng.range(1, 13), iw, rng.range(1, 6), rng.range(32, iw))
                }
            })
            .collect()
    };
    let mut out = vec![];
    for (c, ih, iw, oh, ow) in shapes {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, ih, iw);
        let ty = g.tensor("y", c, oh, ow);
        if g.adaptive_avg_pool("pool", g.all(tx), g.all(ty)).is_err() {
            continue;
        }
        let n = (ih * iw) as f32;
        out.push(super::problem(format!("adaptive_avg_pool2d {c}x{ih}x{iw} -> {oh}x{ow}"), g, &mut rng, 1e-6 + 2.0 * n * f32::EPSILON, 0.0));
    }
    out
}
