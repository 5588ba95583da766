//! The ONNX project's backend node tests (`../shared/onnx/node`, copied unchanged from the onnx
//! 1.22.0 wheel): every case is imported, lowered for its input's size and run on the device,
//! and each output is compared with the expected `.pb` with the onnx package's own rule
//! (`|actual - expected| <= 1e-7 + 1e-3 * |expected|`, NaN matching NaN, integers exact, equal
//! shapes). Every in-scope case (`MANIFEST.tsv`) must pass or be listed, with its reason, in
//! `tests/onnx_node_known_failures.tsv`; a listed case that passes fails the test too, so the
//! list stays true. Stretch cases (other ranks, batch > 1, other dtypes) are counted.
//! `cargo test --release --test onnx_node -- --nocapture` prints the per-operator table.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use atrous::gpu::Gpu;
use atrous::onnx::proto::TensorProto;
use atrous::onnx::{CData, CTensor, LoweredOut};
use atrous::session::{Session, SessionOptions, Tensor, TensorData};
use prost::Message;

#[derive(Debug, PartialEq)]
enum Outcome {
    Pass,
    /// Passed with every output folded on the CPU (no device work: no activation input).
    PassFolded,
    /// Ran, but an output differs.
    Fail(String),
    /// Not imported or lowered (a typed error).
    Unsupported(String),
}

fn read_pb(p: &Path) -> Result<CTensor, String> {
    let b = std::fs::read(p).map_err(|e| e.to_string())?;
    let t = TensorProto::decode(&b[..]).map_err(|e| format!("{}: {e}", p.display()))?;
    atrous::onnx::tensor_from_proto(&t, None).map_err(|e| e.to_string())
}

/// Which graph inputs are activations (device tensors) rather than parameters.
fn is_activation(op: &str, i: usize, t: &CTensor) -> bool {
    // 4-D with N = 1, or rank 1-3 (the stretch cases of element-wise operators)
    if t.dims.is_empty() || t.dims.len() > 4 || t.dims.len() == 4 && t.dims[0] != 1 || !(t.is_float() || t.dims.len() == 4) {
        return false;
    }
    match op {
        "MaxUnpool" => i < 2,
        "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Concat" | "MatMul" => true,
        _ => i == 0,
    }
}

fn close(a: f32, e: f32) -> bool {
    (a.is_nan() && e.is_nan()) || (a - e).abs() <= 1e-7 + 1e-3 * e.abs()
}

/// Runs one case. `fold`: every input is a constant, so the whole graph goes through the
/// importer's CPU constant folder (the path shape subgraphs take) rather than the device.
fn run_case(gpu: &Gpu, dir: &Path, op: &str, fold: bool) -> Outcome {
    let unsupported = |e: String| Outcome::Unsupported(e);
    let imported = match atrous::onnx::import_file(&dir.join("model.onnx")) {
        Ok(i) => i,
        Err(e) => return unsupported(e.to_string()),
    };
    let data = dir.join("test_data_set_0");
    let mut inputs = vec![];
    for i in 0..imported.graph.inputs.len() {
        match read_pb(&data.join(format!("input_{i}.pb"))) {
            Ok(t) => inputs.push(t),
            Err(e) => return unsupported(format!("input {i}: {e}")),
        }
    }
    let mut expected = vec![];
    for i in 0..imported.graph.outputs.len() {
        match read_pb(&data.join(format!("output_{i}.pb"))) {
            Ok(t) => expected.push(t),
            Err(e) => return unsupported(format!("output {i}: {e}")),
        }
    }
    let mut consts = HashMap::new();
    let mut acts = vec![];
    for (i, (v, t)) in imported.graph.inputs.iter().zip(&inputs).enumerate() {
        if !fold && is_activation(op, i, t) && acts.len() < 8 {
            acts.push((v.name.clone(), t.clone()));
        } else {
            consts.insert(v.name.clone(), t.clone());
        }
    }
    // the activation inputs' shapes: fixed dims in the graph are taken as they are
    // the activation inputs get their data's shape; constants stay as declared (consts first)
    let mut ir = imported.graph.clone();
    for v in ir.inputs.iter_mut() {
        if let Some((_, t)) = acts.iter().find(|(n, _)| n == &v.name) {
            v.dims = Some(t.dims.iter().map(|&d| Some(d as i64)).collect());
        }
    }
    let pad4 = |d: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, 4 - d.len()).chain(d.iter().copied()).collect() };
    let (h, w) = acts.first().map(|(_, t)| (pad4(&t.dims)[2], pad4(&t.dims)[3])).unwrap_or((1, 1));
    let reader = |name: &str, _t: i32| imported.tensors.get(name).cloned().ok_or_else(|| atrous::Error::MissingTensor { name: name.to_string() });
    let lowered = match atrous::onnx::lower(&ir, &reader, h, w, &consts) {
        Ok(l) => l,
        Err(e) => return unsupported(e.to_string()),
    };
    let mut g = lowered.graph;
    let device_outs: Vec<(usize, atrous::graph::TensorId, Option<Vec<i64>>)> =
        lowered.outputs.iter().enumerate().filter_map(|(k, (_, o))| if let LoweredOut::Tensor { id, offset, .. } = o { Some((k, *id, offset.clone())) } else { None }).collect();
    let mut actual: BTreeMap<usize, (Vec<usize>, CData)> = BTreeMap::new();
    for (k, (_, o)) in lowered.outputs.iter().enumerate() {
        if let LoweredOut::Const(c) = o {
            actual.insert(k, (c.dims.clone(), c.data.clone()));
        }
    }
    if !device_outs.is_empty() {
        if g.logits.is_none() {
            // a graph whose only outputs are indices: the session still wants a float "logits"
            let first_float = g.inputs.iter().copied().find(|&t| g.tensors[t].dtype == atrous::graph::DType::F32);
            match first_float {
                Some(t) => g.set_logits(t),
                None => return unsupported("no float tensor".into()),
            }
        }
        if let Err(e) = g.validate() {
            return unsupported(e.to_string());
        }
        let mut s = match Session::with_options(gpu, &g, SessionOptions { skip_probe: true, ..Default::default() }) {
            Ok(s) => s,
            Err(e) => return unsupported(e.to_string()),
        };
        let feed: Vec<Tensor> = acts
            .iter()
            .map(|(name, t)| {
                let data = match &t.data {
                    CData::F(v) => TensorData::F32(v.clone()),
                    CData::I(v) => TensorData::U32(v.iter().map(|&x| x as u32).collect()),
                };
                let d = pad4(&t.dims);
                Tensor { name: name.clone(), shape: [1, d[1], d[2], d[3]], data }
            })
            .collect();
        let names: Vec<String> = device_outs.iter().map(|(_, id, _)| g.tensors[*id].name.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let outs = match s.run(&feed, &refs) {
            Ok(o) => o,
            Err(e) => return Outcome::Fail(format!("run: {e}")),
        };
        for ((k, _, offset), t) in device_outs.iter().zip(outs) {
            let dims = match &lowered.outputs[*k].1 {
                LoweredOut::Tensor { dims, .. } => dims.clone(),
                _ => unreachable!(),
            };
            let data = match t.data {
                TensorData::F32(v) => CData::F(v),
                TensorData::U32(v) => {
                    let d4 = pad4(&dims);
                    let plane = d4[2] * d4[3];
                    CData::I(v.iter().enumerate().map(|(i, &x)| x as i64 + offset.as_ref().map_or(0, |o| o[i / plane.max(1)])).collect())
                }
                other => return Outcome::Fail(format!("output of type {:?}", other.dtype())),
            };
            actual.insert(*k, (dims, data));
        }
    }
    for (k, e) in expected.iter().enumerate() {
        let Some((dims, data)) = actual.get(&k) else { return Outcome::Fail(format!("output {k} missing")) };
        if *dims != e.dims {
            return Outcome::Fail(format!("output {k}: shape {dims:?}, expected {:?}", e.dims));
        }
        match (data, &e.data) {
            (CData::F(a), CData::F(x)) => {
                if let Some(i) = (0..x.len()).find(|&i| !close(a[i], x[i])) {
                    let worst = a.iter().zip(x).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
                    return Outcome::Fail(format!("output {k}: element {i} is {}, expected {} (max abs diff {worst:e})", a[i], x[i]));
                }
            }
            (CData::I(a), CData::I(x)) => {
                if let Some(i) = (0..x.len()).find(|&i| a[i] != x[i]) {
                    return Outcome::Fail(format!("output {k}: element {i} is {}, expected {}", a[i], x[i]));
                }
            }
            _ => return Outcome::Fail(format!("output {k}: element type differs")),
        }
    }
    if device_outs.is_empty() {
        Outcome::PassFolded
    } else {
        Outcome::Pass
    }
}

#[test]
fn onnx_backend_node_tests() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let node = shared.join("onnx/node");
    let manifest = std::fs::read_to_string(node.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let known_text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_node_known_failures.tsv")).expect("known failures list");
    let known: BTreeMap<&str, &str> = known_text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(|l| l.split_once('\t')).collect();
    // op -> [in-scope pass, in-scope total, stretch pass, stretch total, stretch passes by folding]
    let mut table: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    let mut problems = vec![];
    let mut seen_known = 0;
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, op, in_scope) = (f[0], f[1], f[6] == "yes");
        let mut outcome = run_case(&gpu, &node.join(name), op, false);
        if !matches!(outcome, Outcome::Pass | Outcome::PassFolded) && !in_scope && run_case(&gpu, &node.join(name), op, true) == Outcome::PassFolded {
            outcome = Outcome::PassFolded;
        }
        let folded = outcome == Outcome::PassFolded;
        let pass = matches!(outcome, Outcome::Pass | Outcome::PassFolded);
        let row = table.entry(op.to_string()).or_default();
        let base = if in_scope { 0 } else { 2 };
        row[base] += pass as usize;
        row[base + 1] += 1;
        row[4] += folded as usize;
        if std::env::var("ATROUS_ONNX_VERBOSE").is_ok() {
            println!("{name}\t{}\t{outcome:?}{}", if in_scope { "in-scope" } else { "stretch" }, if folded { " (folded on the CPU)" } else { "" });
        }
        if in_scope {
            match (pass, known.get(name)) {
                (true, Some(_)) => problems.push(format!("{name} passes but is listed as a known failure: remove it from the list")),
                (false, None) => problems.push(format!("{name} (in scope) does not pass and is not listed: {outcome:?}")),
                (false, Some(_)) => seen_known += 1,
                (true, None) => {}
            }
        }
    }
    let stale: Vec<&&str> = known.keys().filter(|k| !manifest.lines().any(|l| l.split('\t').next() == Some(**k))).collect();
    assert!(stale.is_empty(), "known failures not in the manifest: {stale:?}");
    println!("{:<22} {:>14} {:>14} {:>22}", "operator", "in scope", "stretch", "(stretch by folding)");
    let mut tot = [0usize; 5];
    for (op, r) in &table {
        println!("{op:<22} {:>14} {:>14} {:>22}", format!("{}/{}", r[0], r[1]), format!("{}/{}", r[2], r[3]), r[4]);
        for i in 0..5 {
            tot[i] += r[i];
        }
    }
    println!("{:<22} {:>14} {:>14} {:>22}   ({seen_known} in-scope cases in the known-failures list)", "total", format!("{}/{}", tot[0], tot[1]), format!("{}/{}", tot[2], tot[3]), tot[4]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // the suite must actually run: every in-scope case was tried
    assert_eq!(tot[1], 96, "in-scope cases in the manifest");
}
