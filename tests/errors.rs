//! Device-memory and device-loss failures come back as typed errors, never panics: an input that
//! cannot fit is refused before anything is created or submitted, a lost device is reported by
//! every later call, and a batch goes on with the inputs that fit.

mod common;

use std::process::Command;

use atrous::error::Error;
use atrous::models::Model;
use atrous::plan::PlanLimits;
use atrous::session::Session;

#[test]
fn input_over_the_memory_budget_is_refused_before_submission() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let g = m.graph(2048, 2048).unwrap();
    let mut limits = PlanLimits::from_device(&gpu.limits());
    limits.budget = Some(64 << 20);
    match Session::with_limits(&gpu, &g, Some(m.info.normalize), limits) {
        Err(Error::OutOfDeviceMemory { bytes, limit }) => {
            assert_eq!(limit, 64 << 20);
            assert!(bytes > limit);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a 2048x2048 ESPNet plan cannot fit 64 MiB"),
    }
    // the device is still usable afterwards
    let small = m.graph(64, 64).unwrap();
    let mut s = Session::with_limits(&gpu, &small, Some(m.info.normalize), limits).unwrap();
    s.run_rgb(&vec![128u8; 64 * 64 * 3]).unwrap();
}

#[test]
fn a_lost_device_gives_typed_errors() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    // a device of its own, so that the other tests keep theirs
    let gpu = atrous::gpu::Gpu::new().unwrap();
    let m = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let g = m.graph(64, 64).unwrap();
    let mut s = Session::new(&gpu, &g, Some(m.info.normalize)).unwrap();
    s.run_rgb(&vec![128u8; 64 * 64 * 3]).unwrap();
    gpu.device.destroy();
    let _ = gpu.device.poll(wgpu::PollType::Poll);
    let e = s.run_rgb(&vec![128u8; 64 * 64 * 3]).expect_err("a destroyed device cannot run");
    assert!(matches!(e, Error::DeviceLost(_)), "{e}");
    let e = Session::new(&gpu, &g, Some(m.info.normalize)).err().expect("no new session on a lost device");
    assert!(matches!(e, Error::DeviceLost(_) | Error::Gpu { .. }), "{e}");
}

/// `atrous segment` with ATROUS_MEMORY_BUDGET: the image that does not fit is reported, the one
/// that fits is segmented, exit code 1.
#[test]
fn segment_goes_on_after_an_image_that_does_not_fit() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.png");
    image::RgbImage::from_pixel(2048, 2048, image::Rgb([90, 120, 60])).save(&big).unwrap();
    let out = dir.join("out");
    let r = Command::new(env!("CARGO_BIN_EXE_atrous"))
        .env("ATROUS_MEMORY_BUDGET", "64MiB")
        .args(["segment", "--model"])
        .arg(shared.join("models/espnet_camvid.safetensors"))
        .arg(&big)
        .arg(shared.join("data/camvid/val/images/0016E5_07959.png"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED") && stderr.contains("big.png") && stderr.contains("device memory"), "{stderr}");
    assert!(out.join("0016E5_07959.png").exists(), "{stderr}");
    assert!(!out.join("big.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
