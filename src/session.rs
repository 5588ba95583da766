//! A session: a graph planned for one input size on one device, with its buffers, pipelines and
//! bind groups built once. Each run is one command submission; only the class map (one byte per
//! pixel) comes back, unless the caller asks for the logits too.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{Graph, Op, View};
use crate::kernels::{self, conv, Dispatch, Kernels, Shader, Slot};
use crate::plan::{Plan, PlanLimits};
use crate::preprocess::Normalize;

/// A class map: one class index per pixel, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassMap {
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

pub struct Session {
    gpu: Gpu,
    pub plan: Plan,
    h: usize,
    w: usize,
    classes: usize,
    arenas: Vec<wgpu::Buffer>,
    /// Kept alive for the bind groups.
    _params: Vec<wgpu::Buffer>,
    _uniforms: wgpu::Buffer,
    /// One per graph node, in execution order, then the argmax.
    pub dispatches: Vec<Dispatch>,
    preprocess: Option<(Dispatch, wgpu::Buffer)>,
    classes_buf: wgpu::Buffer,
    readback: wgpu::Buffer,
    input_at: (usize, u64),
    logits_at: (usize, u64, u64),
}

struct Uniforms {
    bytes: Vec<u8>,
    stride: u64,
}

impl Uniforms {
    fn push<T: bytemuck::Pod>(&mut self, p: &T) -> u64 {
        let off = self.bytes.len() as u64;
        let mut b = kernels::uniform_bytes(p);
        b.resize(self.stride as usize, 0);
        self.bytes.extend(b);
        off
    }
}

impl Session {
    /// Plans `graph` for `gpu`, uploads its parameters and records every dispatch. `normalize`
    /// enables [`Session::run_rgb`] (GPU-side preprocessing of 8-bit pixels).
    pub fn new(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>) -> Result<Self> {
        Self::with_limits(gpu, graph, normalize, PlanLimits::from_device(&gpu.limits()))
    }

    /// Like [`Session::new`] with explicit planner limits (tests force small arenas with it).
    pub fn with_limits(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>, limits: PlanLimits) -> Result<Self> {
        let dev = &gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::build(gpu, graph, normalize, limits);
        let oom_err = pollster::block_on(oom.pop());
        let val_err = pollster::block_on(scope.pop());
        if let Some(e) = oom_err {
            return Err(Error::Gpu { during: "building the session (out of memory)".into(), reason: e.to_string() });
        }
        if let Some(e) = val_err {
            return Err(Error::Gpu { during: "building the session".into(), reason: e.to_string() });
        }
        built
    }

    fn build(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>, limits: PlanLimits) -> Result<Self> {
        let dev = &gpu.device;
        let plan = Plan::new(graph, limits)?;
        let kernels = Kernels::new(dev);
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
        let slot = |t: usize| -> Slot<'_> {
            let p = plan.placements[t].expect("placed tensor");
            Slot { buffer: &arenas[p.arena], offset: p.offset, size: graph.tensors[t].bytes() }
        };
        let elem = |v: View| -> u32 {
            let d = &graph.tensors[v.tensor];
            (v.c0 * d.h * d.w) as u32
        };
        let stride = (gpu.limits().min_uniform_buffer_offset_alignment as u64).max(256);
        let mut uni = Uniforms { bytes: vec![], stride };

        // First pass: parameter buffers and uniform offsets; bind groups need both to exist.
        enum Pending {
            Conv(conv::Prepared, u64, usize),
            Pool(u64, [u32; 3]),
            Affine(u64, usize, [u32; 3]),
        }
        let mut params: Vec<wgpu::Buffer> = vec![];
        let mut pending = vec![];
        for &ni in &plan.order {
            let node = &graph.nodes[ni];
            let p = match &node.op {
                Op::Conv2d(o) => {
                    let add = match o.add {
                        None => conv::AddFrom::None,
                        Some(a) if a.tensor == o.y.tensor => conv::AddFrom::Dst(elem(a)),
                        Some(a) if a.tensor == o.x.tensor => conv::AddFrom::Src(elem(a)),
                        Some(a) => conv::AddFrom::Other(elem(a)),
                    };
                    let prep = conv::prepare_conv2d(o, elem(o.x), elem(o.y), add).map_err(|e| Error::op(&node.name, e.to_string()))?;
                    let u = uni.push(&prep.params);
                    params.push(dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(&node.name), contents: bytemuck::cast_slice(&prep.prm), usage: wgpu::BufferUsages::STORAGE }));
                    Pending::Conv(prep, u, params.len() - 1)
                }
                Op::ConvT2d(o) => {
                    let prep = conv::prepare_conv_t2d(o, elem(o.x), elem(o.y)).map_err(|e| Error::op(&node.name, e.to_string()))?;
                    let u = uni.push(&prep.params);
                    params.push(dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(&node.name), contents: bytemuck::cast_slice(&prep.prm), usage: wgpu::BufferUsages::STORAGE }));
                    Pending::Conv(prep, u, params.len() - 1)
                }
                Op::Pool2d(o) => {
                    let (pp, groups) = kernels::pool::prepare(o, elem(o.x), elem(o.y)).map_err(|e| Error::op(&node.name, e.to_string()))?;
                    Pending::Pool(uni.push(&pp), groups)
                }
                Op::Affine(o) => {
                    let (h, w) = graph.hw(o.x);
                    let (ap, mut prm, groups) = kernels::eltwise::prepare(o, h * w, elem(o.x), elem(o.y), o.add.map(elem));
                    prm.resize(prm.len().next_multiple_of(4), 0.0);
                    let u = uni.push(&ap);
                    params.push(dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(&node.name), contents: bytemuck::cast_slice(&prm), usage: wgpu::BufferUsages::STORAGE }));
                    Pending::Affine(u, params.len() - 1, groups)
                }
            };
            pending.push(p);
        }
        let logits = graph.logits.ok_or_else(|| Error::op("graph", "no logits tensor"))?;
        let ld = &graph.tensors[logits];
        let hw = ld.h * ld.w;
        if ld.c > 256 {
            return Err(Error::op("argmax", format!("{} classes do not fit the 8-bit class map", ld.c)));
        }
        let (amp, am_groups) = kernels::argmax::prepare(ld.c, hw, 0);
        let am_u = uni.push(&amp);
        let input = &graph.tensors[graph.input];
        let pre = normalize.map(|n| {
            let (pp, groups) = kernels::preprocess::prepare(&n, input.h * input.w, 0);
            (uni.push(&pp), groups)
        });
        let uniforms = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("atrous uniforms"), contents: &uni.bytes, usage: wgpu::BufferUsages::UNIFORM });
        let uslot = |off: u64, size: usize| Slot { buffer: &uniforms, offset: off, size: (size as u64).next_multiple_of(16) };

        let mut dispatches = vec![];
        for (&ni, p) in plan.order.iter().zip(pending) {
            let node = &graph.nodes[ni];
            let flops = node.op.flops(graph);
            let act_bytes: u64 = node.op.reads().iter().chain(std::iter::once(&node.op.writes())).map(|v| (v.c * graph.hw(*v).0 * graph.hw(*v).1 * 4) as u64).sum();
            let d = match (&node.op, p) {
                (Op::Conv2d(o), Pending::Conv(prep, u, pi)) => {
                    let add = match o.add {
                        Some(a) if a.tensor != o.y.tensor && a.tensor != o.x.tensor => slot(a.tensor),
                        _ => kernels.dummy(),
                    };
                    let slots = [slot(o.x.tensor), Slot::whole(&params[pi]), slot(o.y.tensor), add, uslot(u, std::mem::size_of::<conv::ConvParams>())];
                    kernels.dispatch(Shader::Conv, prep.entry, &slots, prep.groups, &node.name, flops, act_bytes + params[pi].size())
                }
                (Op::ConvT2d(o), Pending::Conv(prep, u, pi)) => {
                    let slots = [slot(o.x.tensor), Slot::whole(&params[pi]), slot(o.y.tensor), kernels.dummy(), uslot(u, std::mem::size_of::<conv::ConvParams>())];
                    kernels.dispatch(Shader::Conv, prep.entry, &slots, prep.groups, &node.name, flops, act_bytes + params[pi].size())
                }
                (Op::Pool2d(o), Pending::Pool(u, groups)) => {
                    let slots = [slot(o.x.tensor), slot(o.y.tensor), uslot(u, std::mem::size_of::<kernels::pool::PoolParams>())];
                    kernels.dispatch(Shader::Pool, "pool2d", &slots, groups, &node.name, flops, act_bytes)
                }
                (Op::Affine(o), Pending::Affine(u, pi, groups)) => {
                    let add = match o.add {
                        Some(a) => slot(a.tensor),
                        None => kernels.dummy(),
                    };
                    let slots = [slot(o.x.tensor), Slot::whole(&params[pi]), slot(o.y.tensor), add, uslot(u, std::mem::size_of::<kernels::eltwise::AffineParams>())];
                    kernels.dispatch(Shader::Eltwise, "affine", &slots, groups, &node.name, flops, act_bytes + params[pi].size())
                }
                _ => unreachable!("pending entry matches its node"),
            };
            dispatches.push(d);
        }
        let map_bytes = kernels::argmax::map_bytes(hw);
        let classes_buf = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous classes"), size: map_bytes, usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC, mapped_at_creation: false });
        dispatches.push(kernels.dispatch(
            Shader::Argmax,
            "argmax",
            &[slot(logits), Slot::whole(&classes_buf), uslot(am_u, std::mem::size_of::<kernels::argmax::ArgmaxParams>())],
            am_groups,
            "argmax",
            (ld.c * hw) as u64,
            ld.bytes() + map_bytes,
        ));
        let preprocess = pre.map(|(u, groups)| {
            let rgba = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous rgba"), size: (input.h * input.w * 4) as u64, usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
            let d = kernels.dispatch(
                Shader::Preprocess,
                "preprocess",
                &[Slot::whole(&rgba), slot(graph.input), uslot(u, std::mem::size_of::<kernels::preprocess::PreParams>())],
                groups,
                "preprocess",
                (input.numel() * 3) as u64,
                (input.h * input.w * 4) as u64 + input.bytes(),
            );
            (d, rgba)
        });
        let readback = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous readback"), size: map_bytes, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let ip = plan.placements[graph.input].expect("input placed");
        let lp = plan.placements[logits].expect("logits placed");
        Ok(Session {
            gpu: gpu.clone(),
            h: input.h,
            w: input.w,
            classes: ld.c,
            arenas,
            _params: params,
            _uniforms: uniforms,
            dispatches,
            preprocess,
            classes_buf,
            readback,
            input_at: (ip.arena, ip.offset),
            logits_at: (lp.arena, lp.offset, ld.bytes()),
            plan,
        })
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

    /// Runs on an already-normalised NCHW `[3, h, w]` tensor.
    pub fn run_tensor(&mut self, x: &[f32]) -> Result<ClassMap> {
        Ok(self.run_inner(Input::Tensor(x), false)?.0)
    }

    /// Runs on a normalised tensor and also reads back the logits (`[classes, h, w]`).
    pub fn run_tensor_logits(&mut self, x: &[f32]) -> Result<(ClassMap, Vec<f32>)> {
        let (m, l) = self.run_inner(Input::Tensor(x), true)?;
        Ok((m, l.expect("logits requested")))
    }

    /// Runs on 8-bit RGB pixels (row-major, 3 bytes per pixel) of exactly the planned size; the
    /// normalisation runs on the GPU.
    pub fn run_rgb(&mut self, rgb: &[u8]) -> Result<ClassMap> {
        Ok(self.run_inner(Input::Rgb(rgb), false)?.0)
    }

    pub fn run_rgb_logits(&mut self, rgb: &[u8]) -> Result<(ClassMap, Vec<f32>)> {
        let (m, l) = self.run_inner(Input::Rgb(rgb), true)?;
        Ok((m, l.expect("logits requested")))
    }

    fn run_inner(&mut self, input: Input<'_>, want_logits: bool) -> Result<(ClassMap, Option<Vec<f32>>)> {
        let hw = self.h * self.w;
        let dev = self.gpu.device.clone();
        let queue = &self.gpu.queue;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut pre = None;
        match input {
            Input::Tensor(x) => {
                if x.len() != 3 * hw {
                    return Err(Error::Input(format!("tensor has {} values, the session expects 3x{}x{} = {}", x.len(), self.h, self.w, 3 * hw)));
                }
                queue.write_buffer(&self.arenas[self.input_at.0], self.input_at.1, bytemuck::cast_slice(x));
            }
            Input::Rgb(px) => {
                if px.len() != 3 * hw {
                    return Err(Error::Input(format!("image has {} bytes, the session expects {}x{} RGB = {}", px.len(), self.h, self.w, 3 * hw)));
                }
                let (d, buf) = self.preprocess.as_ref().ok_or_else(|| Error::Input("this session was built without a normalisation, so it takes tensors only".into()))?;
                let rgba: Vec<u8> = px.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
                queue.write_buffer(buf, 0, &rgba);
                pre = Some(d);
            }
        }
        let logits_rb = want_logits.then(|| dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous logits readback"), size: self.logits_at.2, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false }));
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("atrous run") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("atrous"), timestamp_writes: None });
            if let Some(d) = pre {
                d.record(&mut pass);
            }
            for d in &self.dispatches {
                d.record(&mut pass);
            }
        }
        enc.copy_buffer_to_buffer(&self.classes_buf, 0, &self.readback, 0, self.readback.size());
        if let Some(rb) = &logits_rb {
            enc.copy_buffer_to_buffer(&self.arenas[self.logits_at.0], self.logits_at.1, rb, 0, self.logits_at.2);
        }
        queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: "recording the run".into(), reason: e.to_string() });
        }
        let bytes = read_buffer(&self.gpu, &self.readback)?;
        let map = ClassMap { h: self.h, w: self.w, data: bytes[..hw].to_vec() };
        let logits = match logits_rb {
            Some(rb) => Some(bytemuck::cast_slice::<u8, f32>(&read_buffer(&self.gpu, &rb)?).to_vec()),
            None => None,
        };
        Ok((map, logits))
    }
}

enum Input<'a> {
    Tensor(&'a [f32]),
    Rgb(&'a [u8]),
}

/// Maps a `MAP_READ` buffer, copies it out and unmaps it.
pub fn read_buffer(gpu: &Gpu, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
    let slice = buf.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv()
        .map_err(|e| Error::Gpu { during: "reading back".into(), reason: e.to_string() })?
        .map_err(|e| Error::Gpu { during: "mapping the readback buffer".into(), reason: e.to_string() })?;
    let out = slice.get_mapped_range().map_err(|e| Error::Gpu { during: "reading the mapped range".into(), reason: e.to_string() })?.to_vec();
    buf.unmap();
    Ok(out)
}
