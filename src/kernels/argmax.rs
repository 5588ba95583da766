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
    (ArgmaxParams { c: c as u32, hw: hw as u32, x_off, words: words as u32, row, c_base: c_base as u32, first: first as u32, binary: 0 }, groups)
}
