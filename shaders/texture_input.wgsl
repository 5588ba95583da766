// Texture input: an RGBA8/BGRA8 texture (unorm or sRGB) of any size becomes the model's
// normalised NCHW input. Texels are brought back to 0..255 byte values first (sRGB formats are
// re-encoded); the resize is the pixel path's (the `image` crate's triangle filter: bilinear when
// enlarging, averaging over the footprint when shrinking, weights renormalised at the borders);
// then x[c] = ((pixel[perm[c]] * pre_scale - mean[c]) / std[c]) * post_scale as in
// preprocess.wgsl (channels c_begin .. c_begin + c_count, from out_off). A texture of the model's
// size gives exactly the pixel path's input.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct TexIn {
    src_w: u32, src_h: u32, dst_w: u32, dst_h: u32,
    out_off: u32, srgb: u32, perm0: u32, perm1: u32,
    perm2: u32, c_begin: u32, c_count: u32, _p0: u32,
    mean0: f32, mean1: f32, mean2: f32, pre_scale: f32,
    istd0: f32, istd1: f32, istd2: f32, post_scale: f32,
};

@group(0) @binding(0) var src_tex: texture_2d<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: TexIn;

fn srgb_encode(c: vec3<f32>) -> vec3<f32> {
    let lo = c * 12.92;
    let hi = 1.055 * pow(max(c, vec3<f32>(0.0)), vec3<f32>(1.0 / 2.4)) - 0.055;
    return select(hi, lo, c <= vec3<f32>(0.0031308));
}

// Texel as 0..255 values.
fn texel(t: texture_2d<f32>, x: u32, y: u32, srgb: u32) -> vec3<f32> {
    var c = textureLoad(t, vec2<u32>(x, y), 0).rgb;
    if (srgb != 0u) {
        c = srgb_encode(c);
    }
    return round(clamp(c, vec3<f32>(0.0), vec3<f32>(1.0)) * 255.0);
}

// Triangle-filter window along one axis for output `o`: (first, last + 1, centre, scale) with the
// footprint widened by the shrink ratio.
fn window(o: u32, n_in: u32, n_out: u32) -> vec4<f32> {
    let ratio = f32(n_in) / f32(n_out);
    let sratio = max(ratio, 1.0);
    let centre = (f32(o) + 0.5) * ratio;
    let lo = clamp(floor(centre - sratio), 0.0, f32(n_in));
    let hi = clamp(ceil(centre + sratio), 0.0, f32(n_in));
    return vec4<f32>(lo, hi, centre, sratio);
}

fn tri(i: u32, w: vec4<f32>) -> f32 {
    return max(0.0, 1.0 - abs((f32(i) - w.z + 0.5) / w.w));
}

@compute @workgroup_size(8, 8, 1)
fn texture_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.dst_w || gid.y >= p.dst_h) {
        return;
    }
    let wy = window(gid.y, p.src_h, p.dst_h);
    let wx = window(gid.x, p.src_w, p.dst_w);
    var acc = vec3<f32>(0.0);
    var wsum = 0.0;
    for (var y = u32(wy.x); y < u32(wy.y); y++) {
        let ky = tri(y, wy);
        if (ky == 0.0) {
            continue;
        }
        for (var x = u32(wx.x); x < u32(wx.y); x++) {
            let k = ky * tri(x, wx);
            acc += k * texel(src_tex, x, y, p.srgb);
            wsum += k;
        }
    }
    let px = acc / wsum;
    let hw = p.dst_w * p.dst_h;
    let i = gid.y * p.dst_w + gid.x;
    let perm = vec3<u32>(p.perm0, p.perm1, p.perm2);
    let mean = vec3<f32>(p.mean0, p.mean1, p.mean2);
    let istd = vec3<f32>(p.istd0, p.istd1, p.istd2);
    for (var c = p.c_begin; c < p.c_begin + p.c_count; c++) {
        dst[p.out_off + (c - p.c_begin) * hw + i] = E(((px[perm[c]] * p.pre_scale - mean[c]) * istd[c]) * p.post_scale);
    }
}
