//! Wrapper of `shaders/pool.wgsl`.

use super::{grid_1d, MAX_GROUPS};
use crate::error::Result;
use crate::ops::{AdaptiveAvgPool, Pool2d};
use crate::shape::PoolKind;

pub const WG: u32 = 64;

crate::param_block! {
    pub struct PoolParams {
        pub c: u32,
        pub in_h: u32,
        pub in_w: u32,
        pub in_off: u32,
        pub out_h: u32,
        pub out_w: u32,
        pub out_off: u32,
        pub mode: u32,
        pub k_h: u32,
        pub k_w: u32,
        pub stride_h: u32,
        pub stride_w: u32,
        pub pad_h: u32,
        pub pad_w: u32,
        pub row: u32,
        pub aux_off: u32,
        pub pad_b: u32,
        pub pad_r: u32,
        pub dil_h: u32,
        pub dil_w: u32,
        pub rows: u32,
        pub _p0: u32,
        pub _p1: u32,
        pub _p2: u32,
    }
}

/// The grid of `c x oh x ow` outputs, its `row` parameter and the `rows` flag: (columns, rows,
/// channels) where `by_rows` and the rows are at least half a workgroup wide (so that the window's
/// rows and the channel are uniform over each workgroup), else 1-D over all outputs.
fn grid(c: usize, oh: usize, ow: usize, by_rows: bool) -> ([u32; 3], u32, u32) {
    if by_rows && ow >= (WG / 2) as usize && oh <= MAX_GROUPS as usize && c <= MAX_GROUPS as usize {
        ([ow.div_ceil(WG as usize) as u32, oh as u32, c as u32], 0, 1)
    } else {
        let (groups, row) = grid_1d(c * oh * ow, WG);
        (groups, row, 0)
    }
}

/// `by_rows`: the entry takes the grid of rows where it fits (see `grid`).
pub fn prepare(op: &Pool2d, x_off: u32, y_off: u32, by_rows: bool) -> Result<(PoolParams, [u32; 3])> {
    let g = &op.geom;
    let (oh, ow) = g.out_hw()?;
    let (groups, row, rows) = grid(g.c, oh, ow, by_rows);
    let mode = match op.kind {
        PoolKind::Avg { count_include_pad: true } => 0,
        PoolKind::Avg { count_include_pad: false } => 1,
        PoolKind::Max => 2,
    };
    let p = PoolParams {
        c: g.c as u32,
        in_h: g.in_h as u32,
        in_w: g.in_w as u32,
        in_off: x_off,
        out_h: oh as u32,
        out_w: ow as u32,
        out_off: y_off,
        mode,
        k_h: g.k_h as u32,
        k_w: g.k_w as u32,
        stride_h: g.stride_h as u32,
        stride_w: g.stride_w as u32,
        pad_h: g.pad_h as u32,
        pad_w: g.pad_w as u32,
        row,
        aux_off: 0,
        pad_b: g.pad_b as u32,
        pad_r: g.pad_r as u32,
        dil_h: g.dil_h as u32,
        dil_w: g.dil_w as u32,
        rows,
        ..Default::default()
    };
    Ok((p, groups))
}

/// The block of a per-output-element entry (`max_unpool2d`, `crop`): `c` channels from
/// `ih x iw` at element `x_off` to `oh x ow` at `y_off`, and its grid; entry-specific fields are
/// set by the caller.
pub fn per_element(c: usize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), x_off: u32, y_off: u32) -> (PoolParams, [u32; 3]) {
    let (groups, row) = grid_1d(c * oh * ow, WG);
    (PoolParams { c: c as u32, in_h: ih as u32, in_w: iw as u32, in_off: x_off, out_h: oh as u32, out_w: ow as u32, out_off: y_off, row, ..Default::default() }, groups)
}

/// Adaptive average pooling from `ih x iw` to `oh x ow`.
pub fn prepare_adaptive(op: &AdaptiveAvgPool, (ih, iw): (usize, usize), (oh, ow): (usize, usize), x_off: u32, y_off: u32) -> (PoolParams, [u32; 3]) {
    let (groups, row, rows) = grid(op.x.c, oh, ow, true);
    let p = PoolParams { c: op.x.c as u32, in_h: ih as u32, in_w: iw as u32, in_off: x_off, out_h: oh as u32, out_w: ow as u32, out_off: y_off, row, rows, ..Default::default() };
    (p, groups)
}

crate::param_block! {
    pub struct MeanParams {
        pub c: u32,
        pub hw: u32,
        pub in_off: u32,
        pub out_off: u32,
        pub row: u32,
        pub _p0: u32,
        pub _p1: u32,
        pub _p2: u32,
    }
}

/// Global average pooling of `c` planes of `hw` values: the parameter block and the grid, one
/// workgroup per channel (x, then y beyond the dispatch limit).
pub fn prepare_mean(c: usize, hw: usize, x_off: u32, y_off: u32) -> (MeanParams, [u32; 3]) {
    let gx = c.clamp(1, MAX_GROUPS as usize);
    let p = MeanParams { c: c as u32, hw: hw as u32, in_off: x_off, out_off: y_off, row: gx as u32, ..Default::default() };
    (p, [gx as u32, c.div_ceil(gx) as u32, 1])
}
