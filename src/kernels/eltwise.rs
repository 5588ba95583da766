//! Wrapper of `shaders/eltwise.wgsl`: per-channel affine (+ addend, activation), broadcast
//! multiply, channel gather.

use super::{grid_1d, MAX_GROUPS};
use crate::ops::{Affine, Gather, Mul};

pub const WG: u32 = 64;

crate::param_block! {
    pub struct AffineParams {
        pub c: u32,
        pub hw: u32,
        pub x_off: u32,
        pub y_off: u32,
        pub add_off: u32,
        pub has_add: u32,
        pub act: u32,
        pub row: u32,
        pub scale_off: u32,
        pub shift_off: u32,
        pub slope_off: u32,
        pub per_channel: u32,
    }
}

/// Returns the parameter block, the packed scale/shift/slope array, the grid and the entry. `add_off` is the
/// addend's element offset in its binding, when there is one.
pub fn prepare(op: &Affine, hw: usize, x_off: u32, y_off: u32, add_off: Option<u32>) -> (AffineParams, Vec<f32>, [u32; 3], &'static str) {
    let c = op.x.c;
    let (groups, row, entry) = grid(c, hw, 4, ("affine", "affine_planes"));
    let mut prm = Vec::with_capacity(3 * c);
    prm.extend_from_slice(&op.scale);
    prm.extend_from_slice(&op.shift);
    match op.act.slopes() {
        Some(s) => prm.extend_from_slice(s),
        None => prm.extend(std::iter::repeat_n(0.0, c)),
    }
    let p = AffineParams {
        c: c as u32,
        hw: hw as u32,
        x_off,
        y_off,
        add_off: add_off.unwrap_or(0),
        has_add: add_off.is_some() as u32,
        act: op.act.code(),
        row,
        scale_off: 0,
        shift_off: c as u32,
        slope_off: 2 * c as u32,
        per_channel: 0,
    };
    (p, prm, groups, entry)
}

/// Planes of at least this many elements run the `_planes` entries (`affine_planes`,
/// `mul_planes`, `gather_planes`: one channel per workgroup row, 4 elements per invocation),
/// smaller ones the plain entries (channels mixed within a workgroup, so little of the grid idles).
pub const PLANE_MIN: usize = 4 * WG as usize;

fn by_planes(hw: usize) -> bool {
    hw >= PLANE_MIN && hw.div_ceil(PLANE_MIN) <= MAX_GROUPS as usize
}

/// The grid for a `c x hw` tensor, its `row` parameter, and the entry: `planes` (x covers a plane,
/// y and z the channels, `row` = channels per z step) where [`by_planes`], else `plain` (a 1-D grid
/// over all elements, `per_invocation` each: 4 for `affine`, 1 for the others).
fn grid(c: usize, hw: usize, per_invocation: usize, (plain, planes): (&'static str, &'static str)) -> ([u32; 3], u32, &'static str) {
    if by_planes(hw) {
        let gx = hw.div_ceil(PLANE_MIN) as u32;
        let gy = c.min(MAX_GROUPS as usize) as u32;
        ([gx, gy, c.div_ceil(gy as usize) as u32], gy, planes)
    } else {
        let (groups, row) = grid_1d((c * hw).div_ceil(per_invocation), WG);
        (groups, row, plain)
    }
}

/// `mul`: `s_off` is the multiplier's element offset in its binding.
pub fn prepare_mul(op: &Mul, hw: usize, s_hw: usize, x_off: u32, y_off: u32, s_off: u32) -> (AffineParams, [u32; 3], &'static str) {
    let c = op.x.c;
    let (groups, row, entry) = grid(c, hw, 1, ("mul", "mul_planes"));
    let p = AffineParams { c: c as u32, hw: hw as u32, x_off, y_off, add_off: s_off, has_add: 1, row, per_channel: (s_hw == 1 && hw != 1) as u32, ..Default::default() };
    (p, groups, entry)
}

/// `gather`: the permutation goes into the parameter array as float indices (exact below 2^24).
pub fn prepare_gather(op: &Gather, hw: usize, x_off: u32, y_off: u32) -> (AffineParams, Vec<f32>, [u32; 3], &'static str) {
    let c = op.y.c;
    let (groups, row, entry) = grid(c, hw, 1, ("gather", "gather_planes"));
    let p = AffineParams { c: c as u32, hw: hw as u32, x_off, y_off, row, ..Default::default() };
    (p, op.perm.iter().map(|&i| i as f32).collect(), groups, entry)
}
