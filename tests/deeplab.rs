//! DeepLabV3-MobileNetV2 (the tflite-support file, TFLite layouts and "SAME" padding) against
//! LiteRT's float32 outputs, and against tflite-support's golden category mask.
//!
//! Logits bound: `max|gpu - litert| <= 1e-4 + 1e-5 * max|logit|`; LiteRT's own two float32 paths
//! (XNNPACK and the reference kernels) differ by up to 4.4e-5. Class maps must agree on at least
//! 99.9% of pixels.

mod common;

use atrous::models::Model;
use atrous::session::Session;

#[test]
fn deeplabv3_mnv2_matches_litert() {
    common::check_against_references("deeplabv3_mnv2_voc257", "deeplabv3_mnv2_voc257", "", true, (1e-4, 1e-5), false);
}

/// The golden image through the image path (GPU preprocessing from the file's metadata) against
/// tflite-support's expected mask (class x 10). The losslessly stored libjpeg decoding of the
/// input must give >= 99.9% agreement; the JPEG itself, decoded by the `image` crate (whose IDCT
/// differs from libjpeg's in the last bit of some pixels), must pass tflite-support's own test
/// (fewer than 1% of pixels differ).
#[test]
fn deeplabv3_mnv2_matches_the_tflite_support_golden_mask() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = Model::load(shared.join("models/deeplabv3_mnv2_voc257.safetensors")).unwrap();
    let golden = atrous::image_io::load_index_png(shared.join("data/tflite_support/segmentation_golden_rotation0.png")).unwrap();
    let mut s = Session::new(&gpu, &m.graph(257, 257).unwrap(), Some(m.info.normalize)).unwrap();
    for (file, need) in [("segmentation_input_rotation0_decoded.png", 0.999), ("segmentation_input_rotation0.jpg", 0.99)] {
        let img = atrous::image_io::load_rgb(shared.join("data/tflite_support").join(file)).unwrap();
        assert_eq!((img.h, img.w), (257, 257));
        let map = s.run_rgb(&img.data).unwrap();
        let agree = map.data.iter().zip(&golden.data).filter(|(a, b)| **a as u32 * 10 == **b as u32).count();
        eprintln!("{file}: golden mask agreement {agree}/{}", map.data.len());
        assert!(agree as f64 >= need * map.data.len() as f64, "{file}: {agree}");
    }
}
