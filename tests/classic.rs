//! The classic networks against their references (`../shared/reference`): SegNet and FCN-8s with
//! seeded weights against PyTorch float32.
//!
//! Bounds, from each network's own float32-vs-float64 spread (`../shared/models/README.md`):
//! FCN-8s 9.7e-6 at |logit| <= 24, so `1e-4 + 1e-5 * max|logit|` (about 3.4e-4, 10x the spread
//! at that size); SegNet 9.2e-5 at |logit| <= 5 (its BN running variances down to 0.22 amplify
//! rounding), so `2e-4 + 1e-4 * max|logit|` (about 6e-4). Class maps must agree on at least 99.9%.

mod common;

#[test]
fn segnet_matches_pytorch() {
    common::check_against_references("seeded/segnet_vgg16bn_w4", "seeded", "segnet_vgg16bn_w4", false, (2e-4, 1e-4), false);
}

#[test]
fn fcn8s_matches_pytorch() {
    common::check_against_references("seeded/fcn8s_vgg16_w8", "seeded", "fcn8s_vgg16_w8", false, (1e-4, 1e-5), false);
}
