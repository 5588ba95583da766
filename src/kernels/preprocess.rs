//! Wrapper of `shaders/preprocess.wgsl`: RGBA8 pixels to the model's normalised NCHW input.

use super::grid_1d;
use crate::preprocess::Normalize;

pub const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PreParams {
    pub hw: u32,
    pub out_off: u32,
    pub row: u32,
    pub c_begin: u32,
    pub perm: [u32; 3],
    pub c_count: u32,
    pub mean: [f32; 3],
    pub pre_scale: f32,
    pub inv_std: [f32; 3],
    pub post_scale: f32,
}

/// Writes channels `c_begin .. c_begin + c_count` of the input, from element `out_off`.
pub fn prepare(n: &Normalize, hw: usize, out_off: u32, c_begin: usize, c_count: usize) -> (PreParams, [u32; 3]) {
    let (groups, row) = grid_1d(hw, WG);
    let p = PreParams {
        hw: hw as u32,
        out_off,
        row,
        c_begin: c_begin as u32,
        perm: n.perm(),
        c_count: c_count as u32,
        mean: n.mean,
        pre_scale: n.pre_scale,
        inv_std: n.std.map(|s| 1.0 / s),
        post_scale: n.post_scale,
    };
    (p, groups)
}
