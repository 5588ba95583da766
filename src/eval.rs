//! Dataset evaluation: images and label maps paired by file stem, a confusion matrix over the
//! dataset, the metrics of [`crate::metrics`], time per image and device memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::image_io;
use crate::metrics::{Confusion, Metrics};
use crate::models::Model;
use crate::session::Session;

/// Image file extensions read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// (image, label) pairs, and the images that have no label.
pub type Pairing = (Vec<(PathBuf, PathBuf)>, Vec<PathBuf>);

/// Pairs every image in `images` with the PNG of the same stem in `labels`. Returns the pairs
/// (sorted) and the images that have no label.
pub fn pair_by_stem(images: &Path, labels: &Path) -> Result<Pairing> {
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d).map_err(|e| Error::io(d, e))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && is_image(p)).collect();
        v.sort();
        Ok(v)
    };
    let by_stem: HashMap<String, PathBuf> = list(labels)?.into_iter().filter_map(|p| p.file_stem().map(|s| (s.to_string_lossy().into_owned(), p.clone()))).collect();
    let (mut pairs, mut lonely) = (vec![], vec![]);
    for img in list(images)? {
        match img.file_stem().and_then(|s| by_stem.get(&*s.to_string_lossy())) {
            Some(l) => pairs.push((img, l.clone())),
            None => lonely.push(img),
        }
    }
    Ok((pairs, lonely))
}

/// Output names that are not ground-truth classes (ESPNet's `void` and `ignore` outputs).
pub fn is_extra_class(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "void" | "ignore" | "unlabeled" | "unlabelled")
}

/// What one evaluation found.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub metrics: Metrics,
    pub confusion: Confusion,
    /// Which model outputs are ground-truth classes.
    pub real: Vec<bool>,
    pub images: usize,
    pub failed: Vec<(PathBuf, String)>,
    /// Per evaluated image: upload, one submission and class-map readback, in milliseconds.
    pub ms_per_image: Vec<f64>,
    /// Device memory held by atrous's sessions after each image: peak and mean, bytes.
    pub peak_device_bytes: u64,
    pub mean_device_bytes: f64,
}

/// Evaluates `model` on `pairs`. `ignore` lists label values to skip (255 and CamVid's 11, say);
/// an ignored value that is also a model output makes that output an extra one. `progress` is
/// called after each pair with its outcome.
pub fn evaluate(model: &Model, gpu: &Gpu, pairs: &[(PathBuf, PathBuf)], ignore: &[u8], progress: impl FnMut(&Path, &std::result::Result<(), String>)) -> EvalReport {
    evaluate_with(model, gpu, pairs, ignore, crate::session::Precision::F32, progress)
}

/// [`evaluate`] with sessions of the given storage precision.
pub fn evaluate_with(model: &Model, gpu: &Gpu, pairs: &[(PathBuf, PathBuf)], ignore: &[u8], precision: crate::session::Precision, progress: impl FnMut(&Path, &std::result::Result<(), String>)) -> EvalReport {
    evaluate_crf(model, gpu, pairs, ignore, precision, None, progress)
}

/// [`evaluate_with`], the class maps refined by a dense CRF when `crf` is given (the time per
/// image then includes it).
pub fn evaluate_crf(
    model: &Model,
    gpu: &Gpu,
    pairs: &[(PathBuf, PathBuf)],
    ignore: &[u8],
    precision: crate::session::Precision,
    crf: Option<crate::crf::CrfParams>,
    mut progress: impl FnMut(&Path, &std::result::Result<(), String>),
) -> EvalReport {
    let n = model.info.classes.len();
    let real: Vec<bool> = (0..n).map(|c| !is_extra_class(&model.info.classes[c]) && !ignore.contains(&(c as u8))).collect();
    let mut conf = Confusion::new(n);
    let mut sessions: HashMap<(usize, usize), Session> = HashMap::new();
    let (mut ms, mut failed, mut mem) = (vec![], vec![], vec![]);
    for (img_path, label_path) in pairs {
        let r = (|| -> Result<()> {
            let img = image_io::load_rgb(img_path)?;
            let label = image_io::load_index_png(label_path)?;
            if (label.h, label.w) != (img.h, img.w) {
                return Err(Error::Image { path: label_path.clone(), reason: format!("label is {}x{}, image {}x{}", label.w, label.h, img.w, img.h) });
            }
            let (h, w) = model.info.run_size(img.h, img.w);
            let run = if (h, w) == (img.h, img.w) { img.clone() } else { img.resize(h, w) };
            let s = match sessions.entry((h, w)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Session::with_options(gpu, &model.graph(h, w)?, crate::session::SessionOptions { normalize: model.info.pixel_head(), precision, crf, ..Default::default() })?)
                }
            };
            let t0 = Instant::now();
            let (map, _) = model.info.run_image(s, &run.data, None)?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            let map = map.resize_nearest(img.h, img.w);
            conf.add(&label.data, &map.data, |g| ignore.contains(&g), &real);
            mem.push(sessions.values().map(|s| s.device_bytes()).sum::<u64>());
            Ok(())
        })()
        .map_err(|e| e.to_string());
        progress(img_path, &r);
        if let Err(e) = r {
            failed.push((img_path.clone(), e));
        }
    }
    let metrics = conf.metrics(&real);
    EvalReport {
        metrics,
        real,
        images: pairs.len() - failed.len(),
        failed,
        peak_device_bytes: mem.iter().copied().max().unwrap_or(0),
        mean_device_bytes: if mem.is_empty() { 0.0 } else { mem.iter().sum::<u64>() as f64 / mem.len() as f64 },
        ms_per_image: ms,
        confusion: conf,
    }
}
