//! An imported ONNX graph lowered to an atrous [`Graph`] for one input size.
//!
//! Activations are 4-D NCHW tensors with N = 1 and live on the device. Everything else —
//! initializers, `Constant`s and the shape computations exporters emit around `Resize` and
//! `Reshape` — is a [`CTensor`] evaluated here on the CPU, for the input size being lowered.
//! Each ONNX operator becomes atrous operators (one home each under [`crate::ops`]); the rewrite
//! passes then fuse them exactly as they fuse the builders' plain operators.

use std::collections::{BTreeMap, HashMap};

use super::proto::data_type as dt;
use super::{Attr, CData, CTensor, IrGraph, IrNode};
use crate::error::{Error, Result};
use crate::graph::{Act, DType, Graph, TensorId, View};
use crate::ops::{AdaptiveAvgPool, Concat, ConvT2d, Crop, MaxPool2dIdx, MaxUnpool2d, Mul, Pool2d, Resize, Softmax, UpsampleNearest};
use crate::shape::{Conv2dGeom, ConvT2dGeom, Pad, Pool2dGeom, PoolKind};

/// A graph output after lowering.
#[derive(Clone, Debug)]
pub enum LoweredOut {
    /// A device tensor of ONNX shape `dims` and ONNX type `dtype`. `offset`: the tensor holds
    /// max-pooling indices per channel plane; ONNX's value is the device's plus `offset[c]`.
    Tensor { id: TensorId, dims: Vec<usize>, dtype: i32, offset: Option<Vec<i64>> },
    /// Folded to a constant while lowering.
    Const(CTensor),
}

/// The lowered graph and how each ONNX output maps onto it.
pub struct Lowered {
    pub graph: Graph,
    pub outputs: Vec<(String, LoweredOut)>,
}

#[derive(Clone, Debug)]
struct ActV {
    view: View,
    c: usize,
    h: usize,
    w: usize,
    dtype: i32,
    /// Max-pooling indices: the device holds indices per channel plane and ONNX's value is the
    /// device's plus `offset[c]` (ONNX's indices are flat over the whole tensor).
    offset: Option<Vec<i64>>,
    /// The ONNX rank: 4 (`[1, c, h, w]`), or fewer, the dimensions being the last ones of
    /// `[1, c, h, w]` (element-wise operators run on any rank this way).
    rank: usize,
    /// Reshaped to 5-D `[1, a, b, h, w]` (a channel shuffle in the making): logical channel
    /// `i * b + j` is channel `map[i * b + j]` of `view`. Only Reshape and Transpose take it.
    groups: Option<(usize, usize, Vec<usize>)>,
}

#[derive(Clone, Debug)]
enum Val {
    C(CTensor),
    A(ActV),
}

/// Operators the lowering knows (with the attributes and shapes it documents per operator).
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Relu",
    "PRelu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Concat",
    "Split",
    "Slice",
    "Pad",
    "MaxPool",
    "MaxUnpool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Resize",
    "Upsample",
    "ArgMax",
    "Softmax",
    "Identity",
    "Dropout",
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Reshape",
    "Flatten",
    "ConstantOfShape",
    "Range",
    "Floor",
    "Ceil",
    "Neg",
    "Sqrt",
];

/// Lowers `ir` for an input of `h x w`. `tensor(name, onnx_type)` reads an initializer; graph
/// inputs named in `consts` are constants (the ONNX node tests feed weights as inputs), every
/// other input is an activation. The first activation input takes the size `h x w`; any other
/// must have fixed dimensions.
pub fn lower(ir: &IrGraph, tensor: &dyn Fn(&str, i32) -> Result<CTensor>, h: usize, w: usize, consts: &HashMap<String, CTensor>) -> Result<Lowered> {
    let mut lx = Lx::new(ir, tensor, consts, h, w)?;
    for n in &ir.nodes {
        lx.node(n)?;
    }
    lx.finish()
}

/// Every problem of the graph at once: each node that cannot be lowered (with the reason), and
/// each node downstream of one whose operator is unknown. Empty when the graph lowers.
pub fn check(ir: &IrGraph, tensor: &dyn Fn(&str, i32) -> Result<CTensor>, h: usize, w: usize) -> Vec<Error> {
    let consts = HashMap::new();
    let mut lx = match Lx::new(ir, tensor, &consts, h, w) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let mut errors = vec![];
    let mut poisoned: std::collections::HashSet<String> = Default::default();
    for n in &ir.nodes {
        if n.inputs.iter().any(|i| poisoned.contains(i)) {
            if !SUPPORTED.contains(&n.op.as_str()) || !n.domain.is_empty() && n.domain != "ai.onnx" {
                errors.push(n.bad("unsupported operator"));
            }
            poisoned.extend(n.outputs.iter().cloned());
            continue;
        }
        if let Err(e) = lx.node(n) {
            errors.push(e);
            poisoned.extend(n.outputs.iter().cloned());
        }
    }
    if errors.is_empty() {
        if let Err(e) = lx.finish() {
            errors.push(e);
        }
    }
    errors
}

struct Lx<'a> {
    ir: &'a IrGraph,
    tensor: &'a dyn Fn(&str, i32) -> Result<CTensor>,
    g: Graph,
    vals: HashMap<String, Val>,
    /// ArgMax outputs: the logits they take the class map of.
    argmax_of: HashMap<String, ActV>,
    /// The rank of the node being lowered (that of its first activation input).
    rank: usize,
}

fn onnx_dtype(name: &str) -> i32 {
    match name {
        "FLOAT" => dt::FLOAT,
        "INT64" => dt::INT64,
        "FLOAT16" => dt::FLOAT16,
        "INT32" => dt::INT32,
        _ => 0,
    }
}

impl<'a> Lx<'a> {
    fn new(ir: &'a IrGraph, tensor: &'a dyn Fn(&str, i32) -> Result<CTensor>, consts: &HashMap<String, CTensor>, h: usize, w: usize) -> Result<Self> {
        let mut lx = Lx { ir, tensor, g: Graph::new(1, 1, 1), vals: HashMap::new(), argmax_of: HashMap::new(), rank: 4 };
        let mut first = true;
        lx.g.inputs.clear();
        lx.g.tensors.clear();
        for v in &ir.inputs {
            if let Some(c) = consts.get(&v.name) {
                lx.vals.insert(v.name.clone(), Val::C(c.clone()));
                continue;
            }
            let bad = |reason: String| Error::OnnxTensor { tensor: v.name.clone(), reason };
            let mut dims = v.dims.clone().ok_or_else(|| bad("input without a shape".into()))?;
            let rank = dims.len();
            if !(1..=4).contains(&rank) || dims[0].is_some_and(|n| n != 1) && rank == 4 {
                return Err(bad(format!("input of shape {:?}: atrous takes NCHW inputs with N = 1 (or element-wise inputs of rank 1-3)", dims)));
            }
            if rank < 4 && dims.iter().any(|d| d.is_none()) {
                return Err(bad("an input of rank below 4 needs fixed dimensions".into()));
            }
            while dims.len() < 4 {
                dims.insert(0, Some(1));
            }
            let c = dims[1].filter(|&c| c > 0).ok_or_else(|| bad("the channel count must be fixed".into()))? as usize;
            let dtype = onnx_dtype(&v.dtype);
            let (ih, iw) = if first && rank == 4 {
                (h, w)
            } else {
                match (dims[2], dims[3]) {
                    (Some(a), Some(b)) if a > 0 && b > 0 => (a as usize, b as usize),
                    _ => return Err(bad("a second input needs fixed dimensions".into())),
                }
            };
            let d = match dtype {
                dt::FLOAT => DType::F32,
                dt::INT64 if !first => DType::U32,
                _ => return Err(bad(format!("input of element type {}: the image input must be FLOAT, a second input FLOAT or INT64 (indices)", v.dtype))),
            };
            let t = lx.g.add_input(&v.name, d, c, ih, iw);
            if first {
                lx.g.input = t;
                first = false;
            }
            let offset = (d == DType::U32).then(|| vec![0; c]);
            lx.vals.insert(v.name.clone(), Val::A(ActV { view: lx.g.all(t), c, h: ih, w: iw, dtype, offset, rank, groups: None }));
        }
        if first {
            // no activation input: a graph of constants only (still needs an input tensor)
            let t = lx.g.add_input("input", DType::F32, 1, h, w);
            lx.g.input = t;
        }
        Ok(lx)
    }

    /// An initializer (or tensor attribute) with its recorded ONNX type.
    fn init(&self, name: &str) -> Result<CTensor> {
        let t = self.ir.initializers.get(name).copied().ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        (self.tensor)(name, t)
    }

    fn val(&mut self, n: &IrNode, name: &str) -> Result<Option<Val>> {
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(v) = self.vals.get(name) {
            return Ok(Some(v.clone()));
        }
        if let Some(&t) = self.ir.initializers.get(name) {
            // read where used, not cached: weights are read once, by the one node taking them
            return Ok(Some(Val::C((self.tensor)(name, t)?)));
        }
        Err(unknown_input(n, name))
    }

    fn act(&mut self, n: &IrNode, i: usize) -> Result<ActV> {
        let name = n.inputs.get(i).cloned().unwrap_or_default();
        match self.val(n, &name)? {
            Some(Val::A(a)) if a.groups.is_some() && !matches!(n.op.as_str(), "Reshape" | "Transpose") => {
                Err(n.bad(format!("input {i} (`{name}`) is a 5-D reshape of an activation; atrous follows it only through Transpose and back to NCHW (a channel shuffle)")))
            }
            Some(Val::A(a)) => Ok(a),
            Some(Val::C(_)) => Err(n.bad(format!("input {i} (`{name}`) is a constant; atrous runs this operator on activations"))),
            None => Err(n.bad(format!("input {i} is missing"))),
        }
    }

    /// An activation input that must be 4-D (spatial operators).
    fn act4(&mut self, n: &IrNode, i: usize) -> Result<ActV> {
        let a = self.act(n, i)?;
        if a.rank != 4 {
            return Err(n.bad(format!("a rank-{} input: this operator takes 4-D NCHW", a.rank)));
        }
        Ok(a)
    }

    /// `axis` of a rank-`rank` activation as an axis of `[1, c, h, w]`.
    fn axis4(n: &IrNode, axis: i64, rank: usize) -> Result<usize> {
        let a = if axis < 0 { axis + rank as i64 } else { axis };
        if !(0..rank as i64).contains(&a) {
            return Err(n.bad(format!("axis {axis} of a rank-{rank} tensor")));
        }
        Ok(a as usize + 4 - rank)
    }

    fn cst(&mut self, n: &IrNode, i: usize) -> Result<Option<CTensor>> {
        let name = n.inputs.get(i).cloned().unwrap_or_default();
        match self.val(n, &name)? {
            Some(Val::C(c)) => Ok(Some(c)),
            Some(Val::A(_)) => Err(n.bad(format!("input {i} (`{name}`) must be a constant (an initializer or computable from shapes)"))),
            None => Ok(None),
        }
    }

    fn need_cst(&mut self, n: &IrNode, i: usize) -> Result<CTensor> {
        self.cst(n, i)?.ok_or_else(|| n.bad(format!("input {i} is missing")))
    }

    /// A new f32 activation named after output `k` of `n`.
    fn out(&mut self, n: &IrNode, k: usize, c: usize, h: usize, w: usize) -> ActV {
        self.out_of(n, k, c, h, w, DType::F32)
    }

    fn out_of(&mut self, n: &IrNode, k: usize, c: usize, h: usize, w: usize, d: DType) -> ActV {
        let name = n.outputs.get(k).cloned().unwrap_or_else(|| format!("{}:{k}", n.name));
        let t = self.g.tensor_of(&name, d, c, h, w);
        let dtype = if d == DType::U32 { dt::INT64 } else { dt::FLOAT };
        ActV { view: self.g.all(t), c, h, w, dtype, offset: None, rank: self.rank, groups: None }
    }

    fn set(&mut self, n: &IrNode, k: usize, v: Val) {
        if let Some(name) = n.outputs.get(k).filter(|s| !s.is_empty()) {
            self.vals.insert(name.clone(), v);
        }
    }

    fn node(&mut self, n: &IrNode) -> Result<()> {
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(n.bad(format!("operator domain `{}` is not supported", n.domain)));
        }
        if n.op == "Constant" {
            let c = constant(n, &|name: &str, _| self.init(name))?;
            self.set(n, 0, Val::C(c));
            return Ok(());
        }
        // which inputs are activations, without copying any value (weights are fetched once,
        // by the operator that takes them)
        if let Some(i) = n.inputs.iter().find(|i| !i.is_empty() && !self.vals.contains_key(*i) && !self.ir.initializers.contains_key(*i)) {
            return Err(unknown_input(n, i));
        }
        let act_rank = n.inputs.iter().find_map(|i| if let Some(Val::A(a)) = self.vals.get(i) { Some(a.rank) } else { None });
        self.rank = act_rank.unwrap_or(4);
        if n.op == "Shape" {
            let x = n.inputs.first().cloned().unwrap_or_default();
            let dims = match &self.val(n, &x)? {
                Some(Val::A(ActV { groups: Some((ga, gb, _)), h, w, .. })) => vec![1, *ga, *gb, *h, *w],
                Some(Val::A(a)) => [1, a.c, a.h, a.w][4 - a.rank..].to_vec(),
                Some(Val::C(c)) => c.dims.clone(),
                None => return Err(n.bad("no input")),
            };
            let r = dims.len() as i64;
            let norm = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) } as usize;
            let (s, e) = (norm(n.int("start", 0)?), norm(n.int("end", r)?));
            let v: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
            self.set(n, 0, Val::C(CTensor::ints(vec![v.len()], v)));
            return Ok(());
        }
        if act_rank.is_none() {
            let cs = (0..n.inputs.len()).map(|i| self.cst(n, i)).collect::<Result<Vec<_>>>()?;
            let outs = fold(n, &cs, self.ir.opset, &|name: &str, _| self.init(name))?;
            for (k, c) in outs.into_iter().enumerate() {
                self.set(n, k, Val::C(c));
            }
            return Ok(());
        }
        self.lower_act(n)
    }

    fn affine(&mut self, n: &IrNode, x: &ActV, add: Option<View>, scale: Vec<f32>, shift: Vec<f32>, act: Act) -> Result<()> {
        let y = self.out(n, 0, x.c, x.h, x.w);
        self.g.affine(&n.name, x.view, add, y.view, scale, shift, act)?;
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn activation(&mut self, n: &IrNode, act: Act) -> Result<()> {
        let x = self.act(n, 0)?;
        self.affine(n, &x, None, vec![1.0; x.c], vec![0.0; x.c], act)
    }

    fn lower_act(&mut self, n: &IrNode) -> Result<()> {
        let opset = self.ir.opset;
        match n.op.as_str() {
            "Identity" => {
                let x = self.act(n, 0)?;
                self.set(n, 0, Val::A(x));
            }
            "Dropout" => {
                if let Some(t) = self.cst(n, 2)? {
                    if t.i64s().first().is_some_and(|&v| v != 0) {
                        return Err(n.bad("training-mode dropout (random mask)"));
                    }
                }
                if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
                    return Err(n.bad("the mask output"));
                }
                let x = self.act(n, 0)?;
                self.set(n, 0, Val::A(x));
            }
            "Cast" => {
                let x = self.act(n, 0)?;
                let to = n.int("to", 0)? as i32;
                if to != dt::FLOAT || x.dtype != dt::FLOAT {
                    return Err(n.bad(format!("cast of an activation to {}", dt::name(to))));
                }
                self.set(n, 0, Val::A(x));
            }
            "Reshape" | "Transpose" => self.reshape(n)?,
            "Flatten" | "Squeeze" | "Unsqueeze" => {
                return Err(n.bad("reshaping an activation out of NCHW (atrous keeps activations as [1, C, H, W])"));
            }
            "Relu" => self.activation(n, Act::Relu)?,
            "Sigmoid" => self.activation(n, Act::Sigmoid)?,
            "HardSwish" => self.activation(n, Act::HardSwish)?,
            "Tanh" => self.activation(n, Act::Tanh)?,
            "Erf" => self.activation(n, Act::Erf)?,
            "HardSigmoid" => {
                let (a, b) = (n.float("alpha", 0.2)?, n.float("beta", 0.5)?);
                if (a - 1.0 / 6.0).abs() > 1e-6 || (b - 0.5).abs() > 1e-6 {
                    return Err(n.bad(format!("alpha {a}, beta {b}: atrous's hard sigmoid is alpha 1/6, beta 1/2 (PyTorch's)")));
                }
                self.activation(n, Act::HardSigmoid)?
            }
            "LeakyRelu" => {
                let x = self.act(n, 0)?;
                let a = n.float("alpha", 0.01)?;
                self.affine(n, &x, None, vec![1.0; x.c], vec![0.0; x.c], Act::PRelu(vec![a; x.c]))?
            }
            "PRelu" => {
                let x = self.act(n, 0)?;
                let s = self.need_cst(n, 1)?;
                let a = per_channel(&s, x.c).ok_or_else(|| n.bad(format!("slope of shape {:?}: per channel or one value", s.dims)))?;
                self.affine(n, &x, None, vec![1.0; x.c], vec![0.0; x.c], Act::PRelu(a))?
            }
            "Clip" => {
                let (lo, hi) = if opset < 11 {
                    (n.float("min", f32::NEG_INFINITY)?, n.float("max", f32::INFINITY)?)
                } else {
                    let lo = self.cst(n, 1)?.map(|c| c.f32s()[0]).unwrap_or(f32::NEG_INFINITY);
                    let hi = self.cst(n, 2)?.map(|c| c.f32s()[0]).unwrap_or(f32::INFINITY);
                    (lo, hi)
                };
                let act = match (lo, hi) {
                    (0.0, 6.0) => Act::Relu6,
                    (0.0, h) if h == f32::INFINITY => Act::Relu,
                    _ => return Err(n.bad(format!("clip to [{lo}, {hi}]: atrous fuses [0, 6] (ReLU6) and [0, inf) (ReLU)"))),
                };
                self.activation(n, act)?
            }
            "BatchNormalization" => {
                if n.int("training_mode", 0)? != 0 || n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(n.bad("training mode (batch statistics)"));
                }
                let x = self.act4(n, 0)?;
                let eps = n.float("epsilon", 1e-5)? as f64;
                let mut p = vec![];
                for i in 1..5 {
                    let t = self.need_cst(n, i)?;
                    if t.dims != [x.c] {
                        return Err(n.bad(format!("input {i} of shape {:?} for {} channels", t.dims, x.c)));
                    }
                    p.push(t.f32s());
                }
                let scale: Vec<f32> = (0..x.c).map(|c| (p[0][c] as f64 / (p[3][c] as f64 + eps).sqrt()) as f32).collect();
                let shift: Vec<f32> = (0..x.c).map(|c| (p[1][c] as f64 - p[2][c] as f64 * scale[c] as f64) as f32).collect();
                self.affine(n, &x, None, scale, shift, Act::None)?
            }
            "Add" | "Sub" | "Mul" | "Div" | "Sum" => self.binary(n)?,
            "Concat" => {
                let axis = n.int("axis", 1)?;
                if Self::axis4(n, axis, self.rank)? != 1 {
                    return Err(n.bad(format!("concatenation along axis {axis} of a rank-{} tensor: atrous concatenates the channel axis of NCHW", self.rank)));
                }
                let mut parts = vec![];
                for i in 0..n.inputs.len() {
                    parts.push(self.val(n, &n.inputs[i])?.ok_or_else(|| n.bad(format!("input {i} is missing")))?);
                }
                let first = parts.iter().find_map(|p| if let Val::A(a) = p { Some(a.clone()) } else { None }).ok_or_else(|| n.bad("no activation input"))?;
                let mut xs = vec![];
                for (i, p) in parts.into_iter().enumerate() {
                    match p {
                        Val::A(a) => xs.push(a),
                        Val::C(k) => xs.push(self.const_planes(n, i, &k, &first)?),
                    }
                }
                let (h, w) = (xs[0].h, xs[0].w);
                if xs.iter().any(|x| (x.h, x.w) != (h, w)) {
                    return Err(n.bad("inputs of different heights or widths"));
                }
                let c = xs.iter().map(|x| x.c).sum();
                let y = self.out(n, 0, c, h, w);
                self.g.push(&n.name, Concat { xs: xs.iter().map(|x| x.view).collect(), y: y.view })?;
                self.set(n, 0, Val::A(y));
            }
            "Split" => {
                let x = self.act(n, 0)?;
                let axis = n.int("axis", 0)?;
                if Self::axis4(n, axis, x.rank)? != 1 {
                    return Err(n.bad(format!("split along axis {axis} of a rank-{} tensor: atrous splits the channel axis of NCHW", x.rank)));
                }
                let k = n.outputs.len();
                let sizes: Vec<usize> = match if opset >= 13 { self.cst(n, 1)?.map(|t| t.i64s()) } else { n.ints("split")? } {
                    Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
                    None => {
                        let per = x.c.div_ceil(k);
                        (0..k).map(|i| per.min(x.c.saturating_sub(i * per))).collect()
                    }
                };
                if sizes.len() != k || sizes.iter().sum::<usize>() != x.c {
                    return Err(n.bad(format!("split sizes {sizes:?} for {} channels and {k} outputs", x.c)));
                }
                let mut c0 = 0;
                for (i, &s) in sizes.iter().enumerate() {
                    let v = ActV { view: View { tensor: x.view.tensor, c0: x.view.c0 + c0, c: s }, c: s, ..x.clone() };
                    self.set(n, i, Val::A(v));
                    c0 += s;
                }
            }
            "Slice" => self.slice(n)?,
            "Pad" => self.pad(n)?,
            "MaxPool" | "AveragePool" => self.pool(n)?,
            "GlobalAveragePool" => {
                let x = self.act4(n, 0)?;
                let y = self.out(n, 0, x.c, 1, 1);
                self.g.push(&n.name, AdaptiveAvgPool { x: x.view, y: y.view })?;
                self.set(n, 0, Val::A(y));
            }
            "ReduceMean" | "ReduceMax" => {
                // over the spatial axes, dimensions kept: global pooling
                let x = self.act4(n, 0)?;
                let axes = if self.ir.opset >= 18 { self.cst(n, 1)?.map(|t| t.i64s()) } else { n.ints("axes")? };
                let mut axes: Vec<usize> = axes.unwrap_or_else(|| vec![0, 1, 2, 3]).iter().map(|&a| Self::axis4(n, a, 4)).collect::<Result<_>>()?;
                axes.sort_unstable();
                if axes != [2, 3] || n.int("keepdims", 1)? != 1 {
                    return Err(n.bad(format!("reduction over axes {axes:?} (keepdims {}): atrous reduces height and width, keeping them", n.int("keepdims", 1)?)));
                }
                let y = self.out(n, 0, x.c, 1, 1);
                if n.op == "ReduceMean" {
                    self.g.push(&n.name, AdaptiveAvgPool { x: x.view, y: y.view })?;
                } else {
                    let geom = Pool2dGeom { c: x.c, in_h: x.h, in_w: x.w, k_h: x.h, k_w: x.w, stride_h: 1, stride_w: 1, pad_h: 0, pad_w: 0, ceil_mode: false, pad_b: 0, pad_r: 0, dil_h: 1, dil_w: 1 };
                    self.g.push(&n.name, Pool2d { x: x.view, y: y.view, geom, kind: PoolKind::Max })?;
                }
                self.set(n, 0, Val::A(y));
            }
            "GlobalMaxPool" => {
                let x = self.act4(n, 0)?;
                let y = self.out(n, 0, x.c, 1, 1);
                let geom = Pool2dGeom { c: x.c, in_h: x.h, in_w: x.w, k_h: x.h, k_w: x.w, stride_h: 1, stride_w: 1, pad_h: 0, pad_w: 0, ceil_mode: false, pad_b: 0, pad_r: 0, dil_h: 1, dil_w: 1 };
                self.g.push(&n.name, Pool2d { x: x.view, y: y.view, geom, kind: PoolKind::Max })?;
                self.set(n, 0, Val::A(y));
            }
            "MaxUnpool" => {
                let x = self.act4(n, 0)?;
                let i = self.act(n, 1)?;
                let k = n.ints("kernel_shape")?.ok_or_else(|| n.bad("no kernel_shape"))?;
                let s = n.ints("strides")?.unwrap_or(vec![1, 1]);
                let pads = n.ints("pads")?.unwrap_or(vec![0; 4]);
                if k != s || pads.iter().any(|&p| p != 0) || k.len() != 2 {
                    return Err(n.bad(format!("kernel {k:?}, strides {s:?}, pads {pads:?}: atrous unpools kernel = stride, no padding")));
                }
                let (oh, ow) = match self.cst(n, 2)? {
                    Some(t) => {
                        let v = t.i64s();
                        if v.len() != 4 || v[0] != 1 || v[1] != x.c as i64 {
                            return Err(n.bad(format!("output_shape {v:?}")));
                        }
                        (side(n, v[2].clamp(0, i64::MAX) as usize)?, side(n, v[3].clamp(0, i64::MAX) as usize)?)
                    }
                    None => ((x.h - 1) * s[0] as usize + k[0] as usize, (x.w - 1) * s[1] as usize + k[1] as usize),
                };
                let want: Vec<i64> = (0..x.c as i64).map(|c| c * (oh * ow) as i64).collect();
                if i.offset.as_ref() != Some(&want) && !(x.c == 1 && i.offset.as_ref().is_some_and(|o| o == &[0])) {
                    return Err(n.bad(format!("indices that are not flat indices into the {}x{}x{oh}x{ow} output (per-channel offsets {:?})", 1, x.c, i.offset)));
                }
                let y = self.out(n, 0, x.c, oh, ow);
                self.g.push(&n.name, MaxUnpool2d { x: x.view, idx: i.view, y: y.view, stride: (s[0] as usize, s[1] as usize) })?;
                self.set(n, 0, Val::A(y));
            }
            "Resize" | "Upsample" => self.resize(n)?,
            "Softmax" => {
                let x = self.act(n, 0)?;
                let axis = n.int("axis", if opset >= 13 { -1 } else { 1 })?;
                let ok = if opset >= 13 { Self::axis4(n, axis, x.rank)? == 1 } else { Self::axis4(n, axis, x.rank)? == 1 && x.h * x.w == 1 };
                if !ok {
                    return Err(n.bad(format!("softmax over axis {axis} (opset {opset}): atrous takes the softmax over channels")));
                }
                let y = self.out(n, 0, x.c, x.h, x.w);
                self.g.push(&n.name, Softmax { x: x.view, y: y.view, sigmoid: false })?;
                self.set(n, 0, Val::A(y));
            }
            "ArgMax" => {
                let x = self.act4(n, 0)?;
                if n.int("axis", 0)? != 1 || n.int("select_last_index", 0)? != 0 {
                    return Err(n.bad("arg max over anything but the channels (axis 1, first index)"));
                }
                self.argmax_of.insert(n.outputs[0].clone(), x);
            }
            "InstanceNormalization" => {
                let x = self.act4(n, 0)?;
                let (sc, b) = (self.need_cst(n, 1)?, self.need_cst(n, 2)?);
                if sc.dims != [x.c] || b.dims != [x.c] {
                    return Err(n.bad(format!("scale {:?} and bias {:?} for {} channels", sc.dims, b.dims, x.c)));
                }
                let y = self.out(n, 0, x.c, x.h, x.w);
                self.g.push(&n.name, crate::ops::InstanceNorm { x: x.view, y: y.view, scale: sc.f32s(), bias: b.f32s(), eps: n.float("epsilon", 1e-5)? })?;
                self.set(n, 0, Val::A(y));
            }
            "DepthToSpace" => {
                let x = self.act4(n, 0)?;
                let b = n.int("blocksize", 0)?;
                let mode = n.string("mode", "DCR")?;
                if !(1..=64).contains(&b) || !matches!(mode.as_str(), "DCR" | "CRD") || x.c % (b * b) as usize != 0 {
                    return Err(n.bad(format!("blocksize {b}, mode {mode} for {} channels", x.c)));
                }
                let b = b as usize;
                let y = self.out(n, 0, x.c / (b * b), x.h * b, x.w * b);
                self.g.push(&n.name, crate::ops::DepthToSpace { x: x.view, y: y.view, block: b, crd: mode == "CRD" })?;
                self.set(n, 0, Val::A(y));
            }
            "Conv" => self.conv(n)?,
            "ConvTranspose" => self.conv_transpose(n)?,
            op if SUPPORTED.contains(&op) => return Err(n.bad("this operator is folded only when all its inputs are constants")),
            _ => return Err(n.bad("unsupported operator")),
        }
        Ok(())
    }

    /// Reshape and Transpose of activations: no-ops on NCHW, and the channel shuffle pattern
    /// `[1,c,h,w] -> [1,a,b,h,w] -> transpose(0,2,1,3,4) -> [1,c,h,w]`, which becomes one channel
    /// gather (nothing at all where the map is the identity).
    fn reshape(&mut self, n: &IrNode) -> Result<()> {
        let x = self.act(n, 0)?;
        let dims: Vec<usize> = match &x.groups {
            Some((a, b, _)) => vec![1, *a, *b, x.h, x.w],
            None => [1, x.c, x.h, x.w][4 - x.rank..].to_vec(),
        };
        let bad = || n.bad(format!("{} of an activation of shape {dims:?} out of NCHW (atrous follows no-ops and channel shuffles)", n.op));
        if n.op == "Transpose" {
            let perm = n.ints("perm")?.unwrap_or_else(|| (0..dims.len() as i64).rev().collect());
            let ident: Vec<i64> = (0..dims.len() as i64).collect();
            if perm == ident {
                self.set(n, 0, Val::A(x));
                return Ok(());
            }
            let Some((a, b, map)) = x.groups.clone() else { return Err(bad()) };
            if perm != [0, 2, 1, 3, 4] {
                return Err(bad());
            }
            let swapped: Vec<usize> = (0..a * b).map(|k| map[(k % a) * b + k / a]).collect();
            self.set(n, 0, Val::A(ActV { groups: Some((b, a, swapped)), ..x }));
            return Ok(());
        }
        let s = self.need_cst(n, 1)?.i64s();
        let t = reshape_target(n, &dims, &s)?;
        if t.contains(&0) {
            return Err(bad());
        }
        if t == dims {
            self.set(n, 0, Val::A(x));
        } else if x.groups.is_none() && x.rank == 4 && t.len() == 5 && t[0] == 1 && (t[3], t[4]) == (x.h, x.w) {
            let ident: Vec<usize> = (0..x.c).collect();
            self.set(n, 0, Val::A(ActV { groups: Some((t[1], t[2], ident)), ..x }));
        } else if let (Some((_, _, map)), true) = (&x.groups, t == [1, x.c, x.h, x.w]) {
            if map.iter().enumerate().all(|(k, &m)| k == m) {
                self.set(n, 0, Val::A(ActV { groups: None, ..x }));
            } else {
                let y = self.out(n, 0, x.c, x.h, x.w);
                self.g.gather(&n.name, x.view, y.view, map.clone())?;
                self.set(n, 0, Val::A(y));
            }
        } else {
            return Err(bad());
        }
        Ok(())
    }

    fn binary(&mut self, n: &IrNode) -> Result<()> {
        let op = n.op.as_str();
        if op == "Sum" && n.inputs.len() != 2 {
            return Err(n.bad(format!("{} inputs: atrous adds two", n.inputs.len())));
        }
        let a = self.val(n, &n.inputs[0])?.ok_or_else(|| n.bad("missing input"))?;
        let b = self.val(n, &n.inputs[1])?.ok_or_else(|| n.bad("missing input"))?;
        let act_first = matches!(a, Val::A(_));
        match (a, b) {
            // arithmetic on max-pooling indices with per-channel integers moves their offsets
            (Val::A(x), Val::C(k)) | (Val::C(k), Val::A(x)) if x.offset.is_some() && !k.is_float() && matches!(op, "Add" | "Sub") && per_channel(&k, x.c).is_some() => {
                let kv = k.i64s();
                let kc: Vec<i64> = (0..x.c).map(|c| if kv.len() == 1 { kv[0] } else { kv[c] }).collect();
                if op == "Sub" && !act_first {
                    return Err(n.bad("a constant minus indices"));
                }
                let off: Vec<i64> = x.offset.as_ref().map(|o| o.iter().zip(&kc).map(|(a, b)| if op == "Add" { a + b } else { a - b }).collect()).unwrap_or_default();
                self.set(n, 0, Val::A(ActV { offset: Some(off), ..x }));
                Ok(())
            }
            (Val::A(x), _) | (_, Val::A(x)) if x.offset.is_some() => Err(n.bad("arithmetic on indices other than adding or subtracting per-channel integers")),
            (Val::A(x), Val::C(k)) | (Val::C(k), Val::A(x)) if per_channel(&k, x.c).is_some() => {
                let v = per_channel(&k, x.c).unwrap_or_default();
                let ones = vec![1.0; x.c];
                let zeros = vec![0.0; x.c];
                let (scale, shift) = match (op, act_first) {
                    ("Add" | "Sum", _) => (ones, v),
                    ("Sub", true) => (ones, v.iter().map(|s| -s).collect()),
                    ("Sub", false) => (vec![-1.0; x.c], v),
                    ("Mul", _) => (v, zeros),
                    ("Div", true) => (v.iter().map(|s| 1.0 / s).collect(), zeros),
                    _ => return Err(n.bad("a constant divided by an activation")),
                };
                self.affine(n, &x, None, scale, shift, Act::None)
            }
            (Val::A(x), Val::A(y)) => {
                let same = (x.c, x.h, x.w) == (y.c, y.h, y.w);
                match op {
                    "Add" | "Sum" if same => {
                        // an operand that a convolution made and nothing else reads is the input,
                        // the other the addend: in a chain of sums (ESPNet's hierarchical fusion)
                        // the running sum is then the addend, which may live in the
                        // concatenation's output, and the fusion pass moves the sum into that
                        // convolution
                        let conv_made = |v: &ActV| {
                            let w = self.g.writers(v.view.tensor);
                            w.len() == 1 && self.g.readers(v.view.tensor).is_empty() && matches!(self.g.nodes[w[0]].op.kind(), "conv2d" | "conv_transpose2d")
                        };
                        let (a, b) = if conv_made(&y) && !conv_made(&x) { (y, x) } else { (x, y) };
                        self.affine(n, &a, Some(b.view), vec![1.0; a.c], vec![0.0; a.c], Act::None)
                    }
                    "Sub" if same => {
                        // a - b = a + (-1 * b)
                        let nt = self.g.tensor(&format!("{}:neg", n.name), y.c, y.h, y.w);
                        let neg = ActV { view: self.g.all(nt), ..y.clone() };
                        self.g.affine(&format!("{}.neg", n.name), y.view, None, neg.view, vec![-1.0; y.c], vec![0.0; y.c], Act::None)?;
                        self.affine(n, &x, Some(neg.view), vec![1.0; x.c], vec![0.0; x.c], Act::None)
                    }
                    "Mul" => {
                        let (big, small) = if (y.h, y.w) == (1, 1) && (x.h, x.w) != (1, 1) { (x, y) } else { (y, x) };
                        if big.c != small.c || (small.h, small.w) != (big.h, big.w) && (small.h, small.w) != (1, 1) {
                            return Err(n.bad(format!("product of {}x{}x{} and {}x{}x{}: same shape or one value per channel", big.c, big.h, big.w, small.c, small.h, small.w)));
                        }
                        let out = self.out(n, 0, big.c, big.h, big.w);
                        self.g.push(&n.name, Mul { x: big.view, s: small.view, y: out.view })?;
                        self.set(n, 0, Val::A(out));
                        Ok(())
                    }
                    _ => Err(n.bad(format!("{op} of activations {}x{}x{} and {}x{}x{}", x.c, x.h, x.w, y.c, y.h, y.w))),
                }
            }
            (Val::A(_), Val::C(k)) | (Val::C(k), Val::A(_)) => Err(n.bad(format!("constant operand of shape {:?}: atrous broadcasts one value or one per channel", k.dims))),
            _ => unreachable!("constants are folded"),
        }
    }

    /// A constant that is one value per channel over `like`'s height and width, made on the
    /// device: a 1x1 convolution of `like` with zero weights and the values as bias (exact for
    /// finite activations). Exporters concatenate zero channels this way (ENet's padding).
    fn const_planes(&mut self, n: &IrNode, i: usize, k: &CTensor, like: &ActV) -> Result<ActV> {
        let d = &k.dims;
        if d.len() != 4 || d[0] != 1 || d[2] != like.h || d[3] != like.w {
            return Err(n.bad(format!("constant input {i} of shape {:?} beside activations of {}x{}", d, like.h, like.w)));
        }
        let (c, hw) = (d[1], like.h * like.w);
        let v = k.f32s();
        let vals: Vec<f32> = (0..c).map(|ch| v[ch * hw]).collect();
        if (0..c).any(|ch| v[ch * hw..(ch + 1) * hw].iter().any(|&x| x != vals[ch])) {
            return Err(n.bad(format!("constant input {i} varies over the image: atrous makes constants of one value per channel")));
        }
        let nm = format!("{}:const{i}", n.name);
        let t = self.g.tensor(&nm, c, like.h, like.w);
        let y = ActV { view: self.g.all(t), c, h: like.h, w: like.w, dtype: dt::FLOAT, offset: None, rank: like.rank, groups: None };
        let geom = Conv2dGeom { in_c: like.c, in_h: like.h, in_w: like.w, out_c: c, k_h: 1, k_w: 1, stride_h: 1, stride_w: 1, dil_h: 1, dil_w: 1, pad: Pad::default(), groups: 1 };
        self.g.conv2d(&nm, like.view, y.view, geom, vec![0.0; c * like.c], Some(vals), Act::None, None)?;
        Ok(y)
    }

    /// A (transposed) convolution's input, 4-D weight, bias, groups, strides and dilations.
    #[allow(clippy::type_complexity)]
    fn conv_inputs(&mut self, n: &IrNode) -> Result<(ActV, CTensor, Option<Vec<f32>>, usize, (usize, usize), (usize, usize))> {
        let x = self.act4(n, 0)?;
        let wt = self.need_cst(n, 1)?;
        let bias = self.cst(n, 2)?.map(CTensor::into_f32s);
        if wt.dims.len() != 4 {
            return Err(n.bad(format!("weight of shape {:?}: atrous runs 2-D convolutions", wt.dims)));
        }
        let groups = n.int("group", 1)?.max(1) as usize;
        Ok((x, wt, bias, groups, pair(n.ints("strides")?, n)?, pair(n.ints("dilations")?, n)?))
    }

    fn conv(&mut self, n: &IrNode) -> Result<()> {
        let (x, wt, bias, groups, s, d) = self.conv_inputs(n)?;
        let (m, cg, kh, kw) = (wt.dims[0], wt.dims[1], wt.dims[2], wt.dims[3]);
        if cg * groups != x.c {
            return Err(n.bad(format!("weight {:?} with {groups} groups for {} input channels", wt.dims, x.c)));
        }
        let pad = spatial_pads(n, (x.h, x.w), (kh, kw), s, d)?;
        let geom = Conv2dGeom { in_c: x.c, in_h: x.h, in_w: x.w, out_c: m, k_h: kh, k_w: kw, stride_h: s.0, stride_w: s.1, dil_h: d.0, dil_w: d.1, pad, groups };
        let (oh, ow) = geom.out_hw().map_err(|e| n.bad(e.to_string()))?;
        let y = self.out(n, 0, m, oh, ow);
        self.g.conv2d(&n.name, x.view, y.view, geom, wt.into_f32s(), bias, Act::None, None)?;
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn conv_transpose(&mut self, n: &IrNode) -> Result<()> {
        let (x, wt, bias, groups, s, d) = self.conv_inputs(n)?;
        let (ci, mg, kh, kw) = (wt.dims[0], wt.dims[1], wt.dims[2], wt.dims[3]);
        if ci != x.c {
            return Err(n.bad(format!("weight {:?} for {} input channels", wt.dims, x.c)));
        }
        let op = n.ints("output_padding")?.unwrap_or(vec![0, 0]);
        if op.len() != 2 || op.iter().any(|&v| !(0..=crate::models::MAX_SIDE as i64).contains(&v)) {
            return Err(n.bad(format!("output_padding {op:?}")));
        }
        let mut out_pad = [op[0] as usize, op[1] as usize];
        let auto = n.string("auto_pad", "NOTSET")?;
        let target: Option<Vec<i64>> = match n.ints("output_shape")? {
            Some(v) => Some(v[v.len().saturating_sub(2)..].to_vec()),
            None if auto.starts_with("SAME") => Some(vec![(x.h * s.0) as i64, (x.w * s.1) as i64]),
            None => None,
        };
        let pad = match target {
            Some(t) if t.len() == 2 => {
                let ins = [x.h, x.w];
                let (ks, ss, ds) = ([kh, kw], [s.0, s.1], [d.0, d.1]);
                let mut p = [0i64; 4];
                for a in 0..2 {
                    let total = (ss[a] * (ins[a] - 1) + out_pad[a] + (ks[a] - 1) * ds[a] + 1) as i64 - t[a];
                    let (half, rest) = (total.div_euclid(2), total - total.div_euclid(2));
                    let (b, e) = if auto == "SAME_UPPER" { (half, rest) } else { (rest, half) };
                    p[a] = b;
                    p[a + 2] = e;
                }
                for a in 0..2 {
                    if p[a + 2] < 0 {
                        out_pad[a] += (-p[a + 2]) as usize;
                        p[a + 2] = 0;
                    }
                }
                if p.iter().any(|&v| v < 0) {
                    return Err(n.bad(format!("output shape {t:?} needs negative leading padding")));
                }
                Pad { top: p[0] as usize, left: p[1] as usize, bottom: p[2] as usize, right: p[3] as usize }
            }
            Some(t) => return Err(n.bad(format!("output_shape {t:?}"))),
            None => explicit_pads(n)?,
        };
        let geom = ConvT2dGeom { in_c: x.c, in_h: x.h, in_w: x.w, out_c: mg * groups, k_h: kh, k_w: kw, stride_h: s.0, stride_w: s.1, dil_h: d.0, dil_w: d.1, pad, out_pad_h: out_pad[0], out_pad_w: out_pad[1], groups };
        let (oh, ow) = geom.out_hw().map_err(|e| n.bad(e.to_string()))?;
        let y = self.out(n, 0, mg * groups, oh, ow);
        self.g.push(&n.name, ConvT2d { x: x.view, y: y.view, add: None, geom, weight: wt.into_f32s(), bias, act: Act::None })?;
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn pool(&mut self, n: &IrNode) -> Result<()> {
        let x = self.act4(n, 0)?;
        let k = n.ints("kernel_shape")?.ok_or_else(|| n.bad("no kernel_shape"))?;
        if k.len() != 2 {
            return Err(n.bad(format!("kernel {k:?}: atrous pools 2-D")));
        }
        let (kh, kw) = pair(Some(k.clone()), n)?;
        let s = pair(n.ints("strides")?, n)?;
        let d = pair(n.ints("dilations")?, n)?;
        if n.int("storage_order", 0)? != 0 {
            return Err(n.bad("column-major indices (storage_order 1)"));
        }
        let pad = spatial_pads(n, (x.h, x.w), (kh, kw), s, d)?;
        let with_idx = n.op == "MaxPool" && n.outputs.len() > 1 && !n.outputs[1].is_empty();
        if with_idx && (kh, kw) == (1, 1) && s == (1, 1) && pad == Pad::default() {
            // a 1x1 pool is the identity, and its indices are every position's own flat index
            // (exporters use it to find each channel's offset): nothing runs
            check_numel(n, &[x.c, x.h, x.w])?;
            let iota: Vec<i64> = (0..(x.c * x.h * x.w) as i64).collect();
            self.set(n, 0, Val::A(x.clone()));
            self.set(n, 1, Val::C(CTensor::ints(vec![1, x.c, x.h, x.w], iota)));
            return Ok(());
        }
        let geom = Pool2dGeom {
            c: x.c,
            in_h: x.h,
            in_w: x.w,
            k_h: kh,
            k_w: kw,
            stride_h: s.0,
            stride_w: s.1,
            pad_h: pad.top,
            pad_w: pad.left,
            ceil_mode: n.int("ceil_mode", 0)? != 0,
            pad_b: pad.bottom,
            pad_r: pad.right,
            dil_h: d.0,
            dil_w: d.1,
        };
        let (oh, ow) = geom.out_hw().map_err(|e| n.bad(e.to_string()))?;
        if with_idx {
            let y = self.out(n, 0, x.c, oh, ow);
            let mut i = self.out_of(n, 1, x.c, oh, ow, DType::U32);
            i.offset = Some((0..x.c as i64).map(|c| c * (x.h * x.w) as i64).collect());
            self.g.push(&n.name, MaxPool2dIdx { x: x.view, y: y.view, idx: i.view, geom })?;
            self.set(n, 0, Val::A(y));
            self.set(n, 1, Val::A(i));
            return Ok(());
        }
        let kind = if n.op == "MaxPool" { PoolKind::Max } else { PoolKind::Avg { count_include_pad: n.int("count_include_pad", 0)? != 0 } };
        let y = self.out(n, 0, x.c, oh, ow);
        self.g.push(&n.name, Pool2d { x: x.view, y: y.view, geom, kind })?;
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn slice(&mut self, n: &IrNode) -> Result<()> {
        let x = self.act(n, 0)?;
        let opset = self.ir.opset;
        let (starts, ends, axes, steps) = if opset < 10 {
            (n.ints("starts")?.unwrap_or_default(), n.ints("ends")?.unwrap_or_default(), n.ints("axes")?, None)
        } else {
            let s = self.need_cst(n, 1)?.i64s();
            let e = self.need_cst(n, 2)?.i64s();
            (s, e, self.cst(n, 3)?.map(|t| t.i64s()), self.cst(n, 4)?.map(|t| t.i64s()))
        };
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let dims = [1, x.c, x.h, x.w];
        let mut lo = [0usize; 4];
        let mut hi = dims;
        for (i, &a) in axes.iter().enumerate() {
            let a = Self::axis4(n, a, x.rank)?;
            if steps.as_ref().is_some_and(|s| s.get(i).copied().unwrap_or(1) != 1) {
                return Err(n.bad("steps other than 1 on an activation"));
            }
            let dim = dims[a] as i64;
            let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
            lo[a] = clamp(*starts.get(i).ok_or_else(|| n.bad("fewer starts than axes"))?);
            hi[a] = clamp(*ends.get(i).ok_or_else(|| n.bad("fewer ends than axes"))?).max(lo[a]);
        }
        if lo[0] != 0 || hi[0] != 1 {
            return Err(n.bad("slicing the batch axis"));
        }
        let (c, h, w) = (hi[1] - lo[1], hi[2] - lo[2], hi[3] - lo[3]);
        if c == 0 || h == 0 || w == 0 {
            return Err(n.bad("an empty slice"));
        }
        let xv = View { tensor: x.view.tensor, c0: x.view.c0 + lo[1], c };
        if (h, w) == (x.h, x.w) {
            // channels only: a view, nothing runs
            self.set(n, 0, Val::A(ActV { view: xv, c, ..x }));
            return Ok(());
        }
        let y = self.out(n, 0, c, h, w);
        self.g.push(&n.name, Crop { x: xv, y: y.view, top: lo[2], left: lo[3] })?;
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn pad(&mut self, n: &IrNode) -> Result<()> {
        let x = self.act4(n, 0)?;
        let mode = n.string("mode", "constant")?;
        if mode != "constant" {
            return Err(n.bad(format!("{mode} padding: atrous pads with a constant zero")));
        }
        let (pads, value, axes) = if self.ir.opset < 11 {
            (n.ints("pads")?.ok_or_else(|| n.bad("no pads"))?, n.float("value", 0.0)?, None)
        } else {
            let p = self.need_cst(n, 1)?.i64s();
            let v = self.cst(n, 2)?.map(|t| t.f32s().first().copied().unwrap_or(0.0)).unwrap_or(0.0);
            (p, v, self.cst(n, 3)?.map(|t| t.i64s()))
        };
        let axes: Vec<usize> = axes.unwrap_or_else(|| (0..4).collect()).iter().map(|&a| if a < 0 { (a + 4) as usize } else { a as usize }).collect();
        if pads.len() != 2 * axes.len() {
            return Err(n.bad(format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        let mut p = [[0i64; 2]; 4];
        for (i, &a) in axes.iter().enumerate() {
            if a >= 4 {
                return Err(n.bad(format!("axis {a}")));
            }
            p[a] = [pads[i], pads[i + axes.len()]];
        }
        if p[0] != [0, 0] || p[1] != [0, 0] {
            return Err(n.bad("padding the batch or channel axis"));
        }
        if p.iter().flatten().any(|&v| !(0..=crate::models::MAX_SIDE as i64).contains(&v)) {
            return Err(n.bad(format!("padding {p:?}")));
        }
        if !value.is_finite() {
            return Err(n.bad(format!("padding value {value}")));
        }
        // constant padding is a depthwise 1x1 convolution with unit weights and that padding, of
        // x - value, plus value as bias (so the padding reads `value`)
        let x = if value == 0.0 {
            x
        } else {
            let t = self.g.tensor(&format!("{}:shifted", n.name), x.c, x.h, x.w);
            let xs = ActV { view: self.g.all(t), ..x.clone() };
            self.g.affine(&format!("{}.shift", n.name), x.view, None, xs.view, vec![1.0; x.c], vec![-value; x.c], Act::None)?;
            xs
        };
        let pad = Pad { top: p[2][0] as usize, bottom: p[2][1] as usize, left: p[3][0] as usize, right: p[3][1] as usize };
        let geom = Conv2dGeom { in_c: x.c, in_h: x.h, in_w: x.w, out_c: x.c, k_h: 1, k_w: 1, stride_h: 1, stride_w: 1, dil_h: 1, dil_w: 1, pad, groups: x.c };
        let (oh, ow) = geom.out_hw().map_err(|e| n.bad(e.to_string()))?;
        let y = self.out(n, 0, x.c, oh, ow);
        self.g.conv2d(&n.name, x.view, y.view, geom, vec![1.0; x.c], (value != 0.0).then(|| vec![value; x.c]), Act::None, None)?;
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn resize(&mut self, n: &IrNode) -> Result<()> {
        let x = self.act4(n, 0)?;
        let opset = self.ir.opset;
        let upsample = n.op == "Upsample";
        let (scales, sizes) = if upsample {
            (Some(if opset >= 9 { self.need_cst(n, 1)?.f32s() } else { n.floats("scales")?.unwrap_or_default() }), None)
        } else if opset < 11 {
            (Some(self.need_cst(n, 1)?.f32s()), None)
        } else {
            let sc = self.cst(n, 2)?.map(|t| t.f32s()).filter(|v| !v.is_empty());
            let sz = self.cst(n, 3)?.map(|t| t.i64s()).filter(|v| !v.is_empty());
            (sc, sz)
        };
        let axes: Vec<usize> = match n.ints("axes")? {
            Some(a) => a.iter().map(|&v| if v < 0 { (v + 4) as usize } else { v as usize }).collect(),
            None => (0..4).collect(),
        };
        let dims = [1usize, x.c, x.h, x.w];
        let mut scale = [1f64; 4];
        let mut out = dims;
        if let Some(sz) = &sizes {
            if sz.len() != axes.len() {
                return Err(n.bad(format!("{} sizes for {} axes", sz.len(), axes.len())));
            }
            let policy = n.string("keep_aspect_ratio_policy", "stretch")?;
            let ratios: Vec<f64> = axes.iter().zip(sz).map(|(&a, &s)| s as f64 / dims[a] as f64).collect();
            let r = match policy.as_str() {
                "not_larger" => Some(ratios.iter().cloned().fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some(ratios.iter().cloned().fold(0.0, f64::max)),
                _ => None,
            };
            for (i, &a) in axes.iter().enumerate() {
                match r {
                    Some(r) => {
                        scale[a] = r;
                        out[a] = (dims[a] as f64 * r).round() as usize;
                    }
                    None => {
                        scale[a] = ratios[i];
                        out[a] = sz[i].max(0) as usize;
                    }
                }
            }
        } else if let Some(sc) = &scales {
            if sc.len() != axes.len() {
                return Err(n.bad(format!("{} scales for {} axes", sc.len(), axes.len())));
            }
            for (i, &a) in axes.iter().enumerate() {
                scale[a] = sc[i] as f64;
                out[a] = (dims[a] as f64 * sc[i] as f64).floor() as usize;
            }
        } else {
            return Err(n.bad("neither scales nor sizes"));
        }
        if out[0] != 1 || out[1] != x.c {
            return Err(n.bad("resizing the batch or channel axis"));
        }
        let (oh, ow) = (side(n, out[2])?, side(n, out[3])?);
        let mode = n.string("mode", "nearest")?;
        let ct = if upsample || opset < 11 { "asymmetric".to_string() } else { n.string("coordinate_transformation_mode", "half_pixel")? };
        let antialias = n.int("antialias", 0)? != 0;
        let exclude = n.int("exclude_outside", 0)? != 0;
        let nm = if upsample || opset < 11 { "floor".to_string() } else { n.string("nearest_mode", "round_prefer_floor")? };
        let exact = |a: usize| (dims[a] as f64 * scale[a] - out[a] as f64).abs() < 1e-9;
        let y = self.out(n, 0, x.c, oh, ow);
        // the fixed kernels where they compute exactly what ONNX asks
        let fast = match mode.as_str() {
            "nearest" if !antialias => [2, 3].iter().all(|&a| (0..out[a]).all(|i| nearest_index(i, dims[a], out[a], scale[a], &ct, &nm) == Some(i * dims[a] / out[a]))).then_some(None),
            "linear" if !antialias && ct == "align_corners" && exact(2) && exact(3) => Some(Some(true)),
            "linear" if !antialias && matches!(ct.as_str(), "half_pixel" | "half_pixel_symmetric") && exact(2) && exact(3) => Some(Some(false)),
            "linear" if !antialias && ct == "pytorch_half_pixel" && exact(2) && exact(3) && oh > 1 && ow > 1 => Some(Some(false)),
            _ => None,
        };
        match fast {
            Some(None) => self.g.push(&n.name, UpsampleNearest { x: x.view, y: y.view })?,
            Some(Some(align)) => self.g.push(&n.name, Resize { x: x.view, y: y.view, align_corners: align })?,
            None => {
                use crate::ops::resample::{onnx_axis, Interp, Resample};
                let interp = match mode.as_str() {
                    "nearest" => Interp::Nearest(&nm),
                    "linear" => Interp::Linear,
                    "cubic" => Interp::Cubic(n.float("cubic_coeff_a", -0.75)? as f64),
                    m => return Err(n.bad(format!("{m} interpolation"))),
                };
                // roi: starts then ends, over all axes or over `axes`
                let roi: Vec<f64> = if ct == "tf_crop_and_resize" { self.cst(n, 1)?.map(|t| t.f32s().iter().map(|&v| v as f64).collect()).unwrap_or_default() } else { vec![] };
                let roi_of = |a: usize| -> (f64, f64) {
                    let k = axes.iter().position(|&x| x == a);
                    match (k, roi.len()) {
                        (Some(k), l) if l == 2 * axes.len() => (roi[k], roi[k + axes.len()]),
                        (_, 8) => (roi[a], roi[a + 4]),
                        _ => (0.0, 1.0),
                    }
                };
                let ext = n.float("extrapolation_value", 0.0)?;
                let axis = |a: usize| onnx_axis(dims[a], out[a], scale[a], interp, &ct, roi_of(a), exclude, antialias).map_err(|e| n.bad(e));
                let (rows, cols) = (axis(2)?, axis(3)?);
                self.g.push(&n.name, Resample::new(x.view, y.view, &rows, &cols, ext))?;
            }
        }
        self.set(n, 0, Val::A(y));
        Ok(())
    }

    fn finish(mut self) -> Result<Lowered> {
        let mut outputs = vec![];
        for o in &self.ir.outputs {
            if let Some(x) = self.argmax_of.get(&o.name).cloned() {
                let id = self.own_tensor(&o.name, &x)?;
                self.g.set_logits(id);
                outputs.push((o.name.clone(), LoweredOut::Tensor { id, dims: vec![1, 1, x.h, x.w], dtype: dt::INT64, offset: None }));
                continue;
            }
            match self.vals.get(&o.name).cloned() {
                Some(Val::C(c)) => outputs.push((o.name.clone(), LoweredOut::Const(c))),
                Some(Val::A(a)) => {
                    let id = self.own_tensor(&o.name, &a)?;
                    if self.g.logits.is_none() && self.g.tensors[id].dtype == DType::F32 {
                        self.g.set_logits(id);
                    }
                    self.g.add_output(id);
                    outputs.push((o.name.clone(), LoweredOut::Tensor { id, dims: [1, a.c, a.h, a.w][4 - a.rank..].to_vec(), dtype: a.dtype, offset: a.offset.clone() }));
                }
                None => return Err(Error::OnnxTensor { tensor: o.name.clone(), reason: "graph output that no node writes".into() }),
            }
        }
        Ok(Lowered { graph: self.g, outputs })
    }

    /// A tensor holding exactly `a`: its own tensor when the view covers it, else a copy.
    fn own_tensor(&mut self, name: &str, a: &ActV) -> Result<TensorId> {
        let t = &self.g.tensors[a.view.tensor];
        if a.view.c0 == 0 && a.view.c == t.c {
            return Ok(a.view.tensor);
        }
        let y = self.g.tensor(&format!("{name}:out"), a.c, a.h, a.w);
        self.g.copy(&format!("{name}.copy"), a.view, self.g.all(y))?;
        Ok(y)
    }
}

/// ONNX Reshape's target for a tensor of `dims`: 0 copies the input's dimension (unless
/// `allowzero`), one -1 takes what is left; the element count must not change.
fn reshape_target(n: &IrNode, dims: &[usize], s: &[i64]) -> Result<Vec<usize>> {
    let allow0 = n.int("allowzero", 0)? != 0;
    let mut t: Vec<i64> = s.iter().enumerate().map(|(i, &v)| if v == 0 && !allow0 { dims.get(i).copied().unwrap_or(0) as i64 } else { v }).collect();
    let total: usize = dims.iter().product();
    let known: i64 = t.iter().filter(|&&v| v != -1).product();
    if let Some(p) = t.iter().position(|&v| v == -1) {
        t[p] = if known > 0 { total as i64 / known } else { 0 };
    }
    if t.iter().any(|&v| v < 0) || t.iter().map(|&v| v as usize).product::<usize>() != total {
        return Err(n.bad(format!("reshape of {dims:?} to {s:?}")));
    }
    Ok(t.iter().map(|&v| v as usize).collect())
}

fn unknown_input(n: &IrNode, name: &str) -> Error {
    n.bad(format!("input `{name}` is neither a graph input, an initializer nor an earlier node's output"))
}

/// The source index ONNX's nearest resize reads for output `i` (`None`: a mode atrous does not know).
fn nearest_index(i: usize, len: usize, out: usize, scale: f64, ct: &str, nm: &str) -> Option<usize> {
    let i = i as f64;
    let x = match ct {
        "half_pixel" => (i + 0.5) / scale - 0.5,
        "pytorch_half_pixel" => {
            if out > 1 {
                (i + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        "asymmetric" => i / scale,
        "align_corners" => {
            if out == 1 {
                0.0
            } else {
                i * (len as f64 - 1.0) / (out as f64 - 1.0)
            }
        }
        "half_pixel_symmetric" => {
            let adj = out as f64 / (scale * len as f64);
            let c = len as f64 / 2.0;
            let off = c * (1.0 - adj);
            off + (i + 0.5) / scale - 0.5
        }
        _ => return None,
    };
    let r = match nm {
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        "round_prefer_ceil" => (x + 0.5).floor(),
        _ => {
            // round_prefer_floor
            if x.fract() == 0.5 || x.fract() == -0.5 {
                x.floor()
            } else {
                x.round()
            }
        }
    };
    Some(r.clamp(0.0, len as f64 - 1.0) as usize)
}

/// Per-channel values of a constant broadcast (NumPy rules) against `[1, c, h, w]`: one value, or
/// a shape that pads on the left to `[1, c, 1, 1]` (`[c, 1, 1]`, `[1, c, 1, 1]`). A rank-1 `[c]`
/// aligns with the width, so it is not per channel.
fn per_channel(k: &CTensor, c: usize) -> Option<Vec<f32>> {
    let v = k.f32s();
    if k.numel() == 1 {
        return Some(vec![v[0]; c]);
    }
    let mut d = k.dims.clone();
    if d.len() > 4 {
        return None;
    }
    while d.len() < 4 {
        d.insert(0, 1);
    }
    (d[0] == 1 && d[1] == c && d[2] == 1 && d[3] == 1).then_some(v)
}

/// The most elements a folded constant may have (shape computations are tiny; a file that asks
/// for more is refused rather than allocated).
const MAX_CONST: usize = 1 << 24;

fn check_numel(n: &IrNode, dims: &[usize]) -> Result<()> {
    match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(t) if t <= MAX_CONST => Ok(()),
        _ => Err(n.bad(format!("a constant of shape {dims:?} is larger than atrous folds ({MAX_CONST} elements)"))),
    }
}

/// An activation side from a file's constants, checked against [`crate::models::MAX_SIDE`].
fn side(n: &IrNode, v: usize) -> Result<usize> {
    if v == 0 || v > crate::models::MAX_SIDE {
        return Err(n.bad(format!("an output side of {v} (1..={} supported)", crate::models::MAX_SIDE)));
    }
    Ok(v)
}

fn pair(v: Option<Vec<i64>>, n: &IrNode) -> Result<(usize, usize)> {
    match v.as_deref() {
        None => Ok((1, 1)),
        Some([a, b]) if (1..=crate::models::MAX_SIDE as i64).contains(a) && (1..=crate::models::MAX_SIDE as i64).contains(b) => Ok((*a as usize, *b as usize)),
        Some(o) => Err(n.bad(format!("{o:?}: atrous takes two positive values (2-D)"))),
    }
}

fn explicit_pads(n: &IrNode) -> Result<Pad> {
    match n.ints("pads")?.as_deref() {
        None => Ok(Pad::default()),
        Some([t, l, b, r]) if [*t, *l, *b, *r].iter().all(|&v| (0..=crate::models::MAX_SIDE as i64).contains(&v)) => Ok(Pad { top: *t as usize, left: *l as usize, bottom: *b as usize, right: *r as usize }),
        Some(p) => Err(n.bad(format!("pads {p:?}"))),
    }
}

/// Padding from `pads` or `auto_pad` (ONNX's SAME_UPPER / SAME_LOWER / VALID rules).
fn spatial_pads(n: &IrNode, inp: (usize, usize), k: (usize, usize), s: (usize, usize), d: (usize, usize)) -> Result<Pad> {
    let auto = n.string("auto_pad", "NOTSET")?;
    match auto.as_str() {
        "NOTSET" => explicit_pads(n),
        "VALID" => Ok(Pad::default()),
        "SAME_UPPER" | "SAME_LOWER" => {
            let one = |i: usize, k: usize, s: usize, d: usize| {
                let out = i.div_ceil(s);
                let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(i);
                let (small, big) = (total / 2, total - total / 2);
                if auto == "SAME_UPPER" {
                    (small, big)
                } else {
                    (big, small)
                }
            };
            let (t, b) = one(inp.0, k.0, s.0, d.0);
            let (l, r) = one(inp.1, k.1, s.1, d.1);
            Ok(Pad { top: t, bottom: b, left: l, right: r })
        }
        a => Err(n.bad(format!("auto_pad {a}"))),
    }
}

/// A `Constant` node's value.
fn constant(n: &IrNode, tensor: &dyn Fn(&str, i32) -> Result<CTensor>) -> Result<CTensor> {
    let (k, a) = n.attrs.iter().next().ok_or_else(|| n.bad("no value"))?;
    Ok(match (k.as_str(), a) {
        ("value", Attr::Tensor(name)) => tensor(name, 0)?,
        ("value_float", Attr::Float(f)) => CTensor::floats(vec![], vec![*f]),
        ("value_floats", Attr::Floats(f)) => CTensor::floats(vec![f.len()], f.clone()),
        ("value_int", Attr::Int(i)) => CTensor::ints(vec![], vec![*i]),
        ("value_ints", Attr::Ints(i)) => CTensor::ints(vec![i.len()], i.clone()),
        _ => return Err(n.bad(format!("constant attribute `{k}`"))),
    })
}

// ---- constant folding: small N-d tensors on the CPU ----

fn strides_of(d: &[usize]) -> Vec<usize> {
    let mut s = vec![1; d.len()];
    for i in (0..d.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * d[i + 1];
    }
    s
}

/// NumPy broadcasting of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let get = |d: &[usize], i: usize| if i + d.len() >= r { d[i + d.len() - r] } else { 1 };
    (0..r)
        .map(|i| {
            let (x, y) = (get(a, i), get(b, i));
            if x == y || y == 1 {
                Some(x)
            } else if x == 1 {
                Some(y)
            } else {
                None
            }
        })
        .collect()
}

/// The element of a tensor of shape `d` that output position `idx` (of rank >= d's) reads.
fn bindex(idx: &[usize], d: &[usize]) -> usize {
    let off = idx.len() - d.len();
    let st = strides_of(d);
    d.iter().enumerate().map(|(i, &n)| if n == 1 { 0 } else { idx[off + i] * st[i] }).sum()
}

fn unravel(mut i: usize, d: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; d.len()];
    for k in (0..d.len()).rev() {
        idx[k] = i % d[k].max(1);
        i /= d[k].max(1);
    }
    idx
}

fn same_kind(dtype: i32, f: Vec<f64>) -> CData {
    if matches!(dtype, dt::FLOAT | dt::FLOAT16 | dt::DOUBLE) {
        CData::F(f.into_iter().map(|v| v as f32).collect())
    } else {
        CData::I(f.into_iter().map(|v| v as i64).collect())
    }
}

fn as_f64(c: &CTensor) -> Vec<f64> {
    match &c.data {
        CData::F(v) => v.iter().map(|&x| x as f64).collect(),
        CData::I(v) => v.iter().map(|&x| x as f64).collect(),
    }
}

fn norm_axis(a: i64, r: usize, n: &IrNode) -> Result<usize> {
    let v = if a < 0 { a + r as i64 } else { a };
    if v < 0 || v as usize >= r.max(1) {
        return Err(n.bad(format!("axis {a} for rank {r}")));
    }
    Ok(v as usize)
}

/// Evaluates a node whose inputs are all constants.
fn fold(n: &IrNode, ins: &[Option<CTensor>], opset: i64, tensor: &dyn Fn(&str, i32) -> Result<CTensor>) -> Result<Vec<CTensor>> {
    let get = |i: usize| ins.get(i).and_then(|v| v.as_ref()).ok_or_else(|| n.bad(format!("input {i} is missing")));
    let one = |c: CTensor| Ok(vec![c]);
    match n.op.as_str() {
        "Identity" | "Dropout" => one(get(0)?.clone()),
        "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Max" | "Min" | "Pow" => {
            let (a, b) = (get(0)?, get(1)?);
            let d = broadcast(&a.dims, &b.dims).ok_or_else(|| n.bad(format!("shapes {:?} and {:?} do not broadcast", a.dims, b.dims)))?;
            check_numel(n, &d)?;
            let (av, bv) = (as_f64(a), as_f64(b));
            let int = !a.is_float();
            let total: usize = d.iter().product();
            let v: Vec<f64> = (0..total)
                .map(|i| {
                    let idx = unravel(i, &d);
                    let (x, y) = (av[bindex(&idx, &a.dims)], bv[bindex(&idx, &b.dims)]);
                    match n.op.as_str() {
                        "Add" | "Sum" => x + y,
                        "Sub" => x - y,
                        "Mul" => x * y,
                        "Div" if int => (x / y).trunc(),
                        "Div" => x / y,
                        "Max" => x.max(y),
                        "Min" => x.min(y),
                        _ => x.powf(y),
                    }
                })
                .collect();
            let data = if int { CData::I(v.iter().map(|&x| x as i64).collect()) } else { CData::F(v.iter().map(|&x| x as f32).collect()) };
            one(CTensor { dims: d, dtype: a.dtype, data })
        }
        "Floor" | "Ceil" | "Neg" | "Sqrt" | "Relu" => {
            let a = get(0)?;
            let v: Vec<f64> = as_f64(a)
                .into_iter()
                .map(|x| match n.op.as_str() {
                    "Floor" => x.floor(),
                    "Ceil" => x.ceil(),
                    "Neg" => -x,
                    "Relu" => x.max(0.0),
                    _ => x.sqrt(),
                })
                .collect();
            one(CTensor { dims: a.dims.clone(), dtype: a.dtype, data: same_kind(a.dtype, v) })
        }
        "Cast" => {
            let a = get(0)?;
            let to = n.int("to", 0)? as i32;
            let data = match to {
                dt::FLOAT | dt::DOUBLE => CData::F(a.f32s()),
                dt::FLOAT16 => CData::F(a.f32s().iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()),
                dt::BOOL => CData::I(as_f64(a).iter().map(|&v| (v != 0.0) as i64).collect()),
                dt::INT64 | dt::INT32 | dt::INT16 | dt::INT8 | dt::UINT8 | dt::UINT16 | dt::UINT32 | dt::UINT64 => CData::I(a.i64s()),
                t => return Err(n.bad(format!("cast to {}", dt::name(t)))),
            };
            one(CTensor { dims: a.dims.clone(), dtype: to, data })
        }
        "Gather" => {
            let (a, idx) = (get(0)?, get(1)?);
            let axis = norm_axis(n.int("axis", 0)?, a.dims.len(), n)?;
            let (outer, len, inner): (usize, usize, usize) = (a.dims[..axis].iter().product(), a.dims[axis], a.dims[axis + 1..].iter().product());
            let ids: Vec<usize> =
                idx.i64s().iter().map(|&i| if i < 0 { i + len as i64 } else { i }).map(|i| usize::try_from(i).ok().filter(|&i| i < len).ok_or_else(|| n.bad(format!("index {i} outside {len}")))).collect::<Result<_>>()?;
            let src = as_f64(a);
            let mut v = vec![];
            for o in 0..outer {
                for &i in &ids {
                    v.extend_from_slice(&src[(o * len + i) * inner..(o * len + i + 1) * inner]);
                }
            }
            let mut dims = a.dims[..axis].to_vec();
            dims.extend(&idx.dims);
            dims.extend(&a.dims[axis + 1..]);
            one(CTensor { dims, dtype: a.dtype, data: same_kind(a.dtype, v) })
        }
        "Unsqueeze" | "Squeeze" => {
            let a = get(0)?;
            let axes = if opset >= 13 { ins.get(1).and_then(|v| v.as_ref()).map(|t| t.i64s()) } else { n.ints("axes")? };
            let mut dims = a.dims.clone();
            if n.op == "Unsqueeze" {
                let axes = axes.ok_or_else(|| n.bad("no axes"))?;
                let r = dims.len() + axes.len();
                let mut ax: Vec<usize> = axes.iter().map(|&x| norm_axis(x, r, n)).collect::<Result<_>>()?;
                ax.sort_unstable();
                for x in ax {
                    dims.insert(x, 1);
                }
            } else {
                match axes {
                    Some(axes) => {
                        let mut ax: Vec<usize> = axes.iter().map(|&x| norm_axis(x, dims.len(), n)).collect::<Result<_>>()?;
                        ax.sort_unstable();
                        for x in ax.into_iter().rev() {
                            if dims[x] != 1 {
                                return Err(n.bad(format!("squeezing axis {x} of size {}", dims[x])));
                            }
                            dims.remove(x);
                        }
                    }
                    None => dims.retain(|&d| d != 1),
                }
            }
            one(CTensor { dims, ..a.clone() })
        }
        "Reshape" => {
            let (a, s) = (get(0)?, get(1)?.i64s());
            one(CTensor { dims: reshape_target(n, &a.dims, &s)?, ..a.clone() })
        }
        "Flatten" => {
            let a = get(0)?;
            let axis = n.int("axis", 1)?;
            let axis = if axis < 0 { axis + a.dims.len() as i64 } else { axis } as usize;
            let outer: usize = a.dims[..axis.min(a.dims.len())].iter().product();
            one(CTensor { dims: vec![outer, a.numel() / outer.max(1)], ..a.clone() })
        }
        "Concat" => {
            let parts: Vec<&CTensor> = ins.iter().flatten().collect();
            let first = parts.first().ok_or_else(|| n.bad("no inputs"))?;
            let axis = norm_axis(n.int("axis", 0)?, first.dims.len(), n)?;
            let outer: usize = first.dims[..axis].iter().product();
            let mut v = vec![];
            let mut len = 0;
            for o in 0..outer {
                for p in &parts {
                    if p.dims.len() != first.dims.len() {
                        return Err(n.bad("inputs of different ranks"));
                    }
                    let inner: usize = p.dims[axis..].iter().product();
                    v.extend_from_slice(&as_f64(p)[o * inner..(o + 1) * inner]);
                }
            }
            for p in &parts {
                len += p.dims[axis];
            }
            let mut dims = first.dims.clone();
            dims[axis] = len;
            let int = parts.iter().all(|p| !p.is_float());
            let data = if int { CData::I(v.iter().map(|&x| x as i64).collect()) } else { CData::F(v.iter().map(|&x| x as f32).collect()) };
            one(CTensor { dims, dtype: first.dtype, data })
        }
        "Slice" => {
            let a = get(0)?;
            let (starts, ends, axes, steps) = if opset < 10 {
                (n.ints("starts")?.unwrap_or_default(), n.ints("ends")?.unwrap_or_default(), n.ints("axes")?, None)
            } else {
                (get(1)?.i64s(), get(2)?.i64s(), ins.get(3).and_then(|v| v.as_ref()).map(|t| t.i64s()), ins.get(4).and_then(|v| v.as_ref()).map(|t| t.i64s()))
            };
            let r = a.dims.len();
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let mut lo = vec![0i64; r];
            let mut step = vec![1i64; r];
            let mut cnt: Vec<usize> = a.dims.clone();
            for (i, &ax) in axes.iter().enumerate() {
                let ax = norm_axis(ax, r, n)?;
                let dim = a.dims[ax] as i64;
                let st = steps.as_ref().and_then(|s| s.get(i).copied()).unwrap_or(1);
                if st == 0 {
                    return Err(n.bad("step 0"));
                }
                let (s, e) = (starts[i], ends[i]);
                let adj = |v: i64, lo: i64, hi: i64| (if v < 0 { v + dim } else { v }).clamp(lo, hi);
                let (s, e) = if st > 0 { (adj(s, 0, dim), adj(e, 0, dim)) } else { (adj(s, -1, dim - 1), adj(e, -1, dim - 1)) };
                let c = if st > 0 { (e - s + st - 1).max(0) / st } else { (s - e - st - 1).max(0) / (-st) };
                lo[ax] = s;
                step[ax] = st;
                cnt[ax] = c as usize;
            }
            let src = as_f64(a);
            let st = strides_of(&a.dims);
            let total: usize = cnt.iter().product();
            let v: Vec<f64> = (0..total)
                .map(|i| {
                    let idx = unravel(i, &cnt);
                    src[(0..r).map(|k| (lo[k] + idx[k] as i64 * step[k]) as usize * st[k]).sum::<usize>()]
                })
                .collect();
            one(CTensor { dims: cnt, dtype: a.dtype, data: same_kind(a.dtype, v) })
        }
        "ConstantOfShape" => {
            let s: Vec<usize> = get(0)?.i64s().iter().map(|&v| v.max(0) as usize).collect();
            check_numel(n, &s)?;
            let value = match n.attrs.get("value") {
                Some(Attr::Tensor(name)) => tensor(name, 0)?,
                _ => CTensor::floats(vec![1], vec![0.0]),
            };
            let total: usize = s.iter().product();
            let data = match value.data {
                CData::F(v) => CData::F(vec![v[0]; total]),
                CData::I(v) => CData::I(vec![v[0]; total]),
            };
            one(CTensor { dims: s, dtype: value.dtype, data })
        }
        "Range" => {
            let (s, l, d) = (get(0)?, get(1)?, get(2)?);
            let (a, b, c) = (as_f64(s)[0], as_f64(l)[0], as_f64(d)[0]);
            if c == 0.0 {
                return Err(n.bad("delta 0"));
            }
            let k = ((b - a) / c).ceil().max(0.0).min(MAX_CONST as f64 + 1.0) as usize;
            check_numel(n, &[k])?;
            let v: Vec<f64> = (0..k).map(|i| a + i as f64 * c).collect();
            one(CTensor { dims: vec![k], dtype: s.dtype, data: same_kind(s.dtype, v) })
        }
        op if SUPPORTED.contains(&op) => Err(n.bad("this operator on constants only (no activation input)")),
        _ => Err(n.bad("unsupported operator")),
    }
}

/// The initializers a lowering reads, by name (for tests that build an [`IrGraph`] by hand).
pub fn const_reader(map: BTreeMap<String, CTensor>) -> impl Fn(&str, i32) -> Result<CTensor> {
    move |name: &str, _t: i32| map.get(name).cloned().ok_or_else(|| Error::MissingTensor { name: name.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::IrValue;

    fn graph(nodes: Vec<IrNode>, inits: &[(&str, CTensor)]) -> (IrGraph, BTreeMap<String, CTensor>) {
        let ir = IrGraph {
            format: crate::onnx::GRAPH_FORMAT,
            opset: 17,
            producer: String::new(),
            inputs: vec![IrValue { name: "x".into(), dtype: "FLOAT".into(), dims: Some(vec![Some(1), Some(3), None, None]) }],
            outputs: vec![IrValue { name: "y".into(), dtype: "FLOAT".into(), dims: None }],
            nodes,
            initializers: inits.iter().map(|(n, t)| (n.to_string(), t.dtype)).collect(),
        };
        (ir, inits.iter().map(|(n, t)| (n.to_string(), t.clone())).collect())
    }

    fn node(op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> IrNode {
        IrNode {
            name: op.into(),
            op: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec!["y".into()],
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    #[test]
    fn spatial_reductions_are_global_pools_and_others_are_typed_errors() {
        let (ir, inits) = graph(vec![node("ReduceMean", &["x"], &[("axes", Attr::Ints(vec![-1, 2]))])], &[]);
        let l = lower(&ir, &const_reader(inits), 5, 7, &HashMap::new()).unwrap();
        assert_eq!(l.graph.nodes[0].op.kind(), "adaptive_avg_pool2d");
        assert_eq!(l.graph.tensors[l.graph.logits.unwrap()].shape(), [1, 3, 1, 1]);
        let (ir, inits) = graph(vec![node("ReduceMean", &["x"], &[("axes", Attr::Ints(vec![1]))])], &[]);
        let e = lower(&ir, &const_reader(inits), 5, 7, &HashMap::new()).err().unwrap();
        assert!(matches!(e, Error::OnnxUnsupported { ref op, .. } if op == "ReduceMean"), "{e}");
    }

    #[test]
    fn rank_one_constants_broadcast_along_the_width_not_the_channels() {
        // Add(x [1,3,h,w], b [3]): NumPy aligns b with the width, so only a width of 3 would do
        let b = CTensor::floats(vec![3], vec![1.0, 2.0, 3.0]);
        let (ir, inits) = graph(vec![node("Add", &["x", "b"], &[])], &[("b", b.clone())]);
        assert!(lower(&ir, &const_reader(inits), 4, 5, &HashMap::new()).is_err());
        let b = CTensor::floats(vec![3, 1, 1], vec![1.0, 2.0, 3.0]);
        let (ir, inits) = graph(vec![node("Add", &["x", "b"], &[])], &[("b", b)]);
        let l = lower(&ir, &const_reader(inits), 4, 5, &HashMap::new()).unwrap();
        assert_eq!(l.graph.nodes[0].op.kind(), "affine");
    }

    #[test]
    fn channel_shuffle_is_one_gather() {
        // [1,6,h,w] -> [1,2,3,h,w] -> transpose(0,2,1,3,4) -> [1,-1,h,w]: ShuffleNet's shuffle, groups 2
        let nodes = vec![
            IrNode { name: "r1".into(), outputs: vec!["a".into()], ..node("Reshape", &["x", "s5"], &[]) },
            IrNode { name: "t".into(), outputs: vec!["b".into()], ..node("Transpose", &["a"], &[("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))]) },
            node("Reshape", &["b", "s4"], &[]),
        ];
        let inits = [("s5", CTensor::ints(vec![5], vec![1, 2, 3, 4, 5])), ("s4", CTensor::ints(vec![4], vec![1, -1, 4, 5]))];
        let (mut ir, inits) = graph(nodes, &inits);
        ir.inputs[0].dims = Some(vec![Some(1), Some(6), None, None]);
        let l = lower(&ir, &const_reader(inits), 4, 5, &HashMap::new()).unwrap();
        assert_eq!(l.graph.nodes.len(), 1);
        let g = l.graph.nodes[0].op.get::<crate::ops::Gather>().expect("a gather");
        assert_eq!(g.perm, [0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn shape_subgraphs_fold_for_the_size_lowered() {
        // Resize to Shape(x)[2:4] * 2, as exporters write an upsampling by two
        let nodes = vec![
            IrNode { outputs: vec!["s".into()], ..node("Shape", &["x"], &[]) },
            IrNode { name: "sl".into(), outputs: vec!["hw".into()], ..node("Slice", &["s", "st", "en"], &[]) },
            IrNode { name: "mul".into(), outputs: vec!["hw2".into()], ..node("Mul", &["hw", "two"], &[]) },
            IrNode { name: "cat".into(), outputs: vec!["sizes".into()], ..node("Concat", &["nc", "hw2"], &[("axis", Attr::Int(0))]) },
            node("Resize", &["x", "", "", "sizes"], &[("mode", Attr::String("linear".into()))]),
        ];
        let inits = [("st", CTensor::ints(vec![1], vec![2])), ("en", CTensor::ints(vec![1], vec![4])), ("two", CTensor::ints(vec![], vec![2])), ("nc", CTensor::ints(vec![2], vec![1, 3]))];
        let (ir, inits) = graph(nodes, &inits);
        let reader = const_reader(inits);
        for (h, w) in [(5, 7), (16, 9)] {
            let l = lower(&ir, &reader, h, w, &HashMap::new()).unwrap();
            assert_eq!(l.graph.tensors[l.graph.logits.unwrap()].shape(), [1, 3, 2 * h, 2 * w]);
        }
    }
}
