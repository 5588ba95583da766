//! Wrapper of `shaders/resize.wgsl` (bilinear).

use super::grid_1d;
use crate::ops::Resize;

pub const WG: u32 = 64;

crate::param_block! {
    pub struct ResizeParams {
        pub c: u32,
        pub in_h: u32,
        pub in_w: u32,
        pub in_off: u32,
        pub out_h: u32,
        pub out_w: u32,
        pub out_off: u32,
        pub align: u32,
        pub row: u32,
        pub scale_h: f32,
        pub scale_w: f32,
        pub _pad: u32,
        pub ky: u32,
        pub kx: u32,
        pub ext: f32,
        pub _pad1: u32,
    }
}

/// PyTorch's scale: `(in-1)/(out-1)` (0 for a single output) with aligned corners, else `in/out`,
/// computed in float32.
pub fn scale(n_in: usize, n_out: usize, align_corners: bool) -> f32 {
    if align_corners {
        if n_out > 1 {
            (n_in - 1) as f32 / (n_out - 1) as f32
        } else {
            0.0
        }
    } else {
        n_in as f32 / n_out as f32
    }
}

pub fn prepare(op: &Resize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), x_off: u32, y_off: u32) -> (ResizeParams, [u32; 3]) {
    let (groups, row) = grid_1d(op.x.c * oh * ow, WG);
    let p = ResizeParams {
        c: op.x.c as u32,
        in_h: ih as u32,
        in_w: iw as u32,
        in_off: x_off,
        out_h: oh as u32,
        out_w: ow as u32,
        out_off: y_off,
        align: op.align_corners as u32,
        row,
        scale_h: scale(ih, oh, op.align_corners),
        scale_w: scale(iw, ow, op.align_corners),
        ..Default::default()
    };
    (p, groups)
}
