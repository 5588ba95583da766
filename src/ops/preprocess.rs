//! Preprocessing: 8-bit RGBA pixels (one packed `u32` per pixel) to the model's normalised NCHW
//! input — channel order, scale, mean and standard deviation from the model's metadata. A graph
//! head: [`crate::session`] puts it before the network when the session takes pixels. Kernel:
//! `shaders/preprocess.wgsl`.
//!
//! In the CPU reference a `u32` tensor travels as `f32` bit patterns ([`f32::from_bits`]).

use super::{boxed_op, check_view, distinct, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::{preprocess, Shader, Slot};
use crate::preprocess::Normalize;

#[derive(Clone, Debug)]
pub struct Preprocess {
    /// Pixels: a 1-channel `u32` tensor, RGBA8 packed little-endian.
    pub x: View,
    /// Channels `c_begin .. c_begin + y.c` of the model input.
    pub y: View,
    pub c_begin: usize,
    pub normalize: Normalize,
}

impl Operator for Preprocess {
    fn kind(&self) -> &'static str {
        "preprocess"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_view(g, name, self.x)?;
        check_view(g, name, self.y)?;
        distinct(g, name, self.x, self.y)?;
        if g.desc(self.x).dtype != DType::U32 || self.x.c != 1 || g.hw(self.x) != g.hw(self.y) || self.c_begin + self.y.c > 3 {
            return Err(Error::op(name, "preprocessing reads one u32 RGBA plane and writes up to 3 channels of the same size"));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w * 3) as u64
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.y);
        let rgb: Vec<u8> = read(self.x).iter().flat_map(|v| v.to_bits().to_le_bytes()[..3].to_vec()).collect();
        let all = self.normalize.apply(&rgb, h, w);
        vec![all[self.c_begin * h * w..(self.c_begin + self.y.c) * h * w].to_vec()]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        let c = view_cuts(self.y, cuts);
        if c.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            super::segments(self.y.c, c).into_iter().map(|(a, b)| Box::new(Preprocess { x: self.x, y: super::sub(self.y, a, b), c_begin: self.c_begin + a, normalize: self.normalize }) as Box<dyn Operator>).collect(),
        ))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, _), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.y);
        let (p, groups) = preprocess::prepare(&self.normalize, h * w, yo, self.c_begin, self.y.c);
        let u = cx.uniform(&p);
        let dispatch = cx.dispatch(Shader::Preprocess, "preprocess", &[xs, ys, Slot::whole(&u)], groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Adds the pixel head in front of `input` (3 channels): a graph input `rgba` (u32) and the
/// preprocessing node writing `input`. Returns the `rgba` tensor.
pub fn attach(g: &mut Graph, input: usize, normalize: Normalize) -> Result<usize> {
    let d = &g.tensors[input];
    if d.c != 3 {
        return Err(Error::op("preprocess", format!("pixel input needs a 3-channel graph input, this one has {}", d.c)));
    }
    let (h, w) = (d.h, d.w);
    let rgba = g.add_input("rgba", DType::U32, 1, h, w);
    let node = crate::graph::Node { name: "preprocess".into(), op: crate::ops::Op::new(Preprocess { x: g.all(rgba), y: g.all(input), c_begin: 0, normalize }) };
    node.op.check(g, &node.name)?;
    g.nodes.insert(0, node);
    Ok(rgba)
}

/// Test problems: random pixels through ImageNet-style and BGR/255 normalisations.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize)> = if bench { vec![(360, 480)] } else { (0..3).map(|_| (rng.range(1, 9), rng.range(1, 11))).collect() };
    let mut out = vec![];
    for (i, (h, w)) in shapes.into_iter().enumerate() {
        let mut g = Graph::new(1, 1, 1);
        let ty = g.tensor("input", 3, h, w);
        let normalize = Normalize {
            order: if i % 2 == 0 { crate::preprocess::ChannelOrder::Rgb } else { crate::preprocess::ChannelOrder::Bgr },
            pre_scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            post_scale: 1.0,
        };
        let rgba = g.add_input("rgba", DType::U32, 1, h, w);
        if g.push("preprocess", Preprocess { x: g.all(rgba), y: g.all(ty), c_begin: 0, normalize }).is_err() {
            continue;
        }
        let mut p = super::problem(format!("preprocess {h}x{w}"), g, &mut rng, 1e-5, 1e-6);
        let px: Vec<f32> = (0..h * w).map(|_| f32::from_bits((rng.next_u64() as u32) | 0xff00_0000)).collect();
        p.data.insert(rgba, px);
        out.push(p);
    }
    out
}
