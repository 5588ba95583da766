// Dense CRF (mean field with Gaussian and bilateral kernels) on the permutohedral lattice, built
// and used on the device. Arithmetic follows pydensecrf step for step (see src/crf.rs, the CPU
// reference): embedding (elevate, round to the remainder-0 point, rank, barycentric weights), a
// hash table of lattice vertices, splat, [1/2 1 1/2] blur along each of the d+1 directions, slice
// times alpha, symmetric normalisation, Potts messages and a softmax per pixel each iteration.
//
// Building a lattice (once per image and kernel):
//   lattice_clear       zero the hash table and the per-slot counts (`atom`)
//   lattice_embed       per pixel: rem0, rank and the d+1 barycentric weights
//   lattice_insert      per (pixel, vertex): find or claim the vertex's slot (compare-exchange on
//                       the slot's owner; an owner's key is read from the owner's embedding, written
//                       by the previous dispatch) and count the slot's users
//   lattice_number      one workgroup: vertex ids in the order of each vertex's first pair
//                       (prefix sum over the pairs), slot of each vertex, the vertex count and
//                       the per-vertex kernels' grids
//   lattice_offsets     one workgroup: start of each vertex's gather list (prefix sum of counts)
//                       and of its segments
//   lattice_segments    per vertex: its list's segments of SEG pairs
//   lattice_fill        per (pixel, vertex): list it under its vertex (the splat's gather lists);
//                       its slot is replaced by its vertex id
//   lattice_neighbours  per vertex: the vertices one step along +-each lattice direction
// Per iteration and kernel: crf_splat_part and crf_splat (gather per list segment, then per
// vertex), crf_blur x (d+1), crf_slice; then
// crf_update combines both messages with the unary and normalises. crf_init makes the unary.
//
// `lat` (u32 words) holds one lattice's arrays at the offsets o_*; `atom` its hash table (cap
// words: owner + 1, 0 = empty), per-slot counts (cap words), each slot's first pair (cap words),
// then four indirect dispatch grids
// (splat and blur run over the vertices the lattice has, a count only the device knows); `vin`/`vout` are vertex values
// (c4 vec4 per vertex) or the per-pixel buffer, pixel-major vec4 planes at f_u (unary), f_qg /
// f_qb (marginals times each kernel's normaliser: the splat's input), f_mg / f_mb (messages);
// `field` holds the two normalisers (f32 planes at f_norm, f_norm2).

struct Crf {
    n: u32, d: u32, c: u32, c4: u32,
    w: u32, row: u32, cap: u32, _p0: u32,
    j: u32, flags: u32, x_off: u32, y_off: u32,
    o_rem0: u32, o_rank: u32, o_bary: u32, o_vert: u32,
    o_offsets: u32, o_dense: u32, o_sod: u32, o_meta: u32,
    o_nbr: u32, o_entries: u32, f_in: u32, f_out: u32,
    f_u: u32, f_qg: u32, f_mg: u32, f_mb: u32,
    f_norm: u32, img_off: u32, f_norm2: u32, f_qb: u32,
    sxy: f32, srgb: f32, alpha: f32, wg: f32,
    wb: f32, sf0: f32, sf1: f32, sf2: f32,
    sf3: f32, sf4: f32, _f0: f32, _f1: f32,
    o_seg: u32, o_segv: u32, _q0: u32, _q1: u32,
};

@group(0) @binding(0) var<storage, read_write> img: array<u32>;
@group(0) @binding(1) var<storage, read_write> lat: array<u32>;
@group(0) @binding(2) var<storage, read_write> atom: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> vin: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> vout: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> field: array<f32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<uniform> p: Crf;

// flags
const ONES: u32 = 1u;        // splat: the input is all ones (the normaliser)
const NORMALISER: u32 = 4u;  // slice: write 1 / sqrt(sum + 1e-20), pydensecrf's scalar order
const LAST: u32 = 8u;        // init and update: write the marginals to `y`
const UPDATE: u32 = 16u;     // the activations include the messages


fn index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * p.row;
}

fn scale_factor(i: u32) -> f32 {
    switch i {
        case 0u: { return p.sf0; }
        case 1u: { return p.sf1; }
        case 2u: { return p.sf2; }
        case 3u: { return p.sf3; }
        default: { return p.sf4; }
    }
}

@compute @workgroup_size(64, 1, 1)
fn lattice_clear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i < 2u * p.cap) {
        atomicStore(&atom[i], 0u);
    } else if (i < 3u * p.cap) {
        atomicStore(&atom[i], 0xffffffffu);
    }
}

@compute @workgroup_size(64, 1, 1)
fn lattice_embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let px = index(gid);
    if (px >= p.n) {
        return;
    }
    let d = p.d;
    let dp1 = f32(d + 1u);
    var f: array<f32, 8>;
    f[0] = f32(px % p.w) / p.sxy;
    f[1] = f32(px / p.w) / p.sxy;
    if (d == 5u) {
        let rgba = img[p.img_off + px];
        f[2] = f32(rgba & 0xffu) / p.srgb;
        f[3] = f32((rgba >> 8u) & 0xffu) / p.srgb;
        f[4] = f32((rgba >> 16u) & 0xffu) / p.srgb;
    }
    // elevate
    var el: array<f32, 8>;
    var sm = 0.0;
    for (var j = d; j > 0u; j--) {
        let cf = f[j - 1u] * scale_factor(j - 1u);
        el[j] = sm - f32(j) * cf;
        sm += cf;
    }
    el[0] = sm;
    // the closest remainder-0 point
    let down = 1.0 / dp1;
    var rem0: array<f32, 8>;
    var sum = 0.0;
    for (var i = 0u; i <= d; i++) {
        let v = round(down * el[i]);
        rem0[i] = v * dp1;
        sum += v;
    }
    // rank of each coordinate's remainder
    var rank: array<f32, 8>;
    for (var i = 0u; i <= d; i++) {
        rank[i] = 0.0;
    }
    for (var i = 0u; i < d; i++) {
        let di = el[i] - rem0[i];
        for (var j = i + 1u; j <= d; j++) {
            if (di < el[j] - rem0[j]) {
                rank[i] += 1.0;
            } else {
                rank[j] += 1.0;
            }
        }
    }
    for (var i = 0u; i <= d; i++) {
        rank[i] += sum;
        if (rank[i] < 0.0) {
            rank[i] += dp1;
            rem0[i] += dp1;
        } else if (rank[i] >= dp1) {
            rank[i] -= dp1;
            rem0[i] -= dp1;
        }
    }
    // barycentric weights
    var b: array<f32, 8>;
    for (var i = 0u; i <= d + 1u; i++) {
        b[i] = 0.0;
    }
    for (var i = 0u; i <= d; i++) {
        let v = (el[i] - rem0[i]) * down;
        let q = d - u32(rank[i]);
        b[q] += v;
        b[q + 1u] -= v;
    }
    b[0] += 1.0 + b[d + 1u];
    let base = px * (d + 1u);
    for (var i = 0u; i <= d; i++) {
        lat[p.o_rem0 + base + i] = bitcast<u32>(i32(rem0[i]));
        lat[p.o_rank + base + i] = u32(rank[i]);
        lat[p.o_bary + base + i] = bitcast<u32>(b[i]);
    }
}

// Coordinate i of the key of lattice vertex `pv` (pixel pv / (d+1), remainder pv % (d+1)).
fn key_of(pv: u32, i: u32) -> i32 {
    let d = p.d;
    let base = (pv / (d + 1u)) * (d + 1u);
    let r = pv % (d + 1u);
    let rank = lat[p.o_rank + base + i];
    let rem0 = bitcast<i32>(lat[p.o_rem0 + base + i]);
    if (rank <= d - r) {
        return rem0 + i32(r);
    }
    return rem0 + i32(r) - i32(d + 1u);
}

fn hash(k: array<i32, 8>) -> u32 {
    var h = 0u;
    for (var i = 0u; i < p.d; i++) {
        h = (h + bitcast<u32>(k[i])) * 1664525u;
    }
    h ^= h >> 15u;
    h *= 0x2c1b3c6du;
    h ^= h >> 12u;
    return h & (p.cap - 1u);
}

fn same_key(owner: u32, k: array<i32, 8>) -> bool {
    for (var i = 0u; i < p.d; i++) {
        if (key_of(owner, i) != k[i]) {
            return false;
        }
    }
    return true;
}

@compute @workgroup_size(64, 1, 1)
fn lattice_insert(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pv = index(gid);
    if (pv >= p.n * (p.d + 1u)) {
        return;
    }
    var k: array<i32, 8>;
    for (var i = 0u; i < p.d; i++) {
        k[i] = key_of(pv, i);
    }
    var s = hash(k);
    // at most cap probes: the table has at least twice as many slots as (pixel, vertex) pairs
    for (var probe = 0u; probe < p.cap; probe++) {
        let r = atomicCompareExchangeWeak(&atom[s], 0u, pv + 1u);
        if (r.exchanged) {
            break;
        }
        if (r.old_value == 0u) {
            // a spurious failure of the weak exchange: try the same slot again
            continue;
        }
        if (same_key(r.old_value - 1u, k)) {
            break;
        }
        s = (s + 1u) & (p.cap - 1u);
    }
    lat[p.o_vert + pv] = s;
    atomicAdd(&atom[p.cap + s], 1u);
    // the slot's first pair in pixel order numbers the vertex (lattice_number)
    atomicMin(&atom[2u * p.cap + s], pv);
}

const SCAN_WG: u32 = 256u;
var<workgroup> wg_sum: array<vec2<u32>, 256>;

// Exclusive prefix sums of two values per invocation of the (single) workgroup: (prefix of x,
// prefix of y, total of x, total of y).
fn wg_exclusive(t: u32, v: vec2<u32>) -> vec4<u32> {
    wg_sum[t] = v;
    workgroupBarrier();
    // inclusive Hillis-Steele scan of the 256 values
    for (var off = 1u; off < SCAN_WG; off *= 2u) {
        var x = wg_sum[t];
        if (t >= off) {
            x += wg_sum[t - off];
        }
        workgroupBarrier();
        wg_sum[t] = x;
        workgroupBarrier();
    }
    let r = vec4<u32>(wg_sum[t] - v, wg_sum[SCAN_WG - 1u]);
    workgroupBarrier();
    return r;
}

fn leader(pv: u32) -> bool {
    return atomicLoad(&atom[2u * p.cap + lat[p.o_vert + pv]]) == pv;
}

// One workgroup: vertices numbered in the order of their first (pixel, vertex) pair, so vertex
// ids follow the image (what pydensecrf's insertion order does) and neighbouring vertices lie
// near each other in memory; each vertex's pair count goes to `offsets` for lattice_offsets.
@compute @workgroup_size(256, 1, 1)
fn lattice_number(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let pairs = p.n * (p.d + 1u);
    let chunk = (pairs + SCAN_WG - 1u) / SCAN_WG;
    let a = min(t * chunk, pairs);
    let b = min(a + chunk, pairs);
    var mine = 0u;
    for (var pv = a; pv < b; pv++) {
        mine += select(0u, 1u, leader(pv));
    }
    let pre = wg_exclusive(t, vec2<u32>(mine, 0u));
    var id = pre.x;
    for (var pv = a; pv < b; pv++) {
        if (leader(pv)) {
            let s = lat[p.o_vert + pv];
            lat[p.o_dense + s] = id;
            lat[p.o_sod + id] = s;
            lat[p.o_offsets + id] = atomicLoad(&atom[p.cap + s]);
            id++;
        }
    }
    if (t == 0u) {
        let m = pre.z;
        lat[p.o_meta] = m;
        // the grids of the per-vertex kernels (one value, and c4 vec4 in chunks, a vertex): x up to
        // 65535 workgroups of 64, then rows (the host sets `row` to 65535 * 64 for them)
        for (var k = 0u; k < 2u; k++) {
            let groups = (m * select(1u, chunks(), k == 1u) + 63u) / 64u;
            atomicStore(&atom[3u * p.cap + 3u * k], min(groups, 65535u));
            atomicStore(&atom[3u * p.cap + 3u * k + 1u], (groups + 65534u) / 65535u);
            atomicStore(&atom[3u * p.cap + 3u * k + 2u], 1u);
        }
    }
}

// One workgroup: each vertex's pair count (from lattice_number) to the start of its gather list,
// and the start of its segments: the splat sums lists in segments of SEG pairs (crf_splat_part)
// and then each vertex's segments (crf_splat), so a vertex with thousands of pairs does not hold
// back the invocations beside it.
const SEG: u32 = 16u;

@compute @workgroup_size(256, 1, 1)
fn lattice_offsets(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let m = lat[p.o_meta];
    let chunk = (m + SCAN_WG - 1u) / SCAN_WG;
    let a = min(t * chunk, m);
    let b = min(a + chunk, m);
    var mine = vec2<u32>(0u);
    for (var v = a; v < b; v++) {
        let c = lat[p.o_offsets + v];
        mine += vec2<u32>(c, (c + SEG - 1u) / SEG);
    }
    let pre = wg_exclusive(t, mine);
    var run = pre.xy;
    for (var v = a; v < b; v++) {
        let c = lat[p.o_offsets + v];
        lat[p.o_offsets + v] = run.x;
        lat[p.o_seg + v] = run.y;
        run += vec2<u32>(c, (c + SEG - 1u) / SEG);
    }
    if (t == 0u) {
        lat[p.o_offsets + m] = pre.z;
        lat[p.o_seg + m] = pre.w;
        // the grids of the per-segment kernel (one value, and c4 vec4 in chunks)
        for (var k = 0u; k < 2u; k++) {
            let groups = (pre.w * select(1u, chunks(), k == 1u) + 63u) / 64u;
            atomicStore(&atom[3u * p.cap + 6u + 3u * k], min(groups, 65535u));
            atomicStore(&atom[3u * p.cap + 6u + 3u * k + 1u], (groups + 65534u) / 65535u);
            atomicStore(&atom[3u * p.cap + 6u + 3u * k + 2u], 1u);
        }
    }
}

// Per vertex: the vertex of each of its segments.
@compute @workgroup_size(64, 1, 1)
fn lattice_segments(@builtin(global_invocation_id) gid: vec3<u32>) {
    let v = index(gid);
    if (v >= lat[p.o_meta]) {
        return;
    }
    for (var g = lat[p.o_seg + v]; g < lat[p.o_seg + v + 1u]; g++) {
        lat[p.o_segv + g] = v;
    }
}

@compute @workgroup_size(64, 1, 1)
fn lattice_fill(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pv = index(gid);
    if (pv >= p.n * (p.d + 1u)) {
        return;
    }
    let s = lat[p.o_vert + pv];
    let v = lat[p.o_dense + s];
    let k = atomicSub(&atom[p.cap + s], 1u) - 1u;
    lat[p.o_entries + lat[p.o_offsets + v] + k] = pv;
    // from here on the pair's vertex id (what slicing reads)
    lat[p.o_vert + pv] = v;
}

// Dense id + 1 of the vertex with key k, 0 when it is not in the lattice.
fn lookup(k: array<i32, 8>) -> u32 {
    var s = hash(k);
    for (var probe = 0u; probe < p.cap; probe++) {
        let o = atomicLoad(&atom[s]);
        if (o == 0u) {
            return 0u;
        }
        if (same_key(o - 1u, k)) {
            return lat[p.o_dense + s] + 1u;
        }
        s = (s + 1u) & (p.cap - 1u);
    }
    return 0u;
}

@compute @workgroup_size(64, 1, 1)
fn lattice_neighbours(@builtin(global_invocation_id) gid: vec3<u32>) {
    let v = index(gid);
    if (v >= lat[p.o_meta]) {
        return;
    }
    let d = p.d;
    let owner = atomicLoad(&atom[lat[p.o_sod + v]]) - 1u;
    var k: array<i32, 8>;
    for (var i = 0u; i < d; i++) {
        k[i] = key_of(owner, i);
    }
    for (var j = 0u; j <= d; j++) {
        var n1: array<i32, 8>;
        var n2: array<i32, 8>;
        for (var i = 0u; i < d; i++) {
            n1[i] = k[i] - 1;
            n2[i] = k[i] + 1;
        }
        if (j < d) {
            n1[j] = k[j] + i32(d);
            n2[j] = k[j] - i32(d);
        }
        lat[p.o_nbr + (v * (d + 1u) + j) * 2u] = lookup(n1);
        lat[p.o_nbr + (v * (d + 1u) + j) * 2u + 1u] = lookup(n2);
    }
}


// Splat, blur and slice give each invocation one vertex (or pixel) and up to VB vec4 of its
// values (16 classes), so list entries, neighbours and weights are read once for all of them.
const VB: u32 = 4u;

fn chunks() -> u32 {
    return (p.c4 + VB - 1u) / VB;
}

// Splat, first pass: the partial sums of one segment (SEG pairs of a vertex's list).
@compute @workgroup_size(64, 1, 1)
fn crf_splat_part(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    let g = i / chunks();
    let q0 = (i % chunks()) * VB;
    let v = lat[p.o_segv + min(g, p.n * (p.d + 1u) - 1u)];
    if (g >= lat[p.o_seg + lat[p.o_meta]]) {
        return;
    }
    let nq = min(VB, p.c4 - q0);
    var acc: array<vec4<f32>, 4>; // zero-initialised
    let e0 = lat[p.o_offsets + v] + (g - lat[p.o_seg + v]) * SEG;
    let e1 = min(lat[p.o_offsets + v + 1u], e0 + SEG);
    for (var e = e0; e < e1; e++) {
        let pv = lat[p.o_entries + e];
        let wt = bitcast<f32>(lat[p.o_bary + pv]);
        let base = p.f_in + (pv / (p.d + 1u)) * p.c4 + q0;
        for (var k = 0u; k < nq; k++) {
            var val = vec4<f32>(1.0);
            if ((p.flags & ONES) == 0u) {
                val = vin[base + k];
            }
            acc[k] += wt * val;
        }
    }
    for (var k = 0u; k < nq; k++) {
        vout[g * p.c4 + q0 + k] = acc[k];
    }
}

// Splat, second pass: a vertex's value is the sum of its segments' partial sums.
@compute @workgroup_size(64, 1, 1)
fn crf_splat(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    let v = i / chunks();
    let q0 = (i % chunks()) * VB;
    if (v >= lat[p.o_meta]) {
        return;
    }
    let nq = min(VB, p.c4 - q0);
    var acc: array<vec4<f32>, 4>; // zero-initialised
    for (var g = lat[p.o_seg + v]; g < lat[p.o_seg + v + 1u]; g++) {
        for (var k = 0u; k < nq; k++) {
            acc[k] += vin[g * p.c4 + q0 + k];
        }
    }
    for (var k = 0u; k < nq; k++) {
        vout[v * p.c4 + q0 + k] = acc[k];
    }
}

@compute @workgroup_size(64, 1, 1)
fn crf_blur(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    let v = i / chunks();
    let q0 = (i % chunks()) * VB;
    if (v >= lat[p.o_meta]) {
        return;
    }
    let nq = min(VB, p.c4 - q0);
    let nb = p.o_nbr + (v * (p.d + 1u) + p.j) * 2u;
    let n1 = lat[nb];
    let n2 = lat[nb + 1u];
    for (var k = 0u; k < nq; k++) {
        var a = vec4<f32>(0.0);
        var b = vec4<f32>(0.0);
        if (n1 > 0u) {
            a = vin[(n1 - 1u) * p.c4 + q0 + k];
        }
        if (n2 > 0u) {
            b = vin[(n2 - 1u) * p.c4 + q0 + k];
        }
        let o = v * p.c4 + q0 + k;
        vout[o] = vin[o] + 0.5 * (a + b);
    }
}

// `vert` holds each (pixel, vertex) pair's dense vertex id once lattice_fill has run.
@compute @workgroup_size(64, 1, 1)
fn crf_slice(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    let px = i / chunks();
    let q0 = (i % chunks()) * VB;
    if (px >= p.n) {
        return;
    }
    let nq = min(VB, p.c4 - q0);
    let d = p.d;
    var acc: array<vec4<f32>, 4>; // zero-initialised
    for (var r = 0u; r <= d; r++) {
        let pv = px * (d + 1u) + r;
        let wt = bitcast<f32>(lat[p.o_bary + pv]);
        let base = lat[p.o_vert + pv] * p.c4 + q0;
        for (var k = 0u; k < nq; k++) {
            let val = vin[base + k];
            if ((p.flags & NORMALISER) != 0u) {
                acc[k] += wt * val * p.alpha;
            } else {
                acc[k] += (wt * p.alpha) * val;
            }
        }
    }
    if ((p.flags & NORMALISER) != 0u) {
        field[p.f_out + px] = 1.0 / sqrt(acc[0].x + 1e-20);
        return;
    }
    let nrm = field[p.f_norm + px];
    for (var k = 0u; k < nq; k++) {
        vout[p.f_out + px * p.c4 + q0 + k] = acc[k] * nrm;
    }
}

// The activations of channels q4 * 4 .. + 4 of a pixel: -U (init), or -U + w2 N_g + w1 N_b.
fn activation(px: u32, q4: u32) -> vec4<f32> {
    let o = px * p.c4 + q4;
    var a = -vout[p.f_u + o];
    if ((p.flags & UPDATE) != 0u) {
        a = a - (-p.wg) * vout[p.f_mg + o];
        a = a - (-p.wb) * vout[p.f_mb + o];
    }
    return a;
}

// Softmax over the pixel's channels; the marginals go to `y` (planar) on the last step, else,
// times each kernel's normaliser, to the splat inputs. Pad channels (c .. 4 c4) have the unary
// PAD_U, so their probability is 0 and the max and sum need no guard (adding 0 leaves the sum as
// the real channels alone make it).
fn normalise(px: u32) {
    var m = -PAD_U;
    for (var q4 = 0u; q4 < p.c4; q4++) {
        let a = activation(px, q4);
        m = max(m, max(max(a.x, a.y), max(a.z, a.w)));
    }
    var s = 0.0;
    for (var q4 = 0u; q4 < p.c4; q4++) {
        let e = exp(activation(px, q4) - m);
        s += e.x;
        s += e.y;
        s += e.z;
        s += e.w;
    }
    for (var q4 = 0u; q4 < p.c4; q4++) {
        let q = exp(activation(px, q4) - m) / s;
        if ((p.flags & LAST) != 0u) {
            for (var k = 0u; k < 4u; k++) {
                let ch = q4 * 4u + k;
                if (ch < p.c) {
                    y[p.y_off + ch * p.n + px] = q[k];
                }
            }
        } else {
            vout[p.f_qg + px * p.c4 + q4] = q * field[p.f_norm + px];
            vout[p.f_qb + px * p.c4 + q4] = q * field[p.f_norm2 + px];
        }
    }
}

const PAD_U: f32 = 3.0e38;

@compute @workgroup_size(64, 1, 1)
fn crf_init(@builtin(global_invocation_id) gid: vec3<u32>) {
    let px = index(gid);
    if (px >= p.n) {
        return;
    }
    for (var q4 = 0u; q4 < p.c4; q4++) {
        var u = vec4<f32>(PAD_U);
        for (var k = 0u; k < 4u; k++) {
            let ch = q4 * 4u + k;
            if (ch < p.c) {
                u[k] = -log(clamp(x[p.x_off + ch * p.n + px], 1e-5, 1.0));
            }
        }
        vout[p.f_u + px * p.c4 + q4] = u;
    }
    normalise(px);
}

@compute @workgroup_size(64, 1, 1)
fn crf_update(@builtin(global_invocation_id) gid: vec3<u32>) {
    let px = index(gid);
    if (px >= p.n) {
        return;
    }
    normalise(px);
}
