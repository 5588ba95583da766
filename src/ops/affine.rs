//! Per-channel affine map with an optional element-wise addend and activation:
//! `y[c] = act(scale[c] * (x[c] + add[c]) + shift[c])`. Inference batch norm, an activation on
//! its own, element-wise add and copy are all this operator (the rewrite passes fold it into the
//! convolution before it where they can). Kernel: `shaders/eltwise.wgsl` (`affine`).

use super::conv2d::slice_act;
use super::{boxed_op, check_same_shape, check_view, distinct, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::kernels::{eltwise, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Affine {
    pub x: View,
    pub add: Option<View>,
    pub y: View,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub act: Act,
}

impl Affine {
    /// Scale 1 and shift 0 on every channel.
    pub fn is_identity_map(&self) -> bool {
        self.scale.iter().all(|&s| s == 1.0) && self.shift.iter().all(|&s| s == 0.0)
    }
}

impl Operator for Affine {
    fn kind(&self) -> &'static str {
        "affine"
    }
    super::addend_views!();
    fn check(&self, g: &Graph, op: &str) -> Result<()> {
        let (x, y) = (self.x, self.y);
        check_view(g, op, x)?;
        check_view(g, op, y)?;
        distinct(g, op, x, y)?;
        check_same_shape(g, op, x, y)?;
        if let Some(a) = self.add {
            // the addend may sit in other channels of the output tensor (a hierarchical sum inside
            // a concatenation); the kernel then needs the fusion pass to move it into a
            // convolution, and encoding says so if it did not
            super::conv2d::check_addend(g, op, a, y)?;
        }
        if self.scale.len() != x.c || self.shift.len() != x.c {
            return Err(Error::op(op, format!("{} scales / {} shifts for {} channels", self.scale.len(), self.shift.len(), x.c)));
        }
        self.act.check(op, x.c)
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w) as u64 * if self.add.is_some() { 3 } else { 2 }
    }
    fn describe_params(&self, _g: &Graph) -> String {
        (if self.add.is_some() { " +add" } else { "" }).to_string()
    }
    fn parameters(&self) -> usize {
        2 * self.scale.len() + self.act.slopes().map_or(0, |s| s.len())
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        let add = self.add.map(read);
        vec![reference(&read(self.x), add.as_deref(), h * w, &self.scale, &self.shift, &self.act)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        let o = self;
        let views: Vec<View> = [Some(o.x), o.add, Some(o.y)].into_iter().flatten().collect();
        Ok(per_channel_segments(&views, o.y.c, cuts).map(|segs| {
            segs.into_iter()
                .map(|(a, b)| {
                    Box::new(Affine { x: sub(o.x, a, b), add: o.add.map(|v| sub(v, a, b)), y: sub(o.y, a, b), scale: o.scale[a..b].to_vec(), shift: o.shift[a..b].to_vec(), act: slice_act(&o.act, a, b) })
                        as Box<dyn Operator>
                })
                .collect()
        }))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let add = self.add.map(|a| cx.resolve(a)).transpose()?;
        if add.as_ref().is_some_and(|(s, _)| super::same_slot(s, &xs) || super::same_slot(s, &ys)) {
            return Err(Error::op(name, "the addend shares a binding with the input or output; the affine kernel binds them separately"));
        }
        let (ap, prm, groups, entry) = eltwise::prepare(self, h * w, xo, yo, add.as_ref().map(|a| a.1));
        let prm = cx.storage(name, &prm)?;
        let u = cx.uniform(&ap);
        let slots = [xs, Slot::whole(&prm), ys, add.map(|a| a.0).unwrap_or(cx.dummy()), Slot::whole(&u)];
        let dispatch = cx.dispatch(Shader::Eltwise, entry, &slots, groups, name, self.flops(cx.graph), cx.act_bytes(self) + prm.size());
        Ok(Encoded { dispatch, buffers: vec![prm, u] })
    }
    boxed_op!();
}

/// `y[c] = act(scale[c] * (x[c] + add[c]) + shift[c])` over `[c, hw]`.
pub fn reference(x: &[f32], add: Option<&[f32]>, hw: usize, scale: &[f32], shift: &[f32], act: &Act) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / hw;
            let s = v as f64 + add.map_or(0.0, |a| a[i] as f64);
            act.apply((scale[c] as f64 * s + shift[c] as f64) as f32, c)
        })
        .collect()
}

/// Test problems: random channel counts and sizes, with and without an addend, every activation;
/// small planes and planes of a workgroup's elements or more;
/// or ESPNet's batch norm + PReLU over 131 channels for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    // the last four have planes of at least eltwise::PLANE_MIN elements (the `affine_planes` entry)
    let shapes: Vec<(usize, usize, usize)> =
        if bench { vec![(131, 90, 120)] } else { (0..12).map(|i| if i < 8 { (rng.range(1, 9), rng.range(1, 13), rng.range(1, 15)) } else { (rng.range(1, 6), rng.range(16, 40), rng.range(16, 40)) }).collect() };
    let mut out = vec![];
    for (i, (c, h, w)) in shapes.into_iter().enumerate() {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ta = g.tensor("add", c, h, w);
        let ty = g.tensor("y", c + 2, h, w);
        let act = match i % 4 {
            0 => Act::None,
            1 => Act::PRelu(rng.vec(c)),
            2 => Act::Relu6,
            _ => Act::HardSwish,
        };
        let add = (i % 2 == 1).then(|| g.all(ta));
        let (scale, shift) = (rng.vec(c), rng.vec(c));
        if g.affine("affine", g.all(tx), add, g.slice(ty, 1, c), scale, shift, act).is_err() {
            continue;
        }
        out.push(super::problem(format!("affine {c}x{h}x{w} add={}", add.is_some()), g, &mut rng, 1e-6 + 8.0 * f32::EPSILON, 0.0));
    }
    out
}
