// Softmax over channels, for a probability output: y[c, p] = exp(x[c, p] - m) / sum_k exp(x[k, p] - m)
// with m the pixel's maximum (so large logits do not overflow). One invocation per pixel.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Softmax {
    c: u32, hw: u32, x_off: u32, y_off: u32,
    row: u32, sigmoid: u32, _p1: u32, _p2: u32, // sigmoid: one channel through a sigmoid
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: Softmax;

override WG: u32 = 64u;

@compute @workgroup_size(WG, 1, 1)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>) {
    let px = gid.x + gid.y * p.row;
    if (px >= p.hw) {
        return;
    }
    var m = f32(src[p.x_off + px]);
    if (p.sigmoid != 0u) {
        // a sigmoid head: the probability of class 1
        dst[p.y_off + px] = 1.0 / (1.0 + exp(-m));
        return;
    }
    for (var k = 1u; k < p.c; k++) {
        m = max(m, f32(src[p.x_off + k * p.hw + px]));
    }
    var s = 0.0;
    for (var k = 0u; k < p.c; k++) {
        s += exp(f32(src[p.x_off + k * p.hw + px]) - m);
    }
    let inv = 1.0 / s;
    for (var k = 0u; k < p.c; k++) {
        dst[p.y_off + k * p.hw + px] = exp(f32(src[p.x_off + k * p.hw + px]) - m) * inv;
    }
}
