//! The model zoo: one card per supported model (`models/*.toml`, compiled in), fetched from its
//! upstream (or a mirror), checked against the card's SHA-256, converted natively to safetensors
//! with the card's metadata, and cached.
//!
//! * `ATROUS_CACHE_DIR` overrides the cache (default `$XDG_CACHE_HOME/atrous`, else
//!   `~/.cache/atrous`); converted files are `<cache>/<name>.safetensors`.
//! * `ATROUS_MODEL_MIRROR` replaces the upstream host: the file is fetched from
//!   `$ATROUS_MODEL_MIRROR/<upstream file name>`.
//!
//! Downloads go to a temporary file in the cache directory that is removed on any failure; the
//! converted file appears under its final name only once complete (rename), so an interrupted
//! transfer never leaves a half-written model behind.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::convert::{pytorch, tflite};
use crate::error::{Error, Result};

pub const ENV_CACHE: &str = "ATROUS_CACHE_DIR";
pub const ENV_MIRROR: &str = "ATROUS_MODEL_MIRROR";

const CARDS: [(&str, &str); 4] = [
    ("espnet-camvid.toml", include_str!("../models/espnet-camvid.toml")),
    ("espnet-cityscapes.toml", include_str!("../models/espnet-cityscapes.toml")),
    ("espnetv2-voc.toml", include_str!("../models/espnetv2-voc.toml")),
    ("deeplabv3-mnv2-voc.toml", include_str!("../models/deeplabv3-mnv2-voc.toml")),
];

/// Cards of models that are in `../shared` for their numerics but not in the zoo (weak or random
/// weights, or an upstream format atrous does not read): never downloaded.
const NUMERICS_CARDS: [(&str, &str); 4] = [
    ("enet-camvid.toml", include_str!("../models/enet-camvid.toml")),
    ("unet-rbm.toml", include_str!("../models/unet-rbm.toml")),
    ("fcn8s-vgg16-w8.toml", include_str!("../models/fcn8s-vgg16-w8.toml")),
    ("segnet-vgg16bn-w4.toml", include_str!("../models/segnet-vgg16bn-w4.toml")),
];

/// A numerics-only model card (see `models/*.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericsCard {
    pub name: String,
    pub architecture: String,
    pub model_definition: String,
    pub dataset: String,
    pub licence: String,
    /// Why this model is for numerics only.
    pub numerics_only: String,
    /// Its file, relative to `../shared`.
    pub shared_file: String,
    pub source: String,
    pub input: String,
    pub classes: Vec<String>,
}

/// Every numerics-only card.
pub fn numerics_cards() -> Result<Vec<NumericsCard>> {
    NUMERICS_CARDS.iter().map(|(f, s)| toml::from_str(s).map_err(|e| Error::Metadata { key: format!("models/{f}"), reason: e.to_string() })).collect()
}

#[derive(Clone, Debug, Deserialize)]
pub struct Card {
    pub name: String,
    pub architecture: String,
    pub model_definition: String,
    pub dataset: String,
    pub licence: String,
    pub bn_eps: Option<f64>,
    pub upstream: Upstream,
    pub input: Input,
    pub classes: Classes,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Upstream {
    pub repository: String,
    pub commit: String,
    pub path: String,
    pub url: String,
    /// The upstream file name (also its name on a mirror).
    pub file: String,
    pub sha256: String,
    /// `pytorch` (legacy or zip checkpoint) or `tflite`.
    pub format: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Input {
    pub channel_order: String,
    pub formula: String,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub pre_scale: f64,
    pub post_scale: f64,
    pub multiple_of: Option<usize>,
    pub fixed: Option<[usize; 2]>,
    pub run_size: Option<[usize; 2]>,
    pub size_note: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Classes {
    pub names: Vec<String>,
    pub palette: Vec<[u8; 3]>,
}

/// Every card, parsed (a malformed card is a bug in atrous: the tests parse them all).
pub fn cards() -> Result<Vec<Card>> {
    CARDS.iter().map(|(f, s)| toml::from_str::<Card>(s).map_err(|e| Error::Metadata { key: format!("models/{f}"), reason: e.to_string() })).collect()
}

pub fn card(name: &str) -> Result<Option<Card>> {
    Ok(cards()?.into_iter().find(|c| c.name == name))
}

/// The cache directory (not created).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(ENV_CACHE) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("atrous");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("atrous"),
        None => std::env::temp_dir().join("atrous-cache"),
    }
}

/// Where one fetch gets its file and puts the result.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub cache: PathBuf,
    /// Base URL replacing the upstream location (`<mirror>/<file>`).
    pub mirror: Option<String>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl FetchOptions {
    /// From the environment (`ATROUS_CACHE_DIR`, `ATROUS_MODEL_MIRROR`).
    pub fn from_env() -> Self {
        FetchOptions { cache: cache_dir(), mirror: std::env::var(ENV_MIRROR).ok().filter(|m| !m.is_empty()), progress: true }
    }
}

impl Card {
    pub fn cached_path(&self, cache: &Path) -> PathBuf {
        cache.join(format!("{}.safetensors", self.name))
    }

    pub fn source_url(&self, mirror: Option<&str>) -> String {
        match mirror {
            Some(m) => format!("{}/{}", m.trim_end_matches('/'), self.upstream.file),
            None => self.upstream.url.clone(),
        }
    }

    /// The metadata written into the converted file: what atrous's loader reads, from the card.
    pub fn metadata(&self, extra: &[(String, String)]) -> HashMap<String, String> {
        let i = &self.input;
        let order = i.channel_order.to_ascii_lowercase();
        let input = serde_json::json!({
            "layout": "NCHW float32",
            "channel_order": i.channel_order,
            "formula": i.formula,
            format!("mean_{order}"): i.mean,
            format!("std_{order}"): i.std,
            "size": i.size_note,
        });
        let normalize = serde_json::json!({
            "order": if order == "bgr" { "Bgr" } else { "Rgb" },
            "pre_scale": i.pre_scale,
            "mean": i.mean,
            "std": i.std,
            "post_scale": i.post_scale,
        });
        let mut m = HashMap::from([
            ("name".to_string(), self.name.clone()),
            ("architecture".to_string(), self.architecture.clone()),
            ("model_definition".to_string(), self.model_definition.clone()),
            ("dataset".to_string(), self.dataset.clone()),
            ("license".to_string(), self.licence.clone()),
            ("source".to_string(), format!("{}@{} {}", self.upstream.repository, self.upstream.commit, self.upstream.path)),
            ("source_sha256".to_string(), self.upstream.sha256.clone()),
            ("num_classes".to_string(), self.classes.names.len().to_string()),
            ("classes".to_string(), serde_json::to_string(&self.classes.names).expect("serialisable")),
            ("palette_rgb".to_string(), serde_json::to_string(&self.classes.palette).expect("serialisable")),
            ("input".to_string(), input.to_string()),
            ("atrous_normalize".to_string(), normalize.to_string()),
            ("converted_by".to_string(), format!("atrous {} (native {} converter)", env!("CARGO_PKG_VERSION"), self.upstream.format)),
        ]);
        if let Some(e) = self.bn_eps {
            m.insert("bn_eps".into(), e.to_string());
        }
        if let Some([h, w]) = self.input.run_size {
            m.insert("atrous_run_size".into(), format!("[{h}, {w}]"));
        }
        m.extend(extra.iter().cloned());
        m
    }

    /// Checks the SHA-256 of the upstream bytes and converts them to safetensors bytes.
    pub fn convert(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let got = sha256_hex(bytes);
        if !got.eq_ignore_ascii_case(&self.upstream.sha256) {
            return Err(Error::HashMismatch { file: self.upstream.file.clone(), expected: self.upstream.sha256.clone(), got });
        }
        let file = &self.upstream.file;
        let (tensors, extra): (Vec<NamedTensor>, Vec<(String, String)>) = match self.upstream.format.as_str() {
            "pytorch" => (pytorch::read_checkpoint(bytes, file)?.into_iter().map(|t| (t.name, t.shape, t.data)).collect(), vec![]),
            "tflite" => {
                let mut f = vec![];
                let mut ints = serde_json::Map::new();
                for c in tflite::read_constants(bytes, file)? {
                    match c {
                        tflite::Constant::F32 { name, shape, data } => f.push((name, shape, data)),
                        tflite::Constant::I32 { name, data, .. } => {
                            ints.insert(name, serde_json::json!(data));
                        }
                    }
                }
                (f, vec![("int32_constants".to_string(), serde_json::Value::Object(ints).to_string())])
            }
            other => return Err(Error::Metadata { key: format!("{}.upstream.format", self.name), reason: format!("unknown format `{other}`") }),
        };
        let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, d)| bytemuck::cast_slice::<f32, u8>(d).to_vec()).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((n, s, _), b)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map_err(|e| Error::Checkpoint { file: file.clone(), reason: format!("{n}: {e}") })?)))
            .collect::<Result<_>>()?;
        let mut meta = self.metadata(&extra);
        meta.insert("tensors".into(), tensors.len().to_string());
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Checkpoint { file: file.clone(), reason: e.to_string() })
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes a temporary file unless disarmed.
struct TempFile(PathBuf, bool);

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The largest download accepted (the zoo's checkpoints are 2-30 MB): `ATROUS_MAX_DOWNLOAD`
/// bytes (e.g. `512MiB`), default 1 GiB. A larger announced or actual length is an error before
/// anything that size is allocated.
pub fn max_download() -> u64 {
    std::env::var("ATROUS_MAX_DOWNLOAD").ok().and_then(|s| crate::plan::parse_bytes(&s)).unwrap_or(1 << 30)
}

/// Connect and per-read timeouts of downloads: `ATROUS_DOWNLOAD_TIMEOUT` seconds, default 30. A
/// server that never answers or stalls mid-transfer gives a `Download` error, not a hang.
pub fn download_timeout() -> std::time::Duration {
    std::time::Duration::from_secs_f64(std::env::var("ATROUS_DOWNLOAD_TIMEOUT").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0).unwrap_or(30.0))
}

/// Downloads `url` completely into memory (checking the announced length against
/// [`max_download`] and against what arrives), with a progress bar and timeouts.
fn download(url: &str, progress: bool) -> Result<Vec<u8>> {
    let derr = |reason: String| Error::Download { url: url.to_string(), reason };
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).map_err(|e| derr(e.to_string()));
    }
    let t = download_timeout();
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_connect(Some(t)).timeout_recv_response(Some(t)).timeout_per_read(Some(t)).build().into();
    let resp = agent.get(url).call().map_err(|e| derr(format!("{e} (timeouts: {} s; ATROUS_DOWNLOAD_TIMEOUT)", t.as_secs_f64())))?;
    let len: Option<u64> = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let ceiling = max_download();
    if let Some(l) = len.filter(|&l| l > ceiling) {
        return Err(derr(format!("the server announces {l} bytes, more than the {ceiling}-byte limit (ATROUS_MAX_DOWNLOAD)")));
    }
    let bar = if progress { indicatif::ProgressBar::new(len.unwrap_or(0)) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}").expect("valid template"));
    bar.set_message(format!("downloading {url}"));
    let mut body = resp.into_body();
    let mut reader = body.with_config().limit(ceiling).reader();
    let mut out = Vec::with_capacity(len.unwrap_or(0).min(ceiling) as usize);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| derr(format!("transfer interrupted after {} bytes: {e}", out.len())))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        bar.set_position(out.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(l) = len {
        if out.len() as u64 != l {
            return Err(derr(format!("transfer interrupted: {} of {l} bytes", out.len())));
        }
    }
    Ok(out)
}

/// The converted file for `card`: from the cache, or downloaded, checked, converted and cached.
pub fn fetch(card: &Card, opts: &FetchOptions) -> Result<PathBuf> {
    let dst = card.cached_path(&opts.cache);
    if dst.is_file() {
        return Ok(dst);
    }
    std::fs::create_dir_all(&opts.cache).map_err(|e| Error::io(&opts.cache, e))?;
    let url = card.source_url(opts.mirror.as_deref());
    if opts.progress {
        eprintln!("model {}: not in the cache {}; fetching {url}", card.name, opts.cache.display());
    }
    let raw = download(&url, opts.progress)?;
    if opts.progress {
        eprintln!("model {}: {} bytes, checking SHA-256 and converting ({})", card.name, raw.len(), card.upstream.format);
    }
    let converted = card.convert(&raw)?;
    let tmp = opts.cache.join(format!(".{}.{}.partial", card.name, std::process::id()));
    let mut guard = TempFile(tmp.clone(), false);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&converted).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    guard.1 = true;
    if opts.progress {
        eprintln!("model {}: cached as {}", card.name, dst.display());
    }
    Ok(dst)
}

/// A model argument: an existing file as it is, else a card name (fetched into the cache if
/// needed).
pub fn resolve(arg: &str, opts: &FetchOptions) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    match card(arg)? {
        Some(c) => fetch(&c, opts),
        None => Err(Error::UnknownModel(arg.to_string())),
    }
}

/// A converted tensor: name, shape, float32 data.
type NamedTensor = (String, Vec<usize>, Vec<f32>);
