//! A session: a graph planned for one input size on one device, with its buffers, pipelines and
//! bind groups built once. Each run is one command submission; only the class map (one byte per
//! pixel) comes back, unless the caller asks for the logits too.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use std::collections::HashMap;

use crate::graph::{DType, Graph, Node, TensorId, View};
use crate::kernels::{self, Dispatch, Kernels, Shader, Slot};
use crate::ops::{buffer_init, uniform_buffer, EncodeCx, Resolve};
use crate::plan::{Plan, PlanLimits};
use crate::preprocess::Normalize;

/// A class map: one class index per pixel, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassMap {
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

/// The contents of a tensor passed to or returned by [`Session::run`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    U32(Vec<u32>),
    U8(Vec<u8>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::U32(_) => DType::U32,
            TensorData::U8(_) => DType::U8,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::U8(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as f32 (f16 widened); `None` for integer data.
    fn into_f32(self) -> Option<Vec<f32>> {
        match self {
            TensorData::F32(v) => Some(v),
            TensorData::F16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            _ => None,
        }
    }
    /// Little-endian device bytes (borrowed where the element type is already that).
    fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        match self {
            TensorData::F32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
            TensorData::F16(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::U32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
            TensorData::U8(v) => Cow::Borrowed(v),
        }
    }
    fn from_bytes(dtype: DType, b: &[u8], n: usize) -> Self {
        match dtype {
            DType::F32 => TensorData::F32(b.chunks_exact(4).take(n).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            DType::F16 => TensorData::F16(b.chunks_exact(2).take(n).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect()),
            DType::U32 => TensorData::U32(b.chunks_exact(4).take(n).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            DType::U8 => TensorData::U8(b[..n].to_vec()),
        }
    }
}

/// A named, typed tensor: an input or output of [`Session::run`].
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// `[1, c, h, w]`
    pub shape: [usize; 4],
    pub data: TensorData,
}

/// How a session is built.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionOptions {
    /// Take 8-bit pixels: adds the preprocessing head (graph input `rgba`).
    pub normalize: Option<Normalize>,
    /// Add the probabilities head (graph output `probs`, softmax over the logits). Without it,
    /// the first call that asks for probabilities rebuilds the session with it.
    pub probabilities: bool,
    /// Planner limits (default: the device's).
    pub limits: Option<PlanLimits>,
    /// Storage precision of the network's tensors ([`Precision::F16`]: [`crate::passes::to_half`];
    /// needs `SHADER_F16`).
    pub precision: Precision,
    /// Skip the probe run at creation (see [`Session::with_options`]): for callers that check
    /// the logits themselves and cannot afford one extra run.
    pub skip_probe: bool,
    /// Refine with a dense CRF ([`crate::ops::dense_crf`]) between the logits' softmax and the
    /// class map; the probabilities output is then the CRF's marginals. Needs pixels
    /// (`normalize`) and at least two classes.
    pub crf: Option<crate::crf::CrfParams>,
    /// Stage convolution inputs through workgroup memory (`conv2d_tiled`) where that pays:
    /// `None` decides by adapter ([`Kernels::tiles_for`]: GPUs yes, CPU adapters no).
    pub conv_tiles: Option<bool>,
    /// Turn off the subgroup variants of kernels that have one (global average pooling), which
    /// run by default where the device has subgroup operations.
    pub no_subgroups: bool,
    /// Compute the class map from the stored full-resolution logits even where the network's
    /// final bilinear upsampling and the argmax run fused ([`crate::ops::ResizeArgmax`], the
    /// default where it applies): for comparisons.
    pub unfused_head: bool,
}

/// How a session stores its tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes a value.
    #[default]
    F32,
    /// 2 bytes a value for every feature map, the input and the logits; the multiply-adds in f32
    /// (loads widen, stores round).
    F16,
    /// f16 storage as [`Precision::F16`], and the convolutions' multiply-adds in f16 as well
    /// (weights rounded to f16 at use, f16 accumulators; bias, addend and activation in f32):
    /// twice the arithmetic rate on most GPUs. Families without an f16-arithmetic variant
    /// ([`crate::kernels::Shader::ariths`]) compute in f32.
    F16Compute,
}

impl Precision {
    /// `f32`; `f16` (f16 storage, f32 multiply-adds: on every adapter, since f16 arithmetic
    /// measurably flips class maps, see tests/half.rs); `f16-acc32` (the same, by name) and
    /// `f16-compute` (f16 multiply-adds, opt-in); `auto`: f16 where the device has `SHADER_F16`
    /// and is not a CPU adapter (on lavapipe f16 storage is no faster: every load and store
    /// converts), else f32. With a device, f16 on one without `SHADER_F16` is refused here, before
    /// any session; without one (planning only), `auto` is refused.
    pub fn parse(s: &str, gpu: Option<&Gpu>) -> Result<Precision> {
        let p = match (s, gpu) {
            ("f32" | "fp32", _) => Precision::F32,
            ("f16" | "fp16" | "half" | "f16-acc32", _) => Precision::F16,
            ("f16-compute" | "f16c", _) => Precision::F16Compute,
            ("auto", Some(g)) => {
                if g.has_f16() && !g.is_cpu() {
                    Precision::F16
                } else {
                    Precision::F32
                }
            }
            ("auto", None) => return Err(Error::Input("precision `auto` needs a device; give f32 or f16".into())),
            (other, _) => return Err(Error::Input(format!("precision `{other}`: expected f32, f16, f16-acc32, f16-compute or auto"))),
        };
        match gpu {
            Some(g) if p.is_half() && !g.has_f16() => Err(Error::F16Unsupported { adapter: g.describe() }),
            _ => Ok(p),
        }
    }

    /// Whether feature maps are stored as f16.
    pub fn is_half(self) -> bool {
        self != Precision::F32
    }

    /// The arithmetic of the f16 kernel variants.
    pub fn arith(self) -> crate::kernels::Arith {
        if self == Precision::F16Compute {
            crate::kernels::Arith::F16
        } else {
            crate::kernels::Arith::F32
        }
    }

    /// The name `parse` reads back.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::F16Compute => "f16-compute",
        }
    }
}

/// Tensors of the graph with its heads that the convenience calls use.
#[derive(Clone, Copy, Debug)]
struct Ids {
    input: TensorId,
    rgba: Option<TensorId>,
    logits: TensorId,
    classes: TensorId,
    probs: Option<TensorId>,
    /// How much of the graph is the network: (tensors, inputs, outputs, nodes); the heads add
    /// tensors, inputs and outputs after these, preprocessing before the nodes and the rest after.
    network: (usize, usize, usize, usize),
}

/// A graph planned for one input size on one device: the network with its heads (preprocessing,
/// class map, probabilities) as ordinary nodes, one arena plan, and every node's dispatches with
/// their buffers, pipelines and bind groups built once. [`Session::run`] takes and returns named,
/// typed tensors and records only the nodes the requested outputs need; the other calls are thin
/// wrappers over it. Each run is one command submission.
pub struct Session {
    gpu: Gpu,
    pub plan: Plan,
    /// The network with its heads.
    pub graph: Graph,
    h: usize,
    w: usize,
    classes: usize,
    ids: Ids,
    arenas: Vec<wgpu::Buffer>,
    /// Parameter and uniform buffers, kept with the bind groups that use them.
    _owned: Vec<wgpu::Buffer>,
    /// The dispatches of each node (several when its tensors are split across bindings).
    node_dispatches: Vec<Vec<Dispatch>>,
    /// The network and the class-map head, in execution order: what a run from the input tensor
    /// to the class map records (and what [`Session::profile`] times).
    pub dispatches: Vec<Dispatch>,
    /// Readback buffers by tensor, made on first use.
    readbacks: HashMap<TensorId, wgpu::Buffer>,
    kernels: Kernels,
    normalize: Option<Normalize>,
    options: SessionOptions,
}

/// Where [`Session::encode_texture`] writes.
pub enum TextureOutput<'a> {
    /// The packed class map at the session's size, copied into `buffer` at `offset` (the buffer
    /// needs `COPY_DST` usage and [`Session::class_map_bytes`] bytes).
    ClassMap { buffer: &'a wgpu::Buffer, offset: u64 },
    /// Class colours blended over the source into `target` (`Rgba8Unorm`, `STORAGE_BINDING`
    /// usage, the source's size): `round((1 - alpha) * pixel + alpha * palette[class])`.
    Overlay { target: &'a wgpu::Texture, palette: &'a [[u8; 3]], alpha: f32 },
}

const NO_PIXELS: &str = "this session was built without a normalisation, so it takes tensors only";

/// Where the class map can come straight from the logits' final upsampling
/// ([`crate::ops::ResizeArgmax`]): the logits are written by one bilinear [`Resize`](crate::ops::Resize)
/// that `resize_argmax` computes ([`crate::kernels::argmax::fuses_resize`]), whose input fits one
/// binding. Returns that input and the corner convention.
fn fusable_upsampling(g: &Graph, logits: TensorId, limits: &PlanLimits) -> Option<(View, bool)> {
    let mut writers = g.nodes.iter().filter(|n| n.op.outputs().iter().any(|v| v.tensor == logits));
    let (Some(n), None) = (writers.next(), writers.next()) else { return None };
    let r = n.op.as_any().downcast_ref::<crate::ops::Resize>()?;
    let fits = crate::kernels::argmax::fuses_resize(r.x.c, g.hw(r.x), g.hw(r.y), r.align_corners) && g.view_bytes(r.x) <= limits.max_binding;
    (r.y == g.all(logits) && fits).then_some((r.x, r.align_corners))
}

/// The network plus its heads.
fn with_heads(network: &Graph, options: &SessionOptions, limits: &PlanLimits) -> Result<(Graph, Ids)> {
    let mut g = match options.precision {
        Precision::F32 => network.clone(),
        Precision::F16 | Precision::F16Compute => crate::passes::half_precision(network)?,
    };
    let sizes = (g.tensors.len(), g.inputs.len(), g.outputs.len(), g.nodes.len());
    let logits = g.logits.ok_or_else(|| Error::op("graph", "no logits tensor"))?;
    let input = g.input;
    let rgba = options.normalize.map(|n| crate::ops::preprocess::attach(&mut g, input, n)).transpose()?;
    let lv = g.all(logits);
    let binary = g.sigmoid_head && lv.c == 1;
    let marginals = match options.crf {
        None => None,
        Some(_) if binary => return Err(Error::Input("the dense CRF needs at least two classes; this model has one sigmoid output".into())),
        Some(params) => {
            let rgba = rgba.ok_or_else(|| Error::Input("the dense CRF reads the image: build the session with a normalisation (pixels in)".into()))?;
            Some(crate::ops::dense_crf::attach(&mut g, rgba, lv, params)?)
        }
    };
    let scores = marginals.map_or(lv, |q| g.all(q));
    // the class map from the low-resolution logits where the upsampling fuses with the argmax
    // (the full-resolution logits are then computed only when asked for)
    let fused = if binary || marginals.is_some() || options.unfused_head { None } else { fusable_upsampling(&g, logits, limits) };
    let classes = match fused {
        Some((x, align_corners)) => {
            let (h, w) = g.hw(lv);
            let classes = g.tensor_of("classes", crate::graph::DType::U8, 1, h, w);
            g.push("argmax", crate::ops::ResizeArgmax { x, y: g.all(classes), align_corners })?;
            classes
        }
        None => crate::ops::argmax::attach(&mut g, scores, binary)?.0,
    };
    g.add_output(classes);
    let probs = if let Some(q) = marginals {
        g.add_output(q);
        Some(q)
    } else if options.probabilities {
        let d = &g.tensors[logits];
        let p = g.tensor_of("probs", crate::graph::DType::F32, d.c, d.h, d.w);
        g.push("softmax", crate::ops::Softmax { x: g.all(logits), y: g.all(p), sigmoid: binary })?;
        g.add_output(p);
        Some(p)
    } else {
        None
    };
    Ok((g, Ids { input, rgba, logits, classes, probs, network: sizes }))
}

/// The network of a graph with heads: [`with_heads`] undone.
fn without_heads(g: &Graph, ids: &Ids) -> Graph {
    let (t, i, o, n) = ids.network;
    let first = ids.rgba.is_some() as usize;
    let mut net = Graph { tensors: g.tensors[..t].to_vec(), nodes: g.nodes[first..first + n].to_vec(), ..g.clone_shallow() };
    net.inputs.truncate(i);
    net.outputs.truncate(o);
    net
}

impl Session {
    /// Plans `graph` for `gpu`, uploads its parameters and records every dispatch. `normalize`
    /// enables [`Session::run_rgb`] (GPU-side preprocessing of 8-bit pixels).
    pub fn new(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>) -> Result<Self> {
        Self::with_options(gpu, graph, SessionOptions { normalize, ..Default::default() })
    }

    /// Like [`Session::new`] with explicit planner limits (tests force small arenas with it).
    pub fn with_limits(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>, limits: PlanLimits) -> Result<Self> {
        Self::with_options(gpu, graph, SessionOptions { normalize, limits: Some(limits), ..Default::default() })
    }

    pub fn with_options(gpu: &Gpu, graph: &Graph, options: SessionOptions) -> Result<Self> {
        gpu.check()?;
        let dev = &gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::build(gpu, graph, options);
        let oom_err = pollster::block_on(oom.pop());
        let val_err = pollster::block_on(scope.pop());
        if let Some(e) = oom_err {
            log::error!("atrous: out of device memory: {e}");
            let bytes = built.as_ref().map(|s| s.plan.peak_bytes()).unwrap_or(0);
            return Err(Error::DeviceOutOfMemory { during: "creating the session's buffers".into(), bytes });
        }
        gpu.check()?;
        if let Some(e) = val_err {
            return Err(Error::Gpu { during: "building the session".into(), reason: e.to_string() });
        }
        let mut s = built?;
        if !s.options.skip_probe {
            s.probe()?;
        }
        Ok(s)
    }

    /// Runs the network once on a fixed probe input (values in [-1, 1], the range of normalised
    /// pixels) and checks its logits are finite: weights that are finite one by one but overflow
    /// together (3e38) would otherwise give an all-class-0 map with success.
    fn probe(&mut self) -> Result<()> {
        let input = &self.graph.tensors[self.ids.input];
        if !matches!(input.dtype, crate::graph::DType::F32 | crate::graph::DType::F16) {
            return Ok(());
        }
        let n = input.c * input.h * input.w;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0).collect();
        let t = self.tensor_input(&x)?;
        let v = self.run(&[t], &["logits"])?.into_iter().next().and_then(|t| t.data.into_f32()).unwrap_or_default();
        match v.iter().position(|x| !x.is_finite()) {
            Some(index) => Err(Error::NonFiniteLogits { output: self.graph.tensors[self.ids.logits].name.clone(), index, value: v[index] }),
            None => Ok(()),
        }
    }

    fn build(gpu: &Gpu, network: &Graph, options: SessionOptions) -> Result<Self> {
        let dev = &gpu.device;
        let limits = options.limits.unwrap_or_else(|| PlanLimits::from_device(&gpu.limits()));
        let (graph, ids) = with_heads(network, &options, &limits)?;
        if graph.tensors.iter().any(|t| t.dtype == crate::graph::DType::F16) && !gpu.has_f16() {
            return Err(Error::F16Unsupported { adapter: gpu.describe() });
        }
        let plan = Plan::new(&graph, limits)?;
        let kernels = Kernels::new(dev).with_arith(options.precision.arith()).with_tiles(options.conv_tiles.unwrap_or_else(|| Kernels::tiles_for(gpu))).with_subgroups(!options.no_subgroups);
        let arenas: Vec<wgpu::Buffer> = plan
            .arenas
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("atrous arena {i}")),
                    size: size.max(16),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let view_slot = |p: &crate::plan::Placement, d: &crate::graph::TensorDesc| Slot { buffer: &arenas[p.arena], offset: p.offset, size: (p.c as u64 * d.plane_bytes()).next_multiple_of(4) };
        let resolve = |v: View| -> Result<(Slot<'_>, u32)> {
            let d = &graph.tensors[v.tensor];
            let p = plan.chunk_of(v.tensor, v.c0, v.c).ok_or_else(|| Error::op(&d.name, format!("channels {}..{} straddle a binding split", v.c0, v.c0 + v.c)))?;
            Ok((view_slot(p, d), ((v.c0 - p.c0) * d.h * d.w) as u32))
        };
        let cuts = |t: usize| plan.cuts(t);
        let mut owned: Vec<wgpu::Buffer> = vec![];
        let mut node_dispatches: Vec<Vec<Dispatch>> = vec![vec![]; graph.nodes.len()];
        for &ni in &plan.order {
            let node = &graph.nodes[ni];
            for piece in crate::split::split_node(node, &cuts)? {
                let (ds, bufs) = encode_node(dev, &kernels, &graph, &piece, &resolve)?;
                let shape = piece.describe(&graph);
                node_dispatches[ni].extend(ds.into_iter().map(|mut d| {
                    d.shape = shape.clone();
                    d
                }));
                owned.extend(bufs);
            }
        }
        let input = &graph.tensors[ids.input];
        let (h, w, classes) = (input.h, input.w, graph.tensors[ids.logits].c);
        let mut s = Session { gpu: gpu.clone(), h, w, classes, ids, arenas, _owned: owned, node_dispatches, dispatches: vec![], readbacks: HashMap::new(), plan, graph, kernels, normalize: options.normalize, options };
        // with a CRF the class map needs the pixels too
        let from = if s.options.crf.is_some() { ids.rgba.unwrap_or(ids.input) } else { ids.input };
        // the network's other inputs (an imported graph may have several) are provided too
        let provided: Vec<TensorId> = std::iter::once(from).chain(s.graph.inputs.iter().copied().filter(|&t| t != ids.input && Some(t) != ids.rgba)).collect();
        s.dispatches = s.selected(&provided, &[ids.classes])?.into_iter().flat_map(|n| s.node_dispatches[n].clone()).collect();
        Ok(s)
    }

    /// Input size (height, width) this session was planned for.
    pub fn input_hw(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    pub fn num_classes(&self) -> usize {
        self.classes
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Names of the graph inputs [`Session::run`] takes (`input`, and `rgba` with a normalisation).
    pub fn input_names(&self) -> Vec<&str> {
        self.graph.inputs.iter().map(|&t| self.graph.tensors[t].name.as_str()).collect()
    }

    /// Names of the outputs [`Session::run`] returns: the graph outputs, and `logits`.
    pub fn output_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.graph.outputs.iter().map(|&t| self.graph.tensors[t].name.as_str()).collect();
        v.push("logits");
        v
    }

    /// Device memory held by this session's buffers (arenas, parameters, uniforms, staging), in
    /// bytes. The weights are part of it: each session uploads its own.
    pub fn device_bytes(&self) -> u64 {
        let mut b: u64 = self.arenas.iter().map(|a| a.size()).sum();
        b += self._owned.iter().map(|a| a.size()).sum::<u64>();
        b + self.readbacks.values().map(|r| r.size()).sum::<u64>()
    }

    /// Times every dispatch of the graph `iters` times. With the adapter's timestamp queries each
    /// dispatch runs in a compute pass of its own whose begin and end are timestamped (GPU time);
    /// without them each dispatch is submitted alone and timed by the wall clock.
    pub fn profile(&mut self, iters: usize) -> Result<Profile> {
        let dev = self.gpu.device.clone();
        let queue = self.gpu.queue.clone();
        let n = self.dispatches.len();
        let mut nanos: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); n];
        let timestamps = dev.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        if timestamps {
            let period = queue.get_timestamp_period() as f64;
            const PER_SET: usize = 2048;
            for start in (0..n).step_by(PER_SET) {
                let m = (n - start).min(PER_SET);
                let qs = dev.create_query_set(&wgpu::QuerySetDescriptor { label: Some("atrous profile"), ty: wgpu::QueryType::Timestamp, count: 2 * m as u32 });
                let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("atrous timestamps"),
                    size: 16 * m as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let rb = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("atrous timestamps readback"),
                    size: 16 * m as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                for _ in 0..iters {
                    let mut enc = dev.create_command_encoder(&Default::default());
                    for (i, d) in self.dispatches[start..start + m].iter().enumerate() {
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(&d.label),
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites { query_set: &qs, beginning_of_pass_write_index: Some(2 * i as u32), end_of_pass_write_index: Some(2 * i as u32 + 1) }),
                        });
                        d.record(&mut pass);
                    }
                    enc.resolve_query_set(&qs, 0..2 * m as u32, &resolve, 0);
                    enc.copy_buffer_to_buffer(&resolve, 0, &rb, 0, rb.size());
                    queue.submit([enc.finish()]);
                    let raw = read_buffer(&self.gpu, &rb)?;
                    let ticks: &[u64] = bytemuck::cast_slice(&raw);
                    for i in 0..m {
                        nanos[start + i].push(ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period);
                    }
                }
            }
        } else {
            for _ in 0..iters {
                for (i, d) in self.dispatches.iter().enumerate() {
                    let mut enc = dev.create_command_encoder(&Default::default());
                    {
                        let mut pass = enc.begin_compute_pass(&Default::default());
                        d.record(&mut pass);
                    }
                    let t0 = std::time::Instant::now();
                    queue.submit([enc.finish()]);
                    self.gpu.wait()?;
                    nanos[i].push(t0.elapsed().as_nanos() as f64);
                }
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: "profiling".into(), reason: e.to_string() });
        }
        let dispatches = self.dispatches.iter().zip(nanos).map(|(d, nanos)| DispatchProfile { label: d.label.clone(), entry: d.entry, shape: d.shape.clone(), flops: d.flops, bytes: d.bytes, nanos }).collect();
        Ok(Profile { timestamps, dispatches })
    }

    /// Bytes of the packed class map (`ceil(h*w/4)` words, 4 pixels per u32, pixel `4j+i` in
    /// byte `i` of word `j`).
    pub fn class_map_bytes(&self) -> u64 {
        let (h, w) = self.map_hw();
        kernels::argmax::map_bytes(h * w)
    }

    /// Size (height, width) of the class map: the logits' size, which an imported graph may
    /// make other than the input's (an upsampling head).
    pub fn map_hw(&self) -> (usize, usize) {
        let d = &self.graph.tensors[self.ids.classes];
        (d.h, d.w)
    }

    /// The class map's binding in its arena.
    fn classes_slot(&self) -> Slot<'_> {
        let p = &self.plan.placements[self.ids.classes][0];
        Slot { buffer: &self.arenas[p.arena], offset: p.offset, size: self.class_map_bytes() }
    }

    /// (arena, byte offset, first channel, channels) of each chunk of tensor `t`.
    fn chunks(&self, t: TensorId) -> Vec<(usize, u64, usize, usize)> {
        self.plan.placements[t].iter().map(|p| (p.arena, p.offset, p.c0, p.c)).collect()
    }

    /// Records the segmentation of a texture already on the GPU into the caller's `encoder`: the
    /// texture is resized (bilinear) and normalised into the model's input, every layer runs, and
    /// the results go where `outputs` say. Nothing is submitted and nothing is read back: submit
    /// the encoder with the rest of the frame.
    ///
    /// The source must be `Rgba8Unorm`, `Rgba8UnormSrgb`, `Bgra8Unorm` or `Bgra8UnormSrgb` with
    /// `TEXTURE_BINDING` usage, and the session must have been built with a normalisation.
    pub fn encode_texture(&mut self, encoder: &mut wgpu::CommandEncoder, source: &wgpu::Texture, outputs: &[TextureOutput<'_>]) -> Result<()> {
        self.gpu.check()?;
        let dev = self.gpu.device.clone();
        let srgb = kernels::texture::input_format(source.format()).ok_or_else(|| Error::Input(format!("texture format {:?} is not one of Rgba8Unorm(Srgb), Bgra8Unorm(Srgb)", source.format())))?;
        if !source.usage().contains(wgpu::TextureUsages::TEXTURE_BINDING) {
            return Err(Error::Input("the source texture needs TEXTURE_BINDING usage".into()));
        }
        let normalize = self.normalize.ok_or_else(|| Error::Input("this session was built without a normalisation, so it takes tensors only".into()))?;
        if self.map_hw() != (self.h, self.w) {
            return Err(Error::Input(format!("texture outputs need a class map of the input's size; this network's is {:?} for a {}x{} input", self.map_hw(), self.h, self.w)));
        }
        let (tw, th) = (source.width(), source.height());
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let src_view = source.create_view(&Default::default());
        let hw = self.h * self.w;
        let mut pre = vec![];
        let mut keep = vec![];
        for &(a, off, c0, c) in &self.chunks(self.ids.input) {
            let (tp, groups) = kernels::texture::prepare_input(&normalize, (tw, th), (self.w as u32, self.h as u32), 0, srgb, c0, c);
            let tu = uniform_buffer(&dev, &tp);
            let input = Slot { buffer: &self.arenas[a], offset: off, size: (c as u64 * self.graph.tensors[self.ids.input].plane_bytes()).next_multiple_of(4) };
            pre.push(self.kernels.dispatch_resources(
                Shader::TextureInput,
                "texture_input",
                self.graph.tensors[self.ids.input].dtype,
                vec![wgpu::BindingResource::TextureView(&src_view), input.resource(), Slot::whole(&tu).resource()],
                groups,
                "texture_input",
                (c * hw * 8) as u64,
                (tw * th * 4) as u64 + input.size,
            ));
            keep.push(tu);
        }
        let mut post = vec![];
        let mut copies = vec![];
        for out in outputs {
            match out {
                TextureOutput::ClassMap { buffer, offset } => {
                    if buffer.size() < offset + self.class_map_bytes() || !buffer.usage().contains(wgpu::BufferUsages::COPY_DST) {
                        return Err(Error::Input(format!("class-map buffer needs COPY_DST usage and {} bytes from offset {offset}", self.class_map_bytes())));
                    }
                    copies.push((*buffer, *offset));
                }
                TextureOutput::Overlay { target, palette, alpha } => {
                    if target.format() != wgpu::TextureFormat::Rgba8Unorm || !target.usage().contains(wgpu::TextureUsages::STORAGE_BINDING) || (target.width(), target.height()) != (tw, th) {
                        return Err(Error::Input(format!("overlay target must be Rgba8Unorm with STORAGE_BINDING usage and the source's size {tw}x{th}")));
                    }
                    if palette.len() < self.classes {
                        return Err(Error::Input(format!("{} palette colours for {} classes", palette.len(), self.classes)));
                    }
                    let pal = buffer_init(&dev, "atrous palette", bytemuck::cast_slice(&kernels::texture::pack_palette(palette)), wgpu::BufferUsages::STORAGE);
                    let (op, groups) = kernels::texture::prepare_overlay((tw, th), (self.w as u32, self.h as u32), alpha.clamp(0.0, 1.0), srgb, self.classes as u32);
                    let ou = uniform_buffer(&dev, &op);
                    let dst_view = target.create_view(&Default::default());
                    post.push(self.kernels.dispatch_resources(
                        Shader::Overlay,
                        "overlay",
                        crate::graph::DType::F32,
                        vec![wgpu::BindingResource::TextureView(&src_view), self.classes_slot().resource(), Slot::whole(&pal).resource(), wgpu::BindingResource::TextureView(&dst_view), Slot::whole(&ou).resource()],
                        groups,
                        "overlay",
                        (tw * th * 6) as u64,
                        (tw * th * 8) as u64,
                    ));
                    keep.push(pal);
                    keep.push(ou);
                }
            }
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("atrous texture"), timestamp_writes: None });
            for d in &pre {
                d.record(&mut pass);
            }
            for d in &self.dispatches {
                d.record(&mut pass);
            }
            for d in &post {
                d.record(&mut pass);
            }
        }
        for (buf, off) in copies {
            let s = self.classes_slot();
            encoder.copy_buffer_to_buffer(s.buffer, s.offset, buf, off, self.class_map_bytes());
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: "recording the texture path".into(), reason: e.to_string() });
        }
        drop(keep); // the bind groups hold their buffers
        Ok(())
    }

    /// Fills every arena with `value` (NaN in tests, so that a value no kernel wrote shows).
    pub fn fill_arenas(&self, value: f32) {
        for a in &self.arenas {
            let v = vec![value; (a.size() / 4) as usize];
            self.gpu.queue.write_buffer(a, 0, bytemuck::cast_slice(&v));
        }
    }

    /// The tensor a run name refers to: a graph input or output by name, or `logits`.
    fn tensor_named(&self, name: &str) -> Result<TensorId> {
        if name == "logits" {
            return Ok(self.ids.logits);
        }
        self.graph
            .inputs
            .iter()
            .chain(&self.graph.outputs)
            .copied()
            .find(|&t| self.graph.tensors[t].name == name)
            .ok_or_else(|| Error::Input(format!("no input or output called `{name}`; inputs {:?}, outputs {:?}", self.input_names(), self.output_names())))
    }

    /// Nodes needed to compute `outputs` from `provided`, in execution order: walking back from
    /// the outputs, a node is needed when it writes a needed tensor that is not provided.
    fn selected(&self, provided: &[TensorId], outputs: &[TensorId]) -> Result<Vec<usize>> {
        let g = &self.graph;
        let mut needed = vec![false; g.tensors.len()];
        for &o in outputs {
            needed[o] = true;
        }
        let mut take = vec![false; g.nodes.len()];
        for &ni in self.plan.order.iter().rev() {
            let n = &g.nodes[ni];
            if n.op.outputs().iter().any(|v| needed[v.tensor] && !provided.contains(&v.tensor)) {
                take[ni] = true;
                for r in n.op.reads() {
                    needed[r.tensor] = true;
                }
            }
        }
        if let Some(&missing) = g.inputs.iter().find(|&&t| needed[t] && !provided.contains(&t) && !g.nodes.iter().enumerate().any(|(i, n)| take[i] && n.op.outputs().iter().any(|v| v.tensor == t))) {
            let alternatives: Vec<&str> = g.inputs.iter().filter(|&&t| t != missing).map(|&t| g.tensors[t].name.as_str()).collect();
            return Err(Error::Input(format!("the requested outputs need the input `{}`{}", g.tensors[missing].name, if alternatives.is_empty() { String::new() } else { format!(" (or {alternatives:?})") })));
        }
        Ok(self.plan.order.iter().copied().filter(|&i| take[i]).collect())
    }

    /// Uploads `inputs` (checked against the graph's input tensors: dtype and size) and records
    /// the dispatches that `outputs` need. Returns the recorded encoder and the output tensors.
    fn record(&mut self, inputs: &[Tensor], outputs: &[&str]) -> Result<(wgpu::CommandEncoder, Vec<TensorId>)> {
        let mut provided = vec![];
        for t in inputs {
            let id = self.tensor_named(&t.name)?;
            if !self.graph.inputs.contains(&id) {
                return Err(Error::Input(format!("`{}` is not an input; inputs are {:?}", t.name, self.input_names())));
            }
            let d = &self.graph.tensors[id];
            if t.data.dtype() != d.dtype || t.data.len() != d.numel() {
                return Err(Error::Input(format!("input `{}` needs {} {} values ({}x{}x{}), got {} {}", d.name, d.numel(), d.dtype.name(), d.c, d.h, d.w, t.data.len(), t.data.dtype().name())));
            }
            let bytes = t.data.bytes();
            let plane = d.plane_bytes() as usize;
            for (a, off, c0, c) in self.chunks(id) {
                let chunk = &bytes[c0 * plane..(c0 + c) * plane];
                // uploads are whole 4-byte words: only a u8 tensor of odd size needs a padded copy
                if chunk.len() % 4 == 0 {
                    self.gpu.queue.write_buffer(&self.arenas[a], off, chunk);
                } else {
                    let mut padded = chunk.to_vec();
                    padded.resize(chunk.len().next_multiple_of(4), 0);
                    self.gpu.queue.write_buffer(&self.arenas[a], off, &padded);
                }
            }
            provided.push(id);
        }
        let outs: Vec<TensorId> = outputs.iter().map(|n| self.tensor_named(n)).collect::<Result<_>>()?;
        let nodes = self.selected(&provided, &outs)?;
        let dev = self.gpu.device.clone();
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("atrous run") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("atrous"), timestamp_writes: None });
            for &n in &nodes {
                for d in &self.node_dispatches[n] {
                    d.record(&mut pass);
                }
            }
        }
        Ok((enc, outs))
    }

    /// A MAP_READ buffer for tensor `t` (made once), and the copies of its chunks into it.
    fn copy_out(&mut self, enc: &mut wgpu::CommandEncoder, t: TensorId) -> wgpu::Buffer {
        let d = &self.graph.tensors[t];
        let size = d.bytes().next_multiple_of(4).max(4);
        let rb = self
            .readbacks
            .entry(t)
            .or_insert_with(|| {
                self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("atrous readback {}", d.name)),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .clone();
        let plane = d.plane_bytes();
        for p in &self.plan.placements[t] {
            let bytes = (p.c as u64 * plane).next_multiple_of(4).min(size - p.c0 as u64 * plane);
            enc.copy_buffer_to_buffer(&self.arenas[p.arena], p.offset, &rb, p.c0 as u64 * plane, bytes);
        }
        rb
    }

    /// Runs the graph: `inputs` are graph inputs by name (`input`: the normalised NCHW float
    /// tensor; `rgba`: packed RGBA8 pixels, one `u32` each, with a normalisation), `outputs` are
    /// graph outputs by name (`classes`: the class map as `u8`; `logits`; `probs` with the
    /// probabilities head). Only the nodes the outputs need are recorded; one submission.
    pub fn run(&mut self, inputs: &[Tensor], outputs: &[&str]) -> Result<Vec<Tensor>> {
        self.gpu.check()?;
        let dev = self.gpu.device.clone();
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let (mut enc, outs) = self.record(inputs, outputs)?;
        let rbs: Vec<wgpu::Buffer> = outs.iter().map(|&t| self.copy_out(&mut enc, t)).collect();
        self.gpu.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.gpu.check()?;
            return Err(Error::Gpu { during: "recording the run".into(), reason: e.to_string() });
        }
        let mut result = vec![];
        for ((&t, rb), name) in outs.iter().zip(&rbs).zip(outputs) {
            let d = &self.graph.tensors[t];
            let bytes = read_buffer(&self.gpu, rb)?;
            result.push(Tensor { name: name.to_string(), shape: d.shape(), data: TensorData::from_bytes(d.dtype, &bytes, d.numel()) });
        }
        Ok(result)
    }

    fn pixels(&self, rgb: &[u8]) -> Result<Tensor> {
        if self.ids.rgba.is_none() {
            return Err(Error::Input(NO_PIXELS.into()));
        }
        let hw = self.h * self.w;
        if rgb.len() != 3 * hw {
            return Err(Error::Input(format!("image has {} bytes, the session expects {}x{} RGB = {}", rgb.len(), self.h, self.w, 3 * hw)));
        }
        Ok(Tensor { name: "rgba".into(), shape: [1, 1, self.h, self.w], data: TensorData::U32(pack_rgb(rgb)) })
    }

    fn tensor_input(&self, x: &[f32]) -> Result<Tensor> {
        let c = self.graph.tensors[self.ids.input].c;
        let hw = self.h * self.w;
        if x.len() != c * hw {
            return Err(Error::Input(format!("tensor has {} values, the session expects {}x{}x{} = {}", x.len(), c, self.h, self.w, c * hw)));
        }
        let data = match self.graph.tensors[self.ids.input].dtype {
            crate::graph::DType::F16 => TensorData::F16(x.iter().map(|&v| half::f16::from_f32(v)).collect()),
            _ => TensorData::F32(x.to_vec()),
        };
        Ok(Tensor { name: self.graph.tensors[self.ids.input].name.clone(), shape: [1, c, self.h, self.w], data })
    }

    fn class_map(&self, t: Tensor) -> ClassMap {
        let data = match t.data {
            TensorData::U8(v) => v,
            _ => unreachable!("the class map is u8"),
        };
        let (h, w) = self.map_hw();
        ClassMap { h, w, data }
    }

    /// Runs with the class map and, if asked, one float output; returns both.
    fn run_with(&mut self, input: Tensor, extra: Option<&str>) -> Result<(ClassMap, Option<Vec<f32>>)> {
        if extra == Some("probs") && self.ids.probs.is_none() {
            self.enable_probabilities()?;
        }
        let names: Vec<&str> = std::iter::once("classes").chain(extra).collect();
        let mut out = self.run(&[input], &names)?.into_iter();
        let map = self.class_map(out.next().expect("classes"));
        let extra = out.next().map(|t| t.data.into_f32().expect("float output"));
        Ok((map, extra))
    }

    /// Rebuilds the session with the probabilities head (once).
    fn enable_probabilities(&mut self) -> Result<()> {
        let options = SessionOptions { probabilities: true, skip_probe: true, ..self.options };
        *self = Session::with_options(&self.gpu.clone(), &without_heads(&self.graph, &self.ids), options)?;
        Ok(())
    }

    /// Runs on an already-normalised NCHW `[3, h, w]` tensor.
    pub fn run_tensor(&mut self, x: &[f32]) -> Result<ClassMap> {
        let t = self.tensor_input(x)?;
        Ok(self.run_with(t, None)?.0)
    }

    /// Runs on a normalised tensor and also reads back the logits (`[classes, h, w]`).
    pub fn run_tensor_logits(&mut self, x: &[f32]) -> Result<(ClassMap, Vec<f32>)> {
        let t = self.tensor_input(x)?;
        let (m, l) = self.run_with(t, Some("logits"))?;
        Ok((m, l.expect("logits requested")))
    }

    /// Runs on 8-bit RGB pixels (row-major, 3 bytes per pixel) of exactly the planned size; the
    /// normalisation runs on the GPU.
    pub fn run_rgb(&mut self, rgb: &[u8]) -> Result<ClassMap> {
        let t = self.pixels(rgb)?;
        Ok(self.run_with(t, None)?.0)
    }

    pub fn run_rgb_logits(&mut self, rgb: &[u8]) -> Result<(ClassMap, Vec<f32>)> {
        let t = self.pixels(rgb)?;
        let (m, l) = self.run_with(t, Some("logits"))?;
        Ok((m, l.expect("logits requested")))
    }

    /// Runs on 8-bit RGB pixels and also reads back per-class probabilities (softmax over the
    /// logits, `[classes, h, w]`), computed on the GPU.
    pub fn run_rgb_probabilities(&mut self, rgb: &[u8]) -> Result<(ClassMap, Vec<f32>)> {
        let t = self.pixels(rgb)?;
        let (m, l) = self.run_with(t, Some("probs"))?;
        Ok((m, l.expect("probabilities requested")))
    }

    /// Like [`run_rgb_probabilities`](Self::run_rgb_probabilities) for a normalised tensor.
    pub fn run_tensor_probabilities(&mut self, x: &[f32]) -> Result<(ClassMap, Vec<f32>)> {
        let t = self.tensor_input(x)?;
        let (m, l) = self.run_with(t, Some("probs"))?;
        Ok((m, l.expect("probabilities requested")))
    }

    /// Runs a stream of images with the work overlapped: image n+1 is uploaded and submitted
    /// before image n's class map is read back, with two readback buffers taking turns, so the
    /// host's decoding, upload and readback overlap the device's compute. `images` yields RGB8
    /// pixels of the planned size (or an error, which is passed on); `sink` gets each result with
    /// its index, in order.
    pub fn run_rgb_pipelined<I>(&mut self, images: I, mut sink: impl FnMut(usize, Result<ClassMap>)) -> Result<()>
    where
        I: IntoIterator<Item = Result<Vec<u8>>>,
    {
        self.gpu.check()?;
        if self.ids.rgba.is_none() {
            return Err(Error::Input(NO_PIXELS.into()));
        }
        let (h, w) = self.map_hw();
        let hw = h * w;
        let dev = self.gpu.device.clone();
        let map_bytes = self.class_map_bytes();
        let rb = [0, 1].map(|i| {
            dev.create_buffer(&wgpu::BufferDescriptor { label: Some(&format!("atrous readback {i}")), size: map_bytes, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false })
        });
        let mut pending: Option<(usize, usize, wgpu::SubmissionIndex)> = None;
        let gpu = self.gpu.clone();
        let finish = |p: (usize, usize, wgpu::SubmissionIndex), sink: &mut dyn FnMut(usize, Result<ClassMap>)| {
            let (i, slot, sub) = p;
            sink(i, read_buffer_after(&gpu, &rb[slot], sub).map(|b| ClassMap { h, w, data: b[..hw].to_vec() }));
        };
        for (i, img) in images.into_iter().enumerate() {
            let input = match img.and_then(|px| self.pixels(&px)) {
                Ok(t) => t,
                Err(e) => {
                    // keep the results in order: the image in flight first
                    if let Some(p) = pending.take() {
                        finish(p, &mut sink);
                    }
                    sink(i, Err(e));
                    continue;
                }
            };
            let slot = i % 2;
            let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
            let (mut enc, _) = self.record(&[input], &["classes"])?;
            let s = self.classes_slot();
            enc.copy_buffer_to_buffer(s.buffer, s.offset, &rb[slot], 0, map_bytes);
            let sub = self.gpu.queue.submit([enc.finish()]);
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Gpu { during: "recording a pipelined run".into(), reason: e.to_string() });
            }
            // the previous image's class map, while this one computes
            if let Some(p) = pending.take() {
                finish(p, &mut sink);
            }
            pending = Some((i, slot, sub));
        }
        if let Some(p) = pending.take() {
            finish(p, &mut sink);
        }
        Ok(())
    }
}

/// Timings of every dispatch of a session, from [`Session::profile`].
#[derive(Clone, Debug)]
pub struct Profile {
    /// GPU timestamps (true) or wall clock per dispatch (false).
    pub timestamps: bool,
    pub dispatches: Vec<DispatchProfile>,
}

#[derive(Clone, Debug)]
pub struct DispatchProfile {
    pub label: String,
    pub entry: &'static str,
    pub shape: String,
    pub flops: u64,
    pub bytes: u64,
    /// One time per iteration, in nanoseconds.
    pub nanos: Vec<f64>,
}

impl DispatchProfile {
    pub fn median_ns(&self) -> f64 {
        median(&self.nanos)
    }
}

/// Median of a sample (0 for an empty one).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// The `q` quantile (nearest rank) of a sample.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// Maps a `MAP_READ` buffer once `submission` is done, copies it out and unmaps it.
fn read_buffer_after(gpu: &Gpu, buf: &wgpu::Buffer, submission: wgpu::SubmissionIndex) -> Result<Vec<u8>> {
    let slice = buf.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None }).map_err(|e| Error::Gpu { during: "waiting for a run".into(), reason: e.to_string() })?;
    rx.recv().map_err(|e| Error::Gpu { during: "reading back".into(), reason: e.to_string() })?.map_err(|e| Error::Gpu { during: "mapping the readback buffer".into(), reason: e.to_string() })?;
    let out = slice.get_mapped_range().map_err(|e| Error::Gpu { during: "reading the mapped range".into(), reason: e.to_string() })?.to_vec();
    buf.unmap();
    Ok(out)
}

/// Maps a `MAP_READ` buffer, copies it out and unmaps it.
pub fn read_buffer(gpu: &Gpu, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
    let slice = buf.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv().map_err(|e| Error::Gpu { during: "reading back".into(), reason: e.to_string() })?.map_err(|e| Error::Gpu { during: "mapping the readback buffer".into(), reason: e.to_string() })?;
    let out = slice.get_mapped_range().map_err(|e| Error::Gpu { during: "reading the mapped range".into(), reason: e.to_string() })?.to_vec();
    buf.unmap();
    Ok(out)
}

/// Builds the dispatch of one graph node whose views each lie in one binding (see
/// [`crate::split`]), with `resolve` locating them: the operator's own `encode_all`. Returns the
/// dispatches and the buffers they bind. Used by [`Session`] and [`OpRunner`].
pub(crate) fn encode_node<'a>(dev: &wgpu::Device, kernels: &Kernels, graph: &Graph, node: &Node, resolve: Resolve<'a, '_>) -> Result<(Vec<Dispatch>, Vec<wgpu::Buffer>)> {
    let cx = EncodeCx { dev, kernels, graph, resolve, dtype: crate::ops::float_dtype(graph, node.op.0.as_ref()) };
    node.op.encode_all(&cx, &node.name)
}

/// Runs single graph nodes on buffers of their own, every tensor separate and the output
/// pre-filled by the caller: the GPU side of the per-operator tests and benchmarks.
pub struct OpRunner {
    gpu: Gpu,
    kernels: Kernels,
}

impl OpRunner {
    pub fn new(gpu: &Gpu) -> Self {
        Self::with_arith(gpu, crate::kernels::Arith::F32)
    }

    /// A runner whose f16 kernel variants compute in `arith` (other variants as a session's).
    pub fn with_arith(gpu: &Gpu, arith: crate::kernels::Arith) -> Self {
        Self::with_variants(gpu, arith, Kernels::tiles_for(gpu))
    }

    /// A runner with the given kernel variants: f16 arithmetic, workgroup-tiled convolutions
    /// (the op tests run the GPU variants on a software adapter this way).
    pub fn with_variants(gpu: &Gpu, arith: crate::kernels::Arith, tiles: bool) -> Self {
        OpRunner { gpu: gpu.clone(), kernels: Kernels::new(&gpu.device).with_arith(arith).with_tiles(tiles) }
    }

    /// The same runner with the plain variants of kernels that have a subgroup one.
    pub fn without_subgroups(self) -> Self {
        OpRunner { kernels: self.kernels.with_subgroups(false), ..self }
    }

    /// Uploads the node's tensors and builds its dispatch. `data` holds the initial contents of
    /// every tensor the node touches (the output's too, normally NaN everywhere except an
    /// addend's channels).
    pub fn prepare(&self, graph: &Graph, node: usize, data: &std::collections::HashMap<usize, Vec<f32>>) -> Result<PreparedOp> {
        let dev = &self.gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let n = &graph.nodes[node];
        let mut bufs: std::collections::HashMap<usize, wgpu::Buffer> = std::collections::HashMap::new();
        let touched: Vec<usize> = n.op.reads().iter().chain(n.op.outputs().iter()).map(|v| v.tensor).collect();
        for &t in &touched {
            let d = data.get(&t).ok_or_else(|| Error::Input(format!("no data for tensor `{}`", graph.tensors[t].name)))?;
            if d.len() != graph.tensors[t].numel() {
                return Err(Error::Input(format!("tensor `{}` needs {} values, got {}", graph.tensors[t].name, graph.tensors[t].numel(), d.len())));
            }
            let desc = &graph.tensors[t];
            bufs.entry(t).or_insert_with(|| buffer_init(dev, &desc.name, &desc.dtype.encode(d), wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST));
        }
        let resolve = |v: View| -> Result<(Slot<'_>, u32)> {
            let d = &graph.tensors[v.tensor];
            Ok((Slot::whole(&bufs[&v.tensor]), (v.c0 * d.h * d.w) as u32))
        };
        // an operator that lowers to others (a concatenation to copies) runs as its pieces
        let mut dispatches = vec![];
        let mut keep = vec![];
        for piece in crate::split::split_node(n, &|_| vec![])? {
            let (d, k) = encode_node(dev, &self.kernels, graph, &piece, &resolve)?;
            dispatches.extend(d);
            keep.extend(k);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: format!("preparing `{}`", n.name), reason: e.to_string() });
        }
        let out = n.op.writes().tensor;
        let (dtype, numel) = (graph.tensors[out].dtype, graph.tensors[out].numel());
        Ok(PreparedOp {
            gpu: self.gpu.clone(),
            dispatch: dispatches[0].clone(),
            rest: dispatches[1..].to_vec(),
            output: bufs.remove(&out).expect("output buffer"),
            dtype,
            numel,
            _keep: (bufs.into_values().collect(), keep),
        })
    }

    /// Runs `graph.nodes[node]` once and returns the whole tensor it writes.
    pub fn run(&self, graph: &Graph, node: usize, data: &std::collections::HashMap<usize, Vec<f32>>) -> Result<Vec<f32>> {
        let op = self.prepare(graph, node, data)?;
        op.submit(1)?;
        op.read_output()
    }
}

/// One operator with its own buffers, ready to dispatch (tests and benchmarks).
pub struct PreparedOp {
    gpu: Gpu,
    pub dispatch: Dispatch,
    /// Further dispatches of an operator that runs as several (a lowered concatenation).
    pub rest: Vec<Dispatch>,
    dtype: crate::graph::DType,
    numel: usize,
    output: wgpu::Buffer,
    _keep: (Vec<wgpu::Buffer>, Vec<wgpu::Buffer>),
}

impl PreparedOp {
    /// Records the dispatch `iters` times in one pass, submits and waits.
    pub fn submit(&self, iters: usize) -> Result<()> {
        let dev = &self.gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..iters.max(1) {
                self.dispatch.record(&mut pass);
                for d in &self.rest {
                    d.record(&mut pass);
                }
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: format!("running `{}`", self.dispatch.label), reason: e.to_string() });
        }
        self.gpu.wait()
    }

    /// Reads the whole output tensor back.
    pub fn read_output(&self) -> Result<Vec<f32>> {
        let dev = &self.gpu.device;
        let rb = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("op readback"), size: self.output.size(), usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let mut enc = dev.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.output, 0, &rb, 0, self.output.size());
        self.gpu.queue.submit([enc.finish()]);
        Ok(self.dtype.decode(&read_buffer(&self.gpu, &rb)?, self.numel))
    }
}

/// RGB8 pixels as the `rgba` input holds them: one little-endian `u32` each, alpha 0.
fn pack_rgb(rgb: &[u8]) -> Vec<u32> {
    rgb.chunks_exact(3).map(|p| u32::from_le_bytes([p[0], p[1], p[2], 0])).collect()
}

/// Refines class probabilities from any source with the dense CRF on the device
/// ([`crate::ops::DenseCrf`]): `rgb` `[h][w][3]` bytes, `probs` `[c][h][w]`; returns the
/// marginals `[c][h][w]`. One submission; the lattices are built for this image.
pub fn run_crf(gpu: &Gpu, rgb: &[u8], probs: &[f32], c: usize, h: usize, w: usize, params: crate::crf::CrfParams) -> Result<Vec<f32>> {
    use crate::graph::DType;
    if rgb.len() != h * w * 3 || probs.len() != c * h * w {
        return Err(Error::Input(format!("{} image bytes and {} probabilities for {c} classes at {h}x{w}", rgb.len(), probs.len())));
    }
    let mut g = Graph::new(1, 1, 1);
    let rgba = g.add_input("rgba", DType::U32, 1, h, w);
    let x = g.add_input("probs", DType::F32, c, h, w);
    let y = g.tensor_of("marginals", DType::F32, c, h, w);
    g.push("crf", crate::ops::DenseCrf { image: g.all(rgba), x: g.all(x), y: g.all(y), params })?;
    // the operator runner takes u32 tensors as f32 bit patterns
    let pixels: Vec<f32> = pack_rgb(rgb).into_iter().map(f32::from_bits).collect();
    let data = std::collections::HashMap::from([(rgba, pixels), (x, probs.to_vec()), (y, vec![0.0; c * h * w])]);
    gpu.check()?;
    let q = OpRunner::new(gpu).run(&g, 0, &data)?;
    gpu.check()?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::Precision;

    #[test]
    fn precision_names_parse_and_round_trip() {
        for (name, p) in [("f32", Precision::F32), ("f16", Precision::F16), ("half", Precision::F16), ("f16-acc32", Precision::F16), ("f16-compute", Precision::F16Compute)] {
            assert_eq!(Precision::parse(name, None).unwrap(), p, "{name}");
            assert_eq!(Precision::parse(p.name(), None).unwrap(), p);
        }
        assert_eq!(Precision::F16Compute.arith(), crate::kernels::Arith::F16);
        assert_eq!(Precision::F16.arith(), crate::kernels::Arith::F32);
        assert!(Precision::parse("f8", None).unwrap_err().to_string().contains("f16-compute"));
        assert!(Precision::parse("auto", None).is_err());
    }
}
