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

/// Every variant (f32, and f16 where the family declares its element type) validates, and naga's
/// reflection of it agrees with the Rust side: the binding list (`Shader::bindings`, used to build
/// the bind-group layout) and every field of the parameter block (`Shader::param_fields`, derived
/// from the `#[repr(C)]` struct the code uploads): same names, byte offsets, sizes and scalar
/// kinds, and a Rust block that covers the WGSL struct.
#[test]
fn bindings_and_parameter_blocks_match_the_shaders() {
    use atrous::graph::DType;
    use atrous::kernels::{Arith, Bind, Shader};
    use naga::{AddressSpace, ImageClass, ScalarKind, StorageAccess, TypeInner};
    let mut checked = 0;
    let mut f16_variants = 0;
    let mut f16_arith_variants = 0;
    for shader in Shader::ALL {
        let variants = shader.dtypes().iter().flat_map(|&d| if d == DType::F16 { shader.ariths() } else { &[Arith::F32][..] }.iter().map(move |&a| (d, a)));
        for (dtype, arith) in variants {
            let src = shader.variant_source_arith(dtype, arith).expect("listed variant");
            let what = format!("{} ({}, {arith:?} arithmetic)", shader.file(), dtype.name());
            if arith == Arith::F16 {
                f16_arith_variants += 1;
                assert!(src.contains("alias C = f16;"), "{what}: the compute alias is not f16");
            }
            let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
            v.validate(&module).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
            if dtype == DType::F16 {
                f16_variants += 1;
                assert!(
                    module.types.iter().any(|(_, t)| matches!(t.inner, TypeInner::Array { base, .. } if matches!(module.types[base].inner, TypeInner::Scalar(s) if s.kind == ScalarKind::Float && s.width == 2))),
                    "{what}: no f16 array"
                );
            }
            // bindings
            let mut globals: Vec<(u32, Bind, naga::Handle<naga::Type>)> = vec![];
            for (_, g) in module.global_variables.iter() {
                let Some(b) = &g.binding else { continue };
                assert_eq!(b.group, 0, "{what}: `{:?}` in group {}", g.name, b.group);
                let kind = match g.space {
                    AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => Bind::Storage,
                    AddressSpace::Storage { .. } => Bind::StorageRead,
                    AddressSpace::Uniform => Bind::Uniform,
                    AddressSpace::Handle => match module.types[g.ty].inner {
                        TypeInner::Image { class: ImageClass::Sampled { .. }, .. } => Bind::Texture,
                        TypeInner::Image { class: ImageClass::Storage { .. }, .. } => Bind::StorageTextureRgba8,
                        ref t => panic!("{what}: unexpected handle {t:?}"),
                    },
                    s => panic!("{what}: unexpected address space {s:?}"),
                };
                globals.push((b.binding, kind, g.ty));
            }
            globals.sort_by_key(|g| g.0);
            let reflected: Vec<Bind> = globals.iter().map(|g| g.1).collect();
            assert_eq!(globals.iter().map(|g| g.0).collect::<Vec<_>>(), (0..globals.len() as u32).collect::<Vec<_>>(), "{what}: bindings not 0..n");
            assert_eq!(reflected, shader.bindings(), "{what}: binding list differs from kernels::Shader::bindings");
            // the parameter block
            let uniforms: Vec<_> = globals.iter().filter(|g| g.1 == Bind::Uniform).collect();
            assert_eq!(uniforms.len(), 1, "{what}: one uniform parameter block expected");
            let TypeInner::Struct { members, span } = &module.types[uniforms[0].2].inner else { panic!("{what}: the uniform is not a struct") };
            let rust = shader.param_fields();
            let size_kind = |ty: naga::Handle<naga::Type>| -> (usize, &'static str) {
                let (n, s) = match module.types[ty].inner {
                    TypeInner::Scalar(s) => (1, s),
                    TypeInner::Vector { size, scalar } => (size as usize, scalar),
                    ref t => panic!("{what}: parameter of type {t:?}"),
                };
                let kind = match s.kind {
                    ScalarKind::Uint => "u32",
                    ScalarKind::Float => "f32",
                    ScalarKind::Sint => "i32",
                    _ => "other",
                };
                (n * s.width as usize, kind)
            };
            for m in members {
                let name = m.name.as_deref().unwrap_or("");
                let (size, kind) = size_kind(m.ty);
                let at = rust.iter().find(|f| f.1 == m.offset as usize);
                if name.starts_with('_') {
                    // padding: the Rust block must have bytes there too
                    assert!(rust.iter().any(|f| f.1 <= m.offset as usize && m.offset as usize + size <= f.1 + f.2), "{what}: padding `{name}` at {} not covered on the Rust side", m.offset);
                    continue;
                }
                let f = at.unwrap_or_else(|| panic!("{what}: WGSL field `{name}` at offset {} has no Rust field at that offset ({rust:?})", m.offset));
                assert_eq!((f.0, f.2, f.3), (name, size, kind), "{what}: field at offset {}: Rust {:?} vs WGSL `{name}` ({size} bytes, {kind})", m.offset, f);
                checked += 1;
            }
            for f in rust.iter().filter(|f| !f.0.starts_with('_')) {
                assert!(members.iter().any(|m| m.name.as_deref() == Some(f.0)), "{what}: Rust field `{}` is not in the WGSL struct", f.0);
            }
            let rust_end = rust.iter().map(|f| f.1 + f.2).max().unwrap_or(0).next_multiple_of(16);
            assert!(rust_end >= *span as usize, "{what}: Rust block of {rust_end} bytes, WGSL struct spans {span}");
        }
    }
    assert!(checked > 100, "only {checked} fields checked");
    assert!(f16_variants >= 6, "only {f16_variants} f16 variants");
    // the convolution family computes in f16 in its third variant
    assert!(f16_arith_variants >= 1, "no family has an f16-arithmetic variant");
}
