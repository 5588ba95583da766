//! ESPNetv2 (s = 2.0, VOC) against PyTorch on the 96x96 reference crops of the 384x384
//! preprocessed VOC images.
//!
//! Logits bound: `max|gpu - torch| <= 1e-4 + 1e-5 * max|logit|` (PyTorch's own float32-vs-float64
//! spread here is about 1e-5). Class maps must agree on at least 99.9% of pixels.

mod common;

use atrous::models::Model;

#[test]
fn espnetv2_matches_pytorch_on_reference_crops() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = Model::load(shared.join("models/espnetv2_s2.0_voc384.safetensors")).unwrap();
    for case in common::reference_cases(&shared, "espnetv2_s2.0_voc384", "") {
        let r = common::run_reference_case(&gpu, &m, &case, false);
        let pct = 100.0 * r.agree as f64 / r.pixels as f64;
        let bound = 1e-4 + 1e-5 * r.max_logit;
        eprintln!(
            "espnetv2_s2.0_voc384 {}: {}x{}, class map agreement {}/{} = {pct:.3}% ({} near-ties), logits max|err| {:.3e} (bound {bound:.3e}, max|logit| {:.2})",
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
        assert!(pct >= 99.9, "{}: agreement {pct}%", case.display());
    }
}
