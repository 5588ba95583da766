//! WGSL kernel families: their sources (one file each under `shaders/`), a pipeline cache, and one
//! small wrapper module per family that packs parameters and computes the dispatch grid.

pub mod argmax;
pub mod cast;
pub mod conv;
pub mod crf;
pub mod eltwise;
pub mod pool;
pub mod preprocess;
pub mod regions;
pub mod resize;
pub mod softmax;
pub mod texture;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::graph::DType;

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
    Cast,
    Crf,
    Regions,
    Mean,
    MeanSubgroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
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
    pub const ALL: [Shader; 14] = [
        Shader::Conv,
        Shader::Pool,
        Shader::Eltwise,
        Shader::Argmax,
        Shader::Preprocess,
        Shader::Resize,
        Shader::Softmax,
        Shader::TextureInput,
        Shader::Overlay,
        Shader::Cast,
        Shader::Crf,
        Shader::Regions,
        Shader::Mean,
        Shader::MeanSubgroup,
    ];

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
            Shader::Cast => "cast.wgsl",
            Shader::Crf => "crf.wgsl",
            Shader::Regions => "regions.wgsl",
            Shader::Mean => "mean.wgsl",
            Shader::MeanSubgroup => "mean_subgroup.wgsl",
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
            Shader::Cast => include_str!("../../shaders/cast.wgsl"),
            Shader::Crf => include_str!("../../shaders/crf.wgsl"),
            Shader::Regions => include_str!("../../shaders/regions.wgsl"),
            Shader::Mean => include_str!("../../shaders/mean.wgsl"),
            Shader::MeanSubgroup => include_str!("../../shaders/mean_subgroup.wgsl"),
        }
    }

    /// The line a variant file declares its activation element type with.
    pub const ELEMENT_ALIAS: &'static str = "alias E = f32;";

    /// Element types this family is built for: f32, and f16 where the file declares its
    /// activations through [`Shader::ELEMENT_ALIAS`].
    pub fn dtypes(self) -> &'static [DType] {
        if self.source().contains(Self::ELEMENT_ALIAS) {
            &[DType::F32, DType::F16]
        } else {
            &[DType::F32]
        }
    }

    /// The source of the `dtype` variant: the file as it is for f32; for f16 the same file with
    /// `enable f16;` first and the element alias declaring `f16` (the arithmetic stays f32: loads
    /// convert, stores round). `None` when the family has no such variant.
    pub fn variant_source(self, dtype: DType) -> Option<Cow<'static, str>> {
        self.variant_source_arith(dtype, Arith::F32)
    }

    /// The line by which a family declares the type its multiply-adds run in: families that
    /// have it get an f16-arithmetic variant ([`Arith::F16`]) besides the f32-accumulating one.
    pub const COMPUTE_ALIAS: &'static str = "alias C = f32;";

    /// The arithmetic types of the family's f16 variant: f32 always; f16 too where the file
    /// declares its arithmetic through [`Shader::COMPUTE_ALIAS`].
    pub fn ariths(self) -> &'static [Arith] {
        if self.source().contains(Self::COMPUTE_ALIAS) && self.dtypes().contains(&DType::F16) {
            &[Arith::F32, Arith::F16]
        } else {
            &[Arith::F32]
        }
    }

    /// The source of the `dtype` variant computing in `arith`: with f16 elements and f16
    /// arithmetic the compute alias declares `f16` as well. `None` when the family has no such
    /// variant (f16 arithmetic needs f16 elements).
    pub fn variant_source_arith(self, dtype: DType, arith: Arith) -> Option<Cow<'static, str>> {
        match (dtype, arith) {
            (DType::F32, Arith::F32) => Some(Cow::Borrowed(self.source())),
            (DType::F16, _) if self.dtypes().contains(&DType::F16) && self.ariths().contains(&arith) => {
                let mut src = self.source().replacen(Self::ELEMENT_ALIAS, "alias E = f16;", 1);
                if arith == Arith::F16 {
                    src = src.replacen(Self::COMPUTE_ALIAS, "alias C = f16;", 1);
                }
                Some(Cow::Owned(format!("enable f16;\n{src}")))
            }
            _ => None,
        }
    }

    /// The fields of the family's parameter block (its uniform), from the Rust struct.
    pub fn param_fields(self) -> &'static [(&'static str, usize, usize, &'static str)] {
        match self {
            Shader::Conv => conv::ConvParams::FIELDS,
            Shader::Pool => pool::PoolParams::FIELDS,
            Shader::Eltwise => eltwise::AffineParams::FIELDS,
            Shader::Argmax => argmax::ArgmaxParams::FIELDS,
            Shader::Preprocess => preprocess::PreParams::FIELDS,
            Shader::Resize => resize::ResizeParams::FIELDS,
            Shader::Softmax => softmax::SoftmaxParams::FIELDS,
            Shader::TextureInput => texture::TexInParams::FIELDS,
            Shader::Overlay => texture::OverlayParams::FIELDS,
            Shader::Cast => cast::CastParams::FIELDS,
            Shader::Crf => crf::CrfBlock::FIELDS,
            Shader::Regions => regions::RegionsParams::FIELDS,
            Shader::Mean | Shader::MeanSubgroup => pool::MeanParams::FIELDS,
        }
    }

    /// The family's bindings, in binding order (checked against the shader by naga reflection in
    /// `tests/shaders.rs`).
    pub fn bindings(self) -> &'static [Bind] {
        use Bind::*;
        match self {
            Shader::Conv | Shader::Eltwise => &[Storage, StorageRead, Storage, Storage, Uniform],
            Shader::Argmax => &[Storage, Storage, Uniform, Storage],
            Shader::Pool => &[Storage, Storage, Uniform, Storage],
            Shader::Resize => &[Storage, Storage, Uniform, StorageRead],
            Shader::Preprocess | Shader::Softmax | Shader::Cast | Shader::Mean | Shader::MeanSubgroup => &[Storage, Storage, Uniform],
            Shader::TextureInput => &[Texture, Storage, Uniform],
            Shader::Overlay => &[Texture, Storage, StorageRead, StorageTextureRgba8, Uniform],
            Shader::Crf => &[Storage, Storage, Storage, Storage, Storage, Storage, Storage, Storage, Uniform],
            Shader::Regions => &[Storage, Storage, Storage, Storage, Storage, Storage, Storage, Uniform],
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
    /// Where the grid is read from at run time (a buffer with `INDIRECT` usage and the byte
    /// offset of three `u32`), for work whose size the device computes; `groups` is then the
    /// most it can be.
    pub indirect: Option<(wgpu::Buffer, u64)>,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        match &self.indirect {
            Some((buf, offset)) => pass.dispatch_workgroups_indirect(buf, *offset),
            None => pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]),
        }
    }
}

/// The type the multiply-adds of a kernel family with f16 elements run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Arith {
    /// Loads widen to f32, sums and products are f32, stores round to f16.
    #[default]
    F32,
    /// Sums and products in f16 (twice the arithmetic rate on most GPUs); families without a
    /// compute alias fall back to f32.
    F16,
}

/// A pipeline's identity: family, entry point, element type and override constants (as bits, so
/// the key is hashable).
pub type PipelineKey = (Shader, &'static str, DType, Arith, Vec<(&'static str, u64)>);

/// Compiled shader modules and pipelines of one device, cached by family, entry point, element
/// type and override constants.
#[derive(Clone)]
pub struct Kernels {
    device: wgpu::Device,
    inner: Arc<Mutex<Cache>>,
    /// A small buffer bound where a kernel's optional input is unused.
    dummy: wgpu::Buffer,
    /// The arithmetic of f16 variants ([`Kernels::with_arith`]).
    arith: Arith,
    /// Whether convolutions stage their input through workgroup memory ([`Kernels::with_tiles`]).
    tiles: bool,
    /// Whether kernels with a subgroup variant use it ([`Kernels::with_subgroups`]).
    subgroups: bool,
}

#[derive(Default)]
struct Cache {
    layouts: HashMap<Shader, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    modules: HashMap<(Shader, DType, Arith), wgpu::ShaderModule>,
    pipelines: HashMap<PipelineKey, wgpu::ComputePipeline>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let dummy = device.create_buffer(&wgpu::BufferDescriptor { label: Some("atrous dummy"), size: 256, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        Kernels { device: device.clone(), inner: Arc::new(Mutex::new(Cache::default())), dummy, arith: Arith::F32, tiles: false, subgroups }
    }

    pub fn dummy(&self) -> Slot<'_> {
        Slot::whole(&self.dummy)
    }

    /// The same cache, with f16 variants computing in `arith` (sessions of
    /// [`crate::session::Precision::F16Compute`]).
    pub fn with_arith(&self, arith: Arith) -> Self {
        Kernels { arith, ..self.clone() }
    }

    /// The arithmetic the `dtype` variant of `shader` runs in with this cache: f16 only where the
    /// family has it and its elements are f16.
    pub fn arith_for(&self, shader: Shader, dtype: DType) -> Arith {
        if dtype == DType::F16 && shader.ariths().contains(&self.arith) {
            self.arith
        } else {
            Arith::F32
        }
    }

    /// The same cache, choosing the workgroup-tiled convolution (`conv2d_tiled`) where it pays
    /// (`tiles`; [`Kernels::tiles_for`] says where by default) or never.
    pub fn with_tiles(&self, tiles: bool) -> Self {
        Kernels { tiles, ..self.clone() }
    }

    pub fn tiles(&self) -> bool {
        self.tiles
    }

    /// The same cache, with the subgroup variants of the kernels that have one (`mean_subgroup.wgsl`)
    /// where `on` and the device has the SUBGROUP feature (the default), else their plain variants.
    pub fn with_subgroups(&self, on: bool) -> Self {
        Kernels { subgroups: on && self.device.features().contains(wgpu::Features::SUBGROUP), ..self.clone() }
    }

    /// Whether kernels with a subgroup variant use it.
    pub fn subgroups(&self) -> bool {
        self.subgroups
    }

    /// The default choice of kernel variants for an adapter: workgroup tiles on GPUs, where
    /// workgroup memory is on-chip and shared by the invocations of a compute unit; not on a CPU
    /// adapter, where it is ordinary memory and the staging only adds barriers and copies (and
    /// where the plain kernel's per-lane loads hit the same caches anyway).
    pub fn tiles_for(gpu: &crate::gpu::Gpu) -> bool {
        !gpu.is_cpu()
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
                            Bind::StorageTextureRgba8 => {
                                wgpu::BindingType::StorageTexture { access: wgpu::StorageTextureAccess::WriteOnly, format: wgpu::TextureFormat::Rgba8Unorm, view_dimension: wgpu::TextureViewDimension::D2 }
                            }
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

    /// The pipeline of `entry` in `shader` (f32, default constants), compiled on first use.
    pub fn pipeline(&self, shader: Shader, entry: &'static str) -> wgpu::ComputePipeline {
        self.pipeline_for(shader, entry, DType::F32, &[]).expect("every family has an f32 variant")
    }

    /// The pipeline of `entry` in the `dtype` variant of `shader` with override `constants`,
    /// compiled on first use; `None` if the family has no such variant.
    pub fn pipeline_for(&self, shader: Shader, entry: &'static str, dtype: DType, constants: &[(&'static str, f64)]) -> Option<wgpu::ComputePipeline> {
        let arith = self.arith_for(shader, dtype);
        let key: PipelineKey = (shader, entry, dtype, arith, constants.iter().map(|&(k, v)| (k, v.to_bits())).collect());
        let mut cache = self.inner.lock().expect("kernel cache poisoned");
        if let Some(p) = cache.pipelines.get(&key) {
            return Some(p.clone());
        }
        let source = shader.variant_source_arith(dtype, arith)?;
        let (_, pl) = self.layout(&mut cache, shader);
        let module =
            cache.modules.entry((shader, dtype, arith)).or_insert_with(|| self.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(shader.file()), source: wgpu::ShaderSource::Wgsl(source) })).clone();
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        });
        cache.pipelines.insert(key, p.clone());
        Some(p)
    }

    /// A dispatch of `entry` with `slots` bound in the family's binding order.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(&self, shader: Shader, entry: &'static str, slots: &[Slot<'_>], groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        self.dispatch_typed(shader, entry, DType::F32, slots, groups, label, flops, bytes)
    }

    /// [`dispatch`](Self::dispatch) of the `dtype` variant (the element type of the activations
    /// the kernel reads and writes).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_typed(&self, shader: Shader, entry: &'static str, dtype: DType, slots: &[Slot<'_>], groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        let resources: Vec<wgpu::BindingResource> = slots.iter().map(|s| s.resource()).collect();
        self.dispatch_resources(shader, entry, dtype, resources, groups, label, flops, bytes)
    }

    /// Like [`dispatch`](Self::dispatch) with any binding resources (textures included).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_resources(&self, shader: Shader, entry: &'static str, dtype: DType, resources: Vec<wgpu::BindingResource<'_>>, groups: [u32; 3], label: &str, flops: u64, bytes: u64) -> Dispatch {
        self.dispatch_specialized(shader, entry, dtype, &[], resources, groups, label, flops, bytes)
    }

    /// Like [`dispatch_resources`](Self::dispatch_resources) with override `constants`.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_specialized(
        &self,
        shader: Shader,
        entry: &'static str,
        dtype: DType,
        constants: &[(&'static str, f64)],
        resources: Vec<wgpu::BindingResource<'_>>,
        groups: [u32; 3],
        label: &str,
        flops: u64,
        bytes: u64,
    ) -> Dispatch {
        // every family has both variants (`Shader::dtypes`); the device's SHADER_F16 is checked
        // when a session with f16 tensors is built
        let pipeline = self.pipeline_for(shader, entry, dtype, constants).unwrap_or_else(|| self.pipeline(shader, entry));
        let bgl = {
            let mut cache = self.inner.lock().expect("kernel cache poisoned");
            self.layout(&mut cache, shader).0
        };
        assert_eq!(resources.len(), shader.bindings().len(), "binding count of {}", shader.file());
        let entries: Vec<wgpu::BindGroupEntry> = resources.into_iter().enumerate().map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource }).collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout: &bgl, entries: &entries });
        Dispatch { label: label.to_string(), entry, shape: String::new(), pipeline, bind_group, groups, flops, bytes, indirect: None }
    }
}

/// The scalar kind and count of a parameter-block field, for the reflection test.
pub trait FieldKind {
    const KIND: &'static str;
}
impl FieldKind for u32 {
    const KIND: &'static str = "u32";
}
impl FieldKind for f32 {
    const KIND: &'static str = "f32";
}
impl<T: FieldKind, const N: usize> FieldKind for [T; N] {
    const KIND: &'static str = T::KIND;
}

/// A kernel's parameter block (a uniform): its fields as `(name, byte offset, byte size, scalar
/// kind)`, derived from the struct definition itself by [`param_block!`].
pub trait ParamBlock: bytemuck::Pod {
    const FIELDS: &'static [(&'static str, usize, usize, &'static str)];
}

/// Declares a `#[repr(C)]` parameter block and its [`ParamBlock`] field list from one definition,
/// so the layout `tests/shaders.rs` compares with the WGSL struct is the one the code uploads.
#[macro_export]
macro_rules! param_block {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }
        impl $crate::kernels::ParamBlock for $name {
            const FIELDS: &'static [(&'static str, usize, usize, &'static str)] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f), std::mem::size_of::<$t>(), <$t as $crate::kernels::FieldKind>::KIND),)*];
        }
    };
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
