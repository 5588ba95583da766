// Element type conversion between f32 and f16 activations, for mixed-precision graphs: `to_f16`
// reads `a` (f32) and writes `b` (f16), `to_f32` the other way. One invocation per element.
// Only f16 sessions build these pipelines (the device then has SHADER_F16).
enable f16;

struct Cast {
    n: u32, a_off: u32, b_off: u32, row: u32,
};

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f16>;
@group(0) @binding(2) var<uniform> p: Cast;

override WG: u32 = 64u;

@compute @workgroup_size(WG, 1, 1)
fn to_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if (i >= p.n) {
        return;
    }
    b[p.b_off + i] = f16(a[p.a_off + i]);
}

@compute @workgroup_size(WG, 1, 1)
fn to_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if (i >= p.n) {
        return;
    }
    a[p.a_off + i] = f32(b[p.b_off + i]);
}
