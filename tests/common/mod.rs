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
