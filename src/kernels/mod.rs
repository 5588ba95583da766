//! WGSL kernel families: their sources (one file each under `shaders/`), a pipeline cache, and one
//! small wrapper module per family that packs parameters and computes the dispatch grid.

pub mod argmax;
pub mod conv;
pub mod eltwise;
pub mod pool;
pub mod preprocess;
pub mod resize;
pub mod softmax;
pub mod texture;

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
    TextureInput,
    Overlay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bind {
    /// `var<storage, read_write>`: activations. Every activation binding is read_write so that two
    /// ranges of one arena buffer can be bound in one dispatch without a usage conflict.
    Storage,
    /// `var<storage, read>`: packed parameters.
    StorageRead,
    Uniform,
    /// `texture_2d<f32>`.
    Texture,
    /// `texture_storage_2d<rgba8unorm, write>`.
    StorageTextureRgba8,
}

impl Shader {
    pub const ALL: [Shader; 9] = [Shader::Conv, Shader::Pool, Shader::Eltwise, Shader::Argmax, Shader::Preprocess, Shader::Resize, Shader::Softmax, Shader::TextureInput, Shader::Overlay];

    pub fn file(self) -> &'static str {
        match self {
            Shader::Conv => "conv.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Eltwise => "eltwise.wgsl",
            Shader::Argmax => "argmax.wgsl",
            Shader::Preprocess => "preprocess.wgsl",
            Shader::Resize => "resize.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::TextureInput => "texture_input.wgsl",
            Shader::Overlay => "overlay.wgsl",
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
            Shader::TextureInput => include_str!("../../shaders/texture_input.wgsl"),
            Shader::Overlay => include_str!("../../shaders/overlay.wgsl"),
        }
    }

    fn bindings(self) -> &'static [Bind] {
        use Bind::*;
        match self {
            Shader::Conv | Shader::Eltwise => &[Storage, StorageRead, Storage, Storage, Uniform],
            Shader::Argmax => &[Storage, Storage, Uniform, Storage],
            Shader::Pool | Shader::Preprocess | Shader::Resize | Shader::Softmax => &[Storage, Storage, Uniform],
            Shader::TextureInput => &[Texture, Storage, Uniform],
            Shader::Overlay => &[Texture, Storage, StorageRead, StorageTextureRgba8, Uniform],
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
    pub fn resource(&self) -> wgpu::BindingResource<'a> {
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
                        ty: match b {
                            Bind::Texture => wgpu::BindingType::Texture { sample_type: wgpu::TextureSampleType::Float { filterable: false }, view_dimension: wgpu::TextureViewDimension::D2, multisampled: false },
                            Bind::StorageTextureRgba8 => wgpu::BindingType::StorageTexture { access: wgpu::StorageTextureAccess::WriteOnly, format: wgpu::TextureFormat::Rgba8Unorm, view_dimension: wgpu::TextureViewDimension::D2 },
                            buf => wgpu::BindingType::Buffer {
                                ty: match buf {
                                    Bind::StorageRead => wgpu::BufferBindingType::Storage { read_only: true },
                                    Bind::Uniform => wgpu::BufferBindingType::Uniform,
                                    _ => wgpu::BufferBindingType::Storage { read_only: false },
                                },
                                has_dynamic_offset: false,
                                min_binding_size: None,
                            },
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
        let resources: Vec<wgpu::BindingResource> = slots.iter().map(|s| s.resource()).collect();
        self.dispatch_resources(shader, entry, resources, groups, label, flops, bytes)
    }

    /// Like [`dispatch`](Self::dispatch) with any binding resources (textures included).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_resources(&self, shader: Shader, entry: &'static str, resources: Vec<wgpu::BindingResource<'_>>, groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        let pipeline = self.pipeline(shader, entry);
        let bgl = {
            let mut cache = self.inner.lock().expect("kernel cache poisoned");
            self.layout(&mut cache, shader).0
        };
        assert_eq!(resources.len(), shader.bindings().len(), "binding count of {}", shader.file());
        let entries: Vec<wgpu::BindGroupEntry> = resources.into_iter().enumerate().map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource }).collect();
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
