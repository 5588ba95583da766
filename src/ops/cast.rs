//! Element type conversion between f32 and f16 tensors: the boundary of a mixed-precision graph
//! (`passes::to_half_except`). The values are the input's, rounded by the output's storage.
//! Kernel: `shaders/cast.wgsl` (`to_f16`, `to_f32`).

use super::{boxed_op, check_same_shape, check_unary, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::{cast, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Cast {
    pub x: View,
    pub y: View,
}

impl Operator for Cast {
    fn kind(&self) -> &'static str {
        "cast"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_unary(g, name, self.x, self.y)?;
        check_same_shape(g, name, self.x, self.y)?;
        match (g.desc(self.x).dtype, g.desc(self.y).dtype) {
            (DType::F32, DType::F16) | (DType::F16, DType::F32) => Ok(()),
            (a, b) => Err(Error::op(name, format!("casts between f32 and f16 only, not {a:?} -> {b:?}"))),
        }
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn reference(&self, _g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        vec![read(self.x)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts).map(|segs| segs.into_iter().map(|(a, b)| Box::new(Cast { x: sub(self.x, a, b), y: sub(self.y, a, b) }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let n = self.x.c * h * w;
        let to_half = cx.graph.desc(self.y).dtype == DType::F16;
        // binding 0 is the f32 side, binding 1 the f16 side
        let (entry, a, b, p) = if to_half { ("to_f16", xs, ys, cast::prepare(n, xo, yo)) } else { ("to_f32", ys, xs, cast::prepare(n, yo, xo)) };
        let u = cx.uniform(&p.0);
        let dispatch = cx.kernels.dispatch(Shader::Cast, entry, &[a, b, Slot::whole(&u)], p.1, name, 0, cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Test problems: both directions over random shapes; the tolerance is one f16 rounding.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![];
    for i in 0..if bench { 2 } else { 6 } {
        let (c, h, w) = if bench { (64, 90, 120) } else { (rng.range(1, 7), rng.range(1, 11), rng.range(1, 11)) };
        let (from, to) = if i % 2 == 0 { (DType::F32, DType::F16) } else { (DType::F16, DType::F32) };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor_of("x", from, c, h, w);
        let ty = g.tensor_of("y", to, c, h, w);
        if g.push("cast", Cast { x: g.all(tx), y: g.all(ty) }).is_err() {
            continue;
        }
        out.push(super::problem(format!("cast {c}x{h}x{w} {from:?} -> {to:?}"), g, &mut rng, 6e-8, 1.0 / 2048.0));
    }
    out
}
