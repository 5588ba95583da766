//! The operator graph: typed tensors, and nodes that read and write channel ranges (views) of
//! them.
//!
//! Tensors are NCHW with batch 1, so a range of channels of a tensor is one contiguous span of
//! memory. A concatenation is therefore best not an operator: its inputs are written straight into
//! channel ranges ([`View`]s) of one tensor — builders may emit a [`crate::ops::Concat`] and the
//! in-place-concatenation pass ([`crate::passes`]) turns it into exactly that. A graph has named
//! inputs and outputs (tensor names); each node's operator lives in its own module under
//! [`crate::ops`], and every builder method here only constructs the operator and has it check
//! itself (shapes through [`crate::shape`]).

use crate::error::{Error, Result};
use crate::ops::{AdaptiveAvgPool, Affine, Concat, Conv2d, ConvT2d, Gather, Mul, Op, Operator, Pool2d, Resize};
use crate::shape::{Conv2dGeom, ConvT2dGeom, Pool2dGeom, PoolKind};

pub type TensorId = usize;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DType {
    #[default]
    F32,
    F16,
    /// Indices (max-pooling's argmax positions) and packed class maps.
    U32,
    /// Class maps as read back.
    U8,
}

impl DType {
    /// Bytes of one element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
            DType::U8 => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::U8 => "u8",
        }
    }
    /// Device bytes of `values` (the CPU reference's representation: floats as floats, u8 as
    /// their values, u32 as `f32` bit patterns), padded to whole 4-byte words.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut b: Vec<u8> = match self {
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            DType::U32 => values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
            DType::U8 => values.iter().map(|&v| if v.is_nan() { 0xff } else { v as u8 }).collect(),
        };
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    /// The inverse of [`encode`](Self::encode) for `n` elements.
    pub fn decode(self, bytes: &[u8], n: usize) -> Vec<f32> {
        match self {
            DType::F32 => bytes.chunks_exact(4).take(n).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => bytes.chunks_exact(2).take(n).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::U32 => bytes.chunks_exact(4).take(n).map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            DType::U8 => bytes.iter().take(n).map(|&b| b as f32).collect(),
        }
    }

    /// The safetensors dtype name.
    pub fn safetensors(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::U32 => "U32",
            DType::U8 => "U8",
        }
    }
}

/// A tensor of the graph: `c x h x w` (batch 1) of one element type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub dtype: DType,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl TensorDesc {
    pub fn numel(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * self.dtype.size() as u64
    }
    /// Bytes of one channel plane.
    pub fn plane_bytes(&self) -> u64 {
        (self.h * self.w) as u64 * self.dtype.size() as u64
    }
    /// `[1, c, h, w]`.
    pub fn shape(&self) -> [usize; 4] {
        [1, self.c, self.h, self.w]
    }
}

/// Channels `c0 .. c0 + c` of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    Tanh,
    /// The Gauss error function (ONNX's Erf; GELU's building block).
    Erf,
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
            Act::Tanh => 7,
            Act::Erf => 8,
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
            Act::Tanh => (v as f64).tanh() as f32,
            Act::Erf => libm::erf(v as f64) as f32,
        }
    }

    pub fn slopes(&self) -> Option<&[f32]> {
        match self {
            Act::PRelu(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn check(&self, op: &str, channels: usize) -> Result<()> {
        match self {
            Act::PRelu(a) if a.len() != channels => Err(Error::op(op, format!("{} PReLU slopes for {} channels", a.len(), channels))),
            _ => Ok(()),
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
        let ins = self.op.inputs();
        let from = ins.first().map_or_else(|| "()".to_string(), |v| shape(*v));
        format!("{from} -> {}{}", shape(self.op.writes()), self.op.describe_params(g))
    }
}

/// A network for one input size: typed tensors, nodes in execution order, named inputs and
/// outputs.
#[derive(Clone, Debug)]
pub struct Graph {
    pub tensors: Vec<TensorDesc>,
    pub nodes: Vec<Node>,
    /// The first input (the image tensor for a segmentation network).
    pub input: TensorId,
    /// Every graph input, by tensor (its name is the input's name).
    pub inputs: Vec<TensorId>,
    /// The logits, once set (also in `outputs`).
    pub logits: Option<TensorId>,
    /// Every graph output, by tensor.
    pub outputs: Vec<TensorId>,
    /// The logits are one channel feeding a sigmoid (a binary mask model): the class map is
    /// `logit > 0` and the probabilities are the sigmoid. Otherwise argmax and softmax as usual.
    pub sigmoid_head: bool,
    /// Name prefixes of the nodes whose outputs stay f32 in an f16 session (stages a network's
    /// builder knows to be sensitive to f16 storage; see `passes::to_half_except`).
    pub f32_nodes: Vec<String>,
}

impl Graph {
    /// A graph whose input is a `c x h x w` float tensor named `input`.
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        let mut g = Graph { tensors: vec![], nodes: vec![], input: 0, inputs: vec![], logits: None, outputs: vec![], sigmoid_head: false, f32_nodes: vec![] };
        g.input = g.tensor("input", c, h, w);
        g.inputs.push(g.input);
        g
    }

    /// A float32 tensor.
    pub fn tensor(&mut self, name: &str, c: usize, h: usize, w: usize) -> TensorId {
        self.tensor_of(name, DType::F32, c, h, w)
    }

    pub fn tensor_of(&mut self, name: &str, dtype: DType, c: usize, h: usize, w: usize) -> TensorId {
        self.tensors.push(TensorDesc { name: name.to_string(), dtype, c, h, w });
        self.tensors.len() - 1
    }

    /// Adds another graph input (a second image, a mask, a probability map, ...).
    pub fn add_input(&mut self, name: &str, dtype: DType, c: usize, h: usize, w: usize) -> TensorId {
        let t = self.tensor_of(name, dtype, c, h, w);
        self.inputs.push(t);
        t
    }

    /// Marks a tensor as a graph output.
    pub fn add_output(&mut self, t: TensorId) {
        if !self.outputs.contains(&t) {
            self.outputs.push(t);
        }
    }

    /// The tensor called `name`, if any.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors.iter().position(|t| t.name == name)
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

    /// Bytes of a view.
    pub fn view_bytes(&self, v: View) -> u64 {
        v.c as u64 * self.tensors[v.tensor].plane_bytes()
    }

    /// Sets the logits (the output the class map is taken from) and marks them as an output.
    pub fn set_logits(&mut self, t: TensorId) {
        self.logits = Some(t);
        self.add_output(t);
    }

    /// Adds a node after checking its operator against the graph.
    pub fn push(&mut self, name: &str, op: impl Operator) -> Result<()> {
        op.check(self, name)?;
        self.nodes.push(Node { name: name.to_string(), op: Op::new(op) });
        Ok(())
    }

    /// Adds a convolution reading `x` and writing `y` (whose channel count and size must match the
    /// geometry's output), with optional bias, addend and activation.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(&mut self, name: &str, x: View, y: View, geom: Conv2dGeom, weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act, add: Option<View>) -> Result<()> {
        self.push(name, Conv2d { x, y, add, geom, weight, bias, act })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2d(&mut self, name: &str, x: View, y: View, geom: ConvT2dGeom, weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act) -> Result<()> {
        self.push(name, ConvT2d { x, y, add: None, geom, weight, bias, act })
    }

    pub fn pool2d(&mut self, name: &str, x: View, y: View, geom: Pool2dGeom, kind: PoolKind) -> Result<()> {
        self.push(name, Pool2d { x, y, geom, kind })
    }

    /// `y = act(scale * (x + add) + shift)` per channel: batch norm, activation, add, copy.
    #[allow(clippy::too_many_arguments)]
    pub fn affine(&mut self, name: &str, x: View, add: Option<View>, y: View, scale: Vec<f32>, shift: Vec<f32>, act: Act) -> Result<()> {
        self.push(name, Affine { x, add, y, scale, shift, act })
    }

    /// Bilinear resize of `x` to the size of `y`.
    pub fn resize(&mut self, name: &str, x: View, y: View, align_corners: bool) -> Result<()> {
        self.push(name, Resize { x, y, align_corners })
    }

    /// Adaptive average pooling of `x` to the size of `y`.
    pub fn adaptive_avg_pool(&mut self, name: &str, x: View, y: View) -> Result<()> {
        self.push(name, AdaptiveAvgPool { x, y })
    }

    /// `y = x * s` where `s` has `x`'s shape or is `c x 1 x 1`.
    pub fn mul(&mut self, name: &str, x: View, s: View, y: View) -> Result<()> {
        self.push(name, Mul { x, s, y })
    }

    /// `y[c] = x[perm[c]]`.
    pub fn gather(&mut self, name: &str, x: View, y: View, perm: Vec<usize>) -> Result<()> {
        self.push(name, Gather { x, y, perm })
    }

    /// `y = concat(xs)` along channels.
    pub fn concat(&mut self, name: &str, xs: Vec<View>, y: View) -> Result<()> {
        self.push(name, Concat { xs, y })
    }

    /// `y = x` (channel-range copy).
    pub fn copy(&mut self, name: &str, x: View, y: View) -> Result<()> {
        self.affine(name, x, None, y, vec![1.0; x.c], vec![0.0; x.c], Act::None)
    }

    /// `y = a + b`.
    pub fn add(&mut self, name: &str, a: View, b: View, y: View) -> Result<()> {
        self.affine(name, a, Some(b), y, vec![1.0; a.c], vec![0.0; a.c], Act::None)
    }

    /// Checks every node, that every channel is written before it is read, and that the logits
    /// and every output are set and written. A builder bug shows here rather than as garbage on
    /// the GPU.
    pub fn validate(&self) -> Result<()> {
        let mut written: Vec<Vec<bool>> = self.tensors.iter().map(|t| vec![false; t.c]).collect();
        for &i in &self.inputs {
            written[i].iter_mut().for_each(|w| *w = true);
        }
        for n in &self.nodes {
            n.op.check(self, &n.name)?;
            for r in n.op.reads() {
                if let Some(c) = (r.c0..r.c0 + r.c).find(|&c| !written[r.tensor][c]) {
                    return Err(Error::op(&n.name, format!("reads channel {c} of `{}` before anything wrote it", self.tensors[r.tensor].name)));
                }
            }
            for w in n.op.outputs() {
                written[w.tensor][w.c0..w.c0 + w.c].iter_mut().for_each(|x| *x = true);
            }
        }
        let l = self.logits.ok_or_else(|| Error::op("graph", "no logits tensor set"))?;
        if let Some(c) = written[l].iter().position(|w| !w) {
            return Err(Error::op("graph", format!("logits channel {c} is never written")));
        }
        for &o in &self.outputs {
            if let Some(c) = written[o].iter().position(|w| !w) {
                return Err(Error::op("graph", format!("output `{}` channel {c} is never written", self.tensors[o].name)));
            }
        }
        Ok(())
    }

    /// Total floating-point operations of one forward pass (argmax excluded).
    pub fn flops(&self) -> u64 {
        self.nodes.iter().map(|n| n.op.flops(self)).sum()
    }

    /// Number of parameters held by the nodes (after any folding).
    pub fn parameters(&self) -> usize {
        self.nodes.iter().map(|n| n.op.parameters()).sum()
    }

    /// The graph without its tensors and nodes (inputs, outputs, flags), for building a related
    /// graph without copying parameters.
    pub fn clone_shallow(&self) -> Graph {
        Graph { tensors: vec![], nodes: vec![], input: self.input, inputs: self.inputs.clone(), logits: self.logits, outputs: self.outputs.clone(), sigmoid_head: self.sigmoid_head, f32_nodes: self.f32_nodes.clone() }
    }

    /// Indices of the nodes that read any channel of tensor `t`.
    pub fn readers(&self, t: TensorId) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].op.reads().iter().any(|v| v.tensor == t)).collect()
    }

    /// Indices of the nodes that write any channel of tensor `t`.
    pub fn writers(&self, t: TensorId) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].op.outputs().iter().any(|v| v.tensor == t)).collect()
    }

    /// Tensors in use: graph inputs and outputs and every tensor a node reads or writes (rewrite
    /// passes leave the tensors they merged away unused).
    pub fn live_tensors(&self) -> Vec<TensorId> {
        let mut used = vec![false; self.tensors.len()];
        for &t in self.inputs.iter().chain(&self.outputs) {
            used[t] = true;
        }
        for n in &self.nodes {
            for v in n.op.reads().into_iter().chain(n.op.outputs()) {
                used[v.tensor] = true;
            }
        }
        (0..self.tensors.len()).filter(|&t| used[t]).collect()
    }

    /// Whether `t` is a graph input or output.
    pub fn is_io(&self, t: TensorId) -> bool {
        self.inputs.contains(&t) || self.outputs.contains(&t) || self.logits == Some(t)
    }
}
