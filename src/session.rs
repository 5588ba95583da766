//! A session: a graph planned for one input size on one device, with its buffers, pipelines and
//! bind groups built once. Each run is one command submission; only the class map (one byte per
//! pixel) comes back, unless the caller asks for the logits too.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{Graph, Node, View};
use crate::kernels::{self, Dispatch, Kernels, Shader, Slot};
use crate::ops::{buffer_init, EncodeCx, Resolve};
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
    input_c: usize,
    classes: usize,
    arenas: Vec<wgpu::Buffer>,
    /// Parameter and uniform buffers, kept with the bind groups that use them.
    _owned: Vec<wgpu::Buffer>,
    /// One or more per graph node (one per channel piece when a tensor is split across
    /// bindings), in execution order, then the argmax.
    pub dispatches: Vec<Dispatch>,
    /// Preprocessing dispatches (one per input chunk) and the RGBA upload buffer.
    preprocess: Option<(Vec<Dispatch>, wgpu::Buffer)>,
    classes_buf: wgpu::Buffer,
    /// Best logit per pixel between the passes of a chunked argmax.
    best_buf: Option<wgpu::Buffer>,
    readback: wgpu::Buffer,
    /// Chunks of the input and of the logits: (arena, byte offset, first channel, channels).
    input_at: Vec<(usize, u64, usize, usize)>,
    logits_at: Vec<(usize, u64, usize, usize)>,
    /// Softmax dispatch and its output buffer, once enabled.
    probs: Option<(Dispatch, wgpu::Buffer, wgpu::Buffer)>,
    kernels: Kernels,
    normalize: Option<Normalize>,
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

impl Session {
    /// Plans `graph` for `gpu`, uploads its parameters and records every dispatch. `normalize`
    /// enables [`Session::run_rgb`] (GPU-side preprocessing of 8-bit pixels).
    pub fn new(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>) -> Result<Self> {
        Self::with_limits(gpu, graph, normalize, PlanLimits::from_device(&gpu.limits()))
    }

    /// Like [`Session::new`] with explicit planner limits (tests force small arenas with it).
    pub fn with_limits(gpu: &Gpu, graph: &Graph, normalize: Option<Normalize>, limits: PlanLimits) -> Result<Self> {
        gpu.check()?;
        let dev = &gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let built = Self::build(gpu, graph, normalize, limits);
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
        let chunk_slot = |p: &crate::plan::Placement, plane: usize| Slot { buffer: &arenas[p.arena], offset: p.offset, size: (p.c * plane * 4) as u64 };
        let view_slot = |p: &crate::plan::Placement, d: &crate::graph::TensorDesc| Slot { buffer: &arenas[p.arena], offset: p.offset, size: p.c as u64 * d.plane_bytes() };
        let resolve = |v: View| -> Result<(Slot<'_>, u32)> {
            let d = &graph.tensors[v.tensor];
            let p = plan.chunk_of(v.tensor, v.c0, v.c).ok_or_else(|| Error::op(&d.name, format!("channels {}..{} straddle a binding split", v.c0, v.c0 + v.c)))?;
            Ok((view_slot(p, d), ((v.c0 - p.c0) * d.h * d.w) as u32))
        };
        let cuts = |t: usize| plan.cuts(t);
        let mut owned: Vec<wgpu::Buffer> = vec![];
        let mut dispatches = vec![];
        for &ni in &plan.order {
            let node = &graph.nodes[ni];
            for piece in crate::split::split_node(node, &cuts)? {
                let (mut d, bufs) = encode_node(dev, &kernels, graph, &piece, &resolve)?;
                d.shape = piece.describe(graph);
                dispatches.push(d);
                owned.extend(bufs);
            }
        }
        let logits = graph.logits.ok_or_else(|| Error::op("graph", "no logits tensor"))?;
        let ld = &graph.tensors[logits];
        let hw = ld.h * ld.w;
        if ld.c > 256 {
            return Err(Error::op("argmax", format!("{} classes do not fit the 8-bit class map", ld.c)));
        }
        let input = &graph.tensors[graph.input];
        let map_bytes = kernels::argmax::map_bytes(hw);
        let classes_buf = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous classes"), size: map_bytes, usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC, mapped_at_creation: false });
        let lchunks = &plan.placements[logits];
        let best_buf = (lchunks.len() > 1).then(|| dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous argmax best"), size: (hw * 4) as u64, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false }));
        for (k, p) in lchunks.iter().enumerate() {
            let (amp, am_groups) = kernels::argmax::prepare(p.c, hw, 0, p.c0, k == 0);
            let am_u = uniform_buffer(dev, &amp);
            let (entry, best) = match &best_buf {
                Some(b) => ("argmax_chunk", Slot::whole(b)),
                None => ("argmax", kernels.dummy()),
            };
            let mut d = kernels.dispatch(Shader::Argmax, entry, &[chunk_slot(p, hw), Slot::whole(&classes_buf), Slot::whole(&am_u), best], am_groups, "argmax", (p.c * hw) as u64, (p.c * hw * 4) as u64 + map_bytes);
            d.shape = format!("{}x{}x{} -> classes", ld.c, ld.h, ld.w);
            dispatches.push(d);
            owned.push(am_u);
        }
        if normalize.is_some() && input.c != 3 {
            return Err(Error::op("preprocess", format!("pixel input needs a 3-channel graph input, this one has {}", input.c)));
        }
        let ihw = input.h * input.w;
        let preprocess = match normalize {
            None => None,
            Some(n) => {
                let rgba = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous rgba"), size: (ihw * 4) as u64, usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
                let mut ds = vec![];
                for p in &plan.placements[graph.input] {
                    let (pp, groups) = kernels::preprocess::prepare(&n, ihw, 0, p.c0, p.c);
                    let u = uniform_buffer(dev, &pp);
                    ds.push(kernels.dispatch(Shader::Preprocess, "preprocess", &[Slot::whole(&rgba), chunk_slot(p, ihw), Slot::whole(&u)], groups, "preprocess", (p.c * ihw * 3) as u64, (ihw * 4 + p.c * ihw * 4) as u64));
                    owned.push(u);
                }
                Some((ds, rgba))
            }
        };
        let readback = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous readback"), size: map_bytes, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let at = |t: usize| plan.placements[t].iter().map(|p| (p.arena, p.offset, p.c0, p.c)).collect::<Vec<_>>();
        Ok(Session {
            gpu: gpu.clone(),
            h: input.h,
            w: input.w,
            input_c: input.c,
            classes: ld.c,
            input_at: at(graph.input),
            logits_at: at(logits),
            arenas,
            _owned: owned,
            dispatches,
            preprocess,
            classes_buf,
            best_buf,
            readback,
            plan,
            probs: None,
            kernels,
            normalize,
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

    /// Device memory held by this session's buffers (arenas, parameters, uniforms, staging), in
    /// bytes. The weights are part of it: each session uploads its own.
    pub fn device_bytes(&self) -> u64 {
        let mut b: u64 = self.arenas.iter().map(|a| a.size()).sum();
        b += self._owned.iter().map(|a| a.size()).sum::<u64>();
        b += self.classes_buf.size() + self.readback.size();
        if let Some((_, rgba)) = &self.preprocess {
            b += rgba.size();
        }
        if let Some(best) = &self.best_buf {
            b += best.size();
        }
        if let Some((_, p, u)) = &self.probs {
            b += p.size() + u.size();
        }
        b
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
        self.classes_buf.size()
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
        let (tw, th) = (source.width(), source.height());
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let src_view = source.create_view(&Default::default());
        let hw = self.h * self.w;
        let mut pre = vec![];
        let mut keep = vec![];
        for &(a, off, c0, c) in &self.input_at {
            let (tp, groups) = kernels::texture::prepare_input(&normalize, (tw, th), (self.w as u32, self.h as u32), 0, srgb, c0, c);
            let tu = uniform_buffer(&dev, &tp);
            let input = Slot { buffer: &self.arenas[a], offset: off, size: (c * hw * 4) as u64 };
            pre.push(self.kernels.dispatch_resources(
                Shader::TextureInput,
                "texture_input",
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
                    if buffer.size() < offset + self.classes_buf.size() || !buffer.usage().contains(wgpu::BufferUsages::COPY_DST) {
                        return Err(Error::Input(format!("class-map buffer needs COPY_DST usage and {} bytes from offset {offset}", self.classes_buf.size())));
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
                        vec![
                            wgpu::BindingResource::TextureView(&src_view),
                            Slot::whole(&self.classes_buf).resource(),
                            Slot::whole(&pal).resource(),
                            wgpu::BindingResource::TextureView(&dst_view),
                            Slot::whole(&ou).resource(),
                        ],
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
            encoder.copy_buffer_to_buffer(&self.classes_buf, 0, buf, off, self.classes_buf.size());
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

    /// Runs on an already-normalised NCHW `[3, h, w]` tensor.
    pub fn run_tensor(&mut self, x: &[f32]) -> Result<ClassMap> {
        Ok(self.run_inner(Input::Tensor(x), Extra::None)?.0)
    }

    /// Runs on a normalised tensor and also reads back the logits (`[classes, h, w]`).
    pub fn run_tensor_logits(&mut self, x: &[f32]) -> Result<(ClassMap, Vec<f32>)> {
        let (m, l) = self.run_inner(Input::Tensor(x), Extra::Logits)?;
        Ok((m, l.expect("logits requested")))
    }

    /// Runs on 8-bit RGB pixels (row-major, 3 bytes per pixel) of exactly the planned size; the
    /// normalisation runs on the GPU.
    pub fn run_rgb(&mut self, rgb: &[u8]) -> Result<ClassMap> {
        Ok(self.run_inner(Input::Rgb(rgb), Extra::None)?.0)
    }

    pub fn run_rgb_logits(&mut self, rgb: &[u8]) -> Result<(ClassMap, Vec<f32>)> {
        let (m, l) = self.run_inner(Input::Rgb(rgb), Extra::Logits)?;
        Ok((m, l.expect("logits requested")))
    }

    /// Runs on 8-bit RGB pixels and also reads back per-class probabilities (softmax over the
    /// logits, `[classes, h, w]`), computed on the GPU.
    pub fn run_rgb_probabilities(&mut self, rgb: &[u8]) -> Result<(ClassMap, Vec<f32>)> {
        self.enable_probabilities()?;
        let (m, l) = self.run_inner(Input::Rgb(rgb), Extra::Probabilities)?;
        Ok((m, l.expect("probabilities requested")))
    }

    /// Like [`run_rgb_probabilities`](Self::run_rgb_probabilities) for a normalised tensor.
    pub fn run_tensor_probabilities(&mut self, x: &[f32]) -> Result<(ClassMap, Vec<f32>)> {
        self.enable_probabilities()?;
        let (m, l) = self.run_inner(Input::Tensor(x), Extra::Probabilities)?;
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
        let hw = self.h * self.w;
        let dev = self.gpu.device.clone();
        let (pre, rgba) = self.preprocess.as_ref().ok_or_else(|| Error::Input("this session was built without a normalisation, so it takes tensors only".into()))?;
        let rb = [0, 1].map(|i| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("atrous readback {i}")),
                size: self.readback.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut pending: Option<(usize, usize, wgpu::SubmissionIndex)> = None;
        let finish = |p: (usize, usize, wgpu::SubmissionIndex), sink: &mut dyn FnMut(usize, Result<ClassMap>)| {
            let (i, slot, sub) = p;
            sink(i, read_buffer_after(&self.gpu, &rb[slot], sub).map(|b| ClassMap { h: self.h, w: self.w, data: b[..hw].to_vec() }));
        };
        for (i, img) in images.into_iter().enumerate() {
            let px = match img {
                Ok(px) if px.len() == 3 * hw => px,
                bad => {
                    // keep the results in order: the image in flight first
                    if let Some(p) = pending.take() {
                        finish(p, &mut sink);
                    }
                    sink(i, Err(bad.err().unwrap_or_else(|| Error::Input(format!("image size does not match the session's {}x{} RGB", self.w, self.h)))));
                    continue;
                }
            };
            let slot = i % 2;
            let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
            let data: Vec<u8> = px.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
            self.gpu.queue.write_buffer(rgba, 0, &data);
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("atrous pipelined run") });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("atrous"), timestamp_writes: None });
                for d in pre.iter().chain(&self.dispatches) {
                    d.record(&mut pass);
                }
            }
            enc.copy_buffer_to_buffer(&self.classes_buf, 0, &rb[slot], 0, self.readback.size());
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

    /// Creates the softmax dispatch and its output buffer (once).
    fn enable_probabilities(&mut self) -> Result<()> {
        if self.probs.is_some() {
            return Ok(());
        }
        if self.logits_at.len() > 1 {
            return Err(Error::Input("per-class probabilities need the logits in one binding; these logits are split across bindings (use the class map, or a smaller input)".into()));
        }
        let dev = &self.gpu.device;
        let hw = self.h * self.w;
        let bytes = (self.classes * hw * 4) as u64;
        let out = dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous probabilities"), size: bytes, usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC, mapped_at_creation: false });
        let (sp, groups) = kernels::softmax::prepare(self.classes, hw, 0, 0);
        let u = uniform_buffer(dev, &sp);
        let logits = Slot { buffer: &self.arenas[self.logits_at[0].0], offset: self.logits_at[0].1, size: bytes };
        let d = self.kernels.dispatch(Shader::Softmax, "softmax", &[logits, Slot::whole(&out), Slot::whole(&u)], groups, "softmax", (self.classes * hw * 4) as u64, 2 * bytes);
        self.probs = Some((d, out, u));
        Ok(())
    }

    fn run_inner(&mut self, input: Input<'_>, extra: Extra) -> Result<(ClassMap, Option<Vec<f32>>)> {
        self.gpu.check()?;
        let hw = self.h * self.w;
        let dev = self.gpu.device.clone();
        let queue = &self.gpu.queue;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut pre = None;
        match input {
            Input::Tensor(x) => {
                if x.len() != self.input_c * hw {
                    return Err(Error::Input(format!("tensor has {} values, the session expects {}x{}x{} = {}", x.len(), self.input_c, self.h, self.w, self.input_c * hw)));
                }
                for &(a, off, c0, c) in &self.input_at {
                    queue.write_buffer(&self.arenas[a], off, bytemuck::cast_slice(&x[c0 * hw..(c0 + c) * hw]));
                }
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
        let logits_bytes = (self.classes * hw * 4) as u64;
        let extra_rb = (extra != Extra::None).then(|| {
            dev.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous logits readback"), size: logits_bytes, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false })
        });
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("atrous run") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("atrous"), timestamp_writes: None });
            for d in pre.into_iter().flatten() {
                d.record(&mut pass);
            }
            for d in &self.dispatches {
                d.record(&mut pass);
            }
            if extra == Extra::Probabilities {
                self.probs.as_ref().expect("enabled").0.record(&mut pass);
            }
        }
        enc.copy_buffer_to_buffer(&self.classes_buf, 0, &self.readback, 0, self.readback.size());
        match (&extra_rb, extra) {
            (Some(rb), Extra::Logits) => {
                for &(a, off, c0, c) in &self.logits_at {
                    enc.copy_buffer_to_buffer(&self.arenas[a], off, rb, (c0 * hw * 4) as u64, (c * hw * 4) as u64);
                }
            }
            (Some(rb), Extra::Probabilities) => enc.copy_buffer_to_buffer(&self.probs.as_ref().expect("enabled").1, 0, rb, 0, logits_bytes),
            _ => {}
        }
        queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            self.gpu.check()?;
            return Err(Error::Gpu { during: "recording the run".into(), reason: e.to_string() });
        }
        let bytes = read_buffer(&self.gpu, &self.readback)?;
        let map = ClassMap { h: self.h, w: self.w, data: bytes[..hw].to_vec() };
        let logits = match extra_rb {
            Some(rb) => Some(bytemuck::cast_slice::<u8, f32>(&read_buffer(&self.gpu, &rb)?).to_vec()),
            None => None,
        };
        Ok((map, logits))
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    Logits,
    Probabilities,
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
    rx.recv().map_err(|e| Error::Gpu { during: "reading back".into(), reason: e.to_string() })?.map_err(|e| Error::Gpu { during: "mapping the readback buffer".into(), reason: e.to_string() })?;
    let out = slice.get_mapped_range().map_err(|e| Error::Gpu { during: "reading the mapped range".into(), reason: e.to_string() })?.to_vec();
    buf.unmap();
    Ok(out)
}

fn uniform_buffer<T: bytemuck::Pod>(dev: &wgpu::Device, p: &T) -> wgpu::Buffer {
    buffer_init(dev, "atrous params", &kernels::uniform_bytes(p), wgpu::BufferUsages::UNIFORM)
}

/// Builds the dispatch of one graph node whose views each lie in one binding (see
/// [`crate::split`]), with `resolve` locating them: the operator's own `encode`. Returns the
/// dispatch and the parameter and uniform buffers it binds. Used by [`Session`] and [`OpRunner`].
pub(crate) fn encode_node<'a>(dev: &wgpu::Device, kernels: &Kernels, graph: &Graph, node: &Node, resolve: Resolve<'a, '_>) -> Result<(Dispatch, Vec<wgpu::Buffer>)> {
    let cx = EncodeCx { dev, kernels, graph, resolve };
    let e = node.op.encode(&cx, &node.name)?;
    Ok((e.dispatch, e.buffers))
}

/// Runs single graph nodes on buffers of their own, every tensor separate and the output
/// pre-filled by the caller: the GPU side of the per-operator tests and benchmarks.
pub struct OpRunner {
    gpu: Gpu,
    kernels: Kernels,
}

impl OpRunner {
    pub fn new(gpu: &Gpu) -> Self {
        OpRunner { gpu: gpu.clone(), kernels: Kernels::new(&gpu.device) }
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
            bufs.entry(t).or_insert_with(|| buffer_init(dev, &graph.tensors[t].name, bytemuck::cast_slice(d), wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST));
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
            dispatches.push(d);
            keep.extend(k);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: format!("preparing `{}`", n.name), reason: e.to_string() });
        }
        let out = n.op.writes().tensor;
        Ok(PreparedOp { gpu: self.gpu.clone(), dispatch: dispatches[0].clone(), rest: dispatches[1..].to_vec(), output: bufs.remove(&out).expect("output buffer"), _keep: (bufs.into_values().collect(), keep) })
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
        Ok(bytemuck::cast_slice::<u8, f32>(&read_buffer(&self.gpu, &rb)?).to_vec())
    }
}
