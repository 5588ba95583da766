// Argmax over channels, giving the class map. Ties go to the lowest channel (PyTorch), and a NaN
// counts as the maximum. Each invocation handles 4 consecutive pixels and writes them as the 4
// bytes of one u32 (little-endian), so the map reads back at one byte per pixel.
// `argmax_chunk` does the same over logits split across bindings: one dispatch per chunk, keeping
// the best value per pixel in `best` between them (the first chunk starts afresh).
// `resize_argmax` is the argmax of logits bilinearly upsampled on the fly (the upsampled logits
// are never stored).

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Argmax {
    c: u32, hw: u32, x_off: u32, words: u32,
    row: u32, c_base: u32, first: u32, binary: u32, // binary: one channel, class = (x > 0)
    // resize_argmax: the logits' height and width, the map's height and width, PyTorch's
    // align_corners and the source-coordinate scales (kernels::resize::scale)
    in_h: u32, in_w: u32, out_h: u32, out_w: u32,
    align: u32, scale_h: f32, scale_w: f32, _p0: u32,
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> classes: array<u32>;
@group(0) @binding(2) var<uniform> p: Argmax;
@group(0) @binding(3) var<storage, read_write> best: array<f32>;

override WG: u32 = 64u;

fn is_nan(v: f32) -> bool {
    // Compare bit patterns: a fast-math compiler may fold `v != v` away.
    let b = bitcast<u32>(v);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

fn argmax_px(px: u32) -> u32 {
    var best = 0u;
    var bv = f32(src[p.x_off + px]);
    if (p.binary != 0u) {
        // a single logit (sigmoid output): p > 0.5 <=> logit > 0
        return select(0u, 1u, bv > 0.0);
    }
    var bnan = is_nan(bv);
    for (var k = 1u; k < p.c; k++) {
        let v = f32(src[p.x_off + k * p.hw + px]);
        if (!bnan && (v > bv || is_nan(v))) {
            best = k;
            bv = v;
            bnan = is_nan(v);
        }
    }
    return best;
}

@compute @workgroup_size(WG, 1, 1)
fn argmax(@builtin(global_invocation_id) gid: vec3<u32>) {
    let wi = gid.x + gid.y * p.row;
    if (wi >= p.words) {
        return;
    }
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
        let px = wi * 4u + j;
        if (px < p.hw) {
            word |= (argmax_px(px) & 0xffu) << (8u * j);
        }
    }
    classes[wi] = word;
}

@compute @workgroup_size(WG, 1, 1)
fn argmax_chunk(@builtin(global_invocation_id) gid: vec3<u32>) {
    let wi = gid.x + gid.y * p.row;
    if (wi >= p.words) {
        return;
    }
    var word = 0u;
    if (p.first == 0u) {
        word = classes[wi];
    }
    for (var j = 0u; j < 4u; j++) {
        let px = wi * 4u + j;
        if (px >= p.hw) {
            continue;
        }
        var k0 = 0u;
        var cls = (word >> (8u * j)) & 0xffu;
        var bv: f32;
        if (p.first != 0u) {
            bv = f32(src[p.x_off + px]);
            cls = p.c_base;
            k0 = 1u;
        } else {
            bv = best[px];
        }
        var bnan = is_nan(bv);
        for (var k = k0; k < p.c; k++) {
            let v = f32(src[p.x_off + k * p.hw + px]);
            if (!bnan && (v > bv || is_nan(v))) {
                cls = p.c_base + k;
                bv = v;
                bnan = is_nan(v);
            }
        }
        best[px] = bv;
        word = (word & ~(0xffu << (8u * j))) | ((cls & 0xffu) << (8u * j));
    }
    classes[wi] = word;
}

// (lower index, upper index, weight of the upper one) of output coordinate `o`: resize.wgsl's
// `source`, the same arithmetic, so that `resize_argmax` is exactly the argmax of the logits
// `bilinear_rows8` would store.
fn source(o: u32, scale: f32, n: u32) -> vec3<f32> {
    var s: f32;
    if (p.align != 0u) {
        s = scale * f32(o);
    } else {
        s = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
    }
    let i0 = min(u32(s), n - 1u);
    return vec3<f32>(f32(i0), f32(min(i0 + 1u, n - 1u)), s - f32(i0));
}

// Whether this is the f16 variant (E rounds 1 + 2^-12 to 1).
const E_HALF: bool = E(1.000244140625) == E(1.0);

// `v` rounded to f16 precision, to nearest even (subnormals to multiples of 2^-24, beyond the
// largest f16 to infinity): what storing it as f16 keeps. Not `f32(E(v))`, which a compiler may
// fold to `v` in registers (lavapipe does: the fused map then broke f16 ties differently).
fn round_f16(v: f32) -> f32 {
    let e = max(i32((bitcast<u32>(v) >> 23u) & 0xffu) - 127, -14);
    let r = ldexp(round(ldexp(v, 10 - e)), e - 10);
    return select(r, sign(v) * bitcast<f32>(0x7f800000u), abs(r) > 65504.0);
}

// The class map of `c` logits of in_h x in_w bilinearly upsampled to out_h x out_w, computed as
// `bilinear_rows8` would compute the upsampled logits (rounded as stored, in the f16 variant) and argmax would
// pick from them, without writing them: one output row per workgroup row (wid.y), 8 consecutive
// pixels (two words of the map) per invocation. Host-checked (`kernels::argmax::fuses_resize`):
// the map's rows are a whole number of words (out_w % 4 == 0), and 8 consecutive outputs read at
// most 6 source columns. Per class: 12 loads for 8 pixels, instead of bilinear_rows8's 12 loads
// and 8 stores and argmax's 8 loads.
@compute @workgroup_size(WG, 1, 1)
fn resize_argmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let oy = wid.y;
    let ox0 = gid.x * 8u;
    if (ox0 >= p.out_w) {
        return;
    }
    let sy = source(oy, p.scale_h, p.in_h);
    let ly = sy.z;
    let first = u32(source(ox0, p.scale_w, p.in_w).x);
    let last = p.in_w - 1u;
    let xa = min(vec3<u32>(first) + vec3<u32>(0u, 1u, 2u), vec3<u32>(last));
    let xb = min(vec3<u32>(first) + vec3<u32>(3u, 4u, 5u), vec3<u32>(last));
    // each pixel's lower column (first + d) and weight; pixels past the row repeat the last
    var d: array<u32, 8>;
    var lx: array<f32, 8>;
    for (var j = 0u; j < 8u; j++) {
        let sx = source(min(ox0 + j, p.out_w - 1u), p.scale_w, p.in_w);
        d[j] = u32(sx.x) - first;
        lx[j] = sx.z;
    }
    var cls: array<u32, 8>;
    var bv: array<f32, 8>;
    var bnan: array<bool, 8>;
    let plane = p.in_h * p.in_w;
    var r0 = p.x_off + u32(sy.x) * p.in_w;
    var r1 = p.x_off + u32(sy.y) * p.in_w;
    for (var k = 0u; k < p.c; k++) {
        let v0 = mix(f32(src[r0 + xa.x]), f32(src[r1 + xa.x]), ly);
        let v1 = mix(f32(src[r0 + xa.y]), f32(src[r1 + xa.y]), ly);
        let v2 = mix(f32(src[r0 + xa.z]), f32(src[r1 + xa.z]), ly);
        let v3 = mix(f32(src[r0 + xb.x]), f32(src[r1 + xb.x]), ly);
        let v4 = mix(f32(src[r0 + xb.y]), f32(src[r1 + xb.y]), ly);
        let v5 = mix(f32(src[r0 + xb.z]), f32(src[r1 + xb.z]), ly);
        for (var j = 0u; j < 8u; j++) {
            let e = d[j];
            let lo = select(select(select(select(v0, v1, e >= 1u), v2, e >= 2u), v3, e >= 3u), v4, e >= 4u);
            let hi = select(select(select(select(v1, v2, e >= 1u), v3, e >= 2u), v4, e >= 3u), v5, e >= 4u);
            let u = mix(lo, hi, lx[j]);
            let v = select(u, round_f16(u), E_HALF);
            if (k == 0u || (!bnan[j] && (v > bv[j] || is_nan(v)))) {
                cls[j] = k;
                bv[j] = v;
                bnan[j] = is_nan(v);
            }
        }
        r0 += plane;
        r1 += plane;
    }
    let w0 = (oy * p.out_w + ox0) / 4u;
    for (var h = 0u; h < 2u; h++) {
        if (ox0 + 4u * h < p.out_w) {
            let j = 4u * h;
            classes[w0 + h] = (cls[j] & 0xffu) | ((cls[j + 1u] & 0xffu) << 8u) | ((cls[j + 2u] & 0xffu) << 16u) | ((cls[j + 3u] & 0xffu) << 24u);
        }
    }
}
