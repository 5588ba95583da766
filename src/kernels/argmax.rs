//! Wrapper of `shaders/argmax.wgsl`: class map packed 4 pixels per u32.

use super::grid_1d;

pub const WG: u32 = 64;

crate::param_block! {
    pub struct ArgmaxParams {
        pub c: u32,
        pub hw: u32,
        pub x_off: u32,
        pub words: u32,
        pub row: u32,
        pub c_base: u32,
        pub first: u32,
        pub binary: u32,
        pub in_h: u32,
        pub in_w: u32,
        pub out_h: u32,
        pub out_w: u32,
        pub align: u32,
        pub scale_h: f32,
        pub scale_w: f32,
        pub _p0: u32,
    }
}

/// Bytes of the packed class map for `hw` pixels.
pub fn map_bytes(hw: usize) -> u64 {
    (hw.div_ceil(4) * 4) as u64
}

/// One pass over `c` channels whose first is class `c_base`; `first` starts afresh.
/// `binary`: a single channel whose class is `x > 0` (a sigmoid output's `p > 0.5`).
pub fn prepare(c: usize, hw: usize, x_off: u32, c_base: usize, first: bool) -> (ArgmaxParams, [u32; 3]) {
    let words = hw.div_ceil(4);
    let (groups, row) = grid_1d(words, WG);
    (ArgmaxParams { c: c as u32, hw: hw as u32, x_off, words: words as u32, row, c_base: c_base as u32, first: first as u32, ..Default::default() }, groups)
}

/// Whether `resize_argmax` computes the class map of `c` logits of `(ih, iw)` bilinearly
/// upsampled to `(oh, ow)`: where `bilinear_rows8` would upsample them
/// ([`super::resize::by_8`]: 8 outputs read at most 6 source columns), the map's rows are whole
/// words (`ow % 4 == 0`), the classes fit a byte and the rows the grid.
pub fn fuses_resize(c: usize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), align_corners: bool) -> bool {
    (1..=256).contains(&c) && ih > 0 && iw > 0 && ow % 4 == 0 && oh <= super::MAX_GROUPS as usize && super::resize::by_8(iw, ow, align_corners)
}

/// `resize_argmax`'s parameters, grid (x: 8 pixels per invocation along a row; y: the rows) and
/// workgroup size (`WG`, 8 to 64: fewer on rows shorter than 64 invocations).
pub fn prepare_resize(c: usize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), x_off: u32, align_corners: bool) -> (ArgmaxParams, [u32; 3], Vec<(&'static str, f64)>) {
    let n = ow.div_ceil(8);
    let wg = super::resize::row_workgroup(n);
    let p = ArgmaxParams {
        c: c as u32,
        hw: (oh * ow) as u32,
        x_off,
        words: (oh * ow).div_ceil(4) as u32,
        first: 1,
        in_h: ih as u32,
        in_w: iw as u32,
        out_h: oh as u32,
        out_w: ow as u32,
        align: align_corners as u32,
        scale_h: super::resize::scale(ih, oh, align_corners),
        scale_w: super::resize::scale(iw, ow, align_corners),
        ..Default::default()
    };
    (p, [n.div_ceil(wg) as u32, oh as u32, 1], vec![("WG", wg as f64)])
}
