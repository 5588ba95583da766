// Split-and-merge (Horowitz & Pavlidis 1974) on the grey level of an image, on the device. The CPU
// reference (src/regions.rs) runs the same algorithm, so both give the same regions.
//
// Region statistics are 6 words: count, sum, sum of squares (64 bits: lo, hi), min, max. The
// homogeneity predicate is exact integer arithmetic: `range` max - min <= t; `std`
// 256 (n s2 - s1^2) <= a n^2 with a = round(256 T^2) (the variance against T^2 taken to 1/256),
// in 96-bit arithmetic on 32-bit limbs (n <= 2^24 pixels keeps every term in range).
//
// Split: pyramid_base / pyramid_up build the statistics of every quadtree block (level k: blocks
// of 2^k x 2^k pixels, clipped to the image); split_label gives each pixel the top-left pixel of
// the first homogeneous block on its path from the root, or itself when its min-block-sized block
// is still not homogeneous; the representative pixel of each leaf takes the leaf's statistics.
// Merge, in rounds until no region changes: every region proposes the adjacent region whose union
// is homogeneous with the smallest grey-level range (ties: smallest representative). A region
// moves (into the region it proposed) when nothing proposed to it, or when it is the larger of a
// mutual pair; a region that does not move accepts the regions moving into it: all of them when
// its union with all of them is homogeneous, else the smallest one (whose union with it is, by its
// proposal). So a large region absorbs every small neighbour in one round. A proposal to a moving
// region waits; the region it moves into does not move (a chain ends at a mutual pair's smaller
// side), so a round with any proposal merges something, and the rounds end with no mergeable
// adjacent pair left.

struct Regions {
    n: u32, w: u32, h: u32, row: u32,
    k: u32, levels: u32, kmin: u32, predicate: u32, // predicate: 0 range, 1 std
    t: u32, a: u32, _p0: u32, _p1: u32,
};

@group(0) @binding(0) var<storage, read_write> grey: array<u32>;
@group(0) @binding(1) var<storage, read_write> pyr: array<u32>;
@group(0) @binding(2) var<storage, read_write> label: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<u32>;
// prop, per region (n words each): cost, partner, incoming count, smallest proposer, pending
// statistics of the proposers (count, sum, sum of squares lo, hi, min, max), decision
@group(0) @binding(4) var<storage, read_write> prop: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> parent: array<u32>;
@group(0) @binding(6) var<storage, read_write> ctl: array<atomic<u32>>;
@group(0) @binding(7) var<uniform> p: Regions;

const NONE: u32 = 0xffffffffu;

struct Stats {
    n: u32, s1: u32, s2: vec2<u32>, mn: u32, mx: u32,
};

fn index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * p.row;
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn union_of(a: Stats, b: Stats) -> Stats {
    return Stats(a.n + b.n, a.s1 + b.s1, add64(a.s2, b.s2), min(a.mn, b.mn), max(a.mx, b.mx));
}

fn load(buf_pyr: bool, i: u32) -> Stats {
    let o = i * 6u;
    if (buf_pyr) {
        return Stats(pyr[o], pyr[o + 1u], vec2<u32>(pyr[o + 2u], pyr[o + 3u]), pyr[o + 4u], pyr[o + 5u]);
    }
    return Stats(stats[o], stats[o + 1u], vec2<u32>(stats[o + 2u], stats[o + 3u]), stats[o + 4u], stats[o + 5u]);
}

fn store_pyr(i: u32, s: Stats) {
    let o = i * 6u;
    pyr[o] = s.n; pyr[o + 1u] = s.s1; pyr[o + 2u] = s.s2.x; pyr[o + 3u] = s.s2.y; pyr[o + 4u] = s.mn; pyr[o + 5u] = s.mx;
}

fn store_stats(i: u32, s: Stats) {
    let o = i * 6u;
    stats[o] = s.n; stats[o + 1u] = s.s1; stats[o + 2u] = s.s2.x; stats[o + 3u] = s.s2.y; stats[o + 4u] = s.mn; stats[o + 5u] = s.mx;
}

// a * b as 64 bits (lo, hi).
fn mul32(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let lo = (ll & 0xffffu) | (mid << 16u);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// x * b as 96 bits (limbs low to high).
fn mul64x32(x: vec2<u32>, b: u32) -> vec3<u32> {
    let l = mul32(x.x, b);
    let h = mul32(x.y, b);
    let m = l.y + h.x;
    return vec3<u32>(l.x, m, h.y + select(0u, 1u, m < l.y));
}

fn sub96(a: vec3<u32>, b: vec3<u32>) -> vec3<u32> {
    let x = a.x - b.x;
    let bx = select(0u, 1u, a.x < b.x);
    let y1 = a.y - b.y;
    let by1 = select(0u, 1u, a.y < b.y);
    let y = y1 - bx;
    let by2 = select(0u, 1u, y1 < bx);
    return vec3<u32>(x, y, a.z - b.z - by1 - by2);
}

fn le96(a: vec3<u32>, b: vec3<u32>) -> bool {
    if (a.z != b.z) {
        return a.z < b.z;
    }
    if (a.y != b.y) {
        return a.y < b.y;
    }
    return a.x <= b.x;
}

fn homogeneous(s: Stats) -> bool {
    if (p.predicate == 0u) {
        return s.mx - s.mn <= p.t;
    }
    // 256 (n s2 - s1^2) <= a n^2
    let sq = mul32(s.s1, s.s1);
    let d = sub96(mul64x32(s.s2, s.n), vec3<u32>(sq.x, sq.y, 0u));
    let l = vec3<u32>(d.x << 8u, (d.y << 8u) | (d.x >> 24u), (d.z << 8u) | (d.y >> 24u));
    let r = mul64x32(mul32(s.n, s.n), p.a);
    return le96(l, r);
}

// Offset (in entries) of pyramid level k, and its width.
fn level_offset(k: u32) -> u32 {
    var off = 0u;
    for (var j = 0u; j < k; j++) {
        off += ((p.w + (1u << j) - 1u) >> j) * ((p.h + (1u << j) - 1u) >> j);
    }
    return off;
}

fn level_width(k: u32) -> u32 {
    return (p.w + (1u << k) - 1u) >> k;
}

@compute @workgroup_size(64, 1, 1)
fn pyramid_base(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    let g = grey[i];
    store_pyr(i, Stats(1u, g, vec2<u32>(g * g, 0u), g, g));
}

// Level p.k from level p.k - 1.
@compute @workgroup_size(64, 1, 1)
fn pyramid_up(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    let k = p.k;
    let wk = level_width(k);
    let hk = (p.h + (1u << k) - 1u) >> k;
    if (i >= wk * hk) {
        return;
    }
    let bx = i % wk;
    let by = i / wk;
    let wc = level_width(k - 1u);
    let hc = (p.h + (1u << (k - 1u)) - 1u) >> (k - 1u);
    let oc = level_offset(k - 1u);
    var s = load(true, oc + (2u * by) * wc + 2u * bx);
    if (2u * bx + 1u < wc) {
        s = union_of(s, load(true, oc + (2u * by) * wc + 2u * bx + 1u));
    }
    if (2u * by + 1u < hc) {
        s = union_of(s, load(true, oc + (2u * by + 1u) * wc + 2u * bx));
        if (2u * bx + 1u < wc) {
            s = union_of(s, load(true, oc + (2u * by + 1u) * wc + 2u * bx + 1u));
        }
    }
    store_pyr(level_offset(k) + i, s);
}

@compute @workgroup_size(64, 1, 1)
fn split_label(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    let x = i % p.w;
    let y = i / p.w;
    var k = p.levels - 1u;
    loop {
        let leaf = level_offset(k) + (y >> k) * level_width(k) + (x >> k);
        let s = load(true, leaf);
        if (k <= p.kmin && !homogeneous(s)) {
            // a smallest block that is still not homogeneous: its pixels, for the merge to regroup
            label[i] = i;
            store_stats(i, load(true, i));
            return;
        }
        if (homogeneous(s)) {
            let r = ((y >> k) << k) * p.w + ((x >> k) << k);
            label[i] = r;
            if (r == i) {
                store_stats(i, s);
            }
            return;
        }
        k -= 1u;
    }
}

// prop planes
const COST: u32 = 0u;
const PARTNER: u32 = 1u;
const INCOMING: u32 = 2u;
const MINPROP: u32 = 3u;
const PEND: u32 = 4u; // 6 planes: n, s1, s2 lo, s2 hi, min, max
const DECISION: u32 = 10u;
const ALL: u32 = 1u;
const ONE: u32 = 2u;

fn pget(plane: u32, r: u32) -> u32 {
    return atomicLoad(&prop[plane * p.n + r]);
}

// Start of a round: no proposals, every region its own parent; ctl[0] counts merges.
@compute @workgroup_size(64, 1, 1)
fn merge_clear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    for (var k = 0u; k < 11u; k++) {
        var v = 0u;
        if (k == COST || k == PARTNER || k == MINPROP || k == PEND + 4u) {
            v = NONE;
        }
        atomicStore(&prop[k * p.n + i], v);
    }
    parent[i] = i;
}

// The union's cost (its grey-level range) when it is homogeneous, else NONE.
fn pair_cost(a: u32, b: u32) -> u32 {
    let u = union_of(load(false, a), load(false, b));
    if (homogeneous(u)) {
        return u.mx - u.mn;
    }
    return NONE;
}

// Pass 0: each region's smallest cost over its homogeneous unions with neighbours; pass 1 (p.k ==
// 1): the smallest neighbour at that cost.
@compute @workgroup_size(64, 1, 1)
fn merge_propose(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    let x = i % p.w;
    let y = i / p.w;
    let a = label[i];
    for (var dir = 0u; dir < 2u; dir++) {
        var j = i + 1u;
        if (dir == 0u) {
            if (x + 1u >= p.w) {
                continue;
            }
        } else {
            if (y + 1u >= p.h) {
                continue;
            }
            j = i + p.w;
        }
        let b = label[j];
        if (a == b) {
            continue;
        }
        let c = pair_cost(a, b);
        if (c == NONE) {
            continue;
        }
        if (p.k == 0u) {
            atomicMin(&prop[COST * p.n + a], c);
            atomicMin(&prop[COST * p.n + b], c);
        } else {
            if (pget(COST, a) == c) {
                atomicMin(&prop[PARTNER * p.n + a], b);
            }
            if (pget(COST, b) == c) {
                atomicMin(&prop[PARTNER * p.n + b], a);
            }
        }
    }
}

fn is_root(r: u32) -> bool {
    return r < p.n && label[r] == r;
}

// Whether region r moves into its partner this round.
fn moving(r: u32) -> bool {
    let t = pget(PARTNER, r);
    if (t == NONE) {
        return false;
    }
    return pget(INCOMING, r) == 0u || (pget(PARTNER, t) == r && r > t);
}

@compute @workgroup_size(64, 1, 1)
fn merge_incoming(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = index(gid);
    if (!is_root(r)) {
        return;
    }
    let t = pget(PARTNER, r);
    if (t != NONE) {
        atomicAdd(&prop[INCOMING * p.n + t], 1u);
    }
}

// Moving regions add their statistics to the pending ones of the (non-moving) region they move into.
@compute @workgroup_size(64, 1, 1)
fn merge_gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = index(gid);
    if (!is_root(r) || !moving(r)) {
        return;
    }
    let t = pget(PARTNER, r);
    if (moving(t)) {
        return;
    }
    let s = load(false, r);
    atomicAdd(&prop[PEND * p.n + t], s.n);
    atomicAdd(&prop[(PEND + 1u) * p.n + t], s.s1);
    let old = atomicAdd(&prop[(PEND + 2u) * p.n + t], s.s2.x);
    let carry = select(0u, 1u, old + s.s2.x < old);
    atomicAdd(&prop[(PEND + 3u) * p.n + t], s.s2.y + carry);
    atomicMin(&prop[(PEND + 4u) * p.n + t], s.mn);
    atomicMax(&prop[(PEND + 5u) * p.n + t], s.mx);
    atomicMin(&prop[MINPROP * p.n + t], r);
}

// A region that does not move accepts all the regions moving into it when the union stays
// homogeneous, else the smallest of them.
@compute @workgroup_size(64, 1, 1)
fn merge_commit(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = index(gid);
    if (!is_root(t) || moving(t)) {
        return;
    }
    let smallest = pget(MINPROP, t);
    if (smallest == NONE) {
        return;
    }
    let pending = Stats(pget(PEND, t), pget(PEND + 1u, t), vec2<u32>(pget(PEND + 2u, t), pget(PEND + 3u, t)), pget(PEND + 4u, t), pget(PEND + 5u, t));
    let whole = union_of(load(false, t), pending);
    if (homogeneous(whole)) {
        store_stats(t, whole);
        atomicStore(&prop[DECISION * p.n + t], ALL);
    } else {
        store_stats(t, union_of(load(false, t), load(false, smallest)));
        atomicStore(&prop[DECISION * p.n + t], ONE);
    }
    atomicAdd(&ctl[0], 1u);
}

// Accepted regions point at the region they moved into.
@compute @workgroup_size(64, 1, 1)
fn merge_link(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = index(gid);
    if (!is_root(r) || !moving(r)) {
        return;
    }
    let t = pget(PARTNER, r);
    let d = pget(DECISION, t);
    if (d == ALL || (d == ONE && pget(MINPROP, t) == r)) {
        parent[r] = t;
    }
}

@compute @workgroup_size(64, 1, 1)
fn merge_relabel(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) {
        return;
    }
    label[i] = parent[label[i]];
}
