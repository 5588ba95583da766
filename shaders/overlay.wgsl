// Overlay: the class map (4 classes per u32) mapped to the texture's size by nearest neighbour
// (pixel centres), coloured by the palette and blended over the source texture into an rgba8unorm
// storage texture: out = round((1 - alpha) * pixel + alpha * colour).

struct Overlay {
    tex_w: u32, tex_h: u32, map_w: u32, map_h: u32,
    alpha: f32, srgb: u32, classes: u32, _p0: u32,
};

@group(0) @binding(0) var ov_src: texture_2d<f32>;
@group(0) @binding(1) var<storage, read_write> class_map: array<u32>;
@group(0) @binding(2) var<storage, read> palette: array<u32>;
@group(0) @binding(3) var ov_dst: texture_storage_2d<rgba8unorm, write>;
@group(0) @binding(4) var<uniform> o: Overlay;

fn srgb_encode(c: vec3<f32>) -> vec3<f32> {
    let lo = c * 12.92;
    let hi = 1.055 * pow(max(c, vec3<f32>(0.0)), vec3<f32>(1.0 / 2.4)) - 0.055;
    return select(hi, lo, c <= vec3<f32>(0.0031308));
}

// Texel as 0..255 values.
fn texel(t: texture_2d<f32>, x: u32, y: u32, srgb: u32) -> vec3<f32> {
    var c = textureLoad(t, vec2<u32>(x, y), 0).rgb;
    if (srgb != 0u) {
        c = srgb_encode(c);
    }
    return round(clamp(c, vec3<f32>(0.0), vec3<f32>(1.0)) * 255.0);
}

@compute @workgroup_size(8, 8, 1)
fn overlay(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= o.tex_w || gid.y >= o.tex_h) {
        return;
    }
    // nearest neighbour with pixel centres, as ClassMap::resize_nearest
    let my = min((gid.y * 2u + 1u) * o.map_h / (2u * o.tex_h), o.map_h - 1u);
    let mx = min((gid.x * 2u + 1u) * o.map_w / (2u * o.tex_w), o.map_w - 1u);
    let idx = my * o.map_w + mx;
    let cls = (class_map[idx / 4u] >> (8u * (idx % 4u))) & 0xffu;
    let packed = palette[min(cls, o.classes - 1u)];
    let colour = vec3<f32>(f32(packed & 0xffu), f32((packed >> 8u) & 0xffu), f32((packed >> 16u) & 0xffu));
    let base = texel(ov_src, gid.x, gid.y, o.srgb);
    let mixed = round((1.0 - o.alpha) * base + o.alpha * colour);
    textureStore(ov_dst, vec2<u32>(gid.x, gid.y), vec4<f32>(mixed / 255.0, 1.0));
}
