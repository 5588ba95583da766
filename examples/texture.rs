//! Headless texture path: an application that already has a `wgpu::Device` and an image in a
//! texture gets the class map into its own buffer and a colour overlay into its own texture, in one
//! submission of its own, with no CPU readback. (This program reads both back at the end only to
//! check them against the pixel path and to save the overlay.)
//!
//! ```sh
//! WGPU_BACKEND=vulkan cargo run --release --example texture -- ../shared/models/espnet_camvid.safetensors ../shared/data/camvid/val/images/0016E5_07959.png out/overlay.png
//! ```

use std::path::Path;

use atrous::gpu::Gpu;
use atrous::models::Model;
use atrous::session::{Precision, Session, SessionOptions, TextureOutput};

/// What the run found.
#[derive(Debug)]
pub struct Report {
    pub pixels: usize,
    /// Pixels where the texture path's class map equals the pixel path's.
    pub class_agree: usize,
    /// Largest difference (0..255) between the GPU overlay and the CPU overlay of the same map.
    pub overlay_max_diff: u8,
}

/// Segments `image` (uploaded to an `Rgba8UnormSrgb` texture, as an application would hold it)
/// with `model`, entirely on the GPU, then checks the result against [`Session::run_rgb`].
pub fn run(model_path: &Path, image: &Path, overlay_png: Option<&Path>) -> Result<Report, Box<dyn std::error::Error>> {
    run_with(model_path, image, overlay_png, Precision::F32)
}

/// [`run`] with sessions of `precision` (f16 asks the application's device for `SHADER_F16`).
pub fn run_with(model_path: &Path, image: &Path, overlay_png: Option<&Path>, precision: Precision) -> Result<Report, Box<dyn std::error::Error>> {
    // The application's own device.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let required_features = if precision == Precision::F16 { wgpu::Features::SHADER_F16 } else { wgpu::Features::empty() };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor { required_features, ..Default::default() }))?;

    // Its image, already in a texture.
    let img = atrous::image_io::load_rgb(image)?;
    let (w, h) = (img.w as u32, img.h as u32);
    let size = wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("app image"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8UnormSrgb,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let rgba: Vec<u8> = img.data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    queue.write_texture(texture.as_image_copy(), &rgba, wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * w), rows_per_image: Some(h) }, size);

    // atrous on that device.
    let gpu = Gpu::from_device(device.clone(), queue.clone());
    let model = Model::load(model_path)?;
    let (sh, sw) = model.info.run_size(img.h, img.w);
    let mut session = Session::with_options(&gpu, &model.graph(sh, sw)?, SessionOptions { normalize: model.info.pixel_head(), precision, ..Default::default() })?;

    // Outputs the application owns: a buffer for the class map and a texture for the overlay.
    let classes = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app classes"),
        size: session.class_map_bytes(),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let overlay = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("app overlay"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let alpha = 0.5;
    let mut encoder = device.create_command_encoder(&Default::default());
    session.encode_texture(&mut encoder, &texture, &[TextureOutput::ClassMap { buffer: &classes, offset: 0 }, TextureOutput::Overlay { target: &overlay, palette: &model.info.palette, alpha }])?;
    queue.submit([encoder.finish()]);

    // --- checking only: read both back and compare with the pixel path ---
    let bpr = (4 * w).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let rb_tex = device.create_buffer(&wgpu::BufferDescriptor { label: None, size: (bpr * h) as u64, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
    let rb_cls = device.create_buffer(&wgpu::BufferDescriptor { label: None, size: classes.size(), usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(overlay.as_image_copy(), wgpu::TexelCopyBufferInfo { buffer: &rb_tex, layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(bpr), rows_per_image: Some(h) } }, size);
    encoder.copy_buffer_to_buffer(&classes, 0, &rb_cls, 0, classes.size());
    queue.submit([encoder.finish()]);
    let tex_bytes = atrous::session::read_buffer(&gpu, &rb_tex)?;
    let cls_bytes = atrous::session::read_buffer(&gpu, &rb_cls)?;

    let run = if (sh, sw) == (img.h, img.w) { img.clone() } else { img.resize(sh, sw) };
    let reference = session.run_rgb(&run.data)?;
    let class_agree = reference.data.iter().zip(&cls_bytes).filter(|(a, b)| a == b).count();
    let gpu_map = atrous::session::ClassMap { h: sh, w: sw, data: cls_bytes[..sh * sw].to_vec() };
    let cpu_overlay = atrous::image_io::overlay(&img, &gpu_map.resize_nearest(img.h, img.w), &model.info.palette, alpha);
    let mut gpu_overlay = atrous::image_io::RgbImage { h: img.h, w: img.w, data: Vec::with_capacity(img.h * img.w * 3) };
    let mut overlay_max_diff = 0u8;
    for y in 0..img.h {
        for x in 0..img.w {
            let t = &tex_bytes[y * bpr as usize + 4 * x..][..3];
            gpu_overlay.data.extend_from_slice(t);
            let c = &cpu_overlay.data[(y * img.w + x) * 3..][..3];
            overlay_max_diff = overlay_max_diff.max((0..3).map(|k| t[k].abs_diff(c[k])).max().unwrap());
        }
    }
    if let Some(p) = overlay_png {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        atrous::image_io::save_rgb_png(p, &gpu_overlay)?;
    }
    Ok(Report { pixels: sh * sw, class_agree, overlay_max_diff })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: texture MODEL.safetensors IMAGE [OVERLAY.png]");
        std::process::exit(2);
    }
    let r = run(Path::new(&args[1]), Path::new(&args[2]), args.get(3).map(Path::new))?;
    println!("texture path: class map equals the pixel path on {}/{} pixels; overlay within {} of the CPU blend", r.class_agree, r.pixels, r.overlay_max_diff);
    if r.class_agree != r.pixels || r.overlay_max_diff > 1 {
        std::process::exit(1);
    }
    Ok(())
}
