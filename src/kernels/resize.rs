//! Wrapper of `shaders/resize.wgsl` (bilinear: `bilinear_rows` / `bilinear_rows8` for upsampling
//! rows, `bilinear`).

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

/// The x scale and the float32 slack of the computed source columns (`4 * in * 2^-24`, see
/// [`by_rows`]).
fn scale_and_slack(iw: usize, ow: usize, align_corners: bool) -> (f64, f64) {
    (scale(iw, ow, align_corners) as f64, 4.0 * iw as f64 / (1u64 << 24) as f64)
}

/// Workgroup size of a row kernel with `n` invocations a row: 64, fewer (down to 8) on rows
/// shorter than that. Not the size that idles the fewest: on lavapipe a workgroup costs more than
/// idle lanes (ESPNetv2's 192 -> 288 rows, 72 invocations: 2.5 ms in 2 workgroups of 64 a row,
/// 3.2 ms in 9 of 8).
pub fn row_workgroup(n: usize) -> usize {
    n.next_power_of_two().clamp(8, 64)
}

/// Whether `bilinear_rows` computes this resize: upsampling along x whose consecutive outputs'
/// lower source columns differ by at most 1 even after float32 rounding (the exact step is the
/// scale; each computed coordinate is within about `2 * in * 2^-24` of the exact one, so a scale
/// below 1 by more than twice that, or exactly 1, is safe); rows of at least 32 outputs (8
/// invocations: the workgroup is sized to the row, 8 to 64 invocations); and a grid of (rows, channels) within the dispatch limits.
pub fn by_rows(c: usize, iw: usize, (oh, ow): (usize, usize), align_corners: bool) -> bool {
    let (s, slack) = scale_and_slack(iw, ow, align_corners);
    let safe = s == 1.0 || s + slack < 1.0;
    safe && iw > 0 && ow >= 32 && oh <= MAX_GROUPS as usize && c <= MAX_GROUPS as usize
}

/// Whether a [`by_rows`] resize runs `bilinear_rows8` (8 outputs per invocation reading 6
/// source columns): 7 steps of the scale, plus the float32 slack of [`by_rows`], stay below 4
/// columns (upsampling by at least 7/4: ESPNetv2's and DeepLab's 2x to 8x logits), on rows of at
/// least 64 outputs (8 invocations).
pub fn by_8(iw: usize, ow: usize, align_corners: bool) -> bool {
    let (s, slack) = scale_and_slack(iw, ow, align_corners);
    7.0 * (s + slack) < 4.0 && ow >= 64
}

/// The bilinear entry, its grid and its override constants: `bilinear_rows8` / `bilinear_rows`
/// (x over a row, 8 / 4 outputs per invocation, the workgroup (`WG`) sized to the row; y the
/// output rows; z the channels) where [`by_8`] / [`by_rows`] allow, else `bilinear` (1-D, one
/// output per invocation).
pub fn prepare(op: &Resize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), x_off: u32, y_off: u32) -> (ResizeParams, &'static str, [u32; 3], Vec<(&'static str, f64)>) {
    let c = op.x.c;
    let rows = |per: usize| {
        let n = ow.div_ceil(per);
        let wg = row_workgroup(n);
        ([n.div_ceil(wg) as u32, oh as u32, c as u32], vec![("WG", wg as f64)])
    };
    let by_rows = by_rows(c, iw, (oh, ow), op.align_corners);
    let (entry, groups, row, constants) = if by_rows && by_8(iw, ow, op.align_corners) {
        let (groups, k) = rows(8);
        ("bilinear_rows8", groups, 0, k)
    } else if by_rows {
        let (groups, k) = rows(4);
        ("bilinear_rows", groups, 0, k)
    } else {
        let (groups, row) = grid_1d(c * oh * ow, WG);
        ("bilinear", groups, row, vec![])
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
    (p, entry, groups, constants)
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
        // downsampling, and rows narrower than 32 outputs
        assert!(!by_rows(3, 100, (10, 90), true));
        assert!(!by_rows(3, 10, (10, 31), true));
    }

    #[test]
    fn eight_outputs_only_where_they_read_six_columns() {
        use super::by_8;
        // 2x (align_corners: 191/383 < 4/7), 8x, and 4/7 less a little (73/130)
        assert!(by_8(192, 384, true));
        assert!(by_8(64, 512, false));
        assert!(by_8(73, 130, false));
        // 4/7 exactly (7 steps can reach 4 columns after rounding), and 2/3 (192 -> 288)
        assert!(!by_8(64, 112, false));
        assert!(!by_8(192, 288, true));
        // rows narrower than 64 outputs
        assert!(!by_8(10, 63, true));
    }
}
