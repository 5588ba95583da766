//! ONNX models on arbitrary bytes: import, then lowering at a small size, give a graph or a
//! typed error, never a panic or an allocation the file does not justify.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(imported) = atrous::onnx::import_bytes(data, std::path::Path::new("fuzz.onnx"), None) {
        let reader = |name: &str, _t: i32| imported.tensors.get(name).cloned().ok_or_else(|| atrous::Error::MissingTensor { name: name.to_string() });
        if let Ok(l) = atrous::onnx::lower(&imported.graph, &reader, 16, 16, &Default::default()) {
            let _ = l.graph.validate();
        }
        let _ = imported.to_safetensors();
    }
});
