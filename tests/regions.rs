//! Split-and-merge: the device and the CPU reference give the same regions, and those regions
//! satisfy the properties of the method (`regions::verify`) on random and real images, for both
//! predicates and several thresholds and block sizes.

mod common;

use atrous::regions::{compact, grey, split_merge_cpu, split_merge_gpu, verify, Predicate, RegionParams};

/// Random test images: noise, blocks of noise, gradients, and constant ones, at odd sizes.
fn random_images(seed: u64) -> Vec<(String, Vec<u8>, usize, usize)> {
    let mut rng = common::Rng(seed);
    let mut out = vec![];
    for kind in 0..5 {
        let (h, w) = (1 + rng.below(37), 1 + rng.below(45));
        let cell = 1 + rng.below(9);
        let blocks: Vec<u8> = (0..64 * 64).map(|_| rng.below(256) as u8).collect();
        let g: Vec<u8> = (0..h * w)
            .map(|i| {
                let (y, x) = (i / w, i % w);
                match kind {
                    0 => rng.below(256) as u8,
                    1 => blocks[(y / cell % 64) * 64 + x / cell % 64].saturating_add(rng.below(6) as u8),
                    2 => ((x * 255 / w.max(1) + y * 3) % 256) as u8,
                    3 => 77,
                    _ => (((x / cell + y / cell) % 2) * 200 + rng.below(20)) as u8,
                }
            })
            .collect();
        out.push((format!("random kind {kind} {w}x{h} seed {seed:#x}"), g, h, w));
    }
    out
}

/// Crops of real photos (CamVid frames), and one whole frame.
fn real_images() -> Vec<(String, Vec<u8>, usize, usize)> {
    let Some(shared) = common::shared() else { return vec![] };
    let mut out = vec![];
    for (i, f) in ["0016E5_07959.png", "0016E5_08059.png", "0016E5_08159.png"].iter().enumerate() {
        let p = shared.join("data/camvid/val/images").join(f);
        let img = atrous::image_io::load_rgb(&p).unwrap_or_else(|e| panic!("{e}"));
        let g = grey(&img.data);
        let (ch, cw) = (61 + 10 * i, 83 + 7 * i);
        let (y0, x0) = (100 + 20 * i, 150 + 30 * i);
        let crop: Vec<u8> = (0..ch * cw).map(|k| g[(y0 + k / cw) * img.w + x0 + k % cw]).collect();
        out.push((format!("{f} crop {cw}x{ch}"), crop, ch, cw));
        if i == 0 {
            out.push((format!("{f} {}x{}", img.w, img.h), g, img.h, img.w));
        }
    }
    out
}

fn settings() -> Vec<RegionParams> {
    let mut v = vec![];
    for (predicate, ts) in [(Predicate::Range, [0.0, 12.0, 40.0]), (Predicate::Std, [0.0, 5.0, 12.5])] {
        for t in ts {
            for min_block in [1, 4] {
                v.push(RegionParams { predicate, threshold: t, min_block });
            }
        }
    }
    v
}

#[test]
fn cpu_reference_regions_have_the_properties() {
    let mut images = random_images(0x5eed);
    images.extend(random_images(0xfeed));
    images.extend(real_images().into_iter().filter(|i| i.2 * i.3 < 20_000));
    for (name, g, h, w) in &images {
        for p in settings() {
            let (labels, _) = split_merge_cpu(g, *h, *w, &p).unwrap();
            let (ids, count) = compact(&labels);
            verify(g, *h, *w, &ids, count, &p).unwrap_or_else(|e| panic!("{name} {p:?}: {e}"));
        }
    }
}

#[test]
fn device_and_reference_give_the_same_regions() {
    let Some(gpu) = common::gpu() else { return };
    let mut images = random_images(0xabcd);
    images.extend(real_images());
    for (name, g, h, w) in &images {
        for p in settings() {
            let (cpu, _) = split_merge_cpu(g, *h, *w, &p).unwrap();
            let (dev, rounds) = split_merge_gpu(&gpu, g, *h, *w, &p).unwrap();
            assert!(dev == cpu, "{name} {p:?}: device regions differ from the reference at {} pixels", dev.iter().zip(&cpu).filter(|(a, b)| a != b).count());
            let (ids, count) = compact(&dev);
            verify(g, *h, *w, &ids, count, &p).unwrap_or_else(|e| panic!("{name} {p:?}: {e}"));
            if *h * *w > 100_000 {
                println!("{name} {p:?}: {count} regions, {rounds} rounds");
            }
        }
    }
}

#[test]
fn the_checks_catch_broken_results() {
    // a region that is not homogeneous, one that is not connected, two that could merge
    let g = [0u8, 0, 100, 100];
    let p = RegionParams { predicate: Predicate::Range, threshold: 10.0, min_block: 1 };
    assert!(verify(&g, 1, 4, &[0, 0, 1, 1], 2, &p).is_ok());
    assert!(verify(&g, 1, 4, &[0, 0, 0, 0], 1, &p).unwrap_err().contains("not homogeneous"));
    assert!(verify(&g, 1, 4, &[0, 1, 1, 0], 2, &p).unwrap_err().contains("not homogeneous"));
    let g2 = [5u8, 5, 5, 5];
    assert!(verify(&g2, 1, 4, &[0, 1, 1, 0], 2, &p).unwrap_err().contains("4-connected"));
    assert!(verify(&g2, 1, 4, &[0, 0, 1, 1], 2, &p).unwrap_err().contains("could still merge"));
    assert!(verify(&g2, 1, 4, &[0, 0, 0, 2], 3, &p).unwrap_err().contains("no pixel"));
    // std: variance of {0, 2} is 1 (std 1)
    let s = RegionParams { predicate: Predicate::Std, threshold: 1.0, min_block: 1 };
    assert!(verify(&[0, 2], 1, 2, &[0, 0], 1, &s).is_ok());
    assert!(verify(&[0, 2], 1, 2, &[0, 0], 1, &RegionParams { threshold: 0.99, ..s }).unwrap_err().contains("not homogeneous"));
    // bad parameters and sizes are errors
    assert!(split_merge_cpu(&g, 1, 4, &RegionParams { min_block: 3, ..p }).is_err());
    assert!(split_merge_cpu(&g, 1, 4, &RegionParams { threshold: -1.0, ..p }).is_err());
    assert!(split_merge_cpu(&g, 1, 4, &RegionParams { threshold: f32::NAN, ..p }).is_err());
    assert!(split_merge_cpu(&[], 0, 0, &p).is_err());
}

/// `atrous regions`: a 16-bit region image whose regions have the properties, a mean-colour
/// rendering, the count printed; the device and `--cpu` write the same file; a bad file is
/// reported and the others done; bad options are errors.
#[test]
fn regions_command_writes_labels_and_renderings() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("atrous-regions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = atrous::image_io::load_rgb(shared.join("data/camvid/val/images/0016E5_08059.png")).unwrap();
    let (h, w) = (90, 120);
    let crop: Vec<u8> = (0..h * w).flat_map(|k| img.data[((150 + k / w) * img.w + 200 + k % w) * 3..][..3].to_vec()).collect();
    let src = dir.join("crop.png");
    atrous::image_io::save_rgb_png(&src, &atrous::image_io::RgbImage { h, w, data: crop.clone() }).unwrap();
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    let run = |out: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_atrous"))
            .arg("regions")
            .arg(&src)
            .arg(&bad)
            .arg("--out")
            .arg(dir.join(out))
            .args(["--predicate", "std", "--threshold", "6", "--min-block", "2"])
            .args(extra)
            .output()
            .unwrap()
    };
    let r = run("gpu", &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED") && stderr.contains("bad.png"), "{stderr}");
    assert!(stdout.contains("crop.png: ") && stdout.contains(" regions"), "{stdout}");
    let labels = image::open(dir.join("gpu/crop.regions.png")).unwrap().into_luma16();
    let ids: Vec<u32> = labels.as_raw().iter().map(|&v| v as u32).collect();
    let count = *ids.iter().max().unwrap() as usize + 1;
    assert!(stdout.contains(&format!("{count} regions")), "{stdout}");
    let p = RegionParams { predicate: Predicate::Std, threshold: 6.0, min_block: 2 };
    verify(&grey(&crop), h, w, &ids, count, &p).unwrap();
    let mean = image::open(dir.join("gpu/crop.regions_mean.png")).unwrap().into_rgb8();
    assert_eq!(mean.dimensions(), (w as u32, h as u32));
    let r = run("cpu", &["--cpu"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(std::fs::read(dir.join("cpu/crop.regions.png")).unwrap(), std::fs::read(dir.join("gpu/crop.regions.png")).unwrap());
    // existing outputs are kept without --overwrite
    let r = run("gpu", &[]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("--overwrite"));
    for bad_opt in [&["--min-block", "3"][..], &["--threshold", "-1"], &["--predicate", "median"]] {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_atrous")).arg("regions").arg(&src).arg("--out").arg(dir.join("x")).args(bad_opt).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{bad_opt:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
