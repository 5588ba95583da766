//! Wrapper of `shaders/cast.wgsl` (f32 <-> f16 conversion of activations).

use super::grid_1d;

pub const WG: u32 = 64;

crate::param_block! {
    pub struct CastParams {
        pub n: u32,
        pub a_off: u32,
        pub b_off: u32,
        pub row: u32,
    }
}

/// `n` elements from `a_off` in the f32 binding and `b_off` in the f16 binding.
pub fn prepare(n: usize, a_off: u32, b_off: u32) -> (CastParams, [u32; 3]) {
    let (groups, row) = grid_1d(n, WG);
    (CastParams { n: n as u32, a_off, b_off, row }, groups)
}
