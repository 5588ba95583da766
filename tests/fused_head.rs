//! The class map from the logits' final upsampling fused with the argmax (`resize_argmax`, the
//! default where it applies) equals the class map of the stored full-resolution logits
//! (`SessionOptions::unfused_head`: `bilinear_rows8`, then `argmax`), pixel for pixel, in f32 and
//! f16, on the models whose logits are a bilinear upsampling that fuses; and the fused session
//! still returns the upsampled logits when asked.

mod common;

use atrous::models::Model;
use atrous::session::{Precision, Session, SessionOptions};

#[test]
fn fused_upsampling_argmax_equals_the_stored_logits_argmax() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu_f16() else { return };
    for (file, h, w) in [("espnetv2_s2.0_voc384", 96, 96), ("torchvision/lraspp_mobilenet_v3_large", 97, 128), ("torchvision/deeplabv3_mobilenet_v3_large", 97, 128)] {
        let m = Model::load(shared.join(format!("models/{file}.safetensors"))).unwrap();
        let g = m.graph(h, w).unwrap();
        let rgb = atrous::image_io::load_rgb(shared.join("data/tflite_support/segmentation_input_rotation0.jpg")).unwrap().resize(h, w).data;
        for precision in [Precision::F32, Precision::F16] {
            let opts = |unfused_head| SessionOptions { normalize: Some(m.info.normalize), precision, unfused_head, ..Default::default() };
            let mut fused = Session::with_options(&gpu, &g, opts(false)).unwrap();
            let mut plain = Session::with_options(&gpu, &g, opts(true)).unwrap();
            let kinds = |s: &Session| s.graph.nodes.iter().map(|n| n.op.kind()).filter(|k| k.contains("argmax")).collect::<Vec<_>>();
            assert_eq!(kinds(&fused), ["resize_argmax"], "{file}: the head did not fuse");
            assert_eq!(kinds(&plain), ["argmax"]);
            let (a, la) = fused.run_rgb_logits(&rgb).unwrap();
            let (b, lb) = plain.run_rgb_logits(&rgb).unwrap();
            let same = a.data.iter().zip(&b.data).filter(|(p, q)| p == q).count();
            eprintln!("{file} {h}x{w} {precision:?}: {same}/{} pixels equal", a.data.len());
            assert_eq!(a.data, b.data, "{file} {precision:?}");
            assert_eq!(la, lb, "{file} {precision:?}: logits");
            // more than one class, so a map of zeros would not pass
            assert!(a.data.iter().any(|&c| c != a.data[0]), "{file}: one class everywhere");
        }
    }
}
