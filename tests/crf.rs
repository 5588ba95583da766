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
    atrous::reference::argmax(q, C, n)
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

#[test]
fn gpu_crf_matches_pydensecrf() {
    let Some(gpu) = common::gpu() else { return };
    println!("| case | max abs q | mean abs q | labels agree | vs exact mean field: labels agree |");
    for c in cases() {
        let n = c.h * c.w;
        let q = atrous::session::run_crf(&gpu, &c.rgb, &c.probs, C, c.h, c.w, c.params).unwrap();
        assert!(q.iter().all(|v| v.is_finite()), "{}: unwritten or non-finite marginals", c.name);
        let (max, mean, agree) = compare(&q, &c.q, &c.labels, n);
        let (_, _, exact) = compare(&q, &c.q_exact, &labels(&c.q_exact, n), n);
        println!("| {} | {max:.2e} | {mean:.2e} | {:.2}% | {:.2}% |", c.name, agree * 100.0, exact * 100.0);
        assert!(max < 1e-5 && mean < 1e-7 && agree == 1.0, "{}", c.name);
    }
}

fn atrous() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_atrous"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("atrous-crf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `atrous crf` on a reference case written out as files: its labels are pydensecrf's; bad
/// probability files are named errors.
#[test]
fn crf_command_refines_probabilities_from_a_file() {
    if common::gpu().is_none() {
        return;
    }
    let Some(c) = cases().into_iter().next() else { return };
    let dir = scratch("cmd");
    let img = dir.join("frame.png");
    atrous::image_io::save_rgb_png(&img, &atrous::image_io::RgbImage { h: c.h, w: c.w, data: c.rgb.clone() }).unwrap();
    let write = |name: &str, tensor: &str, shape: Vec<usize>, data: &[f32]| {
        let p = dir.join(name);
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytemuck::cast_slice(data)).unwrap();
        safetensors::serialize_to_file([(tensor, view)], None, &p).unwrap();
        p
    };
    let probs = write("p.safetensors", "probs", vec![C, c.h, c.w], &c.probs);
    let out = dir.join("out");
    let r = atrous().args(["crf", "--setting", "deeplab", "--marginals", "--image"]).arg(&img).arg("--probs").arg(&probs).arg("--out").arg(&out).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let map = atrous::image_io::load_index_png(out.join("frame.png")).unwrap();
    assert_eq!(map.data, c.labels, "class map = pydensecrf's labels");
    assert!(out.join("frame.marginals.safetensors").exists());
    // an existing output is kept unless --overwrite
    let r = atrous().args(["crf", "--image"]).arg(&img).arg("--probs").arg(&probs).arg("--out").arg(&out).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--overwrite"));
    // what `segment --probs` writes (`probabilities`, [1, c, h, w] also accepted) reads the same
    let p4 = write("p4.safetensors", "probabilities", vec![1, C, c.h, c.w], &c.probs);
    let r = atrous().args(["crf", "--overwrite", "--image"]).arg(&img).arg("--probs").arg(&p4).arg("--out").arg(&out).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(atrous::image_io::load_index_png(out.join("frame.png")).unwrap().data, c.labels);
    // bad files are errors naming the problem
    let bad_shape = write("bad_shape.safetensors", "probs", vec![C * c.h, c.w], &c.probs);
    let one_class = write("one.safetensors", "probs", vec![1, 1, c.h * c.w], &c.probs[..c.h * c.w]);
    let mut nan = c.probs.clone();
    nan[5] = f32::NAN;
    let nan = write("nan.safetensors", "probs", vec![C, c.h, c.w], &nan);
    let other = dir.join("other.safetensors");
    {
        fn v(d: &[f32], shape: Vec<usize>) -> safetensors::tensor::TensorView<'_> {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytemuck::cast_slice(d)).unwrap()
        }
        // two tensors, neither of them `probs` or `probabilities` (a lone tensor is taken whatever its name)
        safetensors::serialize_to_file([("logits", v(&c.probs, vec![C, c.h, c.w])), ("q", v(&c.q, vec![C, c.h, c.w]))], None, &other).unwrap();
    }
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors").unwrap();
    for (f, says) in [(&bad_shape, "not [classes, height, width]"), (&one_class, "at least 2 classes"), (&nan, "finite"), (&other, "no tensor `probs`"), (&garbage, "not a safetensors file")] {
        let r = atrous().args(["crf", "--overwrite", "--image"]).arg(&img).arg("--probs").arg(f).arg("--out").arg(&out).output().unwrap();
        let e = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{}: {e}", f.display());
        assert!(e.contains(says), "{}: {e}", f.display());
    }
    let r = atrous().args(["crf", "--setting", "w1=x", "--image"]).arg(&img).arg("--probs").arg(&probs).arg("--out").arg(&out).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// ESPNet + CRF on full CamVid frames against pydensecrf on ESPNet's probabilities
/// (`reference/metrics/espnet_camvid_val_crf.json`, per image): pixel accuracy within 0.05
/// points and the predicted-class histogram within 0.1% of the pixels, for both settings; and
/// `segment --crf` writes that class map.
#[test]
fn espnet_with_crf_matches_pydensecrf_on_full_frames() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shared.join("reference/metrics/espnet_camvid_val_crf.json")).unwrap()).unwrap();
    let model = atrous::models::Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let frames = ["0016E5_07959.png", "0016E5_08159.png"];
    for (setting, params) in [("deeplab_v2_voc", CrfParams::DEEPLAB), ("kraehenbuehl_default", CrfParams::DEFAULT)] {
        let g = model.graph(360, 480).unwrap();
        let mut s = atrous::session::Session::with_options(&gpu, &g, atrous::session::SessionOptions { normalize: model.info.pixel_head(), crf: Some(params), ..Default::default() }).unwrap();
        for f in frames {
            let img = atrous::image_io::load_rgb(shared.join("data/camvid/val/images").join(f)).unwrap();
            let label = atrous::image_io::load_index_png(shared.join("data/camvid/val/labels").join(f)).unwrap();
            let map = s.run_rgb(&img.data).unwrap();
            let counted: Vec<(u8, u8)> = label.data.iter().zip(&map.data).filter(|(g, _)| **g != 11).map(|(g, p)| (*g, *p)).collect();
            let acc = counted.iter().filter(|(g, p)| g == p).count() as f64 / counted.len() as f64;
            let want = metrics["per_image"][f][setting]["pixel_acc"].as_f64().unwrap();
            let hist = map.histogram(12);
            let want_hist: Vec<u64> = serde_json::from_value(metrics["per_image"][f][setting]["pred_hist"].clone()).unwrap();
            let l1: u64 = hist.iter().zip(&want_hist).map(|(a, b)| a.abs_diff(*b)).sum();
            println!("{f} {setting}: pixel accuracy {:.3}% (pydensecrf {:.3}%), histogram L1 {l1} px", acc * 100.0, want * 100.0);
            // measured: equal accuracy and histograms (L1 0); allowed: 0.05 points, 0.1% of pixels
            assert!((acc - want).abs() <= 0.0005, "{f} {setting}");
            assert!(l1 as f64 <= 2.0 * 0.001 * 172800.0, "{f} {setting}: {hist:?} vs {want_hist:?}");
        }
    }
    // the session's probabilities are the marginals
    {
        let g = model.graph(360, 480).unwrap();
        let mut s = atrous::session::Session::with_options(&gpu, &g, atrous::session::SessionOptions { normalize: model.info.pixel_head(), crf: Some(CrfParams::DEFAULT), ..Default::default() }).unwrap();
        let img = atrous::image_io::load_rgb(shared.join("data/camvid/val/images").join(frames[0])).unwrap();
        let (map, q) = s.run_rgb_probabilities(&img.data).unwrap();
        assert_eq!(q.len(), 12 * 360 * 480);
        assert_eq!(labels(&q, 360 * 480), map.data);
        assert!((0..360 * 480).all(|p| ((0..12).map(|k| q[k * 360 * 480 + p]).sum::<f32>() - 1.0).abs() < 1e-5));
    }
    // the command line gives the same class map
    let dir = scratch("segment");
    let f = shared.join("data/camvid/val/images").join(frames[0]);
    let r = atrous().args(["segment", "--crf", "deeplab", "--overlay", "--model"]).arg(shared.join("models/espnet_camvid.safetensors")).arg(&f).arg("--out").arg(&dir).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let g = model.graph(360, 480).unwrap();
    let mut s = atrous::session::Session::with_options(&gpu, &g, atrous::session::SessionOptions { normalize: model.info.pixel_head(), crf: Some(CrfParams::DEEPLAB), ..Default::default() }).unwrap();
    let want = s.run_rgb(&atrous::image_io::load_rgb(&f).unwrap().data).unwrap();
    assert_eq!(atrous::image_io::load_index_png(dir.join("0016E5_07959.png")).unwrap().data, want.data);
    assert!(dir.join("0016E5_07959_overlay.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where a CRF cannot run it says why: a session without pixels, one class.
#[test]
fn crf_sessions_that_cannot_work_are_errors() {
    let Some(gpu) = common::gpu() else { return };
    let mut g = atrous::graph::Graph::new(3, 9, 11);
    let x = g.input;
    let y = g.tensor("logits", 3, 9, 11);
    g.push("scale", atrous::ops::Affine { x: g.all(x), add: None, y: g.all(y), scale: vec![1.0; 3], shift: vec![0.0; 3], act: atrous::graph::Act::None }).unwrap();
    g.logits = Some(y);
    let e = atrous::session::Session::with_options(&gpu, &g, atrous::session::SessionOptions { crf: Some(CrfParams::DEFAULT), ..Default::default() }).err().expect("no pixels").to_string();
    assert!(e.contains("reads the image"), "{e}");
}
