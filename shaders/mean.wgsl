// Mean of each channel's plane (global average pooling: adaptive average pooling to 1x1), one
// workgroup per channel: each invocation sums a strided part of the plane (neighbouring
// invocations read neighbouring values), then the workgroup adds the partial sums by a tree in
// workgroup memory. `mean_subgroup.wgsl` is the same with subgroup operations, for adapters that
// have them.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Mean {
    c: u32, hw: u32, in_off: u32, out_off: u32,
    row: u32, _p0: u32, _p1: u32, _p2: u32, // row: channels per workgroup_id.y step
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: Mean;

// A power of two (the tree halves it).
override WG: u32 = 64u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(WG, 1, 1)
fn plane_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    // channels past the end (the last row of the grid) sum channel c - 1 again and store nothing;
    // no invocation leaves before the barriers
    let c = min(wid.x + wid.y * p.row, p.c - 1u);
    let base = p.in_off + c * p.hw;
    var s = 0.0;
    for (var i = li; i < p.hw; i += WG) {
        s += f32(src[base + i]);
    }
    partial[li] = s;
    for (var n = WG / 2u; n > 0u; n /= 2u) {
        workgroupBarrier();
        if (li < n) {
            partial[li] += partial[li + n];
        }
    }
    if (li == 0u && wid.x + wid.y * p.row < p.c) {
        dst[p.out_off + c] = E(partial[0] / f32(p.hw));
    }
}
