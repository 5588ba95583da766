//! The model zoo end to end against a loopback HTTP server that serves ../shared/models/original:
//! download, SHA-256 check, native conversion, cache; a corrupted copy, a server error and an
//! interrupted transfer each give a typed error and leave nothing in the cache.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use atrous::error::Error;
use atrous::zoo::{self, FetchOptions};

/// Serves `root` on 127.0.0.1: `/ok/<file>`, `/corrupt/<file>` (one byte flipped), `/error/<file>`
/// (HTTP 500), `/cut/<file>` (the full length announced, half the body sent), `/huge/<file>` (a
/// 1 TB `Content-Length`), `/max/<file>` (`u64::MAX`) and `/stall/<file>` (headers, then 5 s of
/// silence). Returns the base
/// URL and the request counter. The thread lives as long as the test process.
fn serve(root: PathBuf) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1000) {
            let Ok(mut s) = stream else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            let (mode, file) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let body = std::fs::read(root.join(file)).ok().filter(|_| !file.contains(".."));
            let _ = match (mode, body) {
                (_, None) => s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                ("error", _) => s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                ("huge", _) => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\nConnection: close\r\n\r\nsome bytes"),
                ("max", _) => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\nConnection: close\r\n\r\nsome bytes"),
                ("stall", Some(b)) => {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len());
                    let r = s.write_all(head.as_bytes()).and_then(|_| s.flush());
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    r
                }
                (mode, Some(mut b)) => {
                    if mode == "corrupt" {
                        let i = b.len() / 2;
                        b[i] ^= 0x40;
                    }
                    let head = format!("HTTP/1.1 200 OK\\r\\nContent-Length: {}\\r\\nContent-Type: application/octet-stream\\r\\nConnection: close\\r\\n\\r\\n", b.len()).replace("\\r\\n", "\r\n");
                    let send = if mode == "cut" { &b[..b.len() / 2] } else { &b[..] };
                    s.write_all(head.as_bytes()).and_then(|_| s.write_all(send))
                }
            };
            let _ = s.flush();
        }
    });
    (base, count)
}

fn temp_cache(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atrous-zoo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cache_is_empty(d: &Path) -> bool {
    !d.exists() || std::fs::read_dir(d).unwrap().next().is_none()
}

#[test]
fn cards_match_the_original_files() {
    let Some(shared) = common::shared() else { return };
    let cards = zoo::cards().unwrap();
    assert_eq!(cards.len(), 4);
    for c in &cards {
        let bytes = std::fs::read(shared.join("models/original").join(&c.upstream.file)).unwrap();
        assert_eq!(zoo::sha256_hex(&bytes), c.upstream.sha256, "{}", c.name);
        assert_eq!(c.classes.names.len(), c.classes.palette.len(), "{}", c.name);
        assert!(c.upstream.url.contains(&c.upstream.commit) && c.upstream.url.ends_with(&c.upstream.path), "{}", c.name);
    }
}

/// Converting through the cards gives the shared files' tensors exactly and the same model
/// information (normalisation, classes, palette, size rule).
#[test]
fn cards_convert_to_the_shared_files() {
    let Some(shared) = common::shared() else { return };
    for (name, file) in [("espnet-camvid", "espnet_camvid"), ("espnet-cityscapes", "espnet_cityscapes"), ("espnetv2-voc", "espnetv2_s2.0_voc384"), ("deeplabv3-mnv2-voc", "deeplabv3_mnv2_voc257")] {
        let c = zoo::card(name).unwrap().unwrap();
        let raw = std::fs::read(shared.join("models/original").join(&c.upstream.file)).unwrap();
        let converted = c.convert(&raw).unwrap();
        let want_bytes = std::fs::read(shared.join(format!("models/{file}.safetensors"))).unwrap();
        let (a, b) = (safetensors::SafeTensors::deserialize(&converted).unwrap(), safetensors::SafeTensors::deserialize(&want_bytes).unwrap());
        assert_eq!(a.len(), b.len(), "{name}");
        for (n, t) in b.iter() {
            let u = a.tensor(n).unwrap_or_else(|_| panic!("{name}: `{n}` missing"));
            assert_eq!((u.shape(), u.dtype()), (t.shape(), t.dtype()), "{name}: {n}");
            assert!(u.data() == t.data(), "{name}: `{n}` differs");
        }
        let m1 = atrous::models::Model::from_weights(atrous::weights::Weights::from_bytes(converted, name).unwrap()).unwrap();
        let m2 = atrous::models::Model::load(shared.join(format!("models/{file}.safetensors"))).unwrap();
        assert_eq!(m1.info.normalize, m2.info.normalize, "{name}");
        assert_eq!(m1.info.classes, m2.info.classes, "{name}");
        assert_eq!(m1.info.palette[..m1.info.classes.len()], m2.info.palette[..m2.info.classes.len()], "{name}");
        assert_eq!(m1.info.size, m2.info.size, "{name}");
        assert_eq!(m1.info.architecture, m2.info.architecture, "{name}");
        eprintln!("{name}: {} tensors equal to {file}.safetensors; same model information", b.len());
    }
}

#[test]
fn fetch_through_a_mirror_then_from_the_cache() {
    let Some(shared) = common::shared() else { return };
    let (base, count) = serve(shared.join("models/original"));
    let cache = temp_cache("ok");
    let c = zoo::card("deeplabv3-mnv2-voc").unwrap().unwrap();
    let opts = FetchOptions { cache: cache.clone(), mirror: Some(format!("{base}/ok")), progress: false };
    let p = zoo::fetch(&c, &opts).unwrap();
    assert_eq!(p, cache.join("deeplabv3-mnv2-voc.safetensors"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    atrous::models::Model::load(&p).unwrap();
    // a second fetch is a cache hit: no request
    assert_eq!(zoo::fetch(&c, &opts).unwrap(), p);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // only the converted file is there
    let names: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["deeplabv3-mnv2-voc.safetensors".to_string()]);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn corrupted_download_is_a_hash_mismatch_and_caches_nothing() {
    let Some(shared) = common::shared() else { return };
    let (base, _) = serve(shared.join("models/original"));
    let cache = temp_cache("corrupt");
    let c = zoo::card("espnet-camvid").unwrap().unwrap();
    let e = zoo::fetch(&c, &FetchOptions { cache: cache.clone(), mirror: Some(format!("{base}/corrupt")), progress: false }).err().unwrap();
    assert!(matches!(&e, Error::HashMismatch { file, .. } if file == "espnet_p_2_q_8_camvid.pth"), "{e}");
    assert!(cache_is_empty(&cache));
}

#[test]
fn server_error_and_interrupted_transfer_are_download_errors() {
    let Some(shared) = common::shared() else { return };
    let (base, _) = serve(shared.join("models/original"));
    let c = zoo::card("espnetv2-voc").unwrap().unwrap();
    for mode in ["error", "cut"] {
        let cache = temp_cache(mode);
        let e = zoo::fetch(&c, &FetchOptions { cache: cache.clone(), mirror: Some(format!("{base}/{mode}")), progress: false }).err().unwrap();
        eprintln!("{mode}: {e}");
        assert!(matches!(&e, Error::Download { url, .. } if url.ends_with("espnetv2_s_2.0_pascal_384x384.pth")), "{mode}: {e}");
        if mode == "error" {
            assert!(e.to_string().contains("500"), "{e}");
        }
        assert!(cache_is_empty(&cache), "{mode}: something was left in the cache");
    }
}

#[test]
fn unknown_model_name_is_a_clear_error() {
    let e = zoo::resolve("no-such-model", &FetchOptions { cache: temp_cache("unknown"), mirror: None, progress: false }).err().unwrap();
    assert!(matches!(e, Error::UnknownModel(_)), "{e}");
}

/// The fresh-machine path: with only ATROUS_MODEL_MIRROR (and a scratch cache), `atrous segment
/// --model espnet-camvid` fetches, converts, caches and segments, and the class map equals the one
/// from ../shared/models/espnet_camvid.safetensors.
#[test]
fn segment_by_zoo_name_equals_the_shared_file() {
    let Some(shared) = common::shared() else { return };
    if common::gpu().is_none() {
        return;
    }
    let (base, count) = serve(shared.join("models/original"));
    let cache = temp_cache("cli");
    let out = temp_cache("cli-out");
    let img = shared.join("data/camvid/val/images/0016E5_07959.png");
    let run = |model: &str, dir: &Path| {
        let r = Command::new(env!("CARGO_BIN_EXE_atrous"))
            .env("ATROUS_MODEL_MIRROR", format!("{base}/ok"))
            .env("ATROUS_CACHE_DIR", &cache)
            .args(["segment", "--model", model])
            .arg(&img)
            .arg("--out")
            .arg(dir)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stderr).into_owned()
    };
    let log = run("espnet-camvid", &out.join("zoo"));
    assert!(log.contains("fetching") && log.contains("cached as"), "{log}");
    assert!(cache.join("espnet-camvid.safetensors").is_file());
    run(shared.join("models/espnet_camvid.safetensors").to_str().unwrap(), &out.join("shared"));
    let a = atrous::image_io::load_index_png(out.join("zoo/0016E5_07959.png")).unwrap();
    let b = atrous::image_io::load_index_png(out.join("shared/0016E5_07959.png")).unwrap();
    assert_eq!(a, b);
    // and again by name: a cache hit, no download
    let n = count.load(Ordering::SeqCst);
    let log = run("espnet-camvid", &out.join("again"));
    assert!(!log.contains("fetching"), "{log}");
    assert_eq!(count.load(Ordering::SeqCst), n);
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&out);
}

/// The numerics-only cards parse, name a file in ../shared that atrous loads, and agree with it on
/// the classes; they are listed but never fetched.
#[test]
fn numerics_only_cards_describe_their_shared_files() {
    let cards = atrous::zoo::numerics_cards().unwrap();
    assert_eq!(cards.len(), 4);
    for c in &cards {
        assert!(atrous::zoo::card(&c.name).unwrap().is_none(), "{} must not be in the zoo", c.name);
        assert!(!c.numerics_only.is_empty());
    }
    let Some(shared) = common::shared() else { return };
    for c in &cards {
        let m = atrous::models::Model::load(shared.join(&c.shared_file)).unwrap();
        assert_eq!(m.info.classes, c.classes, "{}", c.name);
    }
}

/// Hostile servers: an announced length of 1 TB or u64::MAX is refused before anything that size
/// is allocated (no abort), and a server that stalls after its headers times out; each is a
/// `Download` error through the CLI (its error exit code, not a panic), nothing cached.
#[test]
fn huge_announcements_and_stalls_are_download_errors() {
    let Some(shared) = common::shared() else { return };
    let (base, _) = serve(shared.join("models/original"));
    for (mode, want) in [("huge", "limit"), ("max", "limit"), ("stall", "tim")] {
        let cache = temp_cache(&format!("hostile-{mode}"));
        let t0 = std::time::Instant::now();
        let r = Command::new(env!("CARGO_BIN_EXE_atrous"))
            .env("ATROUS_MODEL_MIRROR", format!("{base}/{mode}"))
            .env("ATROUS_CACHE_DIR", &cache)
            .env("ATROUS_DOWNLOAD_TIMEOUT", "1")
            .args(["models", "--fetch", "espnet-camvid"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        eprintln!("{mode}: {:?} after {:.1} s: {}", r.status.code(), t0.elapsed().as_secs_f64(), err.trim());
        // 2: the CLI's error exit (a panic would be 101)
        assert_eq!(r.status.code(), Some(2), "{mode}: {err}");
        assert!(err.contains("download") && err.to_lowercase().contains(want), "{mode}: {err}");
        assert!(cache_is_empty(&cache), "{mode}: something was cached");
    }
}
