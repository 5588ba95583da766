//! Real networks exported to ONNX (`../shared/onnx/models`) against ONNX Runtime's stored
//! outputs: imported straight from the `.onnx`, and again after `atrous convert`; plus the CLI on
//! them and the importer's typed errors.
//!
//! The bound: logits within `1e-3 + 1e-3 * max|logit|` of ORT's, and class maps equal on at
//! least 99.9 % of pixels. ORT and PyTorch differ by 3e-6 to 1.7e-5 on these cases (the shared
//! README), float32 against float64 by as much; a runtime with its own summation order (direct
//! convolution, folded batch norm) lands within a small multiple of that. 1e-3 relative to the
//! largest logit is ~50x the largest of those and far below any real error (a wrong pad, a
//! missing bias moves logits by 1e-1 or more).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use atrous::models::Model;
use atrous::session::Session;
use atrous::weights::Weights;
use safetensors::SafeTensors;

struct Case {
    name: &'static str,
    /// Folder of the external data (LR-ASPP's weights live in ../shared/models).
    external: Option<&'static str>,
}

const CASES: [Case; 3] =
    [Case { name: "espnet_camvid_136x136", external: None }, Case { name: "enet_camvid_128x160", external: None }, Case { name: "lraspp_mobilenet_v3_large_97x131", external: Some("models/torchvision") }];

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn load(shared: &Path, c: &Case) -> Model {
    let onnx = shared.join(format!("onnx/models/{}.onnx", c.name));
    match c.external {
        None => Model::load(&onnx).unwrap(),
        Some(dir) => {
            let bytes = std::fs::read(&onnx).unwrap();
            let imported = atrous::onnx::import_bytes(&bytes, &onnx, Some(&shared.join(dir))).unwrap();
            Model::from_weights(Weights::from_bytes(imported.to_safetensors().unwrap(), &onnx).unwrap()).unwrap()
        }
    }
}

/// (max abs difference, bound, pixels whose class differs, pixels) of a run against ORT's output.
fn agreement(gpu: &atrous::gpu::Gpu, model: &Model, refs: &SafeTensors) -> (f32, f32, usize, usize, Vec<f32>) {
    let (xs, x) = f32s(refs, "input");
    let (ys, y) = f32s(refs, "output");
    let (h, w) = (xs[2], xs[3]);
    let g = model.graph(h, w).unwrap();
    let mut s = Session::new(gpu, &g, None).unwrap();
    let (map, logits) = s.run_tensor_logits(&x).unwrap();
    assert_eq!(logits.len(), y.len(), "logit count");
    let c = ys[1];
    let max_abs = logits.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let bound = 1e-3 + 1e-3 * y.iter().fold(0f32, |m, v| m.max(v.abs()));
    let hw = h * w;
    let ref_class = |p: usize| (0..c).max_by(|&a, &b| y[a * hw + p].total_cmp(&y[b * hw + p])).unwrap();
    let differ = (0..hw).filter(|&p| map.data[p] as usize != ref_class(p)).count();
    (max_abs, bound, differ, hw, logits)
}

#[test]
fn onnx_models_match_onnx_runtime_directly_and_after_convert() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let tmp = std::env::temp_dir().join(format!("atrous-onnx-models-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    println!("{:<36} {:>12} {:>10} {:>16} {:>20}", "case", "max |d|", "bound", "classes equal", "converted == direct");
    for c in &CASES {
        let refs_bytes = std::fs::read(shared.join(format!("onnx/models/{}.ref.safetensors", c.name))).unwrap();
        let refs = SafeTensors::deserialize(&refs_bytes).unwrap();
        let model = load(&shared, c);
        let (max_abs, bound, differ, n, direct) = agreement(&gpu, &model, &refs);
        assert!(max_abs <= bound, "{}: logits differ from ORT by {max_abs} > {bound}", c.name);
        assert!(differ * 1000 <= n, "{}: {differ} of {n} pixels change class", c.name);
        // the same through `atrous convert` and the file it writes
        let out = tmp.join(format!("{}.safetensors", c.name));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrous"));
        cmd.arg("convert").arg(shared.join(format!("onnx/models/{}.onnx", c.name))).arg("-o").arg(&out).arg("--overwrite");
        if let Some(d) = c.external {
            cmd.arg("--external-data").arg(shared.join(d));
        }
        let r = cmd.output().unwrap();
        assert!(r.status.success(), "convert {}: {}", c.name, String::from_utf8_lossy(&r.stderr));
        let converted = Model::load(&out).unwrap();
        let (max2, _, differ2, _, again) = agreement(&gpu, &converted, &refs);
        assert_eq!(again, direct, "{}: the converted file gives other logits than the .onnx", c.name);
        assert!(max2 <= bound && differ2 * 1000 <= n);
        println!("{:<36} {:>12.3e} {:>10.3e} {:>16} {:>20}", c.name, max_abs, bound, format!("{}/{}", n - differ, n), "yes (bit-identical)");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// ESPNet through ONNX runs with the same number of dispatches as the native builder at the
/// export size (the issue allows 10 % more).
#[test]
fn espnet_onnx_dispatches_match_the_builder() {
    let Some(shared) = common::shared() else { return };
    let onnx = Model::load(shared.join("onnx/models/espnet_camvid_136x136.onnx")).unwrap();
    let native = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let (a, b) = (onnx.graph(136, 136).unwrap(), native.graph(136, 136).unwrap());
    println!("ESPNet 136x136: {} nodes through ONNX, {} from the builder", a.nodes.len(), b.nodes.len());
    assert!(a.nodes.len() * 10 <= b.nodes.len() * 11, "{} nodes through ONNX vs {} native", a.nodes.len(), b.nodes.len());
    // --size re-infers the shapes for another input size
    let g = onnx.graph(360, 480).unwrap();
    assert_eq!(g.tensors[g.logits.unwrap()].shape(), [1, 12, 360, 480]);
}

fn atrous(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_atrous")).args(args).env("NODEVICE_SELECT", "1").output().unwrap()
}

#[test]
fn segment_takes_onnx_files_and_their_preprocessing() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("atrous-onnx-seg-{}", std::process::id()));
    let img = shared.join("data/camvid/val/images/0016E5_07959.png");
    let espnet = shared.join("onnx/models/espnet_camvid_136x136.onnx");
    let enet = shared.join("onnx/models/enet_camvid_128x160.onnx");
    let os = |p: &PathBuf| p.as_os_str().to_owned();
    // ESPNet's export carries its preprocessing: no flags needed
    let r = atrous(&["segment".as_ref(), "--model".as_ref(), &os(&espnet), &os(&img), "--out".as_ref(), &os(&tmp.join("a"))]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let map = image::open(tmp.join("a/0016E5_07959.png")).unwrap();
    assert_eq!((map.width(), map.height()), (480, 360), "the class map comes back at the image's size");
    // ENet's does not: the flags are required, and then it runs
    let r = atrous(&["segment".as_ref(), "--model".as_ref(), &os(&enet), &os(&img), "--out".as_ref(), &os(&tmp.join("b"))]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("--mean"), "{err}");
    let r = atrous(&["segment".as_ref(), "--model".as_ref(), &os(&enet), &os(&img), "--out".as_ref(), &os(&tmp.join("b")), "--mean".as_ref(), "0,0,0".as_ref(), "--std".as_ref(), "1,1,1".as_ref(), "--rgb".as_ref()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(tmp.join("b/0016E5_07959.png").is_file());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn importer_errors_are_typed_and_name_the_problem() {
    let Some(shared) = common::shared() else { return };
    let espnet = shared.join("onnx/models/espnet_camvid_136x136.onnx");
    let bytes = std::fs::read(&espnet).unwrap();
    // truncated protobuf
    let e = atrous::onnx::import_bytes(&bytes[..bytes.len() / 2], Path::new("half.onnx"), None).err().expect("truncated file");
    assert!(matches!(e, atrous::Error::OnnxParse { .. }), "{e}");
    // external data that is not there names the tensor and the file
    let lr = shared.join("onnx/models/lraspp_mobilenet_v3_large_97x131.onnx");
    let e = Model::load(&lr).err().expect("external data missing");
    assert!(e.to_string().contains("lraspp_mobilenet_v3_large.safetensors"), "{e}");
    // a graph written by another format version names both versions
    let imported = atrous::onnx::import_bytes(&bytes, &espnet, None).unwrap();
    let mut g = imported.graph.clone();
    g.format = 99;
    let patched = atrous::onnx::Imported { graph: g, tensors: imported.tensors.clone(), metadata: imported.metadata.clone() };
    let e = Model::from_weights(Weights::from_bytes(patched.to_safetensors().unwrap(), "old.safetensors").unwrap()).err().expect("format 99");
    assert!(matches!(e, atrous::Error::GraphFormat { found: 99, supported: 1 }), "{e}");
    // unsupported operators: `convert --check` lists every one at once and fails
    let d2s = shared.join("onnx/node/test_matmul_4d/model.onnx");
    let r = atrous(&["convert".as_ref(), "--check".as_ref(), d2s.as_os_str()]);
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(!r.status.success() && out.contains("MatMul"), "{out}");
    {
        use prost::Message;
        let mut m = atrous::onnx::proto::ModelProto::decode(&bytes[..]).unwrap();
        let g = m.graph.as_mut().unwrap();
        g.node[5].op_type = Some("NotAnOp".into());
        g.node[60].op_type = Some("AlsoNotAnOp".into());
        let tmp = std::env::temp_dir().join(format!("atrous-two-unsupported-{}.onnx", std::process::id()));
        std::fs::write(&tmp, m.encode_to_vec()).unwrap();
        let r = atrous(&["convert".as_ref(), "--check".as_ref(), tmp.as_os_str()]);
        let out = String::from_utf8_lossy(&r.stdout);
        let _ = std::fs::remove_file(&tmp);
        assert!(!r.status.success() && out.contains("NotAnOp") && out.contains("AlsoNotAnOp"), "both unsupported nodes listed: {out}");
    }
    // a node whose input is missing is a typed error, not a panic
    let mut g = imported.graph.clone();
    g.nodes[3].inputs[0] = "nowhere".into();
    let broken = atrous::onnx::Imported { graph: g, tensors: imported.tensors.clone(), metadata: imported.metadata.clone() };
    let e = Model::from_weights(Weights::from_bytes(broken.to_safetensors().unwrap(), "broken.safetensors").unwrap()).err().expect("dangling input");
    assert!(e.to_string().contains("nowhere"), "{e}");
}
