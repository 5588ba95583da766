//! The classic networks against their references (`../shared/reference`): SegNet and FCN-8s with
//! seeded weights, and ENet with its real CamVid weights, against PyTorch float32.
//!
//! Bounds, from each network's own float32-vs-float64 spread (`../shared/models/README.md`):
//! FCN-8s 9.7e-6 at |logit| <= 24, so `1e-4 + 1e-5 * max|logit|` (about 3.4e-4, 10x the spread
//! at that size); SegNet 9.2e-5 at |logit| <= 5 (its BN running variances down to 0.22 amplify
//! rounding), so `2e-4 + 1e-4 * max|logit|` (about 6e-4); ENet crops 3e-6 at |logit| <= 6, so
//! `1e-4 + 1e-5 * max|logit|`. Class maps must agree on at least 99.9%. ENet's full 512x512 frame
//! is judged differently, see its test.

mod common;

#[test]
fn segnet_matches_pytorch() {
    common::check_against_references("seeded/segnet_vgg16bn_w4", "seeded", "segnet_vgg16bn_w4", false, (2e-4, 1e-4), false);
}

#[test]
fn fcn8s_matches_pytorch() {
    common::check_against_references("seeded/fcn8s_vgg16_w8", "seeded", "fcn8s_vgg16_w8", false, (1e-4, 1e-5), false);
}

#[test]
fn enet_matches_pytorch_on_crops() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = atrous::models::Model::load(shared.join("models/enet_camvid.safetensors")).unwrap();
    let crops: Vec<_> = common::reference_cases(&shared, "enet_camvid", "camvid_val").into_iter().filter(|p| !p.to_string_lossy().contains("full")).collect();
    assert_eq!(crops.len(), 3, "{crops:?}");
    for case in crops {
        let r = common::run_reference_case(&gpu, &m, &case, false);
        let bound = 1e-4 + 1e-5 * r.max_logit;
        eprintln!("enet_camvid {}: class map {}/{}, logits max|err| {:.3e} (bound {bound:.3e})", case.display(), r.agree, r.pixels, r.max_abs);
        assert!(r.max_abs <= bound, "{}: {} > {bound}", case.display(), r.max_abs);
        assert!(r.agree as f64 >= 0.999 * r.pixels as f64, "{}", case.display());
    }
}

/// The whole 512x512 frame (raw pixels fed as they are). Its reference logits are stored as f16
/// (rounding error up to `|logit| * 2^-11`), and max-pool indices at near-ties flip with the
/// summation order: PyTorch's own float32 and float64 runs differ by up to 0.24 on 4,451 of
/// 3,145,728 values (0.14%) for that reason, with no class-map difference. So: class map >= 99.9%,
/// at most 0.5% of the values off by more than the f16 rounding + 1e-3, and none by more than 0.5.
#[test]
fn enet_matches_pytorch_on_the_full_frame() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = atrous::models::Model::load(shared.join("models/enet_camvid.safetensors")).unwrap();
    let t = common::read_tensors(&shared.join("reference/enet_camvid/camvid_val_0016E5_08059_full512.safetensors"));
    let (shape, input) = &t["input"];
    let (h, w) = (shape[2], shape[3]);
    let g = m.graph(h, w).unwrap();
    let mut s = atrous::session::Session::new(&gpu, &g, None).unwrap();
    let (map, logits) = s.run_tensor_logits(input).unwrap();
    let want = &t["logits"].1;
    let errs: Vec<f32> = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).collect();
    let beyond = errs.iter().zip(want).filter(|(e, r)| **e > r.abs() / 2048.0 + 1e-3).count();
    let max = errs.iter().copied().fold(0f32, f32::max);
    let agree = map.data.iter().zip(&t["argmax"].1).filter(|(a, b)| **a as f32 == **b).count();
    eprintln!("enet_camvid full 512x512: class map {agree}/{}, logits max|err| {max:.3e}, {beyond} of {} values beyond f16 rounding + 1e-3", h * w, errs.len());
    assert!(agree as f64 >= 0.999 * (h * w) as f64);
    assert!(beyond as f64 <= 0.005 * errs.len() as f64, "{beyond} values off");
    assert!(max <= 0.5, "max error {max}");
}

/// The Keras U-Net (real weights) against Keras float32 on every reference case: the pre-sigmoid
/// logit within `1e-4 + 2e-5 * max|logit|` (Keras' own float32-vs-float64 spread is 1e-3 at
/// |logit| up to 179, i.e. about 6e-6 relative; we allow 3x that), the probabilities from the
/// session's sigmoid head within a quarter of that (dp <= dlogit / 4) plus 1e-6, and the mask
/// `p > 0.5` on at least 99.9% of pixels. The CPU input convention (grey, min-max over the image)
/// reproduces the reference `input` from its `gray` crop.
#[test]
fn unet_matches_keras() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = atrous::models::Model::load(shared.join("models/unet_rbm.safetensors")).unwrap();
    assert!(m.info.grey_minmax && m.info.pixel_head().is_none());
    assert_eq!(m.info.classes, ["background", "brain"]);
    let cases = common::reference_cases(&shared, "unet_rbm", "");
    assert!(cases.len() >= 4);
    for case in cases {
        let t = common::read_tensors(&case);
        let (shape, input) = &t["input"];
        let (h, w) = (shape[2], shape[3]);
        // the input convention
        let gray: Vec<u8> = t["gray"].1.iter().flat_map(|&g| [g as u8; 3]).collect();
        let x = atrous::preprocess::grey_minmax(&gray);
        assert!(x.iter().zip(input).all(|(a, b)| (a - b).abs() <= 1e-7), "{}: grey min-max differs from the reference input", case.display());
        let g = m.graph(h, w).unwrap();
        let mut s = atrous::session::Session::new(&gpu, &g, m.info.pixel_head()).unwrap();
        let (map, logits) = s.run_tensor_logits(input).unwrap();
        let (_, probs) = s.run_tensor_probabilities(input).unwrap();
        let want = &t["logit"].1;
        let max_logit = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let bound = 1e-4 + 2e-5 * max_logit;
        let err = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let perr = probs.iter().zip(&t["probability"].1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let agree = map.data.iter().zip(&t["mask"].1).filter(|(a, b)| **a as f32 == **b).count();
        eprintln!("unet_rbm {}: {h}x{w}, mask {agree}/{}, logit max|err| {err:.3e} (bound {bound:.3e}, max|logit| {max_logit:.1}), probability max|err| {perr:.3e}", case.file_stem().unwrap().to_string_lossy(), h * w);
        assert!(err <= bound, "{}: logit error {err}", case.display());
        assert!(perr <= bound / 4.0 + 1e-6, "{}: probability error {perr}", case.display());
        assert!(agree as f64 >= 0.999 * (h * w) as f64, "{}", case.display());
    }
}
