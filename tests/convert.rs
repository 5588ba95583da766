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

/// (name, storage type, storage key, offset, size, stride) of one tensor in [`torch_pickle`].
type Entry<'a> = (&'a str, &'a str, &'a str, usize, &'a [usize], &'a [usize]);

/// A pickle in the shape torch writes: `OrderedDict([(name, _rebuild_tensor_v2(persid, offset,
/// size, stride, False, OrderedDict())), ...])`.
fn torch_pickle(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    let s = |p: &mut Vec<u8>, v: &str| {
        p.push(b'X');
        p.extend((v.len() as u32).to_le_bytes());
        p.extend(v.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| match i32::try_from(v) {
        Ok(v) => {
            p.push(b'J');
            p.extend(v.to_le_bytes());
        }
        Err(_) => {
            // LONG1 of 9 bytes: non-negative whatever the top bit
            p.extend([0x8a, 9]);
            p.extend((v as u64).to_le_bytes());
            p.push(0);
        }
    };
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (name, storage, key, offset, size, stride) in entries {
        s(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        s(&mut p, "storage");
        p.extend(format!("ctorch\n{storage}\n").as_bytes());
        s(&mut p, key);
        s(&mut p, "cpu");
        int(&mut p, 6);
        p.extend(b"tQ");
        int(&mut p, *offset);
        p.push(b'(');
        size.iter().for_each(|&v| int(&mut p, v));
        p.extend(b"t(");
        stride.iter().for_each(|&v| int(&mut p, v));
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    p
}

fn zip_checkpoint(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", o).unwrap();
        z.write_all(pickle).unwrap();
        for (k, d) in storages {
            z.start_file(format!("archive/data/{k}"), o).unwrap();
            z.write_all(d).unwrap();
        }
        z.start_file("archive/version", o).unwrap();
        z.write_all(b"3\n").unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// The current (zip) checkpoint format, strided views included; `num_batches_tracked` is dropped
/// and any other integer tensor is an error naming it.
#[test]
fn zip_checkpoints_with_strided_views() {
    let f32s: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let pkl = torch_pickle(&[
        ("conv.weight", "FloatStorage", "0", 0, &[2, 3], &[3, 1]),
        ("conv.weight_t", "FloatStorage", "0", 0, &[3, 2], &[1, 3]),
        ("conv.tail", "FloatStorage", "0", 4, &[2], &[1]),
        ("bn.num_batches_tracked", "LongStorage", "1", 0, &[], &[]),
    ]);
    let ck = zip_checkpoint(&pkl, &[("0", f32s.clone()), ("1", 7i64.to_le_bytes().to_vec())]);
    let t = atrous::convert::pytorch::read_checkpoint(&ck, "test.pt").unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!((t[0].name.as_str(), t[0].shape.clone(), t[0].data.clone()), ("conv.weight", vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(t[1].data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(t[2].data, vec![4.0, 5.0]);

    let pkl = torch_pickle(&[("classifier.index", "IntStorage", "0", 0, &[6], &[1])]);
    let ck = zip_checkpoint(&pkl, &[("0", f32s.clone())]);
    let e = atrous::convert::pytorch::read_checkpoint(&ck, "test.pt").err().unwrap();
    assert!(matches!(&e, atrous::Error::NonFloatTensor { name, .. } if name == "classifier.index"), "{e}");

    // a view reaching past its storage
    let pkl = torch_pickle(&[("w", "FloatStorage", "0", 3, &[2, 3], &[3, 1])]);
    let ck = zip_checkpoint(&pkl, &[("0", f32s)]);
    let e = atrous::convert::pytorch::read_checkpoint(&ck, "test.pt").err().unwrap();
    assert!(matches!(e, atrous::Error::Truncated { .. }), "{e}");
}

/// Truncated legacy files and a file that is no checkpoint at all give typed errors.
#[test]
fn truncated_and_foreign_files_are_typed_errors() {
    let Some(shared) = common::shared() else { return };
    let bytes = std::fs::read(shared.join("models/original/espnet_p_2_q_8_camvid.pth")).unwrap();
    for cut in [bytes.len() - 3, bytes.len() / 2, 20_000, 100, 5] {
        let e = atrous::convert::pytorch::read_checkpoint(&bytes[..cut], "cut.pth").err().unwrap_or_else(|| panic!("cut at {cut} read fine"));
        assert!(matches!(e, atrous::Error::Truncated { .. } | atrous::Error::Checkpoint { .. }), "cut at {cut}: {e}");
    }
    let tfl = std::fs::read(shared.join("models/original/deeplabv3.tflite")).unwrap();
    let e = atrous::convert::pytorch::read_checkpoint(&tfl, "x.pth").err().unwrap();
    assert!(matches!(e, atrous::Error::UnknownPickleOpcode { .. } | atrous::Error::Checkpoint { .. }), "{e}");
    for cut in [tfl.len() / 2, 1000, 12] {
        let e = atrous::convert::tflite::read_constants(&tfl[..cut], "cut.tflite").err().unwrap_or_else(|| panic!("cut at {cut} read fine"));
        assert!(matches!(e, atrous::Error::Truncated { .. } | atrous::Error::Checkpoint { .. }), "cut at {cut}: {e}");
    }
    let e = atrous::convert::tflite::read_constants(&bytes, "x.tflite").err().unwrap();
    assert!(matches!(e, atrous::Error::Checkpoint { .. }), "{e}");
}

/// A legacy (pre-zip) checkpoint: magic number, protocol 1001, system info, the object, the
/// storage keys, then each storage as an element count and its bytes.
fn legacy_checkpoint(pickle: &[u8], storages: &[(&str, i64, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0x80, 2, 0x8a, 10];
    b.extend(0x1950a86a20f9469cfc6c_u128.to_le_bytes()[..10].iter());
    b.push(b'.');
    b.extend(b"\x80\x02M\xe9\x03.\x80\x02}.");
    b.extend(pickle);
    b.extend(b"\x80\x02](");
    for (k, _, _) in storages {
        b.push(b'X');
        b.extend((k.len() as u32).to_le_bytes());
        b.extend(k.as_bytes());
    }
    b.extend(b"e.");
    for (_, n, data) in storages {
        b.extend(n.to_le_bytes());
        b.extend(data);
    }
    b
}

/// Hostile checkpoints (issue 14): counts, sizes, strides and offsets read from the file that
/// overflow or reach past the data are typed errors; nothing is allocated beyond the file's bytes.
#[test]
fn hostile_checkpoints_are_typed_errors() {
    use atrous::convert::pytorch::read_checkpoint;
    let f32s: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    // the builder itself is right: a good legacy file reads
    let good = torch_pickle(&[("w", "FloatStorage", "0", 1, &[2, 2], &[2, 1])]);
    let t = read_checkpoint(&legacy_checkpoint(&good, &[("0", 6, f32s.clone())]), "ok.pth").unwrap();
    assert_eq!((t[0].shape.clone(), t[0].data.clone()), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    // legacy storage element counts: i64::MAX, a byte count that overflows, negative, one too many
    for n in [i64::MAX, i64::MAX / 2, 1 << 62, -1, 7] {
        let e = read_checkpoint(&legacy_checkpoint(&good, &[("0", n, f32s.clone())]), "n.pth").err().unwrap_or_else(|| panic!("count {n} read fine"));
        assert!(matches!(e, atrous::Error::Truncated { .. } | atrous::Error::Checkpoint { .. }), "count {n}: {e}");
    }
    let cases: [(&str, usize, &[usize], &[usize]); 6] = [
        ("[2^32, 2^32] stride 0", 0, &[1 << 32, 1 << 32], &[0, 0]),
        ("[2^62] stride 8", 0, &[1 << 62], &[8]),
        ("[2^28] stride 0", 0, &[1 << 28], &[0]),
        ("offset 2^62", 1 << 62, &[2], &[1]),
        ("offset near usize::MAX", i64::MAX as usize, &[2], &[1]),
        ("[3, 3] stride [1, 1]", 0, &[3, 3], &[1, 1]),
    ];
    for (what, offset, size, stride) in cases {
        let pkl = torch_pickle(&[("w", "FloatStorage", "0", offset, size, stride)]);
        for ck in [zip_checkpoint(&pkl, &[("0", f32s.clone())]), legacy_checkpoint(&pkl, &[("0", 6, f32s.clone())])] {
            let e = read_checkpoint(&ck, "view.pt").err().unwrap_or_else(|| panic!("{what} read fine"));
            assert!(matches!(e, atrous::Error::Truncated { .. } | atrous::Error::Checkpoint { .. }), "{what}: {e}");
            eprintln!("{what}: {e}");
        }
    }
    // a stride-0 view of 2^28 elements from 200 bytes is refused, not grown into 1 GB
    let pkl = torch_pickle(&[("w", "FloatStorage", "0", 0, &[1 << 28], &[0])]);
    let e = read_checkpoint(&zip_checkpoint(&pkl, &[("0", f32s.clone())]), "expand.pt").err().unwrap();
    assert!(e.to_string().contains("expanded view"), "{e}");
}

/// A minimal TFLite flatbuffer: one subgraph holding one FLOAT32 tensor of `shape` whose buffer
/// holds `data`.
fn tflite_file(shape: &[i32], data: &[u8]) -> Vec<u8> {
    // every uoffset points forward; tables are preceded by their vtables
    let mut b: Vec<u8> = vec![0; 8];
    b[4..8].copy_from_slice(b"TFL3");
    let mut patches: Vec<(usize, &str)> = vec![];
    let mut labels: std::collections::HashMap<&str, usize> = Default::default();
    let align = |b: &mut Vec<u8>| {
        while b.len() % 4 != 0 {
            b.push(0);
        }
    };
    // a table with `fields` (each: None, an inline u32, or an offset to a label); returns its position
    let table = |b: &mut Vec<u8>, patches: &mut Vec<(usize, &'static str)>, fields: &[Option<Result<u32, &'static str>>]| -> usize {
        align(b);
        let vt = b.len();
        let vt_len = 4 + 2 * fields.len();
        b.extend((vt_len as u16).to_le_bytes());
        b.extend(((4 + 4 * fields.len()) as u16).to_le_bytes());
        for (i, f) in fields.iter().enumerate() {
            b.extend((if f.is_some() { 4 + 4 * i as u16 } else { 0 }).to_le_bytes());
        }
        align(b);
        let t = b.len();
        b.extend(((t - vt) as i32).to_le_bytes());
        for f in fields {
            match f {
                Some(Ok(v)) => b.extend(v.to_le_bytes()),
                Some(Err(label)) => {
                    patches.push((b.len(), label));
                    b.extend([0u8; 4]);
                }
                None => b.extend([0u8; 4]),
            }
        }
        t
    };
    let vector = |b: &mut Vec<u8>, n: usize, items: &[u8]| -> usize {
        align(b);
        let v = b.len();
        b.extend((n as u32).to_le_bytes());
        b.extend(items);
        v
    };
    let model = table(&mut b, &mut patches, &[None, None, Some(Err("subgraphs")), None, Some(Err("buffers"))]);
    patches.push((0, "model"));
    labels.insert("model", model);
    let subs = vector(&mut b, 1, &[0; 4]);
    patches.push((subs + 4, "subgraph"));
    labels.insert("subgraphs", subs);
    labels.insert("subgraph", table(&mut b, &mut patches, &[Some(Err("tensors"))]));
    let tens = vector(&mut b, 1, &[0; 4]);
    patches.push((tens + 4, "tensor"));
    labels.insert("tensors", tens);
    labels.insert("tensor", table(&mut b, &mut patches, &[Some(Err("shape")), Some(Ok(0)), Some(Ok(1)), Some(Err("name"))]));
    labels.insert("shape", vector(&mut b, shape.len(), &shape.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<_>>()));
    labels.insert("name", vector(&mut b, 1, b"w"));
    let bufs = vector(&mut b, 2, &[0; 8]);
    patches.push((bufs + 4, "buffer0"));
    patches.push((bufs + 8, "buffer1"));
    labels.insert("buffers", bufs);
    labels.insert("buffer0", table(&mut b, &mut patches, &[]));
    labels.insert("buffer1", table(&mut b, &mut patches, &[Some(Err("data"))]));
    labels.insert("data", vector(&mut b, data.len(), data));
    for (at, label) in patches {
        let to = labels[label];
        b[at..at + 4].copy_from_slice(&((to - at) as u32).to_le_bytes());
    }
    b
}

/// TFLite dims of i32::MAX (products that overflow, sizes that do not match the data) are typed
/// errors; the same file with a matching shape reads.
#[test]
fn hostile_tflite_dims_are_typed_errors() {
    use atrous::convert::tflite::{read_constants, Constant};
    let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let c = read_constants(&tflite_file(&[2, 1], &data), "ok.tflite").unwrap();
    assert_eq!(c, vec![Constant::F32 { name: "w".into(), shape: vec![2, 1], data: vec![1.5, -2.0] }]);
    let m = i32::MAX;
    for shape in [vec![m], vec![m, m], vec![m, m, m, m], vec![1 << 30, 4], vec![-1, 2], vec![3]] {
        let e = read_constants(&tflite_file(&shape, &data), "dims.tflite").err().unwrap_or_else(|| panic!("{shape:?} read fine"));
        assert!(matches!(e, atrous::Error::Checkpoint { .. } | atrous::Error::Truncated { .. }), "{shape:?}: {e}");
    }
}
