//! Evaluation: the metric code against the confusion matrices PyTorch's evaluation produced, and
//! the whole CamVid val set (101 frames, 360x480) through atrous against the PyTorch figures.

mod common;

use atrous::metrics::Confusion;

fn reference(shared: &std::path::Path, file: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(shared.join("reference/metrics").join(file)).unwrap()).unwrap()
}

/// The reference JSON's `confusion` (rows: ground-truth classes, columns: all model outputs) gives
/// the reference's own figures through `Confusion::metrics`.
#[test]
fn metrics_reproduce_reference_figures_from_their_confusion_matrices() {
    let Some(shared) = common::shared() else { return };
    for file in ["espnet_camvid_val.json", "espnet_cityscapes_frame.json", "espnetv2_s2.0_voc384_voc_samples.json", "deeplabv3_mnv2_voc257_voc_samples.json"] {
        let r = reference(&shared, file);
        let rows: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();
        let n = rows[0].len();
        let mut c = Confusion::new(n);
        for (g, row) in rows.iter().enumerate() {
            c.hist[g * n..(g + 1) * n].copy_from_slice(row);
        }
        let real: Vec<bool> = (0..n).map(|i| i < rows.len()).collect();
        let m = c.metrics(&real);
        let f = |k: &str| r[k].as_f64().unwrap();
        eprintln!("{file}: pixel {:.4} class {:.4} mIoU {:.4} fwIoU {:.4}", m.pixel_acc, m.mean_class_acc, m.mean_iou, m.fw_iou);
        assert_eq!(m.pixels, r["pixels"].as_u64().unwrap(), "{file}");
        for (got, key) in [(m.pixel_acc, "pixel_acc"), (m.mean_class_acc, "mean_class_acc"), (m.mean_iou, "mean_iou"), (m.fw_iou, "fw_iou")] {
            assert!((got - f(key)).abs() < 1e-12, "{file} {key}: {got} vs {}", f(key));
        }
    }
}

/// `atrous eval` on CamVid val with espnet_camvid reproduces PyTorch's figures within 0.05 points.
#[test]
fn camvid_val_matches_pytorch_figures() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let model = atrous::models::Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let (pairs, lonely) = atrous::eval::pair_by_stem(&shared.join("data/camvid/val/images"), &shared.join("data/camvid/val/labels")).unwrap();
    assert_eq!((pairs.len(), lonely.len()), (101, 0));
    let report = atrous::eval::evaluate(&model, &gpu, &pairs, &[11], |_, _| {});
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let r = reference(&shared, "espnet_camvid_val.json");
    let m = &report.metrics;
    for (got, key) in [(m.pixel_acc, "pixel_acc"), (m.mean_class_acc, "mean_class_acc"), (m.mean_iou, "mean_iou"), (m.fw_iou, "fw_iou")] {
        let want = r[key].as_f64().unwrap();
        eprintln!("{key}: atrous {:.3} PyTorch {:.3}", 100.0 * got, 100.0 * want);
        assert!((100.0 * (got - want)).abs() <= 0.05, "{key}: {got} vs {want}");
    }
    assert_eq!(m.pixels, r["pixels"].as_u64().unwrap());
    eprintln!("median {:.1} ms per image, device memory peak {} B", atrous::session::median(&report.ms_per_image), report.peak_device_bytes);
}

/// ENet on CamVid val through the upstream pipeline (every frame resized to 512x512 — bilinear,
/// the `image` crate's triangle filter rounding to 8 bits where upstream uses OpenCV's fixed-point
/// INTER_LINEAR — and the class map mapped back by the half-pixel nearest rule): mIoU within 0.5
/// points of upstream's own figure (the two resizes move some pixels), the other figures within 1.
#[test]
fn enet_camvid_val_matches_upstream_figures() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let model = atrous::models::Model::load(shared.join("models/enet_camvid.safetensors")).unwrap();
    assert_eq!(model.info.run_size(360, 480), (512, 512));
    let (pairs, _) = atrous::eval::pair_by_stem(&shared.join("data/camvid/val/images"), &shared.join("data/camvid/val/labels")).unwrap();
    let report = atrous::eval::evaluate(&model, &gpu, &pairs, &[11], |_, _| {});
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let r = reference(&shared, "enet_camvid_val.json");
    let m = &report.metrics;
    for (got, key, tol) in [(m.pixel_acc, "pixel_acc", 1.0), (m.mean_class_acc, "mean_class_acc", 1.0), (m.mean_iou, "mean_iou", 0.5), (m.fw_iou, "fw_iou", 1.0)] {
        let want = r[key].as_f64().unwrap();
        eprintln!("enet {key}: atrous {:.3} upstream {:.3}", 100.0 * got, 100.0 * want);
        assert!((100.0 * (got - want)).abs() <= tol, "{key}: {got} vs {want}");
    }
}

/// The same CamVid val evaluation with every feature map stored as f16 (issue 13): mIoU within 0.3
/// points of PyTorch's f32 figure, and half the device memory of the f32 sessions.
#[test]
fn camvid_val_in_f16_is_within_0_3_points() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu_f16() else { return };
    let model = atrous::models::Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let (pairs, _) = atrous::eval::pair_by_stem(&shared.join("data/camvid/val/images"), &shared.join("data/camvid/val/labels")).unwrap();
    let report = atrous::eval::evaluate_with(&model, &gpu, &pairs, &[11], atrous::session::Precision::F16, |_, _| {});
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let r = reference(&shared, "espnet_camvid_val.json");
    let m = &report.metrics;
    for (got, key) in [(m.pixel_acc, "pixel_acc"), (m.mean_class_acc, "mean_class_acc"), (m.mean_iou, "mean_iou"), (m.fw_iou, "fw_iou")] {
        let want = r[key].as_f64().unwrap();
        eprintln!("{key}: atrous f16 {:.3} PyTorch f32 {:.3}", 100.0 * got, 100.0 * want);
        assert!((100.0 * (got - want)).abs() <= 0.3, "{key}: {got} vs {want}");
    }
    eprintln!("f16: device memory peak {} B", report.peak_device_bytes);
    assert!(report.peak_device_bytes < 15_000_000, "f16 sessions hold {} B", report.peak_device_bytes);
}
