// Argmax over channels, giving the class map. Ties go to the lowest channel (PyTorch), and a NaN
// counts as the maximum. Each invocation handles 4 consecutive pixels and writes them as the 4
// bytes of one u32 (little-endian), so the map reads back at one byte per pixel.
// `argmax_chunk` does the same over logits split across bindings: one dispatch per chunk, keeping
// the best value per pixel in `best` between them (the first chunk starts afresh).

// Element type of the activations: f32, or f16 in the half-precision variant (see kernels::Shader::source).
alias E = f32;

struct Argmax {
    c: u32, hw: u32, x_off: u32, words: u32,
    row: u32, c_base: u32, first: u32, binary: u32, // binary: one channel, class = (x > 0)
};

@group(0) @binding(0) var<storage, read_write> src: array<E>;
@group(0) @binding(1) var<storage, read_write> classes: array<u32>;
@group(0) @binding(2) var<uniform> p: Argmax;
@group(0) @binding(3) var<storage, read_write> best: array<f32>;

override WG: u32 = 64u;

fn is_nan(v: f32) -> bool {
    // Compare bit patterns: a fast-math compiler may fold `v != v` away.
    let b = bitcast<u32>(v);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

fn argmax_px(px: u32) -> u32 {
    var best = 0u;
    var bv = f32(src[p.x_off + px]);
    if (p.binary != 0u) {
        // a single logit (sigmoid output): p > 0.5 <=> logit > 0
        return select(0u, 1u, bv > 0.0);
    }
    var bnan = is_nan(bv);
    for (var k = 1u; k < p.c; k++) {
        let v = f32(src[p.x_off + k * p.hw + px]);
        if (!bnan && (v > bv || is_nan(v))) {
            best = k;
            bv = v;
            bnan = is_nan(v);
        }
    }
    return best;
}

@compute @workgroup_size(WG, 1, 1)
fn argmax(@builtin(global_invocation_id) gid: vec3<u32>) {
    let wi = gid.x + gid.y * p.row;
    if (wi >= p.words) {
        return;
    }
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
        let px = wi * 4u + j;
        if (px < p.hw) {
            word |= (argmax_px(px) & 0xffu) << (8u * j);
        }
    }
    classes[wi] = word;
}

@compute @workgroup_size(WG, 1, 1)
fn argmax_chunk(@builtin(global_invocation_id) gid: vec3<u32>) {
    let wi = gid.x + gid.y * p.row;
    if (wi >= p.words) {
        return;
    }
    var word = 0u;
    if (p.first == 0u) {
        word = classes[wi];
    }
    for (var j = 0u; j < 4u; j++) {
        let px = wi * 4u + j;
        if (px >= p.hw) {
            continue;
        }
        var k0 = 0u;
        var cls = (word >> (8u * j)) & 0xffu;
        var bv: f32;
        if (p.first != 0u) {
            bv = f32(src[p.x_off + px]);
            cls = p.c_base;
            k0 = 1u;
        } else {
            bv = best[px];
        }
        var bnan = is_nan(bv);
        for (var k = k0; k < p.c; k++) {
            let v = f32(src[p.x_off + k * p.hw + px]);
            if (!bnan && (v > bv || is_nan(v))) {
                cls = p.c_base + k;
                bv = v;
                bnan = is_nan(v);
            }
        }
        best[px] = bv;
        word = (word & ~(0xffu << (8u * j))) | ((cls & 0xffu) << (8u * j));
    }
    classes[wi] = word;
}
