//! Every `shaders/*.wgsl` parses and validates with naga, and every file is registered as a kernel
//! family (so no shader ships untested or unused).

use std::path::PathBuf;

#[test]
fn every_shader_validates_with_naga() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("shaders/ exists").map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wgsl")).collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files found in {}", dir.display());
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", f.display(), e.emit_to_string(&src)));
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        v.validate(&module).unwrap_or_else(|e| panic!("{}: {}", f.display(), e.emit_to_string(&src)));
        assert!(module.entry_points.iter().any(|e| e.stage == naga::ShaderStage::Compute), "{}: no compute entry point", f.display());
    }
    // The registry names exactly these files.
    let registered: Vec<&str> = atrous::kernels::Shader::ALL.iter().map(|s| s.file()).collect();
    let on_disk: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for f in &on_disk {
        assert!(registered.contains(&f.as_str()), "{f} is not registered in kernels::Shader");
    }
    assert_eq!(registered.len(), on_disk.len(), "registered {registered:?} vs on disk {on_disk:?}");
}
