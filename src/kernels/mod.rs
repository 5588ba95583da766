//! WGSL kernel families: their sources (one file each under `shaders/`), a pipeline cache, and one
//! small wrapper module per family that packs parameters and computes the dispatch grid.

pub mod argmax;
pub mod conv;
pub mod eltwise;
pub mod pool;
pub mod preprocess;
pub mod resize;
pub mod softmax;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A kernel family: one `.wgsl` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Conv,
    Pool,
    Eltwise,
    Argmax,
    Preprocess,
    Resize,
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bind {
    /// `var<storage, read_write>`: activations. Every activation binding is read_write so that two
    /// ranges of one arena buffer can be bound in one dispatch without a usage conflict.
    Storage,
    /// `var<storage, read>`: packed parameters.
    StorageRead,
    Uniform,
}

impl Shader {
    pub const ALL: [Shader; 7] = [Shader::Conv, Shader::Pool, Shader::Eltwise, Shader::Argmax, Shader::Preprocess, Shader::Resize, Shader::Softmax];

    pub fn file(self) -> &'static str {
        match self {
            Shader::Conv => "conv.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Eltwise => "eltwise.wgsl",
            Shader::Argmax => "argmax.wgsl",
            Shader::Preprocess => "preprocess.wgsl",
            Shader::Resize => "resize.wgsl",
            Shader::Softmax => "softmax.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Conv => include_str!("../../shaders/conv.wgsl"),
            Shader::Pool => include_str!("../../shaders/pool.wgsl"),
            Shader::Eltwise => include_str!("../../shaders/eltwise.wgsl"),
            Shader::Argmax => include_str!("../../shaders/argmax.wgsl"),
            Shader::Preprocess => include_str!("../../shaders/preprocess.wgsl"),
            Shader::Resize => include_str!("../../shaders/resize.wgsl"),
            Shader::Softmax => include_str!("../../shaders/softmax.wgsl"),
        }
    }

    fn bindings(self) -> &'static [Bind] {
        use Bind::*;
        match self {
            Shader::Conv | Shader::Eltwise => &[Storage, StorageRead, Storage, Storage, Uniform],
            Shader::Pool | Shader::Argmax | Shader::Preprocess | Shader::Resize | Shader::Softmax => &[Storage, Storage, Uniform],
        }
    }
}

/// A range of a buffer to bind.
#[derive(Clone, Copy, Debug)]
pub struct Slot<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> Slot<'a> {
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Slot { buffer, offset: 0, size: buffer.size() }
    }
    fn resource(&self) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: self.buffer, offset: self.offset, size: wgpu::BufferSize::new(self.size) })
    }
}

/// One recorded compute dispatch, built once and replayed every run.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The graph node (or step) this dispatch computes.
    pub label: String,
    /// Kernel entry point.
    pub entry: &'static str,
    /// Shapes and hyper-parameters, for reports.
    pub shape: String,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    pub flops: u64,
    /// Bytes read and written (activations and parameters), for GB/s figures.
    pub bytes: u64,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Compiled shader modules and pipelines of one device, cached by (family, entry point).
#[derive(Clone)]
pub struct Kernels {
    device: wgpu::Device,
    inner: Arc<Mutex<Cache>>,
    /// A small buffer bound where a kernel's optional input is unused.
    dummy: wgpu::Buffer,
}

#[derive(Default)]
struct Cache {
    layouts: HashMap<Shader, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    modules: HashMap<Shader, wgpu::ShaderModule>,
    pipelines: HashMap<(Shader, &'static str), wgpu::ComputePipeline>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let dummy = device.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous dummy"), size: 256, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
        Kernels { device: device.clone(), inner: Arc::new(Mutex::new(Cache::default())), dummy }
    }

    pub fn dummy(&self) -> Slot<'_> {
        Slot::whole(&self.dummy)
    }

    fn layout(&self, cache: &mut Cache, shader: Shader) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        cache
            .layouts
            .entry(shader)
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupLayoutEntry> = shader
                    .bindings()
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: match b {
                                Bind::Storage => wgpu::BufferBindingType::Storage { read_only: false },
                                Bind::StorageRead => wgpu::BufferBindingType::Storage { read_only: true },
                                Bind::Uniform => wgpu::BufferBindingType::Uniform,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                let bgl = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(shader.file()), entries: &entries });
                let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: Some(shader.file()), bind_group_layouts: &[Some(&bgl)], immediate_size: 0 });
                (bgl, pl)
            })
            .clone()
    }

    /// The pipeline of `entry` in `shader`, compiled on first use.
    pub fn pipeline(&self, shader: Shader, entry: &'static str) -> wgpu::ComputePipeline {
        let mut cache = self.inner.lock().expect("kernel cache poisoned");
        if let Some(p) = cache.pipelines.get(&(shader, entry)) {
            return p.clone();
        }
        let (_, pl) = self.layout(&mut cache, shader);
        let module = cache
            .modules
            .entry(shader)
            .or_insert_with(|| self.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(shader.file()), source: wgpu::ShaderSource::Wgsl(shader.source().into()) }))
            .clone();
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        cache.pipelines.insert((shader, entry), p.clone());
        p
    }

    /// A dispatch of `entry` with `slots` bound in the family's binding order.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(&self, shader: Shader, entry: &'static str, slots: &[Slot<'_>], groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        let pipeline = self.pipeline(shader, entry);
        let bgl = {
            let mut cache = self.inner.lock().expect("kernel cache poisoned");
            self.layout(&mut cache, shader).0
        };
        assert_eq!(slots.len(), shader.bindings().len(), "binding count of {}", shader.file());
        let entries: Vec<wgpu::BindGroupEntry> = slots.iter().enumerate().map(|(i, s)| wgpu::BindGroupEntry { binding: i as u32, resource: s.resource() }).collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout: &bgl, entries: &entries });
        Dispatch { label: label.to_string(), entry, shape: String::new(), pipeline, bind_group, groups, flops, bytes }
    }
}

/// Maximum workgroups along one dispatch dimension (WebGPU's default limit).
pub const MAX_GROUPS: u32 = 65535;

/// Grid for `n` invocations of a 1-D kernel with workgroup size `wg`, folded into two dimensions
/// when needed. Returns the grid and `row`, the invocation stride of `gid.y`.
pub fn grid_1d(n: usize, wg: u32) -> ([u32; 3], u32) {
    let groups = (n as u64).div_ceil(wg as u64).max(1);
    let gx = groups.min(MAX_GROUPS as u64);
    let gy = groups.div_ceil(gx);
    ([gx as u32, gy as u32, 1], gx as u32 * wg)
}

/// Bytes of a `#[repr(C)]` parameter block, padded for a uniform binding.
pub fn uniform_bytes<T: bytemuck::Pod>(p: &T) -> Vec<u8> {
    let mut v = bytemuck::bytes_of(p).to_vec();
    v.resize(v.len().next_multiple_of(16), 0);
    v
}
