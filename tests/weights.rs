//! Bad model files give typed errors that name the problem: a truncated or corrupt file, a missing
//! tensor, a wrong shape, a wrong dtype, a non-finite value, a tensor the architecture does not
//! use. The files are altered in memory from `../shared/models/espnet_camvid.safetensors`.

mod common;

use std::collections::HashMap;

use atrous::error::Error;
use atrous::models::Model;
use atrous::weights::Weights;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The file's bytes, its tensors and its metadata.
type Original = (Vec<u8>, HashMap<String, Owned>, HashMap<String, String>);

fn original() -> Option<Original> {
    let shared = common::shared()?;
    let bytes = std::fs::read(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.iter().map(|(n, t)| (n.to_string(), Owned { dtype: t.dtype(), shape: t.shape().to_vec(), data: t.data().to_vec() })).collect();
    let meta = common::metadata(&shared.join("models/espnet_camvid.safetensors"));
    Some((bytes, tensors, meta))
}

fn serialize(tensors: &HashMap<String, Owned>, meta: &HashMap<String, String>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors.iter().map(|(n, o)| (n.clone(), TensorView::new(o.dtype, o.shape.clone(), &o.data).unwrap())).collect();
    safetensors::serialize(views, Some(meta.clone())).unwrap()
}

fn load(bytes: Vec<u8>) -> Result<Model, Error> {
    Model::from_weights(Weights::from_bytes(bytes, "altered.safetensors")?)
}

#[test]
fn unaltered_file_loads() {
    let Some((bytes, tensors, meta)) = original() else { return };
    let m = load(bytes).unwrap();
    assert_eq!(m.info.classes.len(), 12);
    // re-serialising without changes also loads (the alteration helper itself is sound)
    load(serialize(&tensors, &meta)).unwrap();
}

#[test]
fn truncated_file_is_corrupt() {
    let Some((bytes, _, _)) = original() else { return };
    for cut in [bytes.len() - 1, bytes.len() / 2, 100, 7, 0] {
        let e = load(bytes[..cut].to_vec()).err().expect("truncated file must fail");
        assert!(matches!(e, Error::CorruptWeights { .. }), "cut at {cut}: {e}");
        assert!(e.to_string().contains("altered.safetensors"), "{e}");
    }
}

#[test]
fn garbage_header_is_corrupt() {
    let Some((mut bytes, _, _)) = original() else { return };
    bytes[9] = b'#';
    let e = load(bytes).err().unwrap();
    assert!(matches!(e, Error::CorruptWeights { .. }), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let Some((_, mut tensors, meta)) = original() else { return };
    tensors.remove("encoder.level3.4.d8.conv.weight");
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::MissingTensor { name } if name == "encoder.level3.4.d8.conv.weight"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let Some((_, mut tensors, meta)) = original() else { return };
    let t = tensors.get_mut("encoder.level2_0.d4.conv.weight").unwrap();
    t.shape = vec![12, 12, 9, 1];
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    match &e {
        Error::ShapeMismatch { name, expected, got } => {
            assert_eq!(name, "encoder.level2_0.d4.conv.weight");
            assert_eq!(expected, &vec![12, 12, 3, 3]);
            assert_eq!(got, &vec![12, 12, 9, 1]);
        }
        _ => panic!("{e}"),
    }
}

#[test]
fn wrong_dtype_is_named() {
    let Some((_, mut tensors, meta)) = original() else { return };
    let t = tensors.get_mut("up_l2.1.bn.running_var").unwrap();
    t.dtype = Dtype::I32;
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::UnsupportedDtype { name, .. } if name == "up_l2.1.bn.running_var"), "{e}");
}

#[test]
fn half_precision_is_accepted_and_converted() {
    let Some((_, mut tensors, meta)) = original() else { return };
    let t = tensors.get_mut("conv.act.weight").unwrap();
    let v: Vec<f32> = bytemuck::pod_collect_to_vec(&t.data);
    t.data = v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
    t.dtype = Dtype::F16;
    load(serialize(&tensors, &meta)).unwrap();
}

#[test]
fn non_finite_value_is_named() {
    let Some((_, mut tensors, meta)) = original() else { return };
    let t = tensors.get_mut("encoder.b2.bn.weight").unwrap();
    t.data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::NonFinite { name, index: 2 } if name == "encoder.b2.bn.weight"), "{e}");
}

#[test]
fn unexpected_tensor_is_named() {
    let Some((_, mut tensors, meta)) = original() else { return };
    tensors.insert("encoder.level3.8.extra".into(), Owned { dtype: Dtype::F32, shape: vec![1], data: vec![0; 4] });
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::UnexpectedTensors { first, .. } if first == "encoder.level3.8.extra"), "{e}");
}

#[test]
fn bad_metadata_is_named() {
    let Some((_, tensors, mut meta)) = original() else { return };
    meta.insert("num_classes".into(), "11".into());
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::Metadata { key, .. } if key == "num_classes"), "{e}");
    let (_, tensors, mut meta) = original().unwrap();
    meta.remove("input");
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::Metadata { key, .. } if key == "input"), "{e}");
}

/// A metadata run size beyond what atrous plans is refused at load (it used to abort in the
/// resize), as are normalisations with a zero std or a non-finite mean.
#[test]
fn absurd_metadata_sizes_and_normalisations_are_named() {
    let Some((_, tensors, mut meta)) = original() else { return };
    meta.insert("atrous_run_size".into(), "[100000, 100000]".into());
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(&e, Error::Metadata { key, .. } if key == "atrous_run_size"), "{e}");
    for n in [r#"{"order": "Bgr", "pre_scale": 1.0, "mean": [1, 2, 3], "std": [0, 1, 1], "post_scale": 1.0}"#, r#"{"order": "Bgr", "pre_scale": 1.0, "mean": [1, 2, 1e39], "std": [1, 1, 1], "post_scale": 1.0}"#] {
        let (_, tensors, mut meta) = original().unwrap();
        meta.insert("atrous_normalize".into(), n.into());
        let e = load(serialize(&tensors, &meta)).err().unwrap();
        assert!(matches!(&e, Error::Metadata { key, .. } if key == "atrous_normalize"), "{e}");
    }
}

#[test]
fn unknown_architecture_is_an_error() {
    let Some((_, mut tensors, meta)) = original() else { return };
    tensors.retain(|n, _| !n.starts_with("encoder."));
    let e = load(serialize(&tensors, &meta)).err().unwrap();
    assert!(matches!(e, Error::UnknownArchitecture(_)), "{e}");
}

#[test]
fn wrong_input_size_is_an_error() {
    let Some((bytes, _, _)) = original() else { return };
    let m = load(bytes).unwrap();
    let e = m.graph(100, 64).err().unwrap();
    assert!(matches!(e, Error::InputSize { h: 100, w: 64, .. }), "{e}");
}

/// The file layout `tools/export_torchvision.py` writes (torchvision names, float32, its metadata
/// keys including `atrous_normalize`, no `classes`-less defaults needed) loads as it is: rebuilt
/// here from the shared f16 torchvision file, it gives the same model information.
#[test]
fn export_tool_layout_loads() {
    let Some(shared) = common::shared() else { return };
    let path = shared.join("models/torchvision/lraspp_mobilenet_v3_large.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, Owned> = HashMap::new();
    for (n, t) in st.iter() {
        let v: Vec<u8> = t.data().chunks_exact(2).flat_map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32().to_le_bytes()).collect();
        tensors.insert(n.to_string(), Owned { dtype: Dtype::F32, shape: t.shape().to_vec(), data: v });
    }
    let normalize = r#"{"order": "Rgb", "pre_scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "post_scale": 1.0}"#;
    let names: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
    let meta = HashMap::from([
        ("name".to_string(), "lraspp_mobilenet_v3_large".to_string()),
        ("architecture".to_string(), "torchvision lraspp_mobilenet_v3_large".to_string()),
        ("num_classes".to_string(), "21".to_string()),
        ("classes".to_string(), serde_json::to_string(&names).unwrap()),
        ("palette_rgb".to_string(), serde_json::to_string(&atrous::models::default_palette(21)[..21]).unwrap()),
        ("input".to_string(), r#"{"layout": "NCHW", "channel_order": "RGB", "formula": "x[c] = (pixel[c]/255 - mean[c]) / std[c]", "mean_rgb": [0.485, 0.456, 0.406], "std_rgb": [0.229, 0.224, 0.225]}"#.to_string()),
        ("atrous_normalize".to_string(), normalize.to_string()),
    ]);
    let m = load(serialize(&tensors, &meta)).unwrap();
    let orig = Model::load(&path).unwrap();
    assert_eq!(m.info.classes, names);
    assert_eq!(m.info.normalize.order, orig.info.normalize.order);
    assert_eq!(m.info.normalize.mean, orig.info.normalize.mean);
    assert!((m.info.normalize.pre_scale - 1.0 / 255.0).abs() < 1e-9);
    assert_eq!(m.info.architecture, orig.info.architecture);
}

/// Values that are finite one by one but make no finite network (issue 14) are typed errors at
/// session creation, not all-class-0 masks: a negative `running_var` and a NaN `bn_eps` (caught
/// on the folded parameters, the values actually uploaded) and weights of 3e38 (caught on the
/// logits of the probe run).
#[test]
fn values_that_make_no_finite_network_fail_at_session_creation() {
    let Some((_, tensors, meta)) = original() else { return };
    let Some(gpu) = common::gpu() else { return };
    let session = |tensors: &HashMap<String, Owned>, meta: &HashMap<String, String>| -> Result<(), Error> {
        let m = load(serialize(tensors, meta))?;
        let g = m.graph(48, 64)?;
        atrous::session::Session::new(&gpu, &g, None).map(|_| ())
    };
    // the unaltered model passes the same checks
    session(&tensors, &meta).unwrap();

    let mut t2 = tensors;
    let var = t2.get_mut("combine_l2_l3.0.bn.running_var").unwrap();
    let keep = var.data.clone();
    var.data[4..8].copy_from_slice(&(-1.0f32).to_le_bytes());
    let e = session(&t2, &meta).err().unwrap();
    assert!(matches!(&e, Error::NonFiniteParameter { .. }), "{e}");
    eprintln!("negative running_var: {e}");
    t2.get_mut("combine_l2_l3.0.bn.running_var").unwrap().data = keep;

    let mut m2 = meta.clone();
    m2.insert("bn_eps".into(), "NaN".into());
    let e = session(&t2, &m2).err().unwrap();
    assert!(matches!(&e, Error::NonFiniteParameter { .. } | Error::Metadata { .. }), "{e}");
    eprintln!("bn_eps NaN: {e}");

    let w = t2.get_mut("classifier.weight").unwrap();
    w.data = std::iter::repeat_n(3e38f32.to_le_bytes(), w.data.len() / 4).flatten().collect();
    let e = session(&t2, &meta).err().unwrap();
    assert!(matches!(&e, Error::NonFiniteLogits { .. } | Error::NonFiniteParameter { .. }), "{e}");
    eprintln!("weights of 3e38: {e}");
}
