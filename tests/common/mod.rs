//! Shared test helpers: the GPU (or a loud skip, or a failure under CI), `../shared`, a seeded
//! generator and tolerance checks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use atrous::gpu::Gpu;

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The GPU for tests. Without an adapter: a loud skip locally, a failure when `CI=true`.
pub fn gpu() -> Option<Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => {
            eprintln!("test GPU: {}", g.describe());
            Some(g)
        }
        Err(e) => {
            if ci() {
                panic!("CI=true and no GPU adapter: {e}");
            }
            eprintln!("\n*** SKIPPING GPU TEST: {e} ***\n");
            None
        }
    })
    .clone()
}

/// The test GPU when it can run f16 kernels (`SHADER_F16`). Without one: a loud skip locally, a
/// failure when `CI=true` (the CI adapter, lavapipe, has it).
pub fn gpu_f16() -> Option<Gpu> {
    let g = gpu()?;
    if g.has_f16() {
        return Some(g);
    }
    if ci() {
        panic!("CI=true and the adapter has no SHADER_F16");
    }
    eprintln!("\n*** SKIPPING f16 TEST: the adapter has no SHADER_F16 ***\n");
    None
}

/// `../shared` beside the project. Missing: a loud skip locally, a failure when `CI=true`.
pub fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("models").is_dir() {
        return Some(p);
    }
    if ci() {
        panic!("CI=true and {} is missing", p.display());
    }
    eprintln!("\n*** SKIPPING: {} not found ***\n", p.display());
    None
}

/// SplitMix64: a tiny seeded generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Reads a safetensors file of test data into (name -> (shape, f32 values or u8 values as f32)).
pub fn read_tensors(path: &std::path::Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(name, t)| {
            let v: Vec<f32> = match t.dtype() {
                safetensors::Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(t.data()),
                safetensors::Dtype::U8 => t.data().iter().map(|&b| b as f32).collect(),
                safetensors::Dtype::F16 => t.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                d => panic!("{name}: dtype {d:?}"),
            };
            (name.to_string(), (t.shape().to_vec(), v))
        })
        .collect()
}

pub fn metadata(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    m.metadata().clone().unwrap_or_default()
}

/// `[1, h, w, c]` to `[c, h, w]`.
pub fn nhwc_to_nchw(x: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for y in 0..h {
        for xx in 0..w {
            for ch in 0..c {
                out[(ch * h + y) * w + xx] = x[(y * w + xx) * c + ch];
            }
        }
    }
    out
}

/// Figures of one model run against one reference case.
pub struct RefResult {
    pub h: usize,
    pub w: usize,
    pub pixels: usize,
    pub agree: usize,
    pub max_abs: f32,
    pub max_logit: f32,
    /// Pixels whose two best reference logits are closer than 1e-3 (near-ties that may flip).
    pub near_ties: usize,
}

/// Runs `model` on a reference case's `input` tensor (NCHW, or NHWC when `nhwc`) and compares
/// logits and class map with the case's `logits` and `argmax`.
pub fn run_reference_case(gpu: &Gpu, model: &atrous::models::Model, case: &std::path::Path, nhwc: bool) -> RefResult {
    let t = read_tensors(case);
    let (ishape, input) = &t["input"];
    let (h, w, input) = if nhwc { (ishape[1], ishape[2], nhwc_to_nchw(input, ishape[1], ishape[2], ishape[3])) } else { (ishape[2], ishape[3], input.clone()) };
    let (lshape, ref_logits) = &t["logits"];
    let ref_logits = if nhwc { nhwc_to_nchw(ref_logits, lshape[1], lshape[2], lshape[3]) } else { ref_logits.clone() };
    let graph = model.graph(h, w).unwrap();
    let mut s = atrous::session::Session::new(gpu, &graph, None).unwrap();
    s.fill_arenas(f32::NAN);
    let (map, logits) = s.run_tensor_logits(&input).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()), "{}: non-finite logits", case.display());
    let c = logits.len() / (h * w);
    let max_abs = logits.iter().zip(&ref_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let max_logit = ref_logits.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let ref_argmax = &t["argmax"].1;
    let agree = map.data.iter().zip(ref_argmax).filter(|(a, b)| **a as f32 == **b).count();
    let hw = h * w;
    let near_ties = (0..hw)
        .filter(|&p| {
            let mut v: Vec<f32> = (0..c).map(|k| ref_logits[k * hw + p]).collect();
            v.sort_by(|a, b| b.partial_cmp(a).unwrap());
            c > 1 && v[0] - v[1] < 1e-3
        })
        .count();
    RefResult { h, w, pixels: hw, agree, max_abs, max_logit, near_ties }
}

pub fn reference_cases(shared: &std::path::Path, dir: &str, prefix: &str) -> Vec<PathBuf> {
    let d = shared.join("reference").join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no reference cases in {} starting with `{prefix}`", d.display());
    v
}

/// Runs every reference case in `reference/<dir>` starting with `prefix` through the model file
/// `models/<model>.safetensors`, prints agreement and logits error, and asserts
/// `max|err| <= abs + rel * max|logit|` and a class-map agreement of at least 99.9% (counting the
/// reference's near-ties as agreeing when `near_ties_may_flip`).
pub fn check_against_references(model: &str, dir: &str, prefix: &str, nhwc: bool, (abs, rel): (f32, f32), near_ties_may_flip: bool) {
    let Some(shared) = shared() else { return };
    let Some(gpu) = gpu() else { return };
    let m = atrous::models::Model::load(shared.join(format!("models/{model}.safetensors"))).unwrap();
    for case in reference_cases(&shared, dir, prefix) {
        let r = run_reference_case(&gpu, &m, &case, nhwc);
        let pct = 100.0 * r.agree as f64 / r.pixels as f64;
        let bound = abs + rel * r.max_logit;
        eprintln!(
            "{model} {}: {}x{}, class map agreement {}/{} = {pct:.3}% ({} near-ties), logits max|err| {:.3e} (bound {bound:.3e}, max|logit| {:.2})",
            case.file_stem().unwrap().to_string_lossy(),
            r.h,
            r.w,
            r.agree,
            r.pixels,
            r.near_ties,
            r.max_abs,
            r.max_logit
        );
        assert!(r.max_abs <= bound, "{}: logits error {} > {bound}", case.display(), r.max_abs);
        let agree = r.agree + if near_ties_may_flip { r.near_ties } else { 0 };
        assert!(agree as f64 >= 0.999 * r.pixels as f64, "{}: agreement {pct}%", case.display());
    }
}
