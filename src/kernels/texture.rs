//! Wrappers of `shaders/texture_input.wgsl` and `shaders/overlay.wgsl`: the GPU-resident image
//! path (a texture in, a class map or an overlay texture out).

use crate::preprocess::Normalize;

crate::param_block! {
    pub struct TexInParams {
        pub src_w: u32,
        pub src_h: u32,
        pub dst_w: u32,
        pub dst_h: u32,
        pub out_off: u32,
        pub srgb: u32,
        pub perm0: u32,
        pub perm1: u32,
        pub perm2: u32,
        pub c_begin: u32,
        pub c_count: u32,
        pub _pad: u32,
        pub mean0: f32,
        pub mean1: f32,
        pub mean2: f32,
        pub pre_scale: f32,
        pub istd0: f32,
        pub istd1: f32,
        pub istd2: f32,
        pub post_scale: f32,
    }
}

crate::param_block! {
    pub struct OverlayParams {
        pub tex_w: u32,
        pub tex_h: u32,
        pub map_w: u32,
        pub map_h: u32,
        pub alpha: f32,
        pub srgb: u32,
        pub classes: u32,
        pub _pad: u32,
    }
}

/// Texture formats the input path reads, and whether they are sRGB-encoded.
pub fn input_format(f: wgpu::TextureFormat) -> Option<bool> {
    use wgpu::TextureFormat::*;
    match f {
        Rgba8Unorm | Bgra8Unorm => Some(false),
        Rgba8UnormSrgb | Bgra8UnormSrgb => Some(true),
        _ => None,
    }
}

/// Writes channels `c_begin .. c_begin + c_count` of the input, from element `out_off`.
pub fn prepare_input(n: &Normalize, (src_w, src_h): (u32, u32), (dst_w, dst_h): (u32, u32), out_off: u32, srgb: bool, c_begin: usize, c_count: usize) -> (TexInParams, [u32; 3]) {
    let p = TexInParams {
        src_w,
        src_h,
        dst_w,
        dst_h,
        out_off,
        srgb: srgb as u32,
        perm0: n.perm()[0],
        perm1: n.perm()[1],
        perm2: n.perm()[2],
        c_begin: c_begin as u32,
        c_count: c_count as u32,
        _pad: 0,
        mean0: n.mean[0],
        mean1: n.mean[1],
        mean2: n.mean[2],
        pre_scale: n.pre_scale,
        istd0: 1.0 / n.std[0],
        istd1: 1.0 / n.std[1],
        istd2: 1.0 / n.std[2],
        post_scale: n.post_scale,
    };
    (p, [dst_w.div_ceil(8), dst_h.div_ceil(8), 1])
}

pub fn prepare_overlay((tex_w, tex_h): (u32, u32), (map_w, map_h): (u32, u32), alpha: f32, srgb: bool, classes: u32) -> (OverlayParams, [u32; 3]) {
    (OverlayParams { tex_w, tex_h, map_w, map_h, alpha, srgb: srgb as u32, classes, _pad: 0 }, [tex_w.div_ceil(8), tex_h.div_ceil(8), 1])
}

/// Palette as one u32 per class (R in the low byte).
pub fn pack_palette(palette: &[[u8; 3]]) -> Vec<u32> {
    palette.iter().map(|c| c[0] as u32 | (c[1] as u32) << 8 | (c[2] as u32) << 16).collect()
}
