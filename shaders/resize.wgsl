// Resize family: `resample` (separable taps from a host-made table: any ONNX Resize mode), and
// bilinear interpolation with PyTorch's source-coordinate rules,
//   align_corners = true:  src = dst * (in - 1) / (out - 1)
//   align_corners = false: src = max((dst + 0.5) * in / out - 0.5, 0)
// (TFLite's align_corners=true, half_pixel_centers=false is the first rule). The upper neighbour
// is clamped to the last row/column. The scales are computed by the host in float32, as PyTorch
// does for float tensors. One invocation per output element.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Resize {
    c: u32, in_h: u32, in_w: u32, in_off: u32,
    out_h: u32, out_w: u32, out_off: u32, align: u32,
    row: u32, scale_h: f32, scale_w: f32, _p0: u32,
    // resample: taps per output row and column, and the value of outside (extrapolated) points
    ky: u32, kx: u32, ext: f32, _p1: u32,
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: Resize;
// resample's table, four parts: source row of each (output row, tap) [out_h * ky], its weight
// [out_h * ky], source column of each (output column, tap) [out_w * kx], its weight [out_w * kx].
// A first tap index < 0 marks an output row or column outside the source (the value is `ext`).
@group(0) @binding(3) var<storage, read> taps: array<f32>;

override WG: u32 = 64u;

// Output element `i` of this invocation (one per element of `c x out_h x out_w`) and its
// channel, row and column; `ok` is false past the end.
struct Pos {
    i: u32,
    c: u32,
    oy: u32,
    ox: u32,
    ok: bool,
};

fn out_pos(gid: vec3<u32>) -> Pos {
    let i = gid.x + gid.y * p.row;
    let ohw = p.out_h * p.out_w;
    return Pos(i, i / max(ohw, 1u), (i % max(ohw, 1u)) / max(p.out_w, 1u), i % max(p.out_w, 1u), i < p.c * ohw);
}


// (lower index, upper index, weight of the upper one)
fn source(o: u32, scale: f32, n: u32) -> vec3<f32> {
    var s: f32;
    if (p.align != 0u) {
        s = scale * f32(o);
    } else {
        s = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
    }
    let i0 = min(u32(s), n - 1u);
    let i1 = min(i0 + 1u, n - 1u);
    return vec3<f32>(f32(i0), f32(i1), s - f32(i0));
}

@compute @workgroup_size(WG, 1, 1)
fn bilinear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = out_pos(gid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    let sy = source(oy, p.scale_h, p.in_h);
    let sx = source(ox, p.scale_w, p.in_w);
    let base = p.in_off + c * p.in_h * p.in_w;
    let r0 = base + u32(sy.x) * p.in_w;
    let r1 = base + u32(sy.y) * p.in_w;
    let x0 = u32(sx.x);
    let x1 = u32(sx.y);
    let ly = sy.z;
    let lx = sx.z;
    let top = (1.0 - lx) * f32(src[r0 + x0]) + lx * f32(src[r0 + x1]);
    let bot = (1.0 - lx) * f32(src[r1 + x0]) + lx * f32(src[r1 + x1]);
    dst[p.out_off + i] = E((1.0 - ly) * top + ly * bot);
}

// The two source rows of output row `oy` of channel `c` (element offsets), their blend weight, and
// the lower source column of output column `ox0`: what `bilinear_rows` and `bilinear_rows8` share.
struct RowSources {
    r0: u32,
    r1: u32,
    ly: f32,
    first: u32,
};

fn row_sources(oy: u32, c: u32, ox0: u32) -> RowSources {
    let sy = source(oy, p.scale_h, p.in_h);
    let base = p.in_off + c * p.in_h * p.in_w;
    return RowSources(base + u32(sy.x) * p.in_w, base + u32(sy.y) * p.in_w, sy.z, u32(source(ox0, p.scale_w, p.in_w).x));
}

// The two rows blended at column `first + k` (clamped to the last column).
fn blend(rs: RowSources, k: u32) -> f32 {
    let x = min(rs.first + k, p.in_w - 1u);
    return mix(f32(src[rs.r0 + x]), f32(src[rs.r1 + x]), rs.ly);
}

// Bilinear upsampling along x (host-checked: consecutive outputs' lower source columns differ
// by at most 1, so 4 consecutive outputs read at most 5 consecutive source columns). One output
// row of one channel per workgroup row of the grid (row = workgroup_id.y, channel =
// workgroup_id.z), 4 consecutive outputs per invocation: the source rows and their weight are the
// same for every invocation of a workgroup, and each invocation loads 10 values, not 16. The
// rows are blended first, then the columns, each output picking its two columns by selects.
@compute @workgroup_size(WG, 1, 1)
fn bilinear_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let oy = wid.y;
    let c = wid.z;
    let ox0 = gid.x * 4u;
    if (ox0 >= p.out_w) {
        return;
    }
    let rs = row_sources(oy, c, ox0);
    let first = rs.first;
    // the rows blended at the 5 columns
    let v0 = blend(rs, 0u);
    let v1 = blend(rs, 1u);
    let v2 = blend(rs, 2u);
    let v3 = blend(rs, 3u);
    let v4 = blend(rs, 4u);
    for (var j = 0u; j < 4u; j++) {
        let ox = ox0 + j;
        if (ox < p.out_w) {
            let sx = source(ox, p.scale_w, p.in_w);
            // the output's lower column is first + d (d <= j), its upper one first + d + 1
            // (both clamped to the last column, as the loaded ones are)
            let d = u32(sx.x) - first;
            let lo = select(select(select(v0, v1, d >= 1u), v2, d >= 2u), v3, d >= 3u);
            let hi = select(select(select(v1, v2, d >= 1u), v3, d >= 2u), v4, d >= 3u);
            dst[p.out_off + (c * p.out_h + oy) * p.out_w + ox] = E(mix(lo, hi, sx.z));
        }
    }
}

// `bilinear_rows` with 8 consecutive outputs per invocation, for upsampling by at least 7/4
// (host-checked: 8 consecutive outputs' lower source columns differ by at most 4, so they read at
// most 6 consecutive source columns): 12 loads for 8 outputs instead of 20.
@compute @workgroup_size(WG, 1, 1)
fn bilinear_rows8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let oy = wid.y;
    let c = wid.z;
    let ox0 = gid.x * 8u;
    if (ox0 >= p.out_w) {
        return;
    }
    let rs = row_sources(oy, c, ox0);
    let first = rs.first;
    // the rows blended at the 6 columns
    let v0 = blend(rs, 0u);
    let v1 = blend(rs, 1u);
    let v2 = blend(rs, 2u);
    let v3 = blend(rs, 3u);
    let v4 = blend(rs, 4u);
    let v5 = blend(rs, 5u);
    let row = p.out_off + (c * p.out_h + oy) * p.out_w;
    for (var j = 0u; j < 8u; j++) {
        let ox = ox0 + j;
        if (ox < p.out_w) {
            let sx = source(ox, p.scale_w, p.in_w);
            // lower column first + d (d <= 4), upper first + d + 1
            let d = u32(sx.x) - first;
            let lo = select(select(select(select(v0, v1, d >= 1u), v2, d >= 2u), v3, d >= 3u), v4, d >= 4u);
            let hi = select(select(select(select(v1, v2, d >= 1u), v3, d >= 2u), v4, d >= 3u), v5, d >= 4u);
            dst[row + ox] = E(mix(lo, hi, sx.z));
        }
    }
}

// Nearest neighbour: src = floor(dst * in / out) in exact integer arithmetic (PyTorch's
// `nearest` and Keras' UpSampling2D for integer factors).
@compute @workgroup_size(WG, 1, 1)
fn nearest(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = out_pos(gid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    let sy = oy * p.in_h / p.out_h;
    let sx = ox * p.in_w / p.out_w;
    dst[p.out_off + i] = src[p.in_off + (c * p.in_h + sy) * p.in_w + sx];
}

// Separable resampling: y[c, i, j] = sum_a wy[i, a] * sum_b wx[j, b] * x[c, iy[i, a], ix[j, b]],
// or `ext` where row i or column j lies outside the source. The table holds ONNX Resize's
// neighbours and coefficients for every mode (nearest, linear, cubic, antialias, crop).
@compute @workgroup_size(WG, 1, 1)
fn resample(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = out_pos(gid);
    if (!q.ok) {
        return;
    }
    let iy0 = q.oy * p.ky;
    let wy0 = p.out_h * p.ky + iy0;
    let ix0 = 2u * p.out_h * p.ky + q.ox * p.kx;
    let wx0 = ix0 + p.out_w * p.kx;
    var v = p.ext;
    if (taps[iy0] >= 0.0 && taps[ix0] >= 0.0) {
        let plane = p.in_off + q.c * p.in_h * p.in_w;
        var acc = 0.0;
        for (var a = 0u; a < p.ky; a++) {
            let r = plane + u32(taps[iy0 + a]) * p.in_w;
            var row = 0.0;
            for (var b = 0u; b < p.kx; b++) {
                row += taps[wx0 + b] * f32(src[r + u32(taps[ix0 + b])]);
            }
            acc += taps[wy0 + a] * row;
        }
        v = acc;
    }
    dst[p.out_off + q.i] = E(v);
}
