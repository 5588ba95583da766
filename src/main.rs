//! The `atrous` command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use atrous::gpu::Gpu;
use atrous::image_io::{self, RgbImage};
use atrous::models::Model;
use atrous::session::Session;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "atrous", version, about = "Semantic segmentation on the GPU (wgpu + WGSL kernels)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Segment images: writes OUT/<stem>.png, an 8-bit palette PNG of class indices.
    Segment {
        /// Model file (safetensors with atrous-readable metadata).
        #[arg(long)]
        model: PathBuf,
        /// Image files, or directories of images (png, jpg, jpeg).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe a model: architecture, classes, parameters, FLOPs and the memory plan.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// Input size WxH (default: the model's native or smallest accepted size).
        #[arg(long)]
        size: Option<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("atrous=info")).format_timestamp(None).init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Segment { model, inputs, out } => segment(&model, &inputs, &out),
        Cmd::Inspect { model, size } => inspect(&model, size.as_deref()).map(|_| ExitCode::SUCCESS),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Files as given, directories expanded to their images (sorted).
fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p).with_context(|| format!("reading directory {}", p.display()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && is_image(p)).collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (w, h) = s.split_once(['x', 'X']).with_context(|| format!("size `{s}` is not WxH"))?;
    Ok((h.trim().parse().context("height")?, w.trim().parse().context("width")?))
}

fn segment(model_path: &Path, inputs: &[PathBuf], out: &Path) -> Result<ExitCode> {
    let model = Model::load(model_path).with_context(|| format!("loading model {}", model_path.display()))?;
    let gpu = Gpu::new().context("opening a GPU")?;
    eprintln!("model {} ({}), {} classes; device {}", model.info.name, model.info.architecture, model.info.classes.len(), gpu.describe());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files = expand_inputs(inputs)?;
    if files.is_empty() {
        bail!("no images among the inputs");
    }
    let inputs_canon: Vec<PathBuf> = files.iter().filter_map(|f| f.canonicalize().ok()).collect();
    let mut sessions: HashMap<(usize, usize), Session> = HashMap::new();
    let mut written: HashMap<PathBuf, PathBuf> = HashMap::new();
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}").expect("valid template"));
    let t0 = Instant::now();
    let mut failed = 0usize;
    for f in &files {
        bar.set_message(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        match segment_one(&model, &gpu, &mut sessions, f, out, &inputs_canon, &mut written) {
            Ok(dst) => bar.suspend(|| eprintln!("{} -> {}", f.display(), dst.display())),
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("FAILED {}: {e:#}", f.display()));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let ok = files.len() - failed;
    eprintln!("{ok} segmented, {failed} failed, {:.2} s ({:.2} images/s)", secs, ok as f64 / secs.max(1e-9));
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn segment_one(model: &Model, gpu: &Gpu, sessions: &mut HashMap<(usize, usize), Session>, f: &Path, out: &Path, inputs: &[PathBuf], written: &mut HashMap<PathBuf, PathBuf>) -> Result<PathBuf> {
    let stem = f.file_stem().with_context(|| format!("{} has no file name", f.display()))?;
    let dst = out.join(format!("{}.png", stem.to_string_lossy()));
    if let Some(prev) = written.get(&dst) {
        bail!("{} was already written for {} (same file stem); not overwriting", dst.display(), prev.display());
    }
    if let Ok(c) = dst.canonicalize() {
        if inputs.contains(&c) {
            bail!("output {} is one of the inputs; not overwriting it", dst.display());
        }
    }
    let img = image_io::load_rgb(f)?;
    let (h, w) = model.info.run_size(img.h, img.w);
    let run: RgbImage = if (h, w) != (img.h, img.w) {
        log::info!("{}: {}x{} resized to {}x{} (model accepts {:?})", f.display(), img.w, img.h, w, h, model.info.size);
        img.resize(h, w)
    } else {
        img.clone()
    };
    let session = match sessions.entry((h, w)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let g = model.graph(h, w)?;
            v.insert(Session::new(gpu, &g, Some(model.info.normalize))?)
        }
    };
    let map = session.run_rgb(&run.data)?.resize_nearest(img.h, img.w);
    image_io::save_palette_png(&dst, &map, &model.info.palette)?;
    written.insert(dst.clone(), f.to_path_buf());
    Ok(dst)
}

fn inspect(model_path: &Path, size: Option<&str>) -> Result<()> {
    let model = Model::load(model_path).with_context(|| format!("loading model {}", model_path.display()))?;
    let (h, w) = match size {
        Some(s) => parse_size(s)?,
        None => model.info.run_size(512, 512),
    };
    let g = model.graph(h, w)?;
    let limits = atrous::plan::PlanLimits { align: 256, max_arena: u64::MAX, max_binding: u64::MAX };
    let plan = atrous::plan::Plan::new(&g, limits)?;
    println!("model: {} ({})", model.info.name, model.info.architecture);
    println!("classes: {}", model.info.classes.join(", "));
    println!("parameters in file: {}", model.info.parameters);
    println!("input: {w}x{h} (WxH), size rule {:?}, normalisation {:?}", model.info.size, model.info.normalize);
    println!("graph: {} nodes, {} tensors, {:.3} GFLOP", g.nodes.len(), g.tensors.len(), g.flops() as f64 / 1e9);
    println!("memory plan: peak arena {} B, sum of all tensors {} B, live-set lower bound {} B", plan.peak_bytes(), plan.sum_tensors, plan.live_lower_bound);
    Ok(())
}
