// Element-wise family, one invocation per output element:
//   affine: y[c, i] = act(scale[c] * (x[c, i] + add[c, i]) + shift[c])
//           (inference batch norm + PReLU, element-wise add, copy)
//   mul:    y[c, i] = x[c, i] * s[c, i]   or   x[c, i] * s[c]   (squeeze-excitation scaling)
//   gather: y[c, i] = x[perm[c], i]                             (channel shuffle)
// The second operand (addend, multiplier) is read from `addsrc`; `prm` holds per-channel values
// (and the permutation, as exactly representable float indices).

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Affine {
    c: u32, hw: u32, x_off: u32, y_off: u32,
    add_off: u32, has_add: u32, act: u32, row: u32, // row: invocations per gid.y step
    scale_off: u32, shift_off: u32, slope_off: u32, per_channel: u32,
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read> prm: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<E>;
@group(0) @binding(3) var<storage, read_write> addsrc: array<E>;
@group(0) @binding(4) var<uniform> p: Affine;

override WG: u32 = 64u;

fn activate(v: f32, slope: f32) -> f32 {
    switch p.act {
        case 1u: { return max(v, 0.0); }
        case 2u: { return clamp(v, 0.0, 6.0); }
        case 3u: { return select(v * slope, v, v >= 0.0); }
        case 4u: { return 1.0 / (1.0 + exp(-v)); }
        case 5u: { return v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 6u: { return clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 7u: { return tanh(v); }
        case 8u: { return erf1(v); }
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


// The run of 4 elements of one channel's plane that an invocation of a `_planes` entry handles:
// channel c (wid.y + wid.z * p.row, the same for the whole workgroup), its first element `first`
// within the plane, and `base` = c * hw + first; `ok` is false for channels past the end.
struct Run {
    c: u32,
    first: u32,
    base: u32,
    ok: bool,
};

fn plane_run(gid: vec3<u32>, wid: vec3<u32>) -> Run {
    let c = wid.y + wid.z * p.row;
    let first = gid.x * 4u;
    return Run(c, first, c * p.hw + first, c < p.c);
}

// 4 consecutive elements per invocation (the per-invocation cost dominates on software adapters).
// For small planes: the channel differs between invocations of a workgroup.
@compute @workgroup_size(WG, 1, 1)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = (gid.x + gid.y * p.row) * 4u;
    let n = p.c * p.hw;
    for (var i = i0; i < min(i0 + 4u, n); i++) {
        let c = i / p.hw;
        var v = f32(src[p.x_off + i]);
        if (p.has_add != 0u) {
            v += f32(addsrc[p.add_off + i]);
        }
        dst[p.y_off + i] = E(activate(prm[p.scale_off + c] * v + prm[p.shift_off + c], prm[p.slope_off + c]));
    }
}

// Planes of at least a workgroup's elements: one channel per workgroup row of the grid
// (channel = workgroup_id.y + workgroup_id.z * p.row), so the channel's scale, shift and slope are
// the same for every invocation of a workgroup (a software adapter loads them once for all its
// SIMD lanes) and no invocation divides by the plane size. 4 consecutive elements per invocation.
@compute @workgroup_size(WG, 1, 1)
fn affine_planes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = plane_run(gid, wid);
    if (!r.ok) {
        return;
    }
    let c = r.c;
    let base = r.base;
    let scale = prm[p.scale_off + c];
    let shift = prm[p.shift_off + c];
    let slope = prm[p.slope_off + c];
    for (var k = 0u; k < 4u; k++) {
        if (r.first + k < p.hw) {
            var v = f32(src[p.x_off + base + k]);
            if (p.has_add != 0u) {
                v += f32(addsrc[p.add_off + base + k]);
            }
            dst[p.y_off + base + k] = E(activate(scale * v + shift, slope));
        }
    }
}

@compute @workgroup_size(WG, 1, 1)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if (i >= p.c * p.hw) {
        return;
    }
    var j = i;
    if (p.per_channel != 0u) {
        j = i / p.hw;
    }
    dst[p.y_off + i] = E(src[p.x_off + i] * addsrc[p.add_off + j]);
}

// `mul` over planes of at least a workgroup's elements, laid out as `affine_planes`: a
// per-channel multiplier is then one load for the whole workgroup.
@compute @workgroup_size(WG, 1, 1)
fn mul_planes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = plane_run(gid, wid);
    if (!r.ok) {
        return;
    }
    let c = r.c;
    let base = r.base;
    for (var k = 0u; k < 4u; k++) {
        if (r.first + k < p.hw) {
            var s: E;
            if (p.per_channel != 0u) {
                s = addsrc[p.add_off + c];
            } else {
                s = addsrc[p.add_off + base + k];
            }
            dst[p.y_off + base + k] = E(src[p.x_off + base + k] * s);
        }
    }
}

// Instance normalisation: one workgroup per channel. prm = [scale[c], bias[c], eps] at
// scale_off, shift_off, slope_off. Mean, then the variance around it (two passes, so an offset
// of the values costs no digits), each by a tree reduction over the workgroup.
var<workgroup> red: array<f32, 256>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k = k / 2u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG, 1, 1)
fn instance_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wid.x;
    let base = p.x_off + c * p.hw;
    var s = 0.0;
    for (var i = li; i < p.hw; i += WG) {
        s += f32(src[base + i]);
    }
    let mean = reduce_sum(li, s) / f32(p.hw);
    var v = 0.0;
    for (var i = li; i < p.hw; i += WG) {
        let d = f32(src[base + i]) - mean;
        v += d * d;
    }
    let var_ = reduce_sum(li, v) / f32(p.hw);
    let g = prm[p.scale_off + c] * inverseSqrt(var_ + prm[p.slope_off]);
    let b = prm[p.shift_off + c] - mean * g;
    for (var i = li; i < p.hw; i += WG) {
        dst[p.y_off + c * p.hw + i] = E(f32(src[base + i]) * g + b);
    }
}

// DepthToSpace: y[c, h*b + i, w*b + j] = x[src, h, w], src = (i*b + j)*C + c (DCR) or
// c*b*b + i*b + j (CRD); prm = [b, crd, in_h, in_w], `c` and `hw` are the output's.
@compute @workgroup_size(WG, 1, 1)
fn depth_to_space(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if (i >= p.c * p.hw) {
        return;
    }
    let b = u32(prm[0]);
    let ih = u32(prm[2]);
    let iw = u32(prm[3]);
    let c = i / p.hw;
    let r = i % p.hw;
    let oy = r / (iw * b);
    let ox = r % (iw * b);
    let dy = oy % b;
    let dx = ox % b;
    var s = (dy * b + dx) * p.c + c;
    if (prm[1] != 0.0) {
        s = c * b * b + dy * b + dx;
    }
    dst[p.y_off + i] = src[p.x_off + (s * ih + oy / b) * iw + ox / b];
}

@compute @workgroup_size(WG, 1, 1)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * p.row;
    if (i >= p.c * p.hw) {
        return;
    }
    let c = i / p.hw;
    let src_c = u32(prm[p.scale_off + c]);
    dst[p.y_off + i] = E(src[p.x_off + src_c * p.hw + i % p.hw]);
}

// `gather` over planes of at least a workgroup's elements, laid out as `affine_planes`: each
// workgroup copies a run of one source plane.
@compute @workgroup_size(WG, 1, 1)
fn gather_planes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = plane_run(gid, wid);
    if (!r.ok) {
        return;
    }
    let from_base = u32(prm[p.scale_off + r.c]) * p.hw + r.first;
    for (var k = 0u; k < 4u; k++) {
        if (r.first + k < p.hw) {
            dst[p.y_off + r.base + k] = src[p.x_off + from_base + k];
        }
    }
}
