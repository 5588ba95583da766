//! Fully connected CRF (Krähenbühl & Koltun 2011) on top of a network's class probabilities:
//! parameters and their names, and the CPU references the GPU operator
//! ([`crate::ops::dense_crf`]) is tested against.
//!
//! Semantics are pydensecrf's (the C++ reference implementation, `../shared/reference/README.md`):
//! unary `U = -ln(clamp(p, 1e-5, 1))` (f32), `Q0 = softmax(-U)`; each iteration
//! `A = -U + w2 N_gauss(Q) + w1 N_bilateral(Q)` and `Q = softmax(A)` per pixel, with
//! `N(Q)_i = n_i sum_j k(i, j) n_j Q_j`, `n_i = 1 / sqrt(sum_j k(i, j) + 1e-20)` (symmetric
//! normalisation, self term included). The Gaussian kernel's features are `(x, y) / theta_gamma`,
//! the bilateral's `(x, y) / theta_alpha, (r, g, b) / theta_beta` (x the column, 0-based).
//!
//! Two ways to filter: [`Lattice`], the permutohedral lattice (splat with barycentric weights,
//! `[1/2 1 1/2]` blur along each of the d+1 lattice directions, slice, times `1/(1 + 2^-d)`) with
//! pydensecrf's arithmetic step for step, so the GPU operator and pydensecrf agree to float
//! rounding; and [`exact_filter`], brute-force Gaussian sums in f64 over every pixel pair (small
//! images only), the mean field the lattice approximates.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// CRF parameters (names as in DeepLab's papers: `w1`, `theta_alpha`, `theta_beta` for the
/// bilateral appearance kernel, `w2`, `theta_gamma` for the Gaussian smoothness kernel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrfParams {
    pub w1: f32,
    pub theta_alpha: f32,
    pub theta_beta: f32,
    pub w2: f32,
    pub theta_gamma: f32,
    pub iters: u32,
}

impl CrfParams {
    /// DeepLab v2's PASCAL VOC setting (deeplab-pytorch `configs/voc12.yaml`).
    pub const DEEPLAB: CrfParams = CrfParams { w1: 4.0, theta_alpha: 67.0, theta_beta: 3.0, w2: 3.0, theta_gamma: 1.0, iters: 10 };
    /// Krähenbühl & Koltun's example setting (pydensecrf's README, `dense_inference.cpp`).
    pub const DEFAULT: CrfParams = CrfParams { w1: 10.0, theta_alpha: 80.0, theta_beta: 13.0, w2: 3.0, theta_gamma: 3.0, iters: 5 };

    /// `deeplab`, `default`, or comma-separated `key=value` items (`w1`, `theta_alpha`,
    /// `theta_beta`, `w2`, `theta_gamma`, `iters`), optionally after a setting name they
    /// override (`deeplab,iters=5`); keys alone start from `default`.
    pub fn parse(s: &str) -> Result<CrfParams> {
        let bad = |reason: String| Error::Input(format!("--crf `{s}`: {reason}"));
        let mut p = CrfParams::DEFAULT;
        for (i, item) in s.split(',').map(str::trim).enumerate() {
            match (i, item) {
                (0, "deeplab") => p = CrfParams::DEEPLAB,
                (0, "default") => p = CrfParams::DEFAULT,
                (_, "") => return Err(bad("empty item".into())),
                _ => {
                    let (k, v) = item.split_once('=').ok_or_else(|| bad(format!("`{item}` is neither a setting (deeplab, default) nor key=value")))?;
                    let (k, v) = (k.trim(), v.trim());
                    if k == "iters" {
                        p.iters = v.parse().map_err(|_| bad(format!("iters `{v}` is not a count")))?;
                        continue;
                    }
                    let x: f32 = v.parse().map_err(|_| bad(format!("{k} `{v}` is not a number")))?;
                    let slot = match k {
                        "w1" => &mut p.w1,
                        "theta_alpha" => &mut p.theta_alpha,
                        "theta_beta" => &mut p.theta_beta,
                        "w2" => &mut p.w2,
                        "theta_gamma" => &mut p.theta_gamma,
                        _ => return Err(bad(format!("unknown key `{k}` (w1, theta_alpha, theta_beta, w2, theta_gamma, iters)"))),
                    };
                    *slot = x;
                }
            }
        }
        p.validate().map_err(|e| bad(e.to_string()))?;
        Ok(p)
    }

    /// Weights finite, standard deviations positive and finite, at most 1000 iterations.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [("w1", self.w1), ("w2", self.w2)] {
            if !v.is_finite() {
                return Err(Error::Input(format!("{k} must be finite, not {v}")));
            }
        }
        for (k, v) in [("theta_alpha", self.theta_alpha), ("theta_beta", self.theta_beta), ("theta_gamma", self.theta_gamma)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Input(format!("{k} must be a positive number, not {v}")));
            }
        }
        if self.iters > 1000 {
            return Err(Error::Input(format!("{} iterations (at most 1000)", self.iters)));
        }
        Ok(())
    }

    /// The setting as `--crf` takes it.
    pub fn describe(&self) -> String {
        format!("w1={},theta_alpha={},theta_beta={},w2={},theta_gamma={},iters={}", self.w1, self.theta_alpha, self.theta_beta, self.w2, self.theta_gamma, self.iters)
    }
}

/// The features of one kernel, `[n][d]` row-major: `(x, y) / sxy` and, with `rgb` (`[n][3]`
/// bytes) and `srgb`, the colour `/ srgb` (f32 divisions, as pydensecrf).
pub fn features(h: usize, w: usize, sxy: f32, rgb: Option<(&[u8], f32)>) -> (Vec<f32>, usize) {
    let d = if rgb.is_some() { 5 } else { 2 };
    let mut f = Vec::with_capacity(h * w * d);
    for y in 0..h {
        for x in 0..w {
            f.push(x as f32 / sxy);
            f.push(y as f32 / sxy);
            if let Some((im, s)) = rgb {
                let p = (y * w + x) * 3;
                f.extend([im[p] as f32 / s, im[p + 1] as f32 / s, im[p + 2] as f32 / s]);
            }
        }
    }
    (f, d)
}

/// The lattice's per-axis scale factors (`sqrt(2/3) (d+1) / sqrt((i+1)(i+2))`, rounded to f32
/// the way pydensecrf computes them).
pub fn scale_factors(d: usize) -> Vec<f32> {
    let inv_std_dev = ((2.0f64 / 3.0).sqrt() * (d + 1) as f64) as f32;
    (0..d).map(|i| (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std_dev as f64) as f32).collect()
}

/// `1 / (1 + 2^-d)`, the lattice's output scale.
pub fn alpha(d: usize) -> f32 {
    1.0 / (1.0 + 2f32.powi(-(d as i32)))
}

/// Where one feature vector lies in the lattice: the remainder-0 point `rem0`, the rank of each
/// coordinate, and the barycentric weights of the d+1 enclosing vertices.
pub struct Embedding {
    pub rem0: Vec<i32>,
    pub rank: Vec<i32>,
    pub bary: Vec<f32>,
}

/// Embeds one feature vector (pydensecrf's SSE path: round half to even, f32 throughout).
pub fn embed(f: &[f32], sf: &[f32]) -> Embedding {
    let d = f.len();
    let dp1 = (d + 1) as f32;
    let down = 1.0f32 / dp1;
    let mut elevated = vec![0f32; d + 1];
    let mut sm = 0f32;
    for j in (1..=d).rev() {
        let cf = f[j - 1] * sf[j - 1];
        elevated[j] = sm - j as f32 * cf;
        sm += cf;
    }
    elevated[0] = sm;
    let mut rem0 = vec![0f32; d + 1];
    let mut sum = 0f32;
    for i in 0..=d {
        let v = (down * elevated[i]).round_ties_even();
        rem0[i] = v * dp1;
        sum += v;
    }
    let mut rank = vec![0f32; d + 1];
    for i in 0..d {
        let di = elevated[i] - rem0[i];
        for j in i + 1..=d {
            if di < elevated[j] - rem0[j] {
                rank[i] += 1.0;
            } else {
                rank[j] += 1.0;
            }
        }
    }
    for i in 0..=d {
        rank[i] += sum;
        if rank[i] < 0.0 {
            rank[i] += dp1;
            rem0[i] += dp1;
        } else if rank[i] >= dp1 {
            rank[i] -= dp1;
            rem0[i] -= dp1;
        }
    }
    let mut b = vec![0f32; d + 2];
    for i in 0..=d {
        let v = (elevated[i] - rem0[i]) * down;
        let p = d - rank[i] as usize;
        b[p] += v;
        b[p + 1] -= v;
    }
    b[0] += 1.0 + b[d + 1];
    b.truncate(d + 1);
    Embedding { rem0: rem0.iter().map(|&v| v as i32).collect(), rank: rank.iter().map(|&v| v as i32).collect(), bary: b }
}

/// The key (first d coordinates) of vertex `remainder` of an embedding's simplex.
pub fn vertex_key(e: &Embedding, remainder: usize) -> Vec<i32> {
    let d = e.rem0.len() - 1;
    (0..d).map(|i| e.rem0[i] + if e.rank[i] as usize <= d - remainder { remainder as i32 } else { remainder as i32 - (d as i32 + 1) }).collect()
}

/// The permutohedral lattice of a set of feature vectors (CPU reference, pydensecrf's algorithm).
pub struct Lattice {
    pub d: usize,
    pub n: usize,
    /// Vertex of each (pixel, remainder).
    pub offset: Vec<usize>,
    pub bary: Vec<f32>,
    /// Number of lattice vertices.
    pub m: usize,
    /// Blur neighbours of each (direction, vertex): `(n1, n2)`, `None` outside the lattice.
    pub blur: Vec<(Option<usize>, Option<usize>)>,
}

impl Lattice {
    /// `f`: `[n][d]` features.
    pub fn new(f: &[f32], d: usize) -> Lattice {
        let n = f.len() / d;
        let sf = scale_factors(d);
        let mut ids: HashMap<Vec<i32>, usize> = HashMap::new();
        let mut keys: Vec<Vec<i32>> = vec![];
        let mut offset = Vec::with_capacity(n * (d + 1));
        let mut bary = Vec::with_capacity(n * (d + 1));
        for p in 0..n {
            let e = embed(&f[p * d..(p + 1) * d], &sf);
            for r in 0..=d {
                let k = vertex_key(&e, r);
                let id = *ids.entry(k.clone()).or_insert_with(|| {
                    keys.push(k);
                    keys.len() - 1
                });
                offset.push(id);
                bary.push(e.bary[r]);
            }
        }
        let m = keys.len();
        let mut blur = Vec::with_capacity((d + 1) * m);
        for j in 0..=d {
            for key in &keys {
                let mut n1: Vec<i32> = key.iter().map(|k| k - 1).collect();
                let mut n2: Vec<i32> = key.iter().map(|k| k + 1).collect();
                if j < d {
                    n1[j] = key[j] + d as i32;
                    n2[j] = key[j] - d as i32;
                }
                blur.push((ids.get(&n1).copied(), ids.get(&n2).copied()));
            }
        }
        Lattice { d, n, offset, bary, m, blur }
    }

    /// Filters `[n][vs]` values (pixel-major): splat, blur along every direction, slice.
    /// `seq` selects pydensecrf's scalar slicing order (`(w v) alpha`, used for one value per
    /// pixel) over its vector order (`(w alpha) v`).
    pub fn filter(&self, input: &[f32], vs: usize, seq: bool) -> Vec<f32> {
        let d = self.d;
        let mut values = vec![0f32; self.m * vs];
        for i in 0..self.n {
            for j in 0..=d {
                let (o, w) = (self.offset[i * (d + 1) + j], self.bary[i * (d + 1) + j]);
                for k in 0..vs {
                    values[o * vs + k] += w * input[i * vs + k];
                }
            }
        }
        let mut new_values = vec![0f32; self.m * vs];
        for j in 0..=d {
            for i in 0..self.m {
                let (n1, n2) = self.blur[j * self.m + i];
                for k in 0..vs {
                    let a = n1.map_or(0.0, |n| values[n * vs + k]);
                    let b = n2.map_or(0.0, |n| values[n * vs + k]);
                    new_values[i * vs + k] = values[i * vs + k] + 0.5 * (a + b);
                }
            }
            std::mem::swap(&mut values, &mut new_values);
        }
        let alpha = alpha(d);
        let mut out = vec![0f32; self.n * vs];
        for i in 0..self.n {
            for j in 0..=d {
                let (o, w) = (self.offset[i * (d + 1) + j], self.bary[i * (d + 1) + j]);
                for k in 0..vs {
                    out[i * vs + k] += if seq { w * values[o * vs + k] * alpha } else { w * alpha * values[o * vs + k] };
                }
            }
        }
        out
    }
}

/// Exact Gaussian filtering, `out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j` in f64 (O(n^2): small
/// images only). `v` is `[n][vs]`.
pub fn exact_filter(f: &[f32], d: usize, v: &[f64], vs: usize) -> Vec<f64> {
    let n = f.len() / d;
    let mut out = vec![0f64; n * vs];
    for i in 0..n {
        for j in 0..n {
            let d2: f64 = (0..d).map(|k| (f[i * d + k] as f64 - f[j * d + k] as f64).powi(2)).sum();
            let k = (-0.5 * d2).exp();
            for c in 0..vs {
                out[i * vs + c] += k * v[j * vs + c];
            }
        }
    }
    out
}

/// `-ln(clamp(p, 1e-5, 1))` in f32, as `pydensecrf.utils.unary_from_softmax`.
pub fn unary(p: f32) -> f32 {
    -(p.clamp(1e-5, 1.0)).ln()
}

/// Softmax of one pixel's values in place: max subtracted, `exp`, divided by the sum.
fn softmax(a: &mut [f32]) {
    let m = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0f32;
    for v in a.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in a.iter_mut() {
        *v /= s;
    }
}

/// Features `[n][d]` and d.
type Features = (Vec<f32>, usize);

/// How [`mean_field`] filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// The permutohedral lattice (what pydensecrf and the GPU operator compute).
    Lattice,
    /// Exact Gaussian sums in f64 (O(n^2)).
    Exact,
}

/// Mean-field inference. `rgb`: `[h][w][3]` bytes; `probs`: `[c][h][w]`. Returns the marginals
/// `[c][h][w]`.
pub fn mean_field(rgb: &[u8], probs: &[f32], c: usize, h: usize, w: usize, p: &CrfParams, how: Filtering) -> Vec<f32> {
    let n = h * w;
    let kernels = [(features(h, w, p.theta_gamma, None), p.w2), (features(h, w, p.theta_alpha, Some((rgb, p.theta_beta))), p.w1)];
    // pixel-major, as the lattice filters
    let u: Vec<f32> = (0..n * c).map(|i| unary(probs[(i % c) * n + i / c])).collect();
    let mut q: Vec<f32> = u.iter().map(|v| -v).collect();
    q.chunks_mut(c).for_each(softmax);
    match how {
        Filtering::Lattice => {
            let lat: Vec<(Lattice, Vec<f32>, f32)> = kernels
                .iter()
                .map(|((f, d), w)| {
                    let l = Lattice::new(f, *d);
                    let norm = l.filter(&vec![1.0; n], 1, true).iter().map(|s| 1.0 / (s + 1e-20).sqrt()).collect();
                    (l, norm, *w)
                })
                .collect();
            for _ in 0..p.iters {
                let mut a: Vec<f32> = u.iter().map(|v| -v).collect();
                for (l, norm, w) in &lat {
                    let x: Vec<f32> = q.iter().enumerate().map(|(i, v)| v * norm[i / c]).collect();
                    let y = l.filter(&x, c, false);
                    for (i, v) in a.iter_mut().enumerate() {
                        *v -= -w * (y[i] * norm[i / c]);
                    }
                }
                a.chunks_mut(c).for_each(softmax);
                q = a;
            }
        }
        Filtering::Exact => {
            let lat: Vec<(&Features, Vec<f64>, f32)> = kernels
                .iter()
                .map(|(f, w)| {
                    let s = exact_filter(&f.0, f.1, &vec![1.0; n], 1);
                    (f, s.iter().map(|s| 1.0 / (s + 1e-20).sqrt()).collect(), *w)
                })
                .collect();
            let mut qd: Vec<f64> = q.iter().map(|&v| v as f64).collect();
            let ud: Vec<f64> = (0..n * c).map(|i| -(probs[(i % c) * n + i / c] as f64).clamp(1e-5, 1.0).ln()).collect();
            for _ in 0..p.iters {
                let mut a: Vec<f64> = ud.iter().map(|v| -v).collect();
                for ((f, d), norm, w) in &lat {
                    let x: Vec<f64> = qd.iter().enumerate().map(|(i, v)| v * norm[i / c]).collect();
                    let y = exact_filter(f, *d, &x, c);
                    for (i, v) in a.iter_mut().enumerate() {
                        *v += *w as f64 * y[i] * norm[i / c];
                    }
                }
                for px in a.chunks_mut(c) {
                    let m = px.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = px.iter().map(|v| (v - m).exp()).sum();
                    px.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
                }
                qd = a;
            }
            q = qd.iter().map(|&v| v as f32).collect();
        }
    }
    // back to planar
    (0..c * n).map(|i| q[(i % n) * c + i / n]).collect()
}
