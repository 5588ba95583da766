//! Instance normalisation (ONNX `InstanceNormalization`): per channel,
//! `y = scale[c] * (x - mean) / sqrt(var + eps) + bias[c]` with the mean and (biased) variance over
//! the channel's plane. Kernel: `shaders/eltwise.wgsl` (`instance_norm`, one workgroup per
//! channel: a two-pass mean and variance by workgroup reduction, then the normalised plane).

use super::{boxed_op, check_same_shape, check_unary, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{eltwise, Shader, Slot};

#[derive(Clone, Debug)]
pub struct InstanceNorm {
    pub x: View,
    pub y: View,
    pub scale: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl Operator for InstanceNorm {
    fn kind(&self) -> &'static str {
        "instance_norm"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_unary(g, name, self.x, self.y)?;
        check_same_shape(g, name, self.x, self.y)?;
        if self.scale.len() != self.x.c || self.bias.len() != self.x.c || !self.eps.is_finite() || self.eps < 0.0 {
            return Err(Error::op(name, format!("{} scales, {} biases, eps {} for {} channels", self.scale.len(), self.bias.len(), self.eps, self.x.c)));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.x);
        (self.x.c * h * w) as u64 * 6
    }
    fn parameters(&self) -> usize {
        2 * self.scale.len()
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        let hw = h * w;
        let x = read(self.x);
        let mut y = Vec::with_capacity(x.len());
        for c in 0..self.x.c {
            let p = &x[c * hw..(c + 1) * hw];
            let mean = p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
            let var = p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / hw as f64;
            let g = self.scale[c] as f64 / (var + self.eps as f64).sqrt();
            y.extend(p.iter().map(|&v| ((v as f64 - mean) * g + self.bias[c] as f64) as f32));
        }
        vec![y]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts).map(|segs| {
            segs.into_iter()
                .map(|(a, b)| Box::new(InstanceNorm { x: sub(self.x, a, b), y: sub(self.y, a, b), scale: self.scale[a..b].to_vec(), bias: self.bias[a..b].to_vec(), eps: self.eps }) as Box<dyn Operator>)
                .collect()
        }))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let c = self.x.c;
        let p = eltwise::AffineParams { c: c as u32, hw: (h * w) as u32, x_off: xo, y_off: yo, scale_off: 0, shift_off: c as u32, slope_off: 2 * c as u32, row: 1, ..Default::default() };
        let mut prm = self.scale.clone();
        prm.extend(&self.bias);
        prm.push(self.eps);
        let prm = cx.storage(name, &prm)?;
        let u = cx.uniform(&p);
        let slots = [xs, Slot::whole(&prm), ys, cx.dummy(), Slot::whole(&u)];
        // one workgroup per channel
        let groups = [c as u32, 1, 1];
        let dispatch = cx.dispatch(Shader::Eltwise, "instance_norm", &slots, groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![prm, u] })
    }
    boxed_op!();
}

/// Test problems: odd planes (1x1 included), a plane larger than a workgroup, offsets of the
/// values so a one-pass variance would lose digits.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize)> = if bench { vec![(64, 90, 120)] } else { (0..6).map(|_| (rng.range(1, 5), rng.range(1, 17), rng.range(1, 19))).collect() };
    let mut out = vec![];
    for (c, h, w) in shapes {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ty = g.tensor("y", c + 1, h, w);
        let op = InstanceNorm { x: g.all(tx), y: g.slice(ty, 1, c), scale: rng.vec(c), bias: rng.vec(c), eps: 1e-5 };
        if g.push("instance_norm", op).is_err() {
            continue;
        }
        let mut pr = super::problem(format!("instance_norm {c}x{h}x{w}"), g, &mut rng, 2e-4, 1e-4);
        // values around 10: the mean is far from 0
        if let Some(x) = pr.data.get_mut(&tx) {
            x.iter_mut().for_each(|v| *v += 10.0);
        }
        out.push(pr);
    }
    out
}
