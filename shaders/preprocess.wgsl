// Input preprocessing: an RGBA8 image (one u32 per pixel, R in the low byte) becomes the model's
// NCHW float32 input,
//   x[c, y, x] = ((pixel[perm[c]] * pre_scale - mean[c]) / std[c]) * post_scale
// where perm picks the channel order (RGB or BGR) and the scales express each model's convention.

struct Pre {
    hw: u32, out_off: u32, row: u32, _p0: u32,
    perm0: u32, perm1: u32, perm2: u32, _p1: u32,
    mean0: f32, mean1: f32, mean2: f32, pre_scale: f32,
    istd0: f32, istd1: f32, istd2: f32, post_scale: f32,
};

@group(0) @binding(0) var<storage, read_write> rgba: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
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
    dst[p.out_off + i] = ((channel(px, p.perm0) * p.pre_scale - p.mean0) * p.istd0) * p.post_scale;
    dst[p.out_off + p.hw + i] = ((channel(px, p.perm1) * p.pre_scale - p.mean1) * p.istd1) * p.post_scale;
    dst[p.out_off + 2u * p.hw + i] = ((channel(px, p.perm2) * p.pre_scale - p.mean2) * p.istd2) * p.post_scale;
}
