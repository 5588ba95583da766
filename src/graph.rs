//! The operator graph: tensors with shapes, and nodes that read and write channel ranges of them.
//!
//! Tensors are NCHW with batch 1, so a range of channels of a tensor is one contiguous span of memory.
//! A concatenation is therefore not an operator: its inputs are written straight into channel ranges
//! ([`View`]s) of one tensor. Every builder method infers and checks shapes with [`crate::shape`].

use crate::error::{Error, Result};
use crate::shape::{Conv2dGeom, ConvT2dGeom, Pool2dGeom, PoolKind};

pub type TensorId = usize;

/// A tensor of the graph: `c x h x w` float32 (batch 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl TensorDesc {
    pub fn numel(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }
}

/// Channels `c0 .. c0 + c` of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub tensor: TensorId,
    pub c0: usize,
    pub c: usize,
}

/// Activation fused into an operator's epilogue.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    /// One slope per output channel: `max(x,0) + a[c]*min(x,0)`.
    PRelu(Vec<f32>),
    Sigmoid,
    HardSwish,
    HardSigmoid,
}

impl Act {
    /// The code the WGSL kernels switch on.
    pub fn code(&self) -> u32 {
        match self {
            Act::None => 0,
            Act::Relu => 1,
            Act::Relu6 => 2,
            Act::PRelu(_) => 3,
            Act::Sigmoid => 4,
            Act::HardSwish => 5,
            Act::HardSigmoid => 6,
        }
    }

    /// Reference semantics (PyTorch's definitions), for output channel `c`.
    pub fn apply(&self, v: f32, c: usize) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
            Act::PRelu(a) => {
                if v >= 0.0 {
                    v
                } else {
                    a[c] * v
                }
            }
            Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Act::HardSwish => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
            Act::HardSigmoid => (v + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    pub fn slopes(&self) -> Option<&[f32]> {
        match self {
            Act::PRelu(a) => Some(a),
            _ => None,
        }
    }

    fn check(&self, op: &str, channels: usize) -> Result<()> {
        match self {
            Act::PRelu(a) if a.len() != channels => Err(Error::op(op, format!("{} PReLU slopes for {} channels", a.len(), channels))),
            _ => Ok(()),
        }
    }
}

/// 2-D convolution, optional bias, then `+ add` (a residual or hierarchical sum), then the activation.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub x: View,
    pub y: View,
    pub add: Option<View>,
    pub geom: Conv2dGeom,
    /// `[out_c, in_c/groups, k_h, k_w]`
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub act: Act,
}

/// Transposed 2-D convolution, optional bias, then `+ add`, then the activation.
#[derive(Clone, Debug)]
pub struct ConvT2d {
    pub x: View,
    pub y: View,
    pub add: Option<View>,
    pub geom: ConvT2dGeom,
    /// `[in_c, out_c/groups, k_h, k_w]`
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub act: Act,
}

/// Average or max pooling.
#[derive(Clone, Debug)]
pub struct Pool2d {
    pub x: View,
    pub y: View,
    pub geom: Pool2dGeom,
    pub kind: PoolKind,
}

/// Per-channel affine map with an optional element-wise addend:
/// `y[c] = act(scale[c] * (x[c] + add[c]) + shift[c])`. Inference batch norm, element-wise add and
/// copy are all this operator.
#[derive(Clone, Debug)]
pub struct Affine {
    pub x: View,
    pub add: Option<View>,
    pub y: View,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub act: Act,
}

/// Bilinear resize to the output view's size. `align_corners` as in PyTorch (and TFLite's
/// `align_corners=True, half_pixel_centers=False`).
#[derive(Clone, Debug)]
pub struct Resize {
    pub x: View,
    pub y: View,
    pub align_corners: bool,
}

/// Adaptive average pooling to the output view's size (PyTorch's windows: output `i` of `m`
/// averages input `[floor(i*n/m), ceil((i+1)*n/m))`). Global average pooling is the 1x1 case.
#[derive(Clone, Debug)]
pub struct AdaptiveAvgPool {
    pub x: View,
    pub y: View,
}

/// `y = x * s`, with `s` either the same shape as `x` or one value per channel (`1 x 1` spatial):
/// squeeze-excitation and attention scaling.
#[derive(Clone, Debug)]
pub struct Mul {
    pub x: View,
    pub s: View,
    pub y: View,
}

/// `y[c] = x[perm[c]]`: channel shuffle and any other channel permutation or gather.
#[derive(Clone, Debug)]
pub struct Gather {
    pub x: View,
    pub y: View,
    pub perm: Vec<usize>,
}

#[derive(Clone, Debug)]
pub enum Op {
    Conv2d(Conv2d),
    ConvT2d(ConvT2d),
    Pool2d(Pool2d),
    Affine(Affine),
    Resize(Resize),
    AdaptiveAvgPool(AdaptiveAvgPool),
    Mul(Mul),
    Gather(Gather),
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::ConvT2d(_) => "conv_transpose2d",
            Op::Pool2d(_) => "pool2d",
            Op::Affine(_) => "affine",
            Op::Resize(_) => "resize",
            Op::AdaptiveAvgPool(_) => "adaptive_avg_pool2d",
            Op::Mul(_) => "mul",
            Op::Gather(_) => "gather",
        }
    }
    /// Views read, in binding order.
    pub fn reads(&self) -> Vec<View> {
        match self {
            Op::Conv2d(o) => std::iter::once(o.x).chain(o.add).collect(),
            Op::ConvT2d(o) => std::iter::once(o.x).chain(o.add).collect(),
            Op::Pool2d(o) => vec![o.x],
            Op::Affine(o) => std::iter::once(o.x).chain(o.add).collect(),
            Op::Resize(o) => vec![o.x],
            Op::AdaptiveAvgPool(o) => vec![o.x],
            Op::Mul(o) => vec![o.x, o.s],
            Op::Gather(o) => vec![o.x],
        }
    }
    pub fn writes(&self) -> View {
        match self {
            Op::Conv2d(o) => o.y,
            Op::ConvT2d(o) => o.y,
            Op::Pool2d(o) => o.y,
            Op::Affine(o) => o.y,
            Op::Resize(o) => o.y,
            Op::AdaptiveAvgPool(o) => o.y,
            Op::Mul(o) => o.y,
            Op::Gather(o) => o.y,
        }
    }
    /// Floating-point operations (a multiply-add counts 2).
    pub fn flops(&self, g: &Graph) -> u64 {
        match self {
            Op::Conv2d(o) => 2 * o.geom.macs().unwrap_or(0),
            Op::ConvT2d(o) => 2 * o.geom.macs().unwrap_or(0),
            Op::Pool2d(o) => {
                let t = &g.tensors[o.y.tensor];
                (o.y.c * t.h * t.w * o.geom.k_h * o.geom.k_w) as u64
            }
            Op::Affine(o) => {
                let t = &g.tensors[o.y.tensor];
                (o.y.c * t.h * t.w) as u64 * if o.add.is_some() { 3 } else { 2 }
            }
            Op::Resize(o) => {
                let t = &g.tensors[o.y.tensor];
                (o.y.c * t.h * t.w) as u64 * 6
            }
            Op::AdaptiveAvgPool(o) => {
                let t = &g.tensors[o.x.tensor];
                (o.x.c * t.h * t.w) as u64
            }
            Op::Mul(o) => {
                let t = &g.tensors[o.y.tensor];
                (o.y.c * t.h * t.w) as u64
            }
            Op::Gather(_) => 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
}

impl Node {
    /// Shapes and hyper-parameters, e.g. `25x45x60 -> 25x45x60 k3x3 s1 d16 g1`.
    pub fn describe(&self, g: &Graph) -> String {
        let shape = |v: View| {
            let (h, w) = g.hw(v);
            format!("{}x{}x{}", v.c, h, w)
        };
        let io = format!("{} -> {}", shape(self.op.reads()[0]), shape(self.op.writes()));
        match &self.op {
            Op::Conv2d(o) => {
                let c = &o.geom;
                let add = if o.add.is_some() { " +add" } else { "" };
                format!("{io} k{}x{} s{} d{} g{}{add}", c.k_h, c.k_w, c.stride_h, c.dil_h, c.groups)
            }
            Op::ConvT2d(o) => format!("{io} k{}x{} s{} g{}", o.geom.k_h, o.geom.k_w, o.geom.stride_h, o.geom.groups),
            Op::Pool2d(o) => format!("{io} {:?} k{} s{}", o.kind, o.geom.k_h, o.geom.stride_h),
            Op::Affine(o) => format!("{io}{}", if o.add.is_some() { " +add" } else { "" }),
            Op::Resize(o) => format!("{io} align_corners={}", o.align_corners),
            Op::AdaptiveAvgPool(_) | Op::Gather(_) => io,
            Op::Mul(o) => format!("{io} by {}", shape(o.s)),
        }
    }
}

/// A network for one input size: tensors, nodes in execution order, the input and the logits.
#[derive(Clone, Debug)]
pub struct Graph {
    pub tensors: Vec<TensorDesc>,
    pub nodes: Vec<Node>,
    pub input: TensorId,
    pub logits: Option<TensorId>,
}

impl Graph {
    /// A graph whose input is a `c x h x w` tensor.
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        let mut g = Graph { tensors: vec![], nodes: vec![], input: 0, logits: None };
        g.input = g.tensor("input", c, h, w);
        g
    }

    pub fn tensor(&mut self, name: &str, c: usize, h: usize, w: usize) -> TensorId {
        self.tensors.push(TensorDesc { name: name.to_string(), c, h, w });
        self.tensors.len() - 1
    }

    /// The whole tensor as a view.
    pub fn all(&self, t: TensorId) -> View {
        View { tensor: t, c0: 0, c: self.tensors[t].c }
    }

    pub fn slice(&self, t: TensorId, c0: usize, c: usize) -> View {
        View { tensor: t, c0, c }
    }

    pub fn desc(&self, v: View) -> &TensorDesc {
        &self.tensors[v.tensor]
    }

    pub fn hw(&self, v: View) -> (usize, usize) {
        let t = &self.tensors[v.tensor];
        (t.h, t.w)
    }

    pub fn set_logits(&mut self, t: TensorId) {
        self.logits = Some(t);
    }

    fn check_view(&self, op: &str, v: View) -> Result<()> {
        let t = self.tensors.get(v.tensor).ok_or_else(|| Error::op(op, format!("unknown tensor {}", v.tensor)))?;
        if v.c == 0 || v.c0 + v.c > t.c {
            return Err(Error::op(op, format!("channels {}..{} outside tensor `{}` with {} channels", v.c0, v.c0 + v.c, t.name, t.c)));
        }
        Ok(())
    }

    fn check_same_shape(&self, op: &str, a: View, b: View) -> Result<()> {
        if a.c != b.c || self.hw(a) != self.hw(b) {
            return Err(Error::op(op, format!("shape {}x{:?} vs {}x{:?}", a.c, self.hw(a), b.c, self.hw(b))));
        }
        Ok(())
    }

    fn distinct(&self, op: &str, x: View, y: View) -> Result<()> {
        if x.tensor == y.tensor {
            return Err(Error::op(op, format!("reads and writes the same tensor `{}`", self.tensors[x.tensor].name)));
        }
        Ok(())
    }

    /// Checks the views, sizes, weight and bias of a (transposed) convolution.
    #[allow(clippy::too_many_arguments)]
    fn check_conv(&self, op: &str, x: View, y: View, (in_c, in_h, in_w): (usize, usize, usize), (out_c, (oh, ow)): (usize, (usize, usize)), ws: &[usize], weights: usize, bias: Option<&[f32]>) -> Result<()> {
        self.check_view(op, x)?;
        self.check_view(op, y)?;
        self.distinct(op, x, y)?;
        let (h, w) = self.hw(x);
        if in_c != x.c || in_h != h || in_w != w {
            return Err(Error::op(op, format!("geometry expects input {in_c}x{in_h}x{in_w}, got {}x{h}x{w}", x.c)));
        }
        if y.c != out_c || self.hw(y) != (oh, ow) {
            return Err(Error::op(op, format!("output view {}x{:?} but geometry gives {out_c}x{:?}", y.c, self.hw(y), (oh, ow))));
        }
        if weights != ws.iter().product::<usize>() {
            return Err(Error::op(op, format!("weight has {weights} values, shape {ws:?} needs {}", ws.iter().product::<usize>())));
        }
        if let Some(b) = bias {
            if b.len() != out_c {
                return Err(Error::op(op, format!("bias has {} values for {out_c} channels", b.len())));
            }
        }
        Ok(())
    }

    /// Adds a convolution reading `x` and writing `y` (whose channel count and size must match the
    /// geometry's output). The geometry's input fields are taken from `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(&mut self, name: &str, x: View, y: View, geom: Conv2dGeom, weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act, add: Option<View>) -> Result<()> {
        let op = name;
        let out_hw = geom.out_hw().map_err(|e| Error::op(op, e.to_string()))?;
        self.check_conv(op, x, y, (geom.in_c, geom.in_h, geom.in_w), (geom.out_c, out_hw), &geom.weight_shape(), weight.len(), bias.as_deref())?;
        if let Some(a) = add {
            self.check_view(op, a)?;
            self.check_same_shape(op, a, y)?;
            if a.tensor == y.tensor && a.c0 < y.c0 + y.c && y.c0 < a.c0 + a.c {
                return Err(Error::op(op, "addend overlaps the output channels"));
            }
        }
        act.check(op, geom.out_c)?;
        self.nodes.push(Node { name: name.to_string(), op: Op::Conv2d(Conv2d { x, y, add, geom, weight, bias, act }) });
        Ok(())
    }

    pub fn conv_transpose2d(&mut self, name: &str, x: View, y: View, geom: ConvT2dGeom, weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act) -> Result<()> {
        let op = name;
        let out_hw = geom.out_hw().map_err(|e| Error::op(op, e.to_string()))?;
        self.check_conv(op, x, y, (geom.in_c, geom.in_h, geom.in_w), (geom.out_c, out_hw), &geom.weight_shape(), weight.len(), bias.as_deref())?;
        act.check(op, geom.out_c)?;
        self.nodes.push(Node { name: name.to_string(), op: Op::ConvT2d(ConvT2d { x, y, add: None, geom, weight, bias, act }) });
        Ok(())
    }

    pub fn pool2d(&mut self, name: &str, x: View, y: View, geom: Pool2dGeom, kind: PoolKind) -> Result<()> {
        let op = name;
        self.check_view(op, x)?;
        self.check_view(op, y)?;
        self.distinct(op, x, y)?;
        let (h, w) = self.hw(x);
        if geom.c != x.c || geom.in_h != h || geom.in_w != w {
            return Err(Error::op(op, "geometry does not match the input view"));
        }
        let (oh, ow) = geom.out_hw().map_err(|e| Error::op(op, e.to_string()))?;
        if y.c != x.c || self.hw(y) != (oh, ow) {
            return Err(Error::op(op, format!("output view {}x{:?} but geometry gives {}x{:?}", y.c, self.hw(y), x.c, (oh, ow))));
        }
        self.nodes.push(Node { name: name.to_string(), op: Op::Pool2d(Pool2d { x, y, geom, kind }) });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn affine(&mut self, name: &str, x: View, add: Option<View>, y: View, scale: Vec<f32>, shift: Vec<f32>, act: Act) -> Result<()> {
        let op = name;
        self.check_view(op, x)?;
        self.check_view(op, y)?;
        self.distinct(op, x, y)?;
        self.check_same_shape(op, x, y)?;
        if let Some(a) = add {
            self.check_view(op, a)?;
            self.distinct(op, a, y)?;
            self.check_same_shape(op, a, y)?;
        }
        if scale.len() != x.c || shift.len() != x.c {
            return Err(Error::op(op, format!("{} scales / {} shifts for {} channels", scale.len(), shift.len(), x.c)));
        }
        act.check(op, x.c)?;
        self.nodes.push(Node { name: name.to_string(), op: Op::Affine(Affine { x, add, y, scale, shift, act }) });
        Ok(())
    }

    /// Bilinear resize of `x` to the size of `y`.
    pub fn resize(&mut self, name: &str, x: View, y: View, align_corners: bool) -> Result<()> {
        self.check_view(name, x)?;
        self.check_view(name, y)?;
        self.distinct(name, x, y)?;
        if x.c != y.c {
            return Err(Error::op(name, format!("{} channels resized into {}", x.c, y.c)));
        }
        self.nodes.push(Node { name: name.to_string(), op: Op::Resize(Resize { x, y, align_corners }) });
        Ok(())
    }

    /// Adaptive average pooling of `x` to the size of `y`.
    pub fn adaptive_avg_pool(&mut self, name: &str, x: View, y: View) -> Result<()> {
        self.check_view(name, x)?;
        self.check_view(name, y)?;
        self.distinct(name, x, y)?;
        if x.c != y.c {
            return Err(Error::op(name, format!("{} channels pooled into {}", x.c, y.c)));
        }
        self.nodes.push(Node { name: name.to_string(), op: Op::AdaptiveAvgPool(AdaptiveAvgPool { x, y }) });
        Ok(())
    }

    /// `y = x * s` where `s` has `x`'s shape or is `c x 1 x 1`.
    pub fn mul(&mut self, name: &str, x: View, s: View, y: View) -> Result<()> {
        for v in [x, s, y] {
            self.check_view(name, v)?;
        }
        self.distinct(name, x, y)?;
        self.distinct(name, s, y)?;
        self.check_same_shape(name, x, y)?;
        if s.c != x.c || (self.hw(s) != self.hw(x) && self.hw(s) != (1, 1)) {
            return Err(Error::op(name, format!("multiplier {}x{:?} does not broadcast to {}x{:?}", s.c, self.hw(s), x.c, self.hw(x))));
        }
        self.nodes.push(Node { name: name.to_string(), op: Op::Mul(Mul { x, s, y }) });
        Ok(())
    }

    /// `y[c] = x[perm[c]]`.
    pub fn gather(&mut self, name: &str, x: View, y: View, perm: Vec<usize>) -> Result<()> {
        self.check_view(name, x)?;
        self.check_view(name, y)?;
        self.distinct(name, x, y)?;
        if self.hw(x) != self.hw(y) || perm.len() != y.c || perm.iter().any(|&p| p >= x.c) {
            return Err(Error::op(name, format!("permutation of {} entries from {} channels into {}", perm.len(), x.c, y.c)));
        }
        self.nodes.push(Node { name: name.to_string(), op: Op::Gather(Gather { x, y, perm }) });
        Ok(())
    }

    /// `y = x` (channel-range copy).
    pub fn copy(&mut self, name: &str, x: View, y: View) -> Result<()> {
        self.affine(name, x, None, y, vec![1.0; x.c], vec![0.0; x.c], Act::None)
    }

    /// `y = a + b`.
    pub fn add(&mut self, name: &str, a: View, b: View, y: View) -> Result<()> {
        self.affine(name, a, Some(b), y, vec![1.0; a.c], vec![0.0; a.c], Act::None)
    }

    /// Checks that every channel is written before it is read, and that the logits are set and
    /// written. A builder bug shows here rather than as garbage on the GPU.
    pub fn validate(&self) -> Result<()> {
        let mut written: Vec<Vec<bool>> = self.tensors.iter().map(|t| vec![false; t.c]).collect();
        written[self.input].iter_mut().for_each(|w| *w = true);
        for n in &self.nodes {
            for r in n.op.reads() {
                if let Some(c) = (r.c0..r.c0 + r.c).find(|&c| !written[r.tensor][c]) {
                    return Err(Error::op(&n.name, format!("reads channel {c} of `{}` before anything wrote it", self.tensors[r.tensor].name)));
                }
            }
            let w = n.op.writes();
            written[w.tensor][w.c0..w.c0 + w.c].iter_mut().for_each(|x| *x = true);
        }
        let l = self.logits.ok_or_else(|| Error::op("graph", "no logits tensor set"))?;
        if let Some(c) = written[l].iter().position(|w| !w) {
            return Err(Error::op("graph", format!("logits channel {c} is never written")));
        }
        Ok(())
    }

    /// Total floating-point operations of one forward pass (argmax excluded).
    pub fn flops(&self) -> u64 {
        self.nodes.iter().map(|n| n.op.flops(self)).sum()
    }

    /// Number of parameters held by the nodes (after any folding).
    pub fn parameters(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv2d(o) => o.weight.len() + o.bias.as_ref().map_or(0, |b| b.len()) + o.act.slopes().map_or(0, |s| s.len()),
                Op::ConvT2d(o) => o.weight.len() + o.bias.as_ref().map_or(0, |b| b.len()) + o.act.slopes().map_or(0, |s| s.len()),
                Op::Pool2d(_) => 0,
                Op::Affine(o) => 2 * o.scale.len() + o.act.slopes().map_or(0, |s| s.len()),
                Op::Resize(_) | Op::AdaptiveAvgPool(_) | Op::Mul(_) | Op::Gather(_) => 0,
            })
            .sum()
    }
}
