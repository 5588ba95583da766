//! One home per operator. Each module here holds everything about one operator: its parameters
//! (the struct), its shape check (through [`crate::shape`]), FLOPs, description, CPU reference,
//! how it is split across bindings, how it is encoded (bindings, parameter block, dispatch grid)
//! and the test problem that the op tests and the benchmarks share.
//!
//! Adding an operator means its module, its shader and one line in [`REGISTRY`] (plus the `mod`
//! line below). The graph, planner, splitter, reference interpreter and session only see the
//! [`Operator`] trait.

pub mod adaptive_avg_pool;
pub mod affine;
pub mod argmax;
pub mod cast;
pub mod concat;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod crop;
pub mod dense_crf;
pub mod depth_to_space;
pub mod gather;
pub mod instance_norm;
pub mod max_pool_idx;
pub mod max_unpool;
pub mod mul;
pub mod pool2d;
pub mod preprocess;
pub mod resample;
pub mod resize;
pub mod resize_argmax;
pub mod softmax;
pub mod upsample;

use std::any::Any;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId, View};
use crate::kernels::{Dispatch, Kernels, Shader, Slot};

pub use adaptive_avg_pool::AdaptiveAvgPool;
pub use affine::Affine;
pub use argmax::Argmax;
pub use concat::Concat;
pub use conv2d::Conv2d;
pub use conv_transpose2d::ConvT2d;
pub use crop::Crop;
pub use dense_crf::DenseCrf;
pub use depth_to_space::DepthToSpace;
pub use gather::Gather;
pub use instance_norm::InstanceNorm;
pub use max_pool_idx::MaxPool2dIdx;
pub use max_unpool::MaxUnpool2d;
pub use mul::Mul;
pub use pool2d::Pool2d;
pub use preprocess::Preprocess;
pub use resample::Resample;
pub use resize::Resize;
pub use resize_argmax::ResizeArgmax;
pub use softmax::Softmax;
pub use upsample::UpsampleNearest;

/// Cut points of every tensor (channel indices where the plan splits it across bindings).
pub type Cuts<'a> = &'a dyn Fn(TensorId) -> Vec<usize>;

/// What an operator is, computes, costs, and how it is split and encoded.
pub trait Operator: std::fmt::Debug + Send + Sync + 'static {
    /// Short kind name (`conv2d`, `affine`, ...), used in reports and benchmark tables.
    fn kind(&self) -> &'static str;
    /// Views read, in binding order.
    fn inputs(&self) -> Vec<View>;
    /// Views written (most operators write one).
    fn outputs(&self) -> Vec<View>;
    /// Every view of the operator, mutable (rewrite passes move operators onto other tensors).
    fn views_mut(&mut self) -> Vec<&mut View>;
    /// Checks the operator against the graph's tensors: views inside their tensors, shapes that
    /// agree with the parameters, parameter lengths. `name` is the node's name for errors.
    fn check(&self, g: &Graph, name: &str) -> Result<()>;
    /// Floating-point operations (a multiply-add counts 2).
    fn flops(&self, g: &Graph) -> u64;
    /// Hyper-parameters for reports (appended to `in -> out`), e.g. ` k3x3 s1 d16 g1`.
    fn describe_params(&self, _g: &Graph) -> String {
        String::new()
    }
    /// Number of parameters the operator holds.
    fn parameters(&self) -> usize {
        0
    }
    /// Naive CPU reference: the contents of each output view, given a reader of any view.
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>>;
    /// Operators that compute the same as this one with each view inside one chunk of its
    /// tensor. `None` when no cut touches the operator.
    fn split(&self, cuts: Cuts<'_>, name: &str) -> Result<Option<Vec<Box<dyn Operator>>>>;
    /// Builds the dispatch, with every view inside one binding.
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded>;
    /// Every dispatch of the operator, in order, and the buffers they bind (parameters, uniforms,
    /// scratch): [`Operator::encode`]'s one dispatch unless the operator runs as several.
    fn encode_all(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<(Vec<crate::kernels::Dispatch>, Vec<wgpu::Buffer>)> {
        let e = self.encode(cx, name)?;
        Ok((vec![e.dispatch], e.buffers))
    }
    fn clone_box(&self) -> Box<dyn Operator>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A graph node's operator.
#[derive(Debug)]
pub struct Op(pub Box<dyn Operator>);

impl Clone for Op {
    fn clone(&self) -> Self {
        Op(self.0.clone_box())
    }
}

impl std::ops::Deref for Op {
    type Target = dyn Operator;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::ops::DerefMut for Op {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.0
    }
}

impl Op {
    pub fn new(op: impl Operator) -> Self {
        Op(Box::new(op))
    }
    /// Views read, in binding order.
    pub fn reads(&self) -> Vec<View> {
        self.0.inputs()
    }
    /// The first (usually only) view written.
    pub fn writes(&self) -> View {
        self.0.outputs()[0]
    }
    /// The operator as its concrete type, if it is one.
    pub fn get<T: Operator>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }
    pub fn get_mut<T: Operator>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut::<T>()
    }
}

/// Implements the boilerplate part of [`Operator`] for a `Clone` struct.
macro_rules! boxed_op {
    () => {
        fn clone_box(&self) -> Box<dyn $crate::ops::Operator> {
            Box::new(self.clone())
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    };
}
pub(crate) use boxed_op;

/// `inputs`, `outputs` and `views_mut` of an operator with fields `x` (read) and `y` (written).
macro_rules! unary_views {
    () => {
        fn inputs(&self) -> Vec<$crate::graph::View> {
            vec![self.x]
        }
        fn outputs(&self) -> Vec<$crate::graph::View> {
            vec![self.y]
        }
        fn views_mut(&mut self) -> Vec<&mut $crate::graph::View> {
            vec![&mut self.x, &mut self.y]
        }
    };
}
pub(crate) use unary_views;

/// The same for `x`, an optional addend `add` (read, in that binding order) and `y`.
macro_rules! addend_views {
    () => {
        fn inputs(&self) -> Vec<$crate::graph::View> {
            std::iter::once(self.x).chain(self.add).collect()
        }
        fn outputs(&self) -> Vec<$crate::graph::View> {
            vec![self.y]
        }
        fn views_mut(&mut self) -> Vec<&mut $crate::graph::View> {
            let mut v = vec![&mut self.x, &mut self.y];
            v.extend(self.add.as_mut());
            v
        }
    };
}
pub(crate) use addend_views;

/// Where a view lives: the binding (a tensor, or the channel chunk of a tensor that holds the
/// view) and the view's element offset inside it.
pub type Resolve<'a, 'b> = &'b dyn Fn(View) -> Result<(Slot<'a>, u32)>;

/// What an operator's `encode` gets: the device, the kernel cache, the graph and where views are.
pub struct EncodeCx<'a, 'b> {
    pub dev: &'b wgpu::Device,
    pub kernels: &'b Kernels,
    pub graph: &'b Graph,
    pub resolve: Resolve<'a, 'b>,
    /// The element type of the operator's activations ([`float_dtype`]): which kernel variant
    /// its dispatch uses.
    pub dtype: crate::graph::DType,
}

/// The float element type an operator computes in: that of its first float input, else of its
/// first float output (preprocessing reads packed pixels), f32 when it has none.
pub fn float_dtype(g: &Graph, op: &dyn Operator) -> crate::graph::DType {
    use crate::graph::DType;
    op.inputs().iter().chain(op.outputs().iter()).map(|v| g.tensors[v.tensor].dtype).find(|d| matches!(d, DType::F32 | DType::F16)).unwrap_or(DType::F32)
}

/// One dispatch and the parameter and uniform buffers it binds.
pub struct Encoded {
    pub dispatch: Dispatch,
    pub buffers: Vec<wgpu::Buffer>,
}

impl<'a> EncodeCx<'a, '_> {
    pub fn resolve(&self, v: View) -> Result<(Slot<'a>, u32)> {
        (self.resolve)(v)
    }
    /// A uniform buffer holding a parameter block.
    pub fn uniform<T: bytemuck::Pod>(&self, p: &T) -> wgpu::Buffer {
        uniform_buffer(self.dev, p)
    }
    /// A read-only storage buffer of packed parameters (padded to 4 values). Every value is
    /// checked finite here, the one place parameters reach the device: after folding, a negative
    /// variance, a NaN epsilon or an overflowing scale shows up as a typed error naming the node.
    pub fn storage(&self, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
        if let Some(index) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFiniteParameter { node: label.to_string(), index, value: data[index] });
        }
        let mut v = data.to_vec();
        v.resize(v.len().next_multiple_of(4).max(4), 0.0);
        Ok(buffer_init(self.dev, label, bytemuck::cast_slice(&v), wgpu::BufferUsages::STORAGE))
    }
    pub fn dummy(&self) -> Slot<'_> {
        self.kernels.dummy()
    }
    /// Whether this operator's kernel in `shader` computes in f16 ([`crate::kernels::Kernels::arith_for`]).
    pub fn f16_math(&self, shader: Shader) -> bool {
        self.kernels.arith_for(shader, self.dtype) == crate::kernels::Arith::F16
    }
    /// Bytes of activations an operator reads and writes.
    pub fn act_bytes(&self, op: &dyn Operator) -> u64 {
        op.inputs().iter().chain(op.outputs().iter()).map(|v| self.graph.view_bytes(*v)).sum()
    }
    /// A dispatch of `entry` with `slots` bound in the family's binding order.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(&self, shader: Shader, entry: &'static str, slots: &[Slot<'_>], groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        self.kernels.dispatch_typed(shader, entry, self.dtype, slots, groups, label, flops, bytes)
    }

    /// [`dispatch`](Self::dispatch) with override constants.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_specialized(&self, shader: Shader, entry: &'static str, constants: &[(&'static str, f64)], slots: &[Slot<'_>], groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        let resources = slots.iter().map(|s| s.resource()).collect();
        self.kernels.dispatch_specialized(shader, entry, self.dtype, constants, resources, groups, label, flops, bytes)
    }
}

/// Whether two slots are the same binding.
pub fn same_slot(a: &Slot<'_>, b: &Slot<'_>) -> bool {
    std::ptr::eq(a.buffer, b.buffer) && a.offset == b.offset
}

/// A uniform buffer holding a parameter block (padded for the binding).
pub fn uniform_buffer<T: bytemuck::Pod>(dev: &wgpu::Device, p: &T) -> wgpu::Buffer {
    buffer_init(dev, "atrous params", &crate::kernels::uniform_bytes(p), wgpu::BufferUsages::UNIFORM)
}

/// A buffer with initial contents. Unlike `DeviceExt::create_buffer_init` it does not panic when
/// the device is lost or out of memory: the buffer is then invalid and the error scope around the
/// caller reports it.
pub fn buffer_init(dev: &wgpu::Device, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let size = (contents.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT).max(wgpu::COPY_BUFFER_ALIGNMENT);
    let buf = dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: true });
    if let Ok(mut view) = buf.slice(..).get_mapped_range_mut() {
        view.slice(..contents.len()).copy_from_slice(contents);
    }
    buf.unmap();
    buf
}

// ---- shared helpers of the operator modules ----

pub(crate) fn check_view(g: &Graph, op: &str, v: View) -> Result<()> {
    let t = g.tensors.get(v.tensor).ok_or_else(|| Error::op(op, format!("unknown tensor {}", v.tensor)))?;
    if v.c == 0 || v.c0 + v.c > t.c {
        return Err(Error::op(op, format!("channels {}..{} outside tensor `{}` with {} channels", v.c0, v.c0 + v.c, t.name, t.c)));
    }
    Ok(())
}

/// Checks the views of an operator reading `x` and writing `y` (distinct tensors) with the same
/// channel count.
pub(crate) fn check_unary(g: &Graph, op: &str, x: View, y: View) -> Result<()> {
    check_view(g, op, x)?;
    check_view(g, op, y)?;
    distinct(g, op, x, y)?;
    if x.c != y.c {
        return Err(Error::op(op, format!("{} channels in, {} out", x.c, y.c)));
    }
    Ok(())
}

pub(crate) fn check_same_shape(g: &Graph, op: &str, a: View, b: View) -> Result<()> {
    if a.c != b.c || g.hw(a) != g.hw(b) {
        return Err(Error::op(op, format!("shape {}x{:?} vs {}x{:?}", a.c, g.hw(a), b.c, g.hw(b))));
    }
    Ok(())
}

pub(crate) fn distinct(g: &Graph, op: &str, x: View, y: View) -> Result<()> {
    if x.tensor == y.tensor {
        return Err(Error::op(op, format!("reads and writes the same tensor `{}`", g.tensors[x.tensor].name)));
    }
    Ok(())
}

/// Cut points of `v` (inside its channel range, relative to its start) given the cuts of its tensor.
pub(crate) fn view_cuts(v: View, cuts: Cuts<'_>) -> Vec<usize> {
    cuts(v.tensor).into_iter().filter(|&k| k > v.c0 && k < v.c0 + v.c).map(|k| k - v.c0).collect()
}

/// `[0, n)` cut at `cuts` into consecutive segments.
pub(crate) fn segments(n: usize, mut cuts: Vec<usize>) -> Vec<(usize, usize)> {
    cuts.retain(|&k| k > 0 && k < n);
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = vec![];
    let mut a = 0;
    for k in cuts.into_iter().chain(std::iter::once(n)) {
        out.push((a, k));
        a = k;
    }
    out
}

/// Channels `a..b` of `v`.
pub(crate) fn sub(v: View, a: usize, b: usize) -> View {
    View { tensor: v.tensor, c0: v.c0 + a, c: b - a }
}

/// Segments of a per-channel operator: the union of the cuts of all its views.
pub(crate) fn per_channel_segments(views: &[View], n: usize, cuts: Cuts<'_>) -> Option<Vec<(usize, usize)>> {
    let s = segments(n, views.iter().flat_map(|v| view_cuts(*v, cuts)).collect());
    (s.len() > 1).then_some(s)
}

// ---- the registry: test problems shared by the op tests and the benchmarks ----

/// One operator on tensors of its own, with initial contents (the output NaN where the operator
/// must not write, so an unwritten or stray value shows).
pub struct Problem {
    pub name: String,
    pub graph: Graph,
    /// The node under test.
    pub node: usize,
    pub data: HashMap<TensorId, Vec<f32>>,
    /// Allowed error per output element: `abs + rel * |reference|`.
    pub abs_tol: f32,
    pub rel_tol: f32,
}

impl Problem {
    /// The expected contents of the output tensor: the initial contents with the reference
    /// written into the output view.
    pub fn expected(&self) -> Vec<f32> {
        let n = &self.graph.nodes[self.node];
        let read = |v: View| {
            let d = &self.graph.tensors[v.tensor];
            let hw = d.h * d.w;
            self.data[&v.tensor][v.c0 * hw..(v.c0 + v.c) * hw].to_vec()
        };
        let outs = n.op.reference(&self.graph, &read);
        let y = n.op.writes();
        let mut t = self.data[&y.tensor].clone();
        let d = &self.graph.tensors[y.tensor];
        let hw = d.h * d.w;
        t[y.c0 * hw..(y.c0 + y.c) * hw].copy_from_slice(&outs[0]);
        t
    }
}

/// Problem makers: `(seed, bench)`: small seeded random shapes for tests, or the real layer sizes
/// of ESPNet when `bench` is set.
pub type MakeProblems = fn(u64, bool) -> Vec<Problem>;

/// Every operator: its kind and its test problems.
pub const REGISTRY: &[(&str, MakeProblems)] = &[
    ("conv2d", conv2d::problems),
    ("conv_transpose2d", conv_transpose2d::problems),
    ("pool2d", pool2d::problems),
    ("affine", affine::problems),
    ("resize", resize::problems),
    ("adaptive_avg_pool2d", adaptive_avg_pool::problems),
    ("mul", mul::problems),
    ("gather", gather::problems),
    ("concat", concat::problems),
    ("preprocess", preprocess::problems),
    ("argmax", argmax::problems),
    ("resize_argmax", resize_argmax::problems),
    ("softmax", softmax::problems),
    ("max_pool2d_idx", max_pool_idx::problems),
    ("max_unpool2d", max_unpool::problems),
    ("crop", crop::problems),
    ("cast", cast::problems),
    ("dense_crf", dense_crf::problems),
    ("upsample_nearest", upsample::problems),
    ("resample", resample::problems),
    ("depth_to_space", depth_to_space::problems),
    ("instance_norm", instance_norm::problems),
];

/// A small deterministic generator for problems (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// A problem of one node reading `inputs` (filled with random values) and writing `out`
/// (NaN-filled): the usual shape of a test problem.
pub(crate) fn problem(name: String, graph: Graph, rng: &mut Rng, abs_tol: f32, rel_tol: f32) -> Problem {
    let node = graph.nodes.len() - 1;
    let n = &graph.nodes[node];
    let outs: Vec<TensorId> = n.op.outputs().iter().map(|v| v.tensor).collect();
    let mut data = HashMap::new();
    for v in n.op.inputs().into_iter().chain(n.op.outputs()) {
        data.entry(v.tensor).or_insert_with(|| {
            let numel = graph.tensors[v.tensor].numel();
            if outs.contains(&v.tensor) {
                vec![f32::NAN; numel]
            } else {
                rng.vec(numel)
            }
        });
    }
    Problem { name, graph, node, data, abs_tol, rel_tol }
}
