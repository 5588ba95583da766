//! ESPNetv2 (s = 2.0, VOC) against PyTorch on the 96x96 reference crops of the 384x384
//! preprocessed VOC images.
//!
//! Logits bound: `max|gpu - torch| <= 1e-4 + 1e-5 * max|logit|` (PyTorch's own float32-vs-float64
//! spread here is about 1e-5). Class maps must agree on at least 99.9% of pixels.

mod common;

#[test]
fn espnetv2_matches_pytorch_on_reference_crops() {
    common::check_against_references("espnetv2_s2.0_voc384", "espnetv2_s2.0_voc384", "", false, (1e-4, 1e-5), false);
}
