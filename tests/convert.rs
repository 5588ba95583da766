//! The native converters against the shared safetensors files: every tensor of every original
//! checkpoint, converted here, equals the shared file's tensor bit for bit (names, shapes, values).

mod common;

use std::collections::HashMap;

fn shared_tensors(path: &std::path::Path) -> HashMap<String, (Vec<usize>, Vec<u32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
            (n.to_string(), (t.shape().to_vec(), bytemuck::pod_collect_to_vec::<u8, u32>(t.data())))
        })
        .collect()
}

#[test]
fn pytorch_checkpoints_convert_exactly() {
    let Some(shared) = common::shared() else { return };
    for (orig, conv) in [("espnet_p_2_q_8_camvid.pth", "espnet_camvid"), ("espnet_p_2_q_8.pth", "espnet_cityscapes"), ("espnetv2_s_2.0_pascal_384x384.pth", "espnetv2_s2.0_voc384")] {
        let bytes = std::fs::read(shared.join("models/original").join(orig)).unwrap();
        let tensors = atrous::convert::pytorch::read_checkpoint(&bytes, orig).unwrap();
        let want = shared_tensors(&shared.join(format!("models/{conv}.safetensors")));
        assert_eq!(tensors.len(), want.len(), "{orig}: tensor count");
        for t in &tensors {
            let (shape, bits) = want.get(&t.name).unwrap_or_else(|| panic!("{orig}: `{}` not in the shared file", t.name));
            assert_eq!(&t.shape, shape, "{orig}: {}", t.name);
            let got: Vec<u32> = t.data.iter().map(|v| v.to_bits()).collect();
            assert!(&got == bits, "{orig}: `{}` differs", t.name);
        }
        eprintln!("{orig}: {} tensors equal to {conv}.safetensors", tensors.len());
    }
}

#[test]
fn tflite_flatbuffer_converts_exactly() {
    let Some(shared) = common::shared() else { return };
    let bytes = std::fs::read(shared.join("models/original/deeplabv3.tflite")).unwrap();
    let consts = atrous::convert::tflite::read_constants(&bytes, "deeplabv3.tflite").unwrap();
    let want = shared_tensors(&shared.join("models/deeplabv3_mnv2_voc257.safetensors"));
    let meta = common::metadata(&shared.join("models/deeplabv3_mnv2_voc257.safetensors"));
    let int32: HashMap<String, Vec<i32>> = serde_json::from_str(&meta["int32_constants"]).unwrap();
    let (mut nf, mut ni) = (0, 0);
    for c in &consts {
        match c {
            atrous::convert::tflite::Constant::F32 { name, shape, data } => {
                let (s, bits) = want.get(name).unwrap_or_else(|| panic!("`{name}` not in the shared file"));
                assert_eq!(shape, s, "{name}");
                assert!(data.iter().map(|v| v.to_bits()).collect::<Vec<_>>() == *bits, "`{name}` differs");
                nf += 1;
            }
            atrous::convert::tflite::Constant::I32 { name, data, .. } => {
                assert_eq!(int32.get(name), Some(data), "{name}");
                ni += 1;
            }
        }
    }
    assert_eq!((nf, ni), (want.len(), int32.len()));
    eprintln!("deeplabv3.tflite: {nf} float tensors equal, {ni} int32 constants equal");
}
