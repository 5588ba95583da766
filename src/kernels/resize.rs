//! Wrapper of `shaders/resize.wgsl` (bilinear: `bilinear_rows` for upsampling rows, `bilinear`).

use super::{grid_1d, MAX_GROUPS};
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

/// Whether `bilinear_rows` computes this resize: upsampling along x whose consecutive outputs'
/// lower source columns differ by at most 1 even after float32 rounding (the exact step is the
/// scale; each computed coordinate is within about `2 * in * 2^-24` of the exact one, so a scale
/// below 1 by more than twice that, or exactly 1, is safe); rows at least a quarter of the
/// workgroup's 4 * WG outputs wide; and a grid of (rows, channels) within the dispatch limits.
pub fn by_rows(c: usize, iw: usize, (oh, ow): (usize, usize), align_corners: bool) -> bool {
    let s = scale(iw, ow, align_corners) as f64;
    let slack = 4.0 * iw as f64 / (1u64 << 24) as f64;
    let safe = s == 1.0 || s + slack < 1.0;
    safe && iw > 0 && ow >= WG as usize && oh <= MAX_GROUPS as usize && c <= MAX_GROUPS as usize
}

/// The bilinear entry and its grid: `bilinear_rows` (x over a row, 4 outputs per invocation; y
/// the output rows; z the channels) where [`by_rows`] allows, else `bilinear` (1-D, one output
/// per invocation).
pub fn prepare(op: &Resize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), x_off: u32, y_off: u32) -> (ResizeParams, &'static str, [u32; 3]) {
    let c = op.x.c;
    let (entry, groups, row) = if by_rows(c, iw, (oh, ow), op.align_corners) {
        ("bilinear_rows", [ow.div_ceil(4 * WG as usize) as u32, oh as u32, c as u32], 0)
    } else {
        let (groups, row) = grid_1d(c * oh * ow, WG);
        ("bilinear", groups, row)
    };
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
    (p, entry, groups)
}

#[cfg(test)]
mod tests {
    use super::by_rows;

    #[test]
    fn rows_only_where_four_outputs_read_five_columns() {
        // scale exactly 1, and well below 1
        assert!(by_rows(3, 100, (10, 100), true));
        assert!(by_rows(3, 96, (384, 384), false));
        assert!(by_rows(3, 48, (96, 96), true));
        // a scale within float32 rounding of 1 on a wide row: a step of 2 columns could be computed
        assert!(!by_rows(3, 3000, (10, 3001), true));
        // downsampling, and rows narrower than a quarter workgroup
        assert!(!by_rows(3, 100, (10, 90), true));
        assert!(!by_rows(3, 10, (10, 32), true));
    }
}
