//! Dense CRF: the CPU references and the GPU operator against pydensecrf's outputs
//! (`../shared/reference/crf/`), parameters, and the interfaces.

mod common;

use atrous::crf::{mean_field, CrfParams, Filtering};

struct Case {
    name: String,
    rgb: Vec<u8>,
    probs: Vec<f32>,
    q: Vec<f32>,
    labels: Vec<u8>,
    q_exact: Vec<f32>,
    params: CrfParams,
    h: usize,
    w: usize,
}

const C: usize = 12;

fn cases() -> Vec<Case> {
    let Some(shared) = common::shared() else { return vec![] };
    let dir = shared.join("reference/crf");
    let mut out = vec![];
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        let t = common::read_tensors(&f);
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let params = if name.contains("deeplab") { CrfParams::DEEPLAB } else { CrfParams::DEFAULT };
        let md = common::metadata(&f);
        let p: serde_json::Value = serde_json::from_str(&md["crf_params"]).unwrap();
        // the named settings are the reference's parameters
        assert_eq!(p["iters"].as_u64().unwrap() as u32, params.iters, "{name}");
        assert_eq!(p["bi_w"].as_f64().unwrap() as f32, params.w1, "{name}");
        assert_eq!(p["bi_xy_std"].as_f64().unwrap() as f32, params.theta_alpha, "{name}");
        assert_eq!(p["bi_rgb_std"].as_f64().unwrap() as f32, params.theta_beta, "{name}");
        assert_eq!(p["pos_w"].as_f64().unwrap() as f32, params.w2, "{name}");
        assert_eq!(p["pos_xy_std"].as_f64().unwrap() as f32, params.theta_gamma, "{name}");
        let (shape, img) = &t["image"];
        let (h, w) = (shape[0], shape[1]);
        out.push(Case {
            name,
            rgb: img.iter().map(|&v| v as u8).collect(),
            probs: t["probs"].1.clone(),
            // the stored `q` bytes are pydensecrf's own layout, pixel-major `[h*w][12]`, although the
            // header says [12, h, w] (its mean distance to `q_exact` is the metadata's
            // `q_mean_abs` only when read so): transposed here
            q: {
                let q = &t["q"].1;
                let n = h * w;
                (0..C * n).map(|i| q[(i % n) * C + i / n]).collect()
            },
            labels: t["labels"].1.iter().map(|&v| v as u8).collect(),
            q_exact: t["q_exact"].1.clone(),
            params,
            h,
            w,
        });
    }
    assert_eq!(out.len(), 6, "six reference cases in {}", dir.display());
    out
}

fn labels(q: &[f32], n: usize) -> Vec<u8> {
    (0..n).map(|p| (0..C).fold(0, |b, k| if q[k * n + p] > q[b * n + p] { k } else { b }) as u8).collect()
}

fn compare(q: &[f32], want: &[f32], wl: &[u8], n: usize) -> (f32, f64, f64) {
    let max = q.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let mean = q.iter().zip(want).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / q.len() as f64;
    let agree = labels(q, n).iter().zip(wl).filter(|(a, b)| a == b).count() as f64 / n as f64;
    (max, mean, agree)
}

#[test]
fn cpu_lattice_reference_matches_pydensecrf() {
    for c in cases() {
        let n = c.h * c.w;
        let q = mean_field(&c.rgb, &c.probs, C, c.h, c.w, &c.params, Filtering::Lattice);
        let (max, mean, agree) = compare(&q, &c.q, &c.labels, n);
        println!("{}: lattice vs pydensecrf q max {max:.2e} mean {mean:.2e}, labels {:.2}%", c.name, agree * 100.0);
        assert!(max < 1e-5 && agree == 1.0, "{}", c.name);
    }
}

#[test]
fn cpu_exact_reference_matches_the_exact_mean_field() {
    // O(n^2) per iteration: one case of each setting
    for c in cases().into_iter().step_by(3).take(2) {
        let n = c.h * c.w;
        let q = mean_field(&c.rgb, &c.probs, C, c.h, c.w, &c.params, Filtering::Exact);
        let el = labels(&c.q_exact, n);
        let (max, mean, agree) = compare(&q, &c.q_exact, &el, n);
        println!("{}: exact vs q_exact max {max:.2e} mean {mean:.2e}, labels {:.2}%", c.name, agree * 100.0);
        assert!(max < 1e-4 && agree >= 0.999, "{}", c.name);
    }
}

#[test]
fn settings_parse_and_bad_ones_are_errors() {
    assert_eq!(CrfParams::parse("deeplab").unwrap(), CrfParams::DEEPLAB);
    assert_eq!(CrfParams::parse("default").unwrap(), CrfParams::DEFAULT);
    let p = CrfParams::parse("deeplab,iters=3,w1=5").unwrap();
    assert_eq!((p.iters, p.w1, p.theta_alpha), (3, 5.0, 67.0));
    let p = CrfParams::parse("w1=1,theta_alpha=2,theta_beta=3,w2=4,theta_gamma=5,iters=6").unwrap();
    assert_eq!(p, CrfParams { w1: 1.0, theta_alpha: 2.0, theta_beta: 3.0, w2: 4.0, theta_gamma: 5.0, iters: 6 });
    assert_eq!(CrfParams::parse(&p.describe()).unwrap(), p);
    for bad in ["", "deeplabx", "w1", "w1=x", "theta_alpha=0", "theta_beta=-1", "theta_gamma=inf", "w2=NaN", "iters=-1", "iters=100000", "deeplab,", "foo=1"] {
        let e = CrfParams::parse(bad).expect_err(bad).to_string();
        assert!(e.contains("--crf"), "{bad}: {e}");
    }
}


/// The GPU operator on one case: the marginals.
fn gpu_crf(gpu: &atrous::gpu::Gpu, rgb: &[u8], probs: &[f32], c: usize, h: usize, w: usize, params: CrfParams) -> Vec<f32> {
    use atrous::graph::{DType, Graph};
    let mut g = Graph::new(1, 1, 1);
    let rgba = g.add_input("rgba", DType::U32, 1, h, w);
    let tx = g.tensor("probs", c, h, w);
    let ty = g.tensor("marginals", c, h, w);
    g.push("crf", atrous::ops::DenseCrf { image: g.all(rgba), x: g.all(tx), y: g.all(ty), params }).unwrap();
    let pixels: Vec<f32> = rgb.chunks(3).map(|p| f32::from_bits(p[0] as u32 | (p[1] as u32) << 8 | (p[2] as u32) << 16)).collect();
    let data = std::collections::HashMap::from([(rgba, pixels), (tx, probs.to_vec()), (ty, vec![f32::NAN; c * h * w])]);
    atrous::session::OpRunner::new(gpu).run(&g, 0, &data).unwrap()
}

#[test]
fn gpu_crf_matches_pydensecrf() {
    let Some(gpu) = common::gpu() else { return };
    println!("| case | max abs q | mean abs q | labels agree | vs exact mean field: labels agree |");
    for c in cases() {
        let n = c.h * c.w;
        let q = gpu_crf(&gpu, &c.rgb, &c.probs, C, c.h, c.w, c.params);
        assert!(q.iter().all(|v| v.is_finite()), "{}: unwritten or non-finite marginals", c.name);
        let (max, mean, agree) = compare(&q, &c.q, &c.labels, n);
        let (_, _, exact) = compare(&q, &c.q_exact, &labels(&c.q_exact, n), n);
        println!("| {} | {max:.2e} | {mean:.2e} | {:.2}% | {:.2}% |", c.name, agree * 100.0, exact * 100.0);
        assert!(max < 1e-5 && mean < 1e-7 && agree == 1.0, "{}", c.name);
    }
}
