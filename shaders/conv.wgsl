// Convolution family: dense/grouped 2-D convolution, depthwise-style convolution (one input channel
// per group), and transposed convolution. All three share one parameter block and one epilogue:
// bias, optional addend, fused activation.
//
// Each invocation computes a 4 x 4 tile: 4 consecutive output channels (the lanes of a vec4) times
// 4 consecutive output pixels of one row. Weights are packed by the host as vec4s whose lanes are
// those 4 output channels, so one weight load feeds 16 multiply-adds.
//
// Tensors are NCHW (batch 1) float32 ranges of a storage buffer; `*_off` are element offsets of
// the first channel of the view inside the bound range.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;
// Type of the multiply-adds: f32, or f16 in the variant that computes in half precision
// (kernels::Arith::F16; accumulators, weights and inputs rounded to f16, the epilogue in f32).
alias C = f32;

struct Conv {
    in_c: u32, in_h: u32, in_w: u32, in_off: u32,
    out_c: u32, out_h: u32, out_w: u32, out_off: u32,
    k_h: u32, k_w: u32, stride_h: u32, stride_w: u32,
    pad_t: u32, pad_l: u32, dil_h: u32, dil_w: u32,
    // input / output channels per group, and 4-channel blocks per group
    icpg: u32, ocpg: u32, ocb_pg: u32, act: u32,
    // offsets (in vec4s) of packed weights, bias and PReLU slopes in `prm`
    w_off: u32, b_off: u32, s_off: u32,
    // 0: no addend; 1: addend is in `dst`; 2: in `addsrc`; 3: in `src`
    add_mode: u32,
    // conv2d_tiled: input tile width and height (values), and input channels a tile holds
    add_off: u32, tile_w: u32, tile_h: u32, tile_c: u32,
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read> prm: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<E>;
@group(0) @binding(3) var<storage, read_write> addsrc: array<E>;
@group(0) @binding(4) var<uniform> p: Conv;

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

fn activate(v: vec4<f32>, slope: vec4<f32>) -> vec4<f32> {
    switch p.act {
        case 1u: { return max(v, vec4<f32>(0.0)); }
        case 2u: { return clamp(v, vec4<f32>(0.0), vec4<f32>(6.0)); }
        case 3u: { return select(v * slope, v, v >= vec4<f32>(0.0)); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        case 5u: { return v * clamp(v + 3.0, vec4<f32>(0.0), vec4<f32>(6.0)) / 6.0; }
        case 6u: { return clamp(v + 3.0, vec4<f32>(0.0), vec4<f32>(6.0)) / 6.0; }
        case 7u: { return tanh(v); }
        case 8u: { return vec4<f32>(erf1(v.x), erf1(v.y), erf1(v.z), erf1(v.w)); }
        default: { return v; }
    }
}

// erf(x): Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) away from 0, its Taylor series near 0
// (where the absolute error would be large relative to erf itself).
fn erf1(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.125) {
        let x2 = x * x;
        return x * (1.1283791671 - x2 * (0.3761263890 - x2 * 0.1128379167));
    }
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return select(y, -y, x < 0.0);
}


fn load_src(base: u32, x: i32, w: u32) -> C {
    if (x >= 0 && u32(x) < w) {
        return C(src[base + u32(x)]);
    }
    return C(0.0);
}

fn addend(i: u32) -> f32 {
    switch p.add_mode {
        case 1u: { return f32(dst[p.add_off + i]); }
        case 2u: { return f32(addsrc[p.add_off + i]); }
        case 3u: { return f32(src[p.add_off + i]); }
        default: { return 0.0; }
    }
}

// Writes one output pixel for the valid lanes `oc0 .. oc0 + nlanes`.
fn store_px(v: vec4<f32>, oc0: u32, nlanes: u32, oy: u32, ox: u32, slope: vec4<f32>) {
    if (ox >= p.out_w) {
        return;
    }
    let hw = p.out_h * p.out_w;
    let pix = oy * p.out_w + ox;
    var r = v;
    if (p.add_mode != 0u) {
        var a = vec4<f32>(0.0);
        for (var l = 0u; l < nlanes; l++) {
            a[l] = addend((oc0 + l) * hw + pix);
        }
        r = r + a;
    }
    r = activate(r, slope);
    for (var l = 0u; l < nlanes; l++) {
        dst[p.out_off + (oc0 + l) * hw + pix] = E(r[l]);
    }
}

fn epilogue(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, blk: u32, oc0: u32, nlanes: u32, oy: u32, ox0: u32) {
    let bias = prm[p.b_off + blk];
    let slope = prm[p.s_off + blk];
    store_px(a0 + bias, oc0, nlanes, oy, ox0, slope);
    store_px(a1 + bias, oc0, nlanes, oy, ox0 + 1u, slope);
    store_px(a2 + bias, oc0, nlanes, oy, ox0 + 2u, slope);
    store_px(a3 + bias, oc0, nlanes, oy, ox0 + 3u, slope);
}

// Number of 4-channel output blocks one invocation of `conv2d` accumulates (1 to 8), chosen per
// layer by the host (`kernels::conv::blocks_per_invocation`; the tile holds 8).
override NB: u32 = 1u;
// Input channels whose products `conv2d` / `conv2d_tiled` sum in C before adding the partial sum
// to an f32 total (0: one running sum in C). The f16-arithmetic variant gets chunks of about 8
// products (`kernels::conv::f16_chunk`): a running f16 sum over the ~1000 products of a wide layer
// errs by up to K u relative (u = 2^-11), which measurably flipped class maps; chunks bound the f16
// part of the error to that of ~8 products while nearly all multiply-adds stay in f16.
override CHUNK: u32 = 0u;

// Whether input channel `ic` (0-based) ends a chunk of CHUNK channels (or is the last one), so the
// tile's partial sums go to its f32 totals.
fn ends_chunk(ic: u32) -> bool {
    return CHUNK > 0u && ((ic + 1u) % max(CHUNK, 1u) == 0u || ic + 1u == p.icpg);
}

// The register tile of `conv2d` and `conv2d_tiled`: for each of NB blocks of 4 output channels and
// each of 4 pixels (index 4 block + pixel), the running sum in C and, with CHUNK, the f32 total of
// the chunks summed so far.
struct Tile {
    a: array<vec4<C>, 32>,
    t: array<vec4<f32>, 32>,
}

// One tap: inputs v0-v3 of the 4 pixels times the weight vectors of the NB blocks (block j's at
// `wi + min(j ws, last)`, see `weight_offsets`), added to the tile.
fn mac(acc: ptr<function, Tile>, wi: u32, ws: u32, last: u32, v0: vec4<C>, v1: vec4<C>, v2: vec4<C>, v3: vec4<C>) {
    for (var j = 0u; j < NB; j++) {
        let w = vec4<C>(prm[wi + min(j * ws, last)]);
        (*acc).a[4u * j] = fma(w, v0, (*acc).a[4u * j]);
        (*acc).a[4u * j + 1u] = fma(w, v1, (*acc).a[4u * j + 1u]);
        (*acc).a[4u * j + 2u] = fma(w, v2, (*acc).a[4u * j + 2u]);
        (*acc).a[4u * j + 3u] = fma(w, v3, (*acc).a[4u * j + 3u]);
    }
}

// Adds the chunk's partial sums to the f32 totals and restarts them.
fn flush(acc: ptr<function, Tile>) {
    for (var i = 0u; i < 4u * NB; i++) {
        (*acc).t[i] += vec4<f32>((*acc).a[i]);
        (*acc).a[i] = vec4<C>(0.0);
    }
}

// The first weight vector of block b0 of group `grp` (x), and where the group's last block starts
// relative to it (y): block b0 + j starts at x + min(j ws, y) (`ws` vec4s a block), so blocks past
// the group's end (when NB does not divide ocb_pg) read the last block's weights; their sums are
// not stored.
fn weight_offsets(grp: u32, b0: u32, ws: u32) -> vec2<u32> {
    let wb = p.w_off + (grp * p.ocb_pg + b0) * ws;
    return vec2<u32>(wb, p.w_off + (grp * p.ocb_pg + p.ocb_pg - 1u) * ws - wb);
}

// The epilogue of every block of the tile.
fn store_tile(acc: ptr<function, Tile>, grp: u32, b0: u32, oy: u32, ox0: u32) {
    for (var j = 0u; j < NB; j++) {
        let i = 4u * j;
        block_epilogue((*acc).t[i] + vec4<f32>((*acc).a[i]), (*acc).t[i + 1u] + vec4<f32>((*acc).a[i + 1u]), (*acc).t[i + 2u] + vec4<f32>((*acc).a[i + 2u]), (*acc).t[i + 3u] + vec4<f32>((*acc).a[i + 3u]), grp, b0 + j, oy, ox0);
    }
}

// One input value at column `ix` of the row at `rbase`, or 0 outside the input. The address is
// clamped and the value selected rather than branched around: on a software adapter (one SIMD
// lane per invocation) a branch around a load is a per-lane branch, and the select keeps the loop
// free of divergent control flow.
fn tap1(rbase: u32, ix: i32) -> C {
    let ok = ix >= 0 && ix < i32(p.in_w);
    return select(C(0.0), C(src[rbase + u32(clamp(ix, 0, i32(p.in_w) - 1))]), ok);
}

// `tap1` of a row that is inside the input (`yok`), broadcast to the 4 lanes of a block.
fn tap(rbase: u32, ix: i32, yok: bool) -> vec4<C> {
    return vec4<C>(select(C(0.0), tap1(rbase, ix), yok));
}

// Taps [lo, hi) of one axis whose input coordinate `o * stride - pad + k * dil` is inside
// [0, n) for at least one output coordinate o of [o0, o0 + len) (clipped to out_n).
fn tap_range(o0: u32, len: u32, out_n: u32, stride: u32, pad: u32, dil: u32, k: u32, n: u32) -> vec2<u32> {
    let first = i32(o0 * stride) - i32(pad);
    let last = i32((min(o0 + len, out_n) - 1u) * stride) - i32(pad);
    let d = i32(dil);
    // lo: the first k with last + k d >= 0; hi: one past the last k with first + k d < n
    let lo = select(0, (-last + d - 1) / d, last < 0);
    let hi = select(0, (i32(n) - 1 - first) / d + 1, first < i32(n));
    return vec2<u32>(u32(min(lo, i32(k))), u32(clamp(hi, min(lo, i32(k)), i32(k))));
}

// Bias, addend, activation and store of 4-channel block `b` of group `grp` at 4 pixels (nothing
// past the group's last block).
fn block_epilogue(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, grp: u32, b: u32, oy: u32, ox0: u32) {
    if (b >= p.ocb_pg) {
        return;
    }
    let ocl = b * 4u;
    epilogue(a0, a1, a2, a3, grp * p.ocb_pg + b, grp * p.ocpg + ocl, min(4u, p.ocpg - ocl), oy, ox0);
}

// Dense or grouped convolution. Each invocation computes 4 consecutive output pixels of a row for
// NB blocks of 4 output channels (16 NB outputs): each weight load (the same address for the whole
// workgroup, so a scalar load broadcast on a software adapter) feeds 4 pixels, and each input load
// feeds 4 NB channels. gid.x: block of 4 pixels; gid.y: output row; wg.z: group * ceil(ocb_pg / NB)
// + NB-block within the group.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let nbg = (p.ocb_pg + NB - 1u) / NB;
    let grp = wg.z / nbg;
    let b0 = (wg.z % nbg) * NB;
    let ox0 = gid.x * 4u;
    // rows past the end compute row out_h - 1 again and store nothing
    let oy = min(gid.y, p.out_h - 1u);
    let sx = i32(p.stride_w);
    let ix0 = i32(ox0 * p.stride_w) - i32(p.pad_l);
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_t);
    let in_h = i32(p.in_h);
    let plane = p.in_h * p.in_w;
    // weights of block b0 + j start j * ws vec4s after block b0's
    let ws = p.icpg * p.k_h * p.k_w;
    var acc: Tile;
    let wo = weight_offsets(grp, b0, ws);
    // taps that read outside the input for every pixel of this workgroup are skipped (wide
    // dilations: DeepLab's ASPP at rate 36 on a 32 x 32 map has only its centre tap inside)
    let ky_r = tap_range(wg.y * WG_Y, WG_Y, p.out_h, p.stride_h, p.pad_t, p.dil_h, p.k_h, p.in_h);
    let kx_r = tap_range(wg.x * WG_X * 4u, WG_X * 4u, p.out_w, p.stride_w, p.pad_l, p.dil_w, p.k_w, p.in_w);
    var cbase = p.in_off + grp * p.icpg * plane;
    for (var ic = 0u; ic < p.icpg; ic++) {
        for (var ky = ky_r.x; ky < ky_r.y; ky++) {
            var wi = wo.x + (ic * p.k_h + ky) * p.k_w + kx_r.x;
            let iy = iy0 + i32(ky * p.dil_h);
            let yok = iy >= 0 && iy < in_h;
            let rbase = cbase + u32(clamp(iy, 0, in_h - 1)) * p.in_w;
            for (var kx = kx_r.x; kx < kx_r.y; kx++) {
                let ix = ix0 + i32(kx * p.dil_w);
                let v0 = tap(rbase, ix, yok);
                let v1 = tap(rbase, ix + sx, yok);
                let v2 = tap(rbase, ix + 2 * sx, yok);
                let v3 = tap(rbase, ix + 3 * sx, yok);
                mac(&acc, wi, ws, wo.y, v0, v1, v2, v3);
                wi += 1u;
            }
        }
        if (ends_chunk(ic)) {
            flush(&acc);
        }
        cbase += plane;
    }
    if (ox0 >= p.out_w || gid.y >= p.out_h) {
        return;
    }
    store_tile(&acc, grp, b0, oy, ox0);
}

// Values of the input tile of `conv2d_tiled` (16 KiB in f32, the smallest workgroup storage a
// WebGPU adapter offers).
const TILE_MAX: u32 = 4096u;
var<workgroup> tile: array<E, TILE_MAX>;

// `conv2d` for GPUs, with the input staged through workgroup memory. The workgroup's output tile
// (4 WG_X columns by WG_Y rows) reads an input tile of tile_w x tile_h values per input channel;
// the workgroup loads tile_c channels of it at a time (each value once, by neighbouring
// invocations: coalesced), then every invocation reads its taps from workgroup memory. Where the
// tile is much smaller than the taps read (small dilations) this turns repeated global reads into
// on-chip ones. Same register tiling (4 pixels x NB blocks) and same epilogue as `conv2d`; chosen
// by the host on GPUs when the tile fits (`kernels::conv::tile_for`). The loads and barriers are in
// uniform control flow: no invocation returns before the epilogue.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let nbg = (p.ocb_pg + NB - 1u) / NB;
    let grp = wg.z / nbg;
    let b0 = (wg.z % nbg) * NB;
    let ox0 = gid.x * 4u;
    let oy = min(gid.y, p.out_h - 1u);
    let plane = p.in_h * p.in_w;
    let ws = p.icpg * p.k_h * p.k_w;
    // input coordinates of the tile's corner, and of this invocation's first tap inside the tile
    let tx0 = i32(wg.x * WG_X * 4u * p.stride_w) - i32(p.pad_l);
    let ty0 = i32(wg.y * WG_Y * p.stride_h) - i32(p.pad_t);
    let lx0 = (ox0 - wg.x * WG_X * 4u) * p.stride_w;
    let ly0 = (oy - wg.y * WG_Y) * p.stride_h;
    let tplane = p.tile_w * p.tile_h;
    var acc: Tile;
    let wo = weight_offsets(grp, b0, ws);
    let sx = p.stride_w;
    for (var ic0 = 0u; ic0 < p.icpg; ic0 += p.tile_c) {
        let nc = min(p.tile_c, p.icpg - ic0);
        let cbase = p.in_off + (grp * p.icpg + ic0) * plane;
        workgroupBarrier();
        for (var t = li; t < nc * tplane; t += WG_X * WG_Y) {
            let c = t / tplane;
            let r = t % tplane;
            let iy = ty0 + i32(r / p.tile_w);
            let ix = tx0 + i32(r % p.tile_w);
            let ok = iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
            let at = cbase + c * plane + u32(clamp(iy, 0, i32(p.in_h) - 1)) * p.in_w + u32(clamp(ix, 0, i32(p.in_w) - 1));
            tile[t] = select(E(0.0), src[at], ok);
        }
        workgroupBarrier();
        for (var c = 0u; c < nc; c++) {
            for (var ky = 0u; ky < p.k_h; ky++) {
                let row = c * tplane + (ly0 + ky * p.dil_h) * p.tile_w + lx0;
                var wi = wo.x + ((ic0 + c) * p.k_h + ky) * p.k_w;
                for (var kx = 0u; kx < p.k_w; kx++) {
                    let at = row + kx * p.dil_w;
                    let v0 = vec4<C>(C(tile[at]));
                    let v1 = vec4<C>(C(tile[at + sx]));
                    let v2 = vec4<C>(C(tile[at + 2u * sx]));
                    let v3 = vec4<C>(C(tile[at + 3u * sx]));
                    mac(&acc, wi, ws, wo.y, v0, v1, v2, v3);
                    wi += 1u;
                }
            }
            if (ends_chunk(ic0 + c)) {
                flush(&acc);
            }
        }
    }
    if (ox0 >= p.out_w || gid.y >= p.out_h) {
        return;
    }
    store_tile(&acc, grp, b0, oy, ox0);
}

// Convolution with one input channel per group (depthwise, with any channel multiplier).
// Lanes are 4 consecutive output channels across groups, each reading its own input channel.
// gid.z: block of 4 output channels.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_dw(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ox0 = gid.x * 4u;
    let oy = gid.y;
    if (ox0 >= p.out_w || oy >= p.out_h) {
        return;
    }
    let blk = gid.z;
    let oc0 = blk * 4u;
    let nlanes = min(4u, p.out_c - oc0);
    let plane = p.in_h * p.in_w;
    // input channel of each lane (clamped for lanes past the end; their results are not stored)
    let last = p.out_c - 1u;
    let cb = vec4<u32>(
        min(oc0, last) / p.ocpg,
        min(oc0 + 1u, last) / p.ocpg,
        min(oc0 + 2u, last) / p.ocpg,
        min(oc0 + 3u, last) / p.ocpg) * plane + vec4<u32>(p.in_off);

    let sx = i32(p.stride_w);
    let ix0 = i32(ox0 * p.stride_w) - i32(p.pad_l);
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_t);
    var a0 = vec4<C>(0.0);
    var a1 = vec4<C>(0.0);
    var a2 = vec4<C>(0.0);
    var a3 = vec4<C>(0.0);
    var wi = p.w_off + blk * p.k_h * p.k_w;
    for (var ky = 0u; ky < p.k_h; ky++) {
        let iy = iy0 + i32(ky * p.dil_h);
        if (iy < 0 || u32(iy) >= p.in_h) {
            wi += p.k_w;
            continue;
        }
        let r = cb + vec4<u32>(u32(iy) * p.in_w);
        for (var kx = 0u; kx < p.k_w; kx++) {
            let w = vec4<C>(prm[wi]);
            wi += 1u;
            let ix = ix0 + i32(kx * p.dil_w);
            a0 += w * vec4<C>(load_src(r.x, ix, p.in_w), load_src(r.y, ix, p.in_w), load_src(r.z, ix, p.in_w), load_src(r.w, ix, p.in_w));
            let i1 = ix + sx;
            a1 += w * vec4<C>(load_src(r.x, i1, p.in_w), load_src(r.y, i1, p.in_w), load_src(r.z, i1, p.in_w), load_src(r.w, i1, p.in_w));
            let i2 = ix + 2 * sx;
            a2 += w * vec4<C>(load_src(r.x, i2, p.in_w), load_src(r.y, i2, p.in_w), load_src(r.z, i2, p.in_w), load_src(r.w, i2, p.in_w));
            let i3 = ix + 3 * sx;
            a3 += w * vec4<C>(load_src(r.x, i3, p.in_w), load_src(r.y, i3, p.in_w), load_src(r.z, i3, p.in_w), load_src(r.w, i3, p.in_w));
        }
    }
    epilogue(vec4<f32>(a0), vec4<f32>(a1), vec4<f32>(a2), vec4<f32>(a3), blk, oc0, nlanes, oy, ox0);
}

// Kernel width, stride and dilation along x of `conv2d_planes`, fixed per pipeline so that its
// window of input columns is indexed by constants (registers, not per-lane memory).
override KW: u32 = 3u;
override SW: u32 = 1u;
override DW: u32 = 1u;
// Input columns the 8 pixels of an invocation read: [ix0, ix0 + WIN_N). Up to WIN_MAX
// (kernels::conv::PLANES_WINDOW_MAX) of them are loaded once into a window; wider footprints load
// every tap's inputs directly.
const WIN_MAX: u32 = 24u;
override WIN_N: u32 = 7u * SW + (KW - 1u) * DW + 1u;

// Weight `i` (in output channel order [oc][ic][ky][kx]) of the scalar-packed `conv2d_planes`.
fn weight1(i: u32) -> C {
    return C(prm[p.w_off + i / 4u][i % 4u]);
}

// Output rows of one invocation of `conv2d_planes`: 1, or 2 where the host checked stride and
// dilation 1 along y and a window of input columns (`kernels::conv::planes_rows`): the input rows
// the two output rows share are loaded once (a 3x3 kernel: 4 rows for 2 output rows, not 6).
override RH: u32 = 1u;

// Sums of 8 pixels (lo: the first 4, hi: the next 4) in C, and in f32.
struct Acc8 {
    lo: vec4<C>,
    hi: vec4<C>,
}
struct Sum8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The WIN_N input columns from `ix0` of the row at `rbase` (0 outside the input).
fn window(rbase: u32, ix0: i32) -> array<C, WIN_MAX> {
    var win: array<C, WIN_MAX>;
    for (var t = 0u; t < WIN_N; t++) {
        win[t] = tap1(rbase, ix0 + i32(t));
    }
    return win;
}

// One kernel row (weights from `wrow`) over a window, for 8 pixels.
fn window_mac(acc: ptr<function, Acc8>, win: ptr<function, array<C, WIN_MAX>>, wrow: u32) {
    for (var kx = 0u; kx < KW; kx++) {
        let o = kx * DW;
        let w = vec4<C>(weight1(wrow + kx));
        (*acc).lo = fma(w, vec4<C>((*win)[o], (*win)[o + SW], (*win)[o + 2u * SW], (*win)[o + 3u * SW]), (*acc).lo);
        (*acc).hi = fma(w, vec4<C>((*win)[o + 4u * SW], (*win)[o + 5u * SW], (*win)[o + 6u * SW], (*win)[o + 7u * SW]), (*acc).hi);
    }
}

fn planes_store(v: vec4<f32>, oc: u32, oy: u32, ox0: u32) {
    let bias = prm[p.b_off + oc / 4u][oc % 4u];
    let slope = prm[p.s_off + oc / 4u][oc % 4u];
    let hw = p.out_h * p.out_w;
    let pix = oc * hw + oy * p.out_w + ox0;
    var r = v + bias;
    if (p.add_mode != 0u) {
        var ad = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            if (ox0 + j < p.out_w) {
                ad[j] = addend(pix + j);
            }
        }
        r += ad;
    }
    r = activate(r, vec4<f32>(slope));
    for (var j = 0u; j < 4u; j++) {
        if (ox0 + j < p.out_w) {
            dst[p.out_off + pix + j] = E(r[j]);
        }
    }
}

// Convolution one output channel at a time: groups with a single output channel (where a
// 4-channel block of `conv2d` would leave 3 lanes idle) and depthwise convolutions whose input
// columns overlap enough (`kernels::conv::planes`). One output channel per workgroup (wg.z), so
// its weights are the same for every invocation of a workgroup (uniform loads); each invocation
// computes 8 consecutive pixels of a row and loads each input column they share once (a 3-wide
// stride-1 kernel: 10 loads a row instead of 24). Products are summed in C per input channel and
// the channels' sums in f32 (the f16-arithmetic variant's chunk is one input channel).
@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_planes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let oc = wg.z;
    let oy = gid.y * RH;
    let ox0 = gid.x * 8u;
    if (ox0 >= p.out_w || oy >= p.out_h) {
        return;
    }
    let grp = oc / p.ocpg;
    let plane = p.in_h * p.in_w;
    let ix0 = i32(ox0 * SW) - i32(p.pad_l);
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_t);
    var t0 = Sum8(vec4<f32>(0.0), vec4<f32>(0.0));
    var t1 = t0;
    var cbase = p.in_off + grp * p.icpg * plane;
    for (var ic = 0u; ic < p.icpg; ic++) {
        let wbase = (oc * p.icpg + ic) * p.k_h * KW;
        var a0 = Acc8(vec4<C>(0.0), vec4<C>(0.0));
        var a1 = a0;
        if (RH == 1u) {
            for (var ky = 0u; ky < p.k_h; ky++) {
                let iy = iy0 + i32(ky * p.dil_h);
                if (iy < 0 || iy >= i32(p.in_h)) {
                    continue;
                }
                let rbase = cbase + u32(iy) * p.in_w;
                if (WIN_N <= WIN_MAX) {
                    var win = window(rbase, ix0);
                    window_mac(&a0, &win, wbase + ky * KW);
                } else {
                    let sx = i32(SW);
                    for (var kx = 0u; kx < KW; kx++) {
                        let ix = ix0 + i32(kx * DW);
                        let w = vec4<C>(weight1(wbase + ky * KW + kx));
                        a0.lo = fma(w, vec4<C>(tap1(rbase, ix), tap1(rbase, ix + sx), tap1(rbase, ix + 2 * sx), tap1(rbase, ix + 3 * sx)), a0.lo);
                        a0.hi = fma(w, vec4<C>(tap1(rbase, ix + 4 * sx), tap1(rbase, ix + 5 * sx), tap1(rbase, ix + 6 * sx), tap1(rbase, ix + 7 * sx)), a0.hi);
                    }
                }
            }
        } else {
            // two output rows (stride and dilation 1 along y): input row r feeds kernel row r of
            // the first and kernel row r - 1 of the second, loaded once for both
            for (var r = 0u; r <= p.k_h; r++) {
                let iy = iy0 + i32(r);
                if (iy < 0 || iy >= i32(p.in_h)) {
                    continue;
                }
                var win = window(cbase + u32(iy) * p.in_w, ix0);
                if (r < p.k_h) {
                    window_mac(&a0, &win, wbase + r * KW);
                }
                if (r >= 1u) {
                    window_mac(&a1, &win, wbase + (r - 1u) * KW);
                }
            }
        }
        t0.lo += vec4<f32>(a0.lo);
        t0.hi += vec4<f32>(a0.hi);
        t1.lo += vec4<f32>(a1.lo);
        t1.hi += vec4<f32>(a1.hi);
        cbase += plane;
    }
    planes_store(t0.lo, oc, oy, ox0);
    planes_store(t0.hi, oc, oy, ox0 + 4u);
    if (RH == 2u && oy + 1u < p.out_h) {
        planes_store(t1.lo, oc, oy + 1u, ox0);
        planes_store(t1.hi, oc, oy + 1u, ox0 + 4u);
    }
}

// Input contribution of tap (ky, kx) to output pixel (oy, ox) of a transposed convolution:
// the input pixel i with i * stride + k * dil - pad == o, if any.
fn convt_src(o: u32, k: u32, stride: u32, dil: u32, pad: u32, n: u32) -> i32 {
    let t = i32(o + pad) - i32(k * dil);
    if (t < 0 || (u32(t) % stride) != 0u) {
        return -1;
    }
    let i = u32(t) / stride;
    if (i >= n) {
        return -1;
    }
    return i32(i);
}

fn convt_load(cbase: u32, iy: i32, ox: u32, kx: u32) -> C {
    let ix = convt_src(ox, kx, p.stride_w, p.dil_w, p.pad_l, p.in_w);
    if (iy < 0 || ix < 0) {
        return C(0.0);
    }
    return C(src[cbase + u32(iy) * p.in_w + u32(ix)]);
}

// Transposed convolution in gather form. Same tiling and weight packing as `conv2d`
// (weights `[in, out/groups, kh, kw]` are packed per group and 4-channel output block).
@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv_transpose2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ox0 = gid.x * 4u;
    let oy = gid.y;
    if (ox0 >= p.out_w || oy >= p.out_h) {
        return;
    }
    let blk = gid.z;
    let grp = blk / p.ocb_pg;
    let ocl = (blk % p.ocb_pg) * 4u;
    let oc0 = grp * p.ocpg + ocl;
    let nlanes = min(4u, p.ocpg - ocl);
    let khw = p.k_h * p.k_w;
    let plane = p.in_h * p.in_w;
    var a0 = vec4<C>(0.0);
    var a1 = vec4<C>(0.0);
    var a2 = vec4<C>(0.0);
    var a3 = vec4<C>(0.0);
    for (var ic = 0u; ic < p.icpg; ic++) {
        let cbase = p.in_off + (grp * p.icpg + ic) * plane;
        let wbase = p.w_off + (blk * p.icpg + ic) * khw;
        for (var ky = 0u; ky < p.k_h; ky++) {
            let iy = convt_src(oy, ky, p.stride_h, p.dil_h, p.pad_t, p.in_h);
            if (iy < 0) {
                continue;
            }
            for (var kx = 0u; kx < p.k_w; kx++) {
                let w = vec4<C>(prm[wbase + ky * p.k_w + kx]);
                a0 += w * convt_load(cbase, iy, ox0, kx);
                a1 += w * convt_load(cbase, iy, ox0 + 1u, kx);
                a2 += w * convt_load(cbase, iy, ox0 + 2u, kx);
                a3 += w * convt_load(cbase, iy, ox0 + 3u, kx);
            }
        }
    }
    epilogue(vec4<f32>(a0), vec4<f32>(a1), vec4<f32>(a2), vec4<f32>(a3), blk, oc0, nlanes, oy, ox0);
}

// Transposed convolution whose kernel equals its stride (no dilation, padding or output padding):
// the kernel footprints tile the output without overlap, so each output pixel reads exactly one
// input pixel, through tap (oy % stride, ox % stride). ESPNet's 2x2 stride-2 upsamplers.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv_transpose2d_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let ox0 = gid.x * 4u;
    // dispatched with WG_Y = 1: the output row, and so the row of taps, is the workgroup's
    let oy = wg.y;
    if (ox0 >= p.out_w || oy >= p.out_h) {
        return;
    }
    let blk = gid.z;
    let grp = blk / p.ocb_pg;
    let ocl = (blk % p.ocb_pg) * 4u;
    let oc0 = grp * p.ocpg + ocl;
    let nlanes = min(4u, p.ocpg - ocl);
    let khw = p.k_h * p.k_w;
    let plane = p.in_h * p.in_w;
    let iy = oy / p.stride_h;
    let ky = oy % p.stride_h;
    var a0 = vec4<C>(0.0);
    var a1 = vec4<C>(0.0);
    var a2 = vec4<C>(0.0);
    var a3 = vec4<C>(0.0);
    if (p.stride_w == 2u) {
        // ox0 is even: the 4 pixels use taps 0, 1, 0, 1 (weights the same for the whole
        // workgroup) of input columns ox0 / 2 and ox0 / 2 + 1 (each loaded once)
        let i0 = ox0 / 2u;
        let i1 = min(i0 + 1u, p.in_w - 1u);
        for (var ic = 0u; ic < p.icpg; ic++) {
            let row = p.in_off + (grp * p.icpg + ic) * plane + iy * p.in_w;
            let wrow = p.w_off + (blk * p.icpg + ic) * khw + ky * p.k_w;
            let w0 = vec4<C>(prm[wrow]);
            let w1 = vec4<C>(prm[wrow + 1u]);
            let x0 = C(src[row + i0]);
            let x1 = C(src[row + i1]);
            a0 = fma(w0, vec4<C>(x0), a0);
            a1 = fma(w1, vec4<C>(x0), a1);
            a2 = fma(w0, vec4<C>(x1), a2);
            a3 = fma(w1, vec4<C>(x1), a3);
        }
    } else {
        // input column and tap of each of the 4 pixels (clamped past the right edge; not stored)
        var ix: array<u32, 4>;
        var kx: array<u32, 4>;
        for (var j = 0u; j < 4u; j++) {
            let ox = min(ox0 + j, p.out_w - 1u);
            ix[j] = ox / p.stride_w;
            kx[j] = ox % p.stride_w;
        }
        for (var ic = 0u; ic < p.icpg; ic++) {
            let row = p.in_off + (grp * p.icpg + ic) * plane + iy * p.in_w;
            let wrow = p.w_off + (blk * p.icpg + ic) * khw + ky * p.k_w;
            a0 += vec4<C>(prm[wrow + kx[0]]) * C(src[row + ix[0]]);
            a1 += vec4<C>(prm[wrow + kx[1]]) * C(src[row + ix[1]]);
            a2 += vec4<C>(prm[wrow + kx[2]]) * C(src[row + ix[2]]);
            a3 += vec4<C>(prm[wrow + kx[3]]) * C(src[row + ix[3]]);
        }
    }
    epilogue(vec4<f32>(a0), vec4<f32>(a1), vec4<f32>(a2), vec4<f32>(a3), blk, oc0, nlanes, oy, ox0);
}
