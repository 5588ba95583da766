//! Wrapper of `shaders/softmax.wgsl` (per-pixel softmax over channels).

use super::grid_1d;

pub const WG: u32 = 64;

crate::param_block! {
    pub struct SoftmaxParams {
        pub c: u32,
        pub hw: u32,
        pub x_off: u32,
        pub y_off: u32,
        pub row: u32,
        pub sigmoid: u32,
        pub _pad: [u32; 2],
    }
}

pub fn prepare(c: usize, hw: usize, x_off: u32, y_off: u32) -> (SoftmaxParams, [u32; 3]) {
    let (groups, row) = grid_1d(hw, WG);
    (SoftmaxParams { c: c as u32, hw: hw as u32, x_off, y_off, row, sigmoid: 0, _pad: [0; 2] }, groups)
}
