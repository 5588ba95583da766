// Input preprocessing: an RGBA8 image (one u32 per pixel, R in the low byte) becomes the model's
// NCHW float32 input,
//   x[c, y, x] = ((pixel[perm[c]] * pre_scale - mean[c]) / std[c]) * post_scale
// where perm picks the channel order (RGB or BGR) and the scales express each model's convention.
// Channels c_begin .. c_begin + c_count are written, starting at out_off, so an input tensor split
// across bindings is filled one binding at a time.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Pre {
    hw: u32, out_off: u32, row: u32, c_begin: u32,
    perm0: u32, perm1: u32, perm2: u32, c_count: u32,
    mean0: f32, mean1: f32, mean2: f32, pre_scale: f32,
    istd0: f32, istd1: f32, istd2: f32, post_scale: f32,
};

@group(0) @binding(0) var<storage, read_write> rgba: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: Pre;

override WG: u32 = 64u;

fn channel(px: u32, k: u32) -> f32 {
    return f32((px >> (8u * k)) & 0xffu);
}

@compute @workgroup_size(WG, 1, 1)
fn preprocess(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if (i >= p.hw) {
        return;
    }
    let px = rgba[i];
    let perm = vec3<u32>(p.perm0, p.perm1, p.perm2);
    let mean = vec3<f32>(p.mean0, p.mean1, p.mean2);
    let istd = vec3<f32>(p.istd0, p.istd1, p.istd2);
    for (var c = p.c_begin; c < p.c_begin + p.c_count; c++) {
        dst[p.out_off + (c - p.c_begin) * p.hw + i] = E(((channel(px, perm[c]) * p.pre_scale - mean[c]) * istd[c]) * p.post_scale);
    }
}
