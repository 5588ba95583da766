//! ESPNet end to end against PyTorch: the reference crops in `../shared/reference/espnet_*` (input
//! tensor in, logits and argmax compared), the preprocessing against the reference input, the CPU
//! reference graph against PyTorch, and the full 360x480 CamVid frame against the per-image
//! figures PyTorch produced.
//!
//! Logits bound: `max|gpu - torch| <= 1e-4 + 1e-5 * max|torch logit|` (about 2.4e-4 for ESPNet's
//! logits of up to 14): ten times PyTorch's own float32-vs-float64 spread on these cases (1.1e-5 to
//! 1.8e-5). Class maps must agree on at least 99.9% of pixels.

mod common;

use atrous::models::Model;
use atrous::session::Session;

struct Agreement {
    pixels: usize,
    agree: usize,
    max_abs: f32,
    max_logit: f32,
}

fn agreement(logits: &[f32], classes: &[u8], ref_logits: &[f32], ref_argmax: &[f32]) -> Agreement {
    let max_abs = logits.iter().zip(ref_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let max_logit = ref_logits.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let agree = classes.iter().zip(ref_argmax).filter(|(a, b)| **a as f32 == **b).count();
    Agreement { pixels: classes.len(), agree, max_abs, max_logit }
}

#[test]
fn espnet_camvid_matches_pytorch_on_reference_crops() {
    common::check_against_references("espnet_camvid", "espnet_camvid", "", false, (1e-4, 1e-5), false);
}

#[test]
fn espnet_cityscapes_matches_pytorch_on_reference_crops() {
    common::check_against_references("espnet_cityscapes", "espnet_cityscapes", "", false, (1e-4, 1e-5), false);
}

/// The CPU reference graph (float64 accumulation) against PyTorch: checks the builder's reading of
/// the architecture independently of the GPU kernels.
#[test]
fn cpu_reference_graph_matches_pytorch() {
    let Some(shared) = common::shared() else { return };
    for model_name in ["espnet_camvid", "espnet_cityscapes"] {
        let model = Model::load(shared.join(format!("models/{model_name}.safetensors"))).unwrap();
        let case = &common::reference_cases(&shared, model_name, "")[0];
        let t = common::read_tensors(case);
        let (ishape, input) = &t["input"];
        let graph = model.graph(ishape[2], ishape[3]).unwrap();
        let out = atrous::reference::run_graph(&graph, input);
        let logits = &out[graph.logits.unwrap()];
        let d = &graph.tensors[graph.logits.unwrap()];
        let classes = atrous::reference::argmax(logits, d.c, d.h * d.w);
        let a = agreement(logits, &classes, &t["logits"].1, &t["argmax"].1);
        eprintln!("cpu reference {model_name}: agreement {}/{}, logits max|err| {:.3e}", a.agree, a.pixels, a.max_abs);
        assert!(a.max_abs <= 1e-4 + 1e-4 * a.max_logit, "{model_name}: cpu reference error {}", a.max_abs);
        assert!(a.agree as f64 >= 0.999 * a.pixels as f64);
    }
}

/// The PNG, normalised by the model's metadata and cropped as the reference says, equals the
/// reference's input tensor: preprocessing needs no flags.
#[test]
fn preprocessing_from_metadata_reproduces_reference_input() {
    let Some(shared) = common::shared() else { return };
    let model = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    for case in common::reference_cases(&shared, "espnet_camvid", "") {
        let meta = common::metadata(&case);
        let crop: serde_json::Value = serde_json::from_str(&meta["crop"]).unwrap();
        let (y0, x0, ch, cw) = (crop["y0"].as_u64().unwrap() as usize, crop["x0"].as_u64().unwrap() as usize, crop["h"].as_u64().unwrap() as usize, crop["w"].as_u64().unwrap() as usize);
        let img = atrous::image_io::load_rgb(shared.join(&meta["image"])).unwrap();
        let full = model.info.normalize.apply(&img.data, img.h, img.w);
        let t = common::read_tensors(&case);
        let want = &t["input"].1;
        let mut max = 0f32;
        for c in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let a = full[(c * img.h + y0 + y) * img.w + x0 + x];
                    let b = want[(c * ch + y) * cw + x];
                    max = max.max((a - b).abs());
                }
            }
        }
        eprintln!("{}: preprocessing max|err| {max:.2e}", case.display());
        assert!(max <= 1e-6, "{}: preprocessing differs by {max}", case.display());
    }
}

/// The full 360x480 CamVid frame through the image path (GPU preprocessing): the class histogram
/// and pixel accuracy must match PyTorch's per-image figures in reference/metrics, and the class
/// map must agree pixel by pixel (>= 99.9%) with the CPU reference graph, which itself matches
/// PyTorch's logits on the crops.
#[test]
fn espnet_camvid_full_frame_matches_pytorch_per_image_figures() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let model = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shared.join("reference/metrics/espnet_camvid_val.json")).unwrap()).unwrap();
    let name = "0016E5_07959.png";
    let img = atrous::image_io::load_rgb(shared.join("data/camvid/val/images").join(name)).unwrap();
    let label = atrous::image_io::load_index_png(shared.join("data/camvid/val/labels").join(name)).unwrap();
    assert_eq!((img.h, img.w), (360, 480));
    let graph = model.graph(img.h, img.w).unwrap();
    let mut s = Session::new(&gpu, &graph, Some(model.info.normalize)).unwrap();
    let t0 = std::time::Instant::now();
    let map = s.run_rgb(&img.data).unwrap();
    eprintln!("full frame 360x480 on {}: {:.2} s", gpu.describe(), t0.elapsed().as_secs_f64());
    let hist = map.histogram(12);
    let want: Vec<u64> = serde_json::from_value(metrics["per_image"][name]["pred_hist"].clone()).unwrap();
    let l1: u64 = hist.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).sum();
    // Each disagreeing pixel moves at most 2 units of L1 distance.
    let valid: Vec<usize> = (0..label.data.len()).filter(|&i| label.data[i] < 11).collect();
    let correct = valid.iter().filter(|&&i| map.data[i] == label.data[i]).count();
    let acc = correct as f64 / valid.len() as f64;
    let want_acc = metrics["per_image"][name]["pixel_acc"].as_f64().unwrap();
    eprintln!("{name}: histogram L1 distance {l1} of {} pixels; pixel acc {acc:.5} vs PyTorch {want_acc:.5}", map.data.len());
    assert!(l1 as f64 <= 2.0 * 0.001 * map.data.len() as f64, "histograms differ by {l1}: {hist:?} vs {want:?}");
    assert!((acc - want_acc).abs() <= 0.001, "pixel accuracy {acc} vs {want_acc}");

    let x = model.info.normalize.apply(&img.data, img.h, img.w);
    let cpu = atrous::reference::run_graph(&graph, &x);
    let cpu_map = atrous::reference::argmax(&cpu[graph.logits.unwrap()], 12, img.h * img.w);
    let agree = cpu_map.iter().zip(&map.data).filter(|(a, b)| a == b).count();
    eprintln!("{name}: GPU vs CPU reference class map agreement {agree}/{}", map.data.len());
    assert!(agree as f64 >= 0.999 * map.data.len() as f64);
}

/// An application's own device (here made with plain wgpu calls) runs the model through
/// `Gpu::from_device`, with the same result.
#[test]
fn caller_provided_device_runs_the_model() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("an adapter (common::gpu found one)");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let gpu = atrous::gpu::Gpu::from_device(device, queue);
    assert_eq!(gpu.describe(), "caller-provided device");
    let model = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let case = &common::reference_cases(&shared, "espnet_camvid", "")[0];
    let t = common::read_tensors(case);
    let mut s = Session::new(&gpu, &model.graph(136, 136).unwrap(), None).unwrap();
    let map = s.run_tensor(&t["input"].1).unwrap();
    let agree = map.data.iter().zip(&t["argmax"].1).filter(|(a, b)| **a as f32 == **b).count();
    assert!(agree as f64 >= 0.999 * map.data.len() as f64, "{agree}");
}
