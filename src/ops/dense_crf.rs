//! Dense CRF refinement (Krähenbühl & Koltun 2011, pydensecrf's semantics, see [`crate::crf`]):
//! reads the image (the session's packed RGBA pixels) and class probabilities, writes the
//! mean-field marginals. A graph head that [`crate::session`] puts between the softmax of the
//! logits and the class map when a CRF is asked for; also run on its own by `atrous crf`.
//!
//! It runs as several dispatches (`shaders/crf.wgsl`): for each kernel (Gaussian on position,
//! bilateral on position and colour) a permutohedral lattice is built on the device — embedding,
//! hash-table insertion, a prefix sum, gather lists, neighbour lookup — and its normaliser
//! filtered; then each iteration splats, blurs and slices both kernels' messages and a per-pixel
//! softmax combines them with the unary. The lattices, vertex values and per-pixel planes live in
//! scratch buffers of the operator (sized for the worst case, n (d + 1) vertices), not in the
//! plan's arenas. Splat sums gather in list order, which the atomic fill makes run-dependent:
//! repeated runs can differ in the last bits.

use super::{boxed_op, check_view, distinct, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::crf::{mean_field, CrfParams, Filtering};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::crf::{CrfBlock, LatticeLayout, LAST, NORMALISER, ONES, UPDATE, WG};
use crate::kernels::{grid_1d, Dispatch, Shader, Slot, MAX_GROUPS};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct DenseCrf {
    /// Pixels: a 1-channel `u32` tensor, RGBA8 packed little-endian.
    pub image: View,
    /// Class probabilities `[c, h, w]` (f32).
    pub x: View,
    /// Marginals `[c, h, w]` (f32).
    pub y: View,
    pub params: CrfParams,
}

impl DenseCrf {
    /// The scratch buffers' sizes in bytes: both lattices, their hash tables, two vertex-value
    /// buffers and the per-pixel planes.
    pub fn scratch(&self, g: &Graph) -> Vec<(&'static str, u64)> {
        let (h, w) = g.hw(self.x);
        let (n, c4) = (h * w, self.x.c.div_ceil(4));
        let (lg, lb) = (LatticeLayout::new(n, 2), LatticeLayout::new(n, 5));
        let values = (lb.pairs * c4 * 16) as u64;
        vec![
            ("gaussian lattice", lg.lat_bytes()),
            ("gaussian hash table", lg.atom_bytes()),
            ("bilateral lattice", lb.lat_bytes()),
            ("bilateral hash table", lb.atom_bytes()),
            ("vertex values a", values),
            ("vertex values b", values),
            ("pixel planes", (5 * n * c4 * 16) as u64),
            ("normalisers", (2 * n * 4) as u64),
        ]
    }
}

impl Operator for DenseCrf {
    fn kind(&self) -> &'static str {
        "dense_crf"
    }
    fn inputs(&self) -> Vec<View> {
        vec![self.image, self.x]
    }
    fn outputs(&self) -> Vec<View> {
        vec![self.y]
    }
    fn views_mut(&mut self) -> Vec<&mut View> {
        vec![&mut self.image, &mut self.x, &mut self.y]
    }
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        for v in [self.image, self.x, self.y] {
            check_view(g, name, v)?;
        }
        distinct(g, name, self.x, self.y)?;
        if g.desc(self.image).dtype != DType::U32 || self.image.c != 1 {
            return Err(Error::op(name, "the CRF reads its image as one u32 RGBA plane"));
        }
        if g.desc(self.x).dtype != DType::F32 || g.desc(self.y).dtype != DType::F32 {
            return Err(Error::op(name, "the CRF reads and writes f32 probabilities"));
        }
        if self.x.c != self.y.c || self.x.c < 2 || g.hw(self.x) != g.hw(self.y) || g.hw(self.image) != g.hw(self.x) {
            return Err(Error::op(name, format!("image {:?}, probabilities {}x{:?}, marginals {}x{:?}: one size and at least 2 classes", g.hw(self.image), self.x.c, g.hw(self.x), self.y.c, g.hw(self.y))));
        }
        self.params.validate().map_err(|e| Error::op(name, e.to_string()))
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.x);
        let (n, c) = ((h * w) as u64, self.x.c as u64);
        // per iteration and kernel: splat, d+1 blurs and slice over n (d+1) pairs, c values each
        let per_iter: u64 = [2u64, 5].iter().map(|d| n * (d + 1) * c * (2 + 3 * (d + 1) + 3)).sum::<u64>() + n * c * 8;
        per_iter * self.params.iters as u64 + n * c * 6
    }
    fn describe_params(&self, _g: &Graph) -> String {
        self.params.describe()
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        let rgb: Vec<u8> = read(self.image).iter().flat_map(|v| v.to_bits().to_le_bytes()[..3].to_vec()).collect();
        vec![mean_field(&rgb, &read(self.x), self.x.c, h, w, &self.params, Filtering::Lattice)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        if [self.x, self.y].iter().all(|v| super::view_cuts(*v, cuts).is_empty()) {
            return Ok(None);
        }
        Err(Error::Input("the dense CRF needs the probabilities in one binding; these are split across bindings (use a smaller input)".into()))
    }
    fn encode(&self, _cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        Err(Error::op(name, "the dense CRF runs as several dispatches (encode_all)"))
    }
    fn encode_all(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<(Vec<Dispatch>, Vec<wgpu::Buffer>)> {
        let (h, w) = cx.graph.hw(self.x);
        let (n, c) = (h * w, self.x.c);
        let c4 = c.div_ceil(4);
        let ((is, io), (xs, xo), (ys, yo)) = (cx.resolve(self.image)?, cx.resolve(self.x)?, cx.resolve(self.y)?);
        let limits = cx.dev.limits();
        let max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let scratch = self.scratch(cx.graph);
        if let Some((what, bytes)) = scratch.iter().find(|(_, b)| *b > max || *b > u32::MAX as u64) {
            return Err(Error::Input(format!("the dense CRF at {h}x{w} needs a {} MiB {what} buffer, above this device's {} MiB binding limit (use a smaller input)", bytes.div_ceil(1 << 20), max >> 20)));
        }
        let make_as = |label: &str, bytes: u64, usage: wgpu::BufferUsages| cx.dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes.max(16).next_multiple_of(16), usage, mapped_at_creation: false });
        let make = |label: &str, bytes: u64| make_as(label, bytes, wgpu::BufferUsages::STORAGE);
        let lays = [LatticeLayout::new(n, 2), LatticeLayout::new(n, 5)];
        let lat: Vec<wgpu::Buffer> = lays.iter().map(|l| make("crf lattice", l.lat_bytes())).collect();
        let atom: Vec<wgpu::Buffer> = lays.iter().map(|l| make_as("crf hash table", l.atom_bytes(), wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::INDIRECT)).collect();
        let (va, vb) = (make("crf values a", scratch[4].1), make("crf values b", scratch[5].1));
        let pix = make("crf pixel planes", scratch[6].1);
        let field = make("crf normalisers", scratch[7].1);
        // pixel planes, in vec4 units: unary, splat inputs (marginals times each normaliser), messages
        let plane = (n * c4) as u32;
        let (f_u, f_q, f_m) = (0, [plane, 2 * plane], [3 * plane, 4 * plane]);
        let f_norm = [0, n as u32];
        let p = &self.params;

        let mut dispatches = vec![];
        let mut buffers = vec![];
        let dummy = cx.dummy();
        // one dispatch: `l` the lattice (None: per-pixel kernels), `vals` what `vin` and `vout` bind
        let mut push = |entry: &'static str, l: Option<usize>, threads: usize, f: &dyn Fn(&mut CrfBlock), vals: (Option<&wgpu::Buffer>, &wgpu::Buffer), label: String, flops: u64, bytes: u64| {
            // splat and blur run over the lattice's vertices: a grid the scan writes
            let per_vertex = matches!(entry, "crf_splat_part" | "crf_splat" | "crf_blur" | "lattice_segments");
            let (groups, row) = match entry {
                "lattice_number" | "lattice_offsets" => ([1, 1, 1], 0),
                _ if per_vertex => (grid_1d(threads, WG).0, MAX_GROUPS * WG),
                _ => grid_1d(threads, WG),
            };
            let mut b = CrfBlock {
                n: n as u32,
                c: c as u32,
                c4: c4 as u32,
                w: w as u32,
                row,
                x_off: xo,
                y_off: yo,
                img_off: io,
                f_u,
                f_qg: f_q[0],
                f_qb: f_q[1],
                f_mg: f_m[0],
                f_mb: f_m[1],
                f_norm: f_norm[0],
                f_norm2: f_norm[1],
                wg: p.w2,
                wb: p.w1,
                srgb: p.theta_beta,
                ..Default::default()
            };
            if let Some(l) = l {
                lays[l].apply(&mut b);
                b.sxy = if l == 0 { p.theta_gamma } else { p.theta_alpha };
                b.f_norm = f_norm[l];
            }
            f(&mut b);
            let u = cx.uniform(&b);
            let slots = [
                if entry == "lattice_embed" { is } else { dummy },
                l.map_or(dummy, |l| Slot::whole(&lat[l])),
                l.filter(|_| !per_vertex).map_or(dummy, |l| Slot::whole(&atom[l])),
                vals.0.map_or(dummy, Slot::whole),
                Slot::whole(vals.1),
                Slot::whole(&field),
                if entry == "crf_init" { xs } else { dummy },
                if entry == "crf_init" || entry == "crf_update" { ys } else { dummy },
                Slot::whole(&u),
            ];
            let mut d = cx.kernels.dispatch(Shader::Crf, entry, &slots, groups, &label, flops, bytes);
            if let (true, Some(l)) = (per_vertex, l) {
                // see LatticeLayout::grid_word; one value a pixel is the normaliser (c >= 2 otherwise)
                let grid = (entry == "crf_splat_part") as usize * 2 + (b.c != 1) as usize;
                d.indirect = Some((atom[l].clone(), lays[l].grid_word(grid) as u64 * 4));
            }
            dispatches.push(d);
            buffers.push(u);
        };
        type Push<'p> = dyn FnMut(&'static str, Option<usize>, usize, &dyn Fn(&mut CrfBlock), (Option<&wgpu::Buffer>, &wgpu::Buffer), String, u64, u64) + 'p;
        let kname = ["gaussian", "bilateral"];
        // filtering through lattice l with `vc` values a pixel: splat (from the pixel planes, or
        // ones), d+1 blurs, slice (into the pixel planes, or the normaliser)
        let filter = |push: &mut Push<'_>, l: usize, vc: usize, flags: u32, f_in: u32, f_out: u32, what: &str| {
            let lay = lays[l];
            let (pairs, d, v4) = (lay.pairs as u64, lay.d, vc.div_ceil(4));
            // invocations per vertex or pixel: chunks of up to 4 vec4 (shaders/crf.wgsl VB)
            let chunks = v4.div_ceil(4);
            let set = move |b: &mut CrfBlock| {
                b.c = vc as u32;
                b.c4 = v4 as u32;
                b.f_in = f_in;
                b.f_out = f_out;
            };
            let vcu = vc as u64;
            push(
                "crf_splat_part",
                Some(l),
                lay.pairs * chunks,
                &|b| {
                    set(b);
                    b.flags = flags & ONES
                },
                (Some(&pix), &vb),
                format!("{name}.{}.{what}.splat_part", kname[l]),
                pairs * vcu * 2,
                pairs * (vcu + 3) * 4,
            );
            push("crf_splat", Some(l), lay.pairs * chunks, &set, (Some(&vb), &va), format!("{name}.{}.{what}.splat", kname[l]), pairs * vcu, pairs * vcu * 8);
            let mut cur = (&va, &vb);
            for j in 0..=d {
                push(
                    "crf_blur",
                    Some(l),
                    lay.pairs * chunks,
                    &|b| {
                        set(b);
                        b.j = j as u32
                    },
                    (Some(cur.0), cur.1),
                    format!("{name}.{}.{what}.blur{j}", kname[l]),
                    pairs * vcu * 3,
                    pairs * (vcu * 3 + 2) * 4,
                );
                cur = (cur.1, cur.0);
            }
            push(
                "crf_slice",
                Some(l),
                n * chunks,
                &|b| {
                    set(b);
                    b.flags = flags & NORMALISER
                },
                (Some(cur.0), &pix),
                format!("{name}.{}.{what}.slice", kname[l]),
                pairs * vcu * 2,
                (pairs * (vcu + 3) + (n * vc) as u64) * 4,
            );
        };
        for (l, lay) in lays.iter().enumerate() {
            let (pairs, k) = (lay.pairs, kname[l]);
            let none = (None, &pix);
            push("lattice_clear", Some(l), 3 * lay.cap, &|_| {}, none, format!("{name}.{k}.clear"), 0, lay.cap as u64 * 12);
            push("lattice_embed", Some(l), n, &|_| {}, none, format!("{name}.{k}.embed"), (n * (lay.d + 1) * (lay.d + 8)) as u64, (n * (lay.d + 1) * 12) as u64);
            push("lattice_insert", Some(l), pairs, &|_| {}, none, format!("{name}.{k}.insert"), (pairs * lay.d * 4) as u64, (pairs * lay.d * 16) as u64);
            push("lattice_number", Some(l), 1, &|_| {}, none, format!("{name}.{k}.number"), pairs as u64 * 2, pairs as u64 * 12);
            push("lattice_offsets", Some(l), 1, &|_| {}, none, format!("{name}.{k}.offsets"), pairs as u64, pairs as u64 * 8);
            push("lattice_segments", Some(l), pairs, &|_| {}, none, format!("{name}.{k}.segments"), 0, pairs as u64 * 4);
            push("lattice_fill", Some(l), pairs, &|_| {}, none, format!("{name}.{k}.fill"), 0, pairs as u64 * 16);
            push("lattice_neighbours", Some(l), pairs, &|_| {}, none, format!("{name}.{k}.neighbours"), (pairs * (lay.d + 1) * 2 * lay.d * 4) as u64, (pairs * (lay.d + 1) * 2 * lay.d * 8) as u64);
            filter(&mut push, l, 1, ONES | NORMALISER, 0, f_norm[l], "norm");
        }
        let last = |it: u32| if it + 1 >= p.iters { LAST } else { 0 };
        push("crf_init", None, n, &|b| b.flags = if p.iters == 0 { LAST } else { 0 }, (None, &pix), format!("{name}.init"), (n * c * 6) as u64, (n * c * 12) as u64);
        for it in 0..p.iters {
            for l in 0..2 {
                filter(&mut push, l, c, 0, f_q[l], f_m[l], &format!("it{it}"));
            }
            push("crf_update", None, n, &|b| b.flags = UPDATE | last(it), (None, &pix), format!("{name}.it{it}.update"), (n * c * 10) as u64, (n * c * 20) as u64);
        }
        Ok((dispatches, buffers.into_iter().chain(lat).chain(atom).chain([va, vb, pix, field]).collect()))
    }
    boxed_op!();
}

/// Attaches a CRF after `logits` (f32 probabilities by a softmax, then the CRF reading the pixels
/// `rgba`); returns the marginals tensor, named `probs`.
pub fn attach(g: &mut Graph, rgba: usize, logits: View, params: CrfParams) -> Result<usize> {
    let (h, w) = g.hw(logits);
    let probs = g.tensor_of("crf.probs", DType::F32, logits.c, h, w);
    g.push("crf.softmax", super::Softmax { x: logits, y: g.all(probs), sigmoid: false })?;
    // the session's probabilities output: the marginals are the class probabilities
    let q = g.tensor_of("probs", DType::F32, logits.c, h, w);
    g.push("crf", DenseCrf { image: g.all(rgba), x: g.all(probs), y: g.all(q), params })?;
    Ok(q)
}

/// Test problems: random pixels and sharpened random probabilities at odd sizes under both
/// settings and a few others; a CamVid frame's size for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let settings = [CrfParams::DEEPLAB, CrfParams::DEFAULT, CrfParams { iters: 0, ..CrfParams::DEFAULT }, CrfParams { iters: 2, w1: 7.0, theta_alpha: 5.0, theta_beta: 20.0, w2: 1.5, theta_gamma: 2.0 }];
    let shapes: Vec<(usize, usize, usize, CrfParams)> =
        if bench { vec![(12, 360, 480, CrfParams::DEEPLAB)] } else { settings.iter().map(|&s| (rng.range(2, 13), rng.range(1, 13), rng.range(1, 15), s)).chain([(3, 1, 1, CrfParams::DEEPLAB)]).collect() };
    let mut out = vec![];
    for (c, h, w, params) in shapes {
        let mut g = Graph::new(1, 1, 1);
        let rgba = g.add_input("rgba", DType::U32, 1, h, w);
        let tx = g.tensor("probs", c, h, w);
        let ty = g.tensor("marginals", c, h, w);
        if g.push("crf", DenseCrf { image: g.all(rgba), x: g.all(tx), y: g.all(ty), params }).is_err() {
            continue;
        }
        let n = h * w;
        // smooth colour ramps with noise, so the bilateral kernel sees edges and flat parts
        let pixels: Vec<f32> = (0..n)
            .map(|i| {
                let (y, x) = (i / w, i % w);
                let mut ch = |k: usize| (((x * (40 + 13 * k) + y * 17 * k) / 3 + (rng.next_u64() % 24) as usize) % 256) as u32;
                f32::from_bits(ch(0) | ch(1) << 8 | ch(2) << 16)
            })
            .collect();
        let mut probs = vec![0f32; c * n];
        for px in 0..n {
            let e: Vec<f32> = (0..c).map(|_| (4.0 * rng.uniform()).exp()).collect();
            let s: f32 = e.iter().sum();
            for k in 0..c {
                probs[k * n + px] = e[k] / s;
            }
        }
        let node = g.nodes.len() - 1;
        let data = HashMap::from([(rgba, pixels), (tx, probs), (ty, vec![f32::NAN; c * n])]);
        out.push(Problem { name: format!("dense_crf {c}x{h}x{w} {}", params.describe()), graph: g, node, data, abs_tol: 2e-5, rel_tol: 1e-4 });
    }
    out
}
