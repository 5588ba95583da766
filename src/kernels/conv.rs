//! Wrapper of `shaders/conv.wgsl`: packs weights into 4-output-channel vec4 blocks and fills the
//! parameter block for `conv2d`, `conv2d_dw` and `conv_transpose2d`.

use crate::error::{Error, Result};
use crate::graph::Act;
use crate::ops::{Conv2d, ConvT2d};
use crate::shape::{Conv2dGeom, Pad};

/// Workgroup size of the family (the shader's `WG_X`, `WG_Y` defaults).
pub const WG: (u32, u32) = (8, 8);

crate::param_block! {
    pub struct ConvParams {
        pub in_c: u32,
        pub in_h: u32,
        pub in_w: u32,
        pub in_off: u32,
        pub out_c: u32,
        pub out_h: u32,
        pub out_w: u32,
        pub out_off: u32,
        pub k_h: u32,
        pub k_w: u32,
        pub stride_h: u32,
        pub stride_w: u32,
        pub pad_t: u32,
        pub pad_l: u32,
        pub dil_h: u32,
        pub dil_w: u32,
        pub icpg: u32,
        pub ocpg: u32,
        pub ocb_pg: u32,
        pub act: u32,
        pub w_off: u32,
        pub b_off: u32,
        pub s_off: u32,
        pub add_mode: u32,
        pub add_off: u32,
        pub tile_w: u32,
        pub tile_h: u32,
        pub tile_c: u32,
    }
}

/// Where a convolution's addend lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddFrom {
    None,
    /// In the output binding, at this element offset.
    Dst(u32),
    /// In the separate addend binding.
    Other(u32),
    /// In the input binding.
    Src(u32),
}

/// Everything the session (or a test) needs to bind and dispatch one convolution.
pub struct Prepared {
    pub entry: &'static str,
    pub params: ConvParams,
    /// Packed parameters: weights, then bias, then PReLU slopes, as vec4s.
    pub prm: Vec<f32>,
    pub groups: [u32; 3],
    /// Override constants of the entry point.
    pub constants: Vec<(&'static str, f64)>,
}

/// Packs `get(oc, ic, ky, kx)` as `[block][ic][ky][kx][lane]` where each block holds 4 output
/// channels of one group (lanes past the group's end are zero).
fn pack_blocks(groups: usize, ocpg: usize, icpg: usize, kh: usize, kw: usize, get: impl Fn(usize, usize, usize, usize) -> f32) -> Vec<f32> {
    let ocb = ocpg.div_ceil(4);
    let mut out = Vec::with_capacity(groups * ocb * icpg * kh * kw * 4);
    for g in 0..groups {
        for b in 0..ocb {
            for ic in 0..icpg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for l in 0..4 {
                            let o = b * 4 + l;
                            out.push(if o < ocpg { get(g * ocpg + o, ic, ky, kx) } else { 0.0 });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Per-channel values (bias or slopes) in the same block order.
fn pack_channels(groups: usize, ocpg: usize, v: impl Fn(usize) -> f32) -> Vec<f32> {
    pack_blocks(groups, ocpg, 1, 1, 1, |oc, _, _, _| v(oc))
}

fn finish(mut params: ConvParams, mut w: Vec<f32>, bias: Vec<f32>, slopes: Vec<f32>) -> (ConvParams, Vec<f32>) {
    params.w_off = 0;
    params.b_off = (w.len() / 4) as u32;
    params.s_off = params.b_off + (bias.len() / 4) as u32;
    w.extend(bias);
    w.extend(slopes);
    (params, w)
}

fn add_fields(params: &mut ConvParams, add: AddFrom) {
    let (mode, off) = match add {
        AddFrom::None => (0, 0),
        AddFrom::Dst(o) => (1, o),
        AddFrom::Other(o) => (2, o),
        AddFrom::Src(o) => (3, o),
    };
    params.add_mode = mode;
    params.add_off = off;
}

fn check_groups(op: &str, z: usize) -> Result<u32> {
    if z > super::MAX_GROUPS as usize {
        return Err(Error::op(op, format!("{z} channel blocks exceed the dispatch limit")));
    }
    Ok(z as u32)
}

/// The parameter block shared by the three entry points (weights, bias and slopes offsets are
/// filled by `finish`).
fn params_of(g: &Conv2dGeom, (oh, ow): (usize, usize), act: &Act, x_off: u32, y_off: u32, add: AddFrom) -> ConvParams {
    let ocpg = g.ocpg();
    let mut p = ConvParams {
        in_c: g.in_c as u32,
        in_h: g.in_h as u32,
        in_w: g.in_w as u32,
        in_off: x_off,
        out_c: g.out_c as u32,
        out_h: oh as u32,
        out_w: ow as u32,
        out_off: y_off,
        k_h: g.k_h as u32,
        k_w: g.k_w as u32,
        stride_h: g.stride_h as u32,
        stride_w: g.stride_w as u32,
        pad_t: g.pad.top as u32,
        pad_l: g.pad.left as u32,
        dil_h: g.dil_h as u32,
        dil_w: g.dil_w as u32,
        icpg: g.icpg() as u32,
        ocpg: ocpg as u32,
        ocb_pg: ocpg.div_ceil(4) as u32,
        act: act.code(),
        ..Default::default()
    };
    add_fields(&mut p, add);
    p
}

/// How many 4-channel output blocks one invocation of `conv2d` accumulates (its `NB`, at most
/// `max_nb`), for `ocb` blocks per group. Per tap, an invocation loads 4 input values (one per
/// pixel; on a software adapter each is a per-lane load, the dearest operation) and NB weight
/// vectors (uniform), and does 4 NB vector multiply-adds; blocks past the group's end are computed
/// and thrown away. The cost model `ceil(ocb / NB) * (4 + 1.5 NB)` (input loads, weight loads and
/// multiply-adds of one workgroup slice, weighed as measured on lavapipe) picks the largest NB
/// that wastes little: 12 channels -> 3, 25-28 -> 7, 8 -> 2, 64 -> 8. On lavapipe 7 blocks for
/// ESPNet's 25-28 channels ran its convolutions 1.2x faster than 4 + 3 (the accumulators spill
/// from registers either way; the input loads halve). GPUs get at most 4 (`MAX_NB_GPU`): 8 blocks
/// are 128 accumulator registers a thread, which would cut occupancy (not measured: no GPU).
pub fn blocks_per_invocation(ocb: usize, max_nb: usize) -> usize {
    (1..=max_nb.clamp(1, MAX_NB))
        .min_by(|&a, &b| {
            let cost = |nb: usize| ocb.div_ceil(nb) as f64 * (4.0 + 1.5 * nb as f64);
            cost(a).total_cmp(&cost(b)).then(b.cmp(&a))
        })
        .expect("at least one candidate")
}

/// The shader's register tile holds 8 blocks (`struct Tile`).
pub const MAX_NB: usize = 8;
/// The most blocks per invocation on a GPU (see [`blocks_per_invocation`]).
pub const MAX_NB_GPU: usize = 4;

/// The workgroup shape (`WG_X`, `WG_Y`) of `conv2d` for `ow4` invocations per output row (4 pixels
/// each) and `oh` rows. On a software adapter an idle invocation is a masked SIMD lane that costs
/// as much as a busy one: 8 x 8 on a 24-pixel-wide map (6 invocations a row) idles a quarter of
/// the grid, and a flattened pointwise convolution is one row. Of the shapes of 64, 32 and 16
/// invocations, the one that leaves the fewest invocations idle (ties to the larger workgroup)
/// replaces 8 x 8 where it shrinks the grid by more than a tenth: smaller workgroups cost more
/// per workgroup, and their other tap ranges skip differently, which measured about even on
/// ESPNet's 45 x 60 and 180 x 240 maps (8 x 8 idles 12% and 6% there).
pub fn workgroup_shape(ow4: usize, oh: usize) -> (u32, u32) {
    const SHAPES: [(usize, usize); 15] = [(8, 8), (16, 4), (4, 16), (32, 2), (2, 32), (64, 1), (1, 64), (8, 4), (4, 8), (16, 2), (2, 16), (32, 1), (4, 4), (8, 2), (2, 8)];
    let grid = |&(x, y): &(usize, usize)| ow4.div_ceil(x) * x * oh.div_ceil(y) * y;
    let best = SHAPES.iter().min_by_key(|s| grid(s)).expect("shapes");
    let (x, y) = if 10 * grid(best) < 9 * grid(&SHAPES[0]) { *best } else { SHAPES[0] };
    (x as u32, y as u32)
}

/// Input channels per f16 partial sum (`CHUNK` in the shader) for a kernel of `taps` taps: about
/// 8 products per chunk (1 channel of a 3x3, 8 of a 1x1). Measured on the reference cases
/// (tests/half.rs): one running f16 sum flipped up to 0.6% of ESPNet's and 1.2% of
/// DeepLabV3-MNV3's pixels; with chunks the worst real-weight case agrees on 99.25%.
pub fn f16_chunk(taps: usize) -> usize {
    8usize.div_ceil(taps).max(1)
}

/// Values the input tile of `conv2d_tiled` may hold (`TILE_MAX` in the shader).
pub const TILE_MAX: usize = 4096;

/// The input tile of `conv2d_tiled` for a geometry: its width and height (the input a workgroup's
/// 4 WG.0 x WG.1 outputs read) and how many input channels fit in `TILE_MAX` values, or `None`
/// where tiling does not pay: one channel's tile does not fit, or the taps read each tile value
/// fewer than twice on average (1x1 convolutions; dilations much wider than the workgroup).
pub fn tile_for(g: &Conv2dGeom) -> Option<(usize, usize, usize)> {
    let (ox, oy) = (4 * WG.0 as usize, WG.1 as usize);
    let tw = (ox - 1) * g.stride_w + (g.k_w - 1) * g.dil_w + 1;
    let th = (oy - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1;
    let plane = tw * th;
    if plane > TILE_MAX || ox * oy * g.k_h * g.k_w < 2 * plane {
        return None;
    }
    Some((tw, th, (TILE_MAX / plane).min(g.icpg())))
}

/// Prepares a convolution whose input view starts at element `x_off` of its binding and whose
/// output view starts at `y_off` of its binding, for kernels that stage their input through
/// workgroup memory where it pays (`tiles`) and compute in f16 (`f16_math`: chunked sums, see
/// [`f16_chunk`]).
pub fn prepare_conv2d(op: &Conv2d, x_off: u32, y_off: u32, add: AddFrom, tiles: bool, f16_math: bool) -> Result<Prepared> {
    let g = &op.geom;
    let (oh, ow) = g.out_hw()?;
    let (icpg, ocpg) = (g.icpg(), g.ocpg());
    let params = params_of(g, (oh, ow), &op.act, x_off, y_off, add);
    let wt = |oc: usize, ic: usize, ky: usize, kx: usize| op.weight[((oc * icpg + ic) * g.k_h + ky) * g.k_w + kx];
    let bias = |oc: usize| op.bias.as_ref().map_or(0.0, |b| b[oc]);
    let slope = |oc: usize| slope_of(&op.act, oc);
    // `tiles` is allowed on GPUs (and where a caller forces it): their register budget
    let nb = blocks_per_invocation(ocpg.div_ceil(4), if tiles { MAX_NB_GPU } else { MAX_NB });
    if planes(g) {
        // scalar weights [oc][ic][ky][kx]; bias and slopes by channel
        let w = pad4((0..g.out_c).flat_map(|oc| (0..icpg).flat_map(move |ic| (0..g.k_h).flat_map(move |ky| (0..g.k_w).map(move |kx| (oc, ic, ky, kx))))).map(|(oc, ic, ky, kx)| wt(oc, ic, ky, kx)).collect());
        let b = pad4((0..g.out_c).map(bias).collect());
        let s = pad4((0..g.out_c).map(slope).collect());
        if oh > super::MAX_GROUPS as usize {
            return Err(Error::op("conv2d", format!("{oh} output rows exceed the dispatch limit")));
        }
        let z = check_groups("conv2d", g.out_c)?;
        let (params, prm) = finish(params, w, b, s);
        let ow4 = ow.div_ceil(8);
        let rh = planes_rows(g);
        let (wx, wy) = workgroup_shape(ow4, oh.div_ceil(rh));
        let constants = vec![("WG_X", wx as f64), ("WG_Y", wy as f64), ("KW", g.k_w as f64), ("SW", g.stride_w as f64), ("DW", g.dil_w as f64), ("RH", rh as f64)];
        let groups = [(ow4 as u32).div_ceil(wx), (oh.div_ceil(rh) as u32).div_ceil(wy), z];
        return Ok(Prepared { entry: "conv2d_planes", params, prm, groups, constants });
    }
    let depthwise = icpg == 1 && g.groups > 1;
    let (entry, w, b, s, z) = if depthwise {
        // blocks run over all output channels, regardless of group
        let w = pack_blocks(1, g.out_c, 1, g.k_h, g.k_w, |oc, _, ky, kx| wt(oc, 0, ky, kx));
        ("conv2d_dw", w, pack_channels(1, g.out_c, bias), pack_channels(1, g.out_c, slope), g.out_c.div_ceil(4))
    } else {
        let w = pack_blocks(g.groups, ocpg, icpg, g.k_h, g.k_w, wt);
        ("conv2d", w, pack_channels(g.groups, ocpg, bias), pack_channels(g.groups, ocpg, slope), g.groups * ocpg.div_ceil(4).div_ceil(nb))
    };
    let z = check_groups("conv2d", z)?;
    let (mut params, prm) = finish(params, w, b, s);
    let chunk = if f16_math { f16_chunk(g.k_h * g.k_w) } else { 0 };
    let mut constants = if depthwise { vec![] } else { vec![("NB", nb as f64), ("CHUNK", chunk as f64)] };
    if let Some((tw, th, tc)) = tile_for(g).filter(|_| tiles && !depthwise) {
        (params.tile_w, params.tile_h, params.tile_c) = (tw as u32, th as u32, tc as u32);
        let groups = [(ow.div_ceil(4) as u32).div_ceil(WG.0), (oh as u32).div_ceil(WG.1), z];
        return Ok(Prepared { entry: "conv2d_tiled", params, prm, groups, constants });
    }
    // a pointwise convolution that reads each input pixel at its own position is the same
    // computation over one row of oh * ow pixels: no row of the grid is partly idle
    let flat = g.k_h == 1 && g.k_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad == Pad::default() && !depthwise;
    let (oh, ow) = if flat { (1, oh * ow) } else { (oh, ow) };
    if flat {
        (params.in_h, params.in_w, params.out_h, params.out_w) = (1, ow as u32, 1, ow as u32);
    }
    // (the depthwise kernel's invocations are too light for a smaller workgroup to pay)
    let (wx, wy) = if depthwise { WG } else { workgroup_shape(ow.div_ceil(4), oh) };
    constants.extend([("WG_X", wx as f64), ("WG_Y", wy as f64)]);
    let groups = [(ow.div_ceil(4) as u32).div_ceil(wx), (oh as u32).div_ceil(wy), z];
    Ok(Prepared { entry, params, prm, groups, constants })
}

pub fn prepare_conv_t2d(op: &ConvT2d, x_off: u32, y_off: u32, add: AddFrom) -> Result<Prepared> {
    let g = &op.geom;
    let (oh, ow) = g.out_hw()?;
    let (icpg, ocpg) = (g.icpg(), g.ocpg());
    // the transposed geometry's fields, in the forward convolution's parameter block
    let fwd = Conv2dGeom { in_c: g.in_c, in_h: g.in_h, in_w: g.in_w, out_c: g.out_c, k_h: g.k_h, k_w: g.k_w, stride_h: g.stride_h, stride_w: g.stride_w, dil_h: g.dil_h, dil_w: g.dil_w, pad: g.pad, groups: g.groups };
    let params = params_of(&fwd, (oh, ow), &op.act, x_off, y_off, add);
    // PyTorch layout [in_c, out_c/groups, kh, kw]
    let wt = |oc: usize, ic: usize, ky: usize, kx: usize| {
        let grp = oc / ocpg;
        let ic_global = grp * icpg + ic;
        op.weight[((ic_global * ocpg + (oc - grp * ocpg)) * g.k_h + ky) * g.k_w + kx]
    };
    let w = pack_blocks(g.groups, ocpg, icpg, g.k_h, g.k_w, wt);
    let b = pack_channels(g.groups, ocpg, |oc| op.bias.as_ref().map_or(0.0, |b| b[oc]));
    let s = pack_channels(g.groups, ocpg, |oc| slope_of(&op.act, oc));
    let z = check_groups("conv_transpose2d", g.groups * ocpg.div_ceil(4))?;
    let (params, prm) = finish(params, w, b, s);
    let tiled = g.stride_h == g.k_h && g.stride_w == g.k_w && g.dil_h == 1 && g.dil_w == 1 && g.pad == Pad::default() && g.out_pad_h == 0 && g.out_pad_w == 0;
    if tiled {
        // one output row per workgroup row (the entry reads its row from the workgroup id)
        let ow4 = ow.div_ceil(4);
        let wx = if ow4.div_ceil(32) * 32 < ow4.div_ceil(64) * 64 { 32 } else { 64 };
        let groups = [(ow4 as u32).div_ceil(wx), oh as u32, z];
        return Ok(Prepared { entry: "conv_transpose2d_tiled", params, prm, groups, constants: vec![("WG_X", wx as f64), ("WG_Y", 1.0)] });
    }
    let groups = [(ow.div_ceil(4) as u32).div_ceil(WG.0), (oh as u32).div_ceil(WG.1), z];
    Ok(Prepared { entry: "conv_transpose2d", params, prm, groups, constants: vec![] })
}

/// Whether a convolution runs `conv2d_planes` (one output channel per workgroup, 8 pixels per
/// invocation) rather than `conv2d` (blocks of 4 output channels of one group) or `conv2d_dw`
/// (depthwise: 4 channels by 4 pixels per invocation). Groups with a single output channel and
/// several input channels always do: a 4-channel block of `conv2d` would leave 3 of its 4 lanes
/// idle (lavapipe, ESPNetv2's 50 -> 10 3x3 in 10 groups at 192 x 192: 12.0 -> 5.3 ms). Depthwise
/// convolutions do where the 8 pixels' window of input columns (`7 stride + (k - 1) dilation + 1`)
/// is at most half of the 8 k columns their taps read one by one: 3 x 3 kernels at stride 1 and
/// dilation 1 or 2 (384 x 384: 8.2 -> 5.6 ms; 24 x 24 at dilation 2: 490 -> 455 us). With wider
/// dilations or stride 2 the window saves too little and `conv2d_dw`, whose invocations each
/// produce 16 values, was faster (48 x 48 at dilation 4: 0.89 -> 1.01 ms).
pub fn planes(g: &Conv2dGeom) -> bool {
    g.groups > 1 && ((g.ocpg() == 1 && g.icpg() > 1) || (g.icpg() == 1 && 2 * planes_window(g) <= 8 * g.k_w))
}

/// Input columns the 8 pixels of a `conv2d_planes` invocation read (the shader's `WIN_N`).
fn planes_window(g: &Conv2dGeom) -> usize {
    7 * g.stride_w + (g.k_w - 1) * g.dil_w + 1
}

/// The most columns `conv2d_planes` loads into its window (the shader's `WIN_MAX`); wider
/// footprints load each tap's inputs directly.
const PLANES_WINDOW_MAX: usize = 24;

/// Output rows per invocation of `conv2d_planes` (its `RH`): 2 where the kernel's stride and
/// dilation along y are 1 and its columns fit the window, so that the rows the two output rows
/// share are loaded once; else 1.
pub fn planes_rows(g: &Conv2dGeom) -> usize {
    if g.stride_h == 1 && g.dil_h == 1 && planes_window(g) <= PLANES_WINDOW_MAX {
        2
    } else {
        1
    }
}

/// `v` padded with zeros to whole vec4s.
fn pad4(mut v: Vec<f32>) -> Vec<f32> {
    v.resize(v.len().div_ceil(4) * 4, 0.0);
    v
}

fn slope_of(act: &Act, oc: usize) -> f32 {
    act.slopes().map_or(0.0, |s| s[oc])
}

#[cfg(test)]
mod tests {
    use super::workgroup_shape;

    #[test]
    fn workgroup_shapes_leave_few_invocations_idle() {
        // wide maps keep 8 x 8
        assert_eq!(workgroup_shape(120, 360), (8, 8));
        // a 24 x 24 map: 6 invocations a row fit 2 x 8 exactly
        assert_eq!(workgroup_shape(6, 24), (2, 8));
        // a flattened 24 x 24 pointwise convolution: one row of 144 invocations
        assert_eq!(workgroup_shape(144, 1), (32, 1));
        // ESPNet's 45 x 60 and 180 x 240 maps: 8 x 8 idles 12% and 6%, kept
        assert_eq!(workgroup_shape(15, 45), (8, 8));
        assert_eq!(workgroup_shape(60, 180), (8, 8));
    }
}
