//! Wrapper of `shaders/preprocess.wgsl`: RGBA8 pixels to the model's normalised NCHW input.

use super::{grid_1d, Shader};
use crate::preprocess::Normalize;

pub const SHADER: Shader = Shader::Preprocess;
pub const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PreParams {
    pub hw: u32,
    pub out_off: u32,
    pub row: u32,
    pub _p0: u32,
    pub perm: [u32; 3],
    pub _p1: u32,
    pub mean: [f32; 3],
    pub pre_scale: f32,
    pub inv_std: [f32; 3],
    pub post_scale: f32,
}

pub fn prepare(n: &Normalize, hw: usize, out_off: u32) -> (PreParams, [u32; 3]) {
    let (groups, row) = grid_1d(hw, WG);
    let p = PreParams {
        hw: hw as u32,
        out_off,
        row,
        _p0: 0,
        perm: n.perm(),
        _p1: 0,
        mean: n.mean,
        pre_scale: n.pre_scale,
        inv_std: n.std.map(|s| 1.0 / s),
        post_scale: n.post_scale,
    };
    (p, groups)
}
