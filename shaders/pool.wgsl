// Pooling family: average pooling (PyTorch semantics: padding counted or not, ceil mode), max
// pooling over a window with stride and padding, and adaptive average pooling (PyTorch's windows
// [floor(i*n/m), ceil((i+1)*n/m)); global average pooling is the 1x1 case). One invocation per
// output element (see out_pos for the two grids).

// Also: max pooling that returns PyTorch's indices, max unpooling from them (windows of kernel =
// stride, as MaxUnpool2d(2, 2) uses), and a spatial crop.

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Pool {
    c: u32, in_h: u32, in_w: u32, in_off: u32,
    out_h: u32, out_w: u32, out_off: u32, mode: u32, // mode 0: avg counting padding, 1: avg without, 2: max
    k_h: u32, k_w: u32, stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32, row: u32, aux_off: u32, // row: invocations per gid.y step; aux_off: indices
    pad_b: u32, pad_r: u32, dil_h: u32, dil_w: u32, // padding after; window dilation
    rows: u32, _p0: u32, _p1: u32, _p2: u32, // rows: the grid is (columns, rows, channels), see out_pos
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: Pool;
// Max-pooling indices (flat `y * in_w + x` inside each channel's input plane), written by
// `max_pool2d_idx` and read by `max_unpool2d`.
@group(0) @binding(3) var<storage, read_write> idx: array<u32>;

override WG: u32 = 64u;

// Output element `i` of this invocation (one per element of `c x out_h x out_w`) and its
// channel, row and column; `ok` is false past the end. With `p.rows` the grid is x: columns,
// y: rows, z: channels, so the row and channel (and the window's rows) are the same for every
// invocation of a workgroup (one load of them, no divisions, on a software adapter); else a
// 1-D grid over all elements.
struct Pos {
    i: u32,
    c: u32,
    oy: u32,
    ox: u32,
    ok: bool,
};

fn out_pos(gid: vec3<u32>, wid: vec3<u32>) -> Pos {
    if (p.rows != 0u) {
        return Pos((wid.z * p.out_h + wid.y) * p.out_w + gid.x, wid.z, wid.y, gid.x, gid.x < p.out_w);
    }
    let i = gid.x + gid.y * p.row;
    let ohw = p.out_h * p.out_w;
    return Pos(i, i / max(ohw, 1u), (i % max(ohw, 1u)) / max(p.out_w, 1u), i % max(p.out_w, 1u), i < p.c * ohw);
}


// The taps of a dilated window inside the input: (first row, taps, span), rows first + t * d for
// t < taps, span the taps inside the padded input (`pad` before, `pad_end` after).
fn taps(o: u32, k: u32, s: u32, d: u32, pad: u32, pad_end: u32, n: u32) -> vec3<u32> {
    let start = i32(o * s) - i32(pad);
    let di = i32(d);
    var t0 = 0;
    if (start < 0) {
        t0 = (-start + di - 1) / di;
    }
    let t1 = max(min(i32(k), (i32(n) - start + di - 1) / di), t0);
    let span = max(min(i32(k), (i32(n + pad_end) - start + di - 1) / di), 0);
    return vec3<u32>(u32(max(start + t0 * di, 0)), u32(t1 - t0), u32(span));
}


@compute @workgroup_size(WG, 1, 1)
fn pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = out_pos(gid, wid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    let wy = taps(oy, p.k_h, p.stride_h, p.dil_h, p.pad_h, p.pad_b, p.in_h);
    let wx = taps(ox, p.k_w, p.stride_w, p.dil_w, p.pad_w, p.pad_r, p.in_w);
    let base = p.in_off + c * p.in_h * p.in_w;
    var r: f32;
    if (p.mode == 2u) {
        var m = -3.40282347e38;
        var any_nan = false;
        for (var ty = 0u; ty < wy.y; ty++) {
            let y = wy.x + ty * p.dil_h;
            for (var tx = 0u; tx < wx.y; tx++) {
                let x = wx.x + tx * p.dil_w;
                let v = f32(src[base + y * p.in_w + x]);
                m = max(m, v);
                any_nan = any_nan || (v != v);
            }
        }
        r = select(m, bitcast<f32>(0x7fc00000u), any_nan);
    } else {
        var s = 0.0;
        for (var ty = 0u; ty < wy.y; ty++) {
            let y = wy.x + ty * p.dil_h;
            for (var tx = 0u; tx < wx.y; tx++) {
                s += f32(src[base + y * p.in_w + wx.x + tx * p.dil_w]);
            }
        }
        var div = f32(wy.z * wx.z);
        if (p.mode == 1u) {
            div = f32(max(wy.y * wx.y, 1u));
        }
        r = s / div;
    }
    dst[p.out_off + i] = E(r);
}

@compute @workgroup_size(WG, 1, 1)
fn adaptive_avg_pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = out_pos(gid, wid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    let y0 = oy * p.in_h / p.out_h;
    let y1 = ((oy + 1u) * p.in_h + p.out_h - 1u) / p.out_h;
    let x0 = ox * p.in_w / p.out_w;
    let x1 = ((ox + 1u) * p.in_w + p.out_w - 1u) / p.out_w;
    let base = p.in_off + c * p.in_h * p.in_w;
    var s = 0.0;
    for (var y = y0; y < y1; y++) {
        for (var x = x0; x < x1; x++) {
            s += f32(src[base + y * p.in_w + x]);
        }
    }
    dst[p.out_off + i] = E(s / f32((y1 - y0) * (x1 - x0)));
}

fn is_nan(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

// PyTorch's max_pool2d_with_indices: the first maximum in row-major window order; NaN wins (the
// last NaN); a window of -inf keeps its first index.
@compute @workgroup_size(WG, 1, 1)
fn max_pool2d_idx(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = out_pos(gid, wid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    let wy = taps(oy, p.k_h, p.stride_h, p.dil_h, p.pad_h, p.pad_b, p.in_h);
    let wx = taps(ox, p.k_w, p.stride_w, p.dil_w, p.pad_w, p.pad_r, p.in_w);
    let base = p.in_off + c * p.in_h * p.in_w;
    var m = bitcast<f32>(0xff800000u);
    var mi = wy.x * p.in_w + wx.x;
    for (var ty = 0u; ty < wy.y; ty++) {
        let y = wy.x + ty * p.dil_h;
        for (var tx = 0u; tx < wx.y; tx++) {
            let x = wx.x + tx * p.dil_w;
            let v = f32(src[base + y * p.in_w + x]);
            if (v > m || is_nan(v)) {
                m = v;
                mi = y * p.in_w + x;
            }
        }
    }
    dst[p.out_off + i] = E(m);
    idx[p.aux_off + i] = mi;
}

// Unpooling as a gather: output (oy, ox) lies in the window of input (oy / stride, ox / stride)
// and takes its value where that window's index points here, else 0. Exact for indices from a
// pool whose kernel equals its stride (non-overlapping windows, no padding).
@compute @workgroup_size(WG, 1, 1)
fn max_unpool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = out_pos(gid, wid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    let iy = oy / p.stride_h;
    let ix = ox / p.stride_w;
    var r = 0.0;
    if (iy < p.in_h && ix < p.in_w) {
        let j = c * p.in_h * p.in_w + iy * p.in_w + ix;
        if (idx[p.aux_off + j] == oy * p.out_w + ox) {
            r = f32(src[p.in_off + j]);
        }
    }
    dst[p.out_off + i] = E(r);
}

// y[c, oy, ox] = x[c, oy + pad_h, ox + pad_w]: a crop at offset (pad_h, pad_w).
@compute @workgroup_size(WG, 1, 1)
fn crop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let q = out_pos(gid, wid);
    if (!q.ok) {
        return;
    }
    let i = q.i;
    let c = q.c;
    let oy = q.oy;
    let ox = q.ox;
    dst[p.out_off + i] = src[p.in_off + (c * p.in_h + oy + p.pad_h) * p.in_w + ox + p.pad_w];
}
