//! Wrapper of `shaders/preprocess.wgsl`: RGBA8 pixels to the model's normalised NCHW input.

use super::grid_1d;
use crate::preprocess::Normalize;

pub const WG: u32 = 64;

crate::param_block! {
    pub struct PreParams {
        pub hw: u32,
        pub out_off: u32,
        pub row: u32,
        pub c_begin: u32,
        pub perm0: u32,
        pub perm1: u32,
        pub perm2: u32,
        pub c_count: u32,
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

/// Writes channels `c_begin .. c_begin + c_count` of the input, from element `out_off`.
pub fn prepare(n: &Normalize, hw: usize, out_off: u32, c_begin: usize, c_count: usize) -> (PreParams, [u32; 3]) {
    let (groups, row) = grid_1d(hw, WG);
    let p = PreParams {
        hw: hw as u32,
        out_off,
        row,
        c_begin: c_begin as u32,
        perm0: n.perm()[0],
        perm1: n.perm()[1],
        perm2: n.perm()[2],
        c_count: c_count as u32,
        mean0: n.mean[0],
        mean1: n.mean[1],
        mean2: n.mean[2],
        pre_scale: n.pre_scale,
        istd0: 1.0 / n.std[0],
        istd1: 1.0 / n.std[1],
        istd2: 1.0 / n.std[2],
        post_scale: n.post_scale,
    };
    (p, groups)
}
