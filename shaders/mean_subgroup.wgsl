// Mean of each channel's plane with subgroup operations (adapters with the SUBGROUP feature; the
// host falls back to `mean.wgsl` elsewhere): one workgroup per channel, each invocation sums a
// strided part of the plane, `subgroupAdd` totals each subgroup, and the first invocation adds
// the subgroups' totals. Which invocations form a subgroup is the adapter's choice, so each
// subgroup's first invocation stores its total at its own index and the rest store zero.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Mean {
    c: u32, hw: u32, in_off: u32, out_off: u32,
    row: u32, _p0: u32, _p1: u32, _p2: u32, // row: channels per workgroup_id.y step
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: Mean;

override WG: u32 = 64u;

var<workgroup> totals: array<f32, 256>;

@compute @workgroup_size(WG, 1, 1)
fn plane_mean_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    // channels past the end (the last row of the grid) sum channel c - 1 again and store nothing;
    // every invocation reaches the subgroup operation and the barrier
    let c = min(wid.x + wid.y * p.row, p.c - 1u);
    let base = p.in_off + c * p.hw;
    var s = 0.0;
    for (var i = li; i < p.hw; i += WG) {
        s += f32(src[base + i]);
    }
    let t = subgroupAdd(s);
    totals[li] = select(0.0, t, lane == 0u);
    workgroupBarrier();
    if (li == 0u && wid.x + wid.y * p.row < p.c) {
        var sum = 0.0;
        for (var i = 0u; i < WG; i++) {
            sum += totals[i];
        }
        dst[p.out_off + c] = E(sum / f32(p.hw));
    }
}
