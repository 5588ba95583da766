//! The `atrous` command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use atrous::gpu::Gpu;
use atrous::image_io::{self, RgbImage};
use atrous::models::Model;
use atrous::session::{Precision, Session, SessionOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "atrous", version, about = "Semantic segmentation on the GPU (wgpu + WGSL kernels)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Set when writing standard output failed (a full disk, `> /dev/full`): the exit code says so.
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

// `println!` and `eprintln!` panic when the stream cannot be written; these never do. Diagnostics
// on standard error are best effort; a failed write of standard output makes the exit code 1.
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            STDOUT_FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }};
}
macro_rules! eprintln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[derive(Subcommand)]
enum Cmd {
    /// Segment images: writes OUT/<stem>.png, an 8-bit palette PNG of class indices.
    Segment {
        /// Model: a safetensors file, or a zoo name (`atrous models`), fetched and cached on first
        /// use. The default, DeepLabV3-MobileNetV2 on PASCAL VOC, is built in: no download.
        #[arg(long, default_value = atrous::models::EMBEDDED_NAME)]
        model: String,
        /// Image files, or directories of images (png, jpg, jpeg).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Also write OUT/<stem>_overlay.png: the image blended with the class colours.
        #[arg(long)]
        overlay: bool,
        /// Opacity of the class colours in the overlay.
        #[arg(long, default_value_t = 0.5, value_parser = parse_alpha)]
        alpha: f32,
        /// Replace existing outputs; without it an image whose outputs exist is skipped (so an
        /// interrupted batch resumes where it stopped).
        #[arg(long)]
        overwrite: bool,
        /// Also write OUT/<stem>.probs.safetensors: per-class probabilities (softmax, float32
        /// [classes, height, width] at the size the model ran at).
        #[arg(long)]
        probs: bool,
        /// Refine with a dense CRF on the GPU: `deeplab` (DeepLab v2's setting), `default`
        /// (Krähenbühl's), or `w1=..,theta_alpha=..,theta_beta=..,w2=..,theta_gamma=..,iters=..`
        /// (after a setting name, overrides it; alone, overrides `default`).
        #[arg(long, value_parser = parse_crf)]
        crf: Option<atrous::crf::CrfParams>,
        /// Precision: f32; f16 (feature maps, input and logits as f16, multiply-adds in f32;
        /// needs SHADER_F16); f16-compute (the convolutions' multiply-adds in f16 as well:
        /// faster on GPUs, flips up to ~0.8% of pixels); auto (f16 on a GPU that has it, f32 on
        /// a software adapter).
        #[arg(long, default_value = "f32")]
        precision: String,
        #[command(flatten)]
        pixels: PixelArgs,
    },
    /// Evaluate on a labelled dataset: confusion matrix, pixel accuracy, mean class accuracy,
    /// mean IoU, frequency-weighted IoU, per-class IoU, time per image, device memory.
    Eval {
        /// Model file or zoo name.
        #[arg(long)]
        model: String,
        /// Directory of images.
        #[arg(long)]
        images: PathBuf,
        /// Directory of label maps (8-bit grayscale or indexed PNGs of class indices), paired with
        /// the images by file stem.
        #[arg(long)]
        labels: PathBuf,
        /// Label value to ignore (repeatable; default 255). An ignored value that is also a model
        /// output (CamVid's void = 11) makes that output an always-wrong extra class.
        #[arg(long)]
        ignore: Vec<u8>,
        /// Refine with a dense CRF on the GPU: `deeplab` (DeepLab v2's setting), `default`
        /// (Krähenbühl's), or `w1=..,theta_alpha=..,theta_beta=..,w2=..,theta_gamma=..,iters=..`
        /// (after a setting name, overrides it; alone, overrides `default`).
        #[arg(long, value_parser = parse_crf)]
        crf: Option<atrous::crf::CrfParams>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Precision: f32; f16 (feature maps, input and logits as f16, multiply-adds in f32;
        /// needs SHADER_F16); f16-compute (the convolutions' multiply-adds in f16 as well:
        /// faster on GPUs, flips up to ~0.8% of pixels); auto (f16 on a GPU that has it, f32 on
        /// a software adapter).
        #[arg(long, default_value = "f32")]
        precision: String,
        #[command(flatten)]
        pixels: PixelArgs,
    },
    /// List the model zoo and what is cached (ATROUS_CACHE_DIR; downloads from ATROUS_MODEL_MIRROR
    /// when set).
    Models {
        /// Fetch (download, check, convert, cache) these zoo models now.
        #[arg(long)]
        fetch: Vec<String>,
    },
    /// Describe a model: architecture, classes, parameters, FLOPs per layer and the memory plan.
    Inspect {
        /// Model file or zoo name.
        #[arg(long, required_unless_present = "arch")]
        model: Option<String>,
        /// Instead of a file: an architecture at its full width with zero weights, to plan it
        /// without its weights (`fcn8s-vgg16`, `segnet-vgg16bn`).
        #[arg(long, conflicts_with = "model")]
        arch: Option<String>,
        /// Input size WxH (default: the model's run size, or 512x512).
        #[arg(long)]
        size: Option<String>,
        /// JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Storage precision: f32, f16 (feature maps, input and logits as f16; needs SHADER_F16),
        /// the plan's arenas are planned with it.
        #[arg(long, default_value = "f32")]
        precision: String,
    },
    /// Run raw tensors through a model: reads the graph's inputs from a safetensors file (a single
    /// input may be called `input`; NCHW or CHW; F32, F16, BF16, F64, or U8 as raw values) and writes every graph
    /// output — `logits` (F32, NCHW) and `classes` (the class map, U8, HxW) — to a safetensors file.
    /// The input's size sets the graph's size. For comparing atrous with another framework.
    Run {
        /// Model file or zoo name.
        #[arg(long)]
        model: String,
        /// safetensors file with the input tensor(s).
        #[arg(long)]
        input: PathBuf,
        /// safetensors file to write (replaced only with --overwrite).
        #[arg(long)]
        output: PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Convert an ONNX model into a self-describing atrous model file: the weights as safetensors
    /// tensors, the graph as versioned JSON in the metadata (with the ONNX metadata properties,
    /// preprocessing included). Every node is checked for the graph's input size first.
    Convert {
        /// The ONNX file.
        input: PathBuf,
        /// The safetensors file to write.
        #[arg(short, long, required_unless_present = "check")]
        output: Option<PathBuf>,
        /// Only check: list every node atrous cannot run (all at once) and write nothing.
        #[arg(long)]
        check: bool,
        /// Folder of the external-data files the ONNX tensors name (default: the ONNX file's folder).
        #[arg(long)]
        external_data: Option<PathBuf>,
        /// Input size WxH to check the graph at (default: the size the graph declares, else 64x64).
        #[arg(long)]
        size: Option<String>,
        /// Replace an existing output file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Refine class probabilities from any source with a dense CRF on the GPU and write the class
    /// map OUT/<image stem>.png (8-bit palette PNG).
    Crf {
        /// The image the probabilities belong to.
        #[arg(long)]
        image: PathBuf,
        /// safetensors file with the probabilities, float32 `[classes, height, width]` (or
        /// `[1, classes, height, width]`), as the tensor `probs` (or `probabilities`, what
        /// `segment --probs` writes, or the file's only tensor). An image of another size is
        /// resized to the probabilities' (bilinear).
        #[arg(long)]
        probs: PathBuf,
        /// CRF parameters (see `segment --crf`).
        #[arg(long, default_value = "deeplab", value_parser = parse_crf)]
        setting: atrous::crf::CrfParams,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Also write OUT/<stem>.marginals.safetensors (the CRF's marginals, float32).
        #[arg(long)]
        marginals: bool,
        /// Replace existing outputs.
        #[arg(long)]
        overwrite: bool,
    },
    /// Split-and-merge regions of the grey level (no network): writes OUT/<stem>.regions.png (a
    /// 16-bit PNG, one id per region, numbered in the order of their first pixel) and
    /// OUT/<stem>.regions_mean.png (each region painted with its mean colour), and prints the
    /// region counts. Runs on the device; --cpu runs the CPU reference instead.
    Regions {
        /// Image files, or directories of images.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Homogeneity: `range` (max - min <= T) or `std` (standard deviation <= T).
        #[arg(long, default_value = "range", value_parser = ["range", "std"])]
        predicate: String,
        /// The threshold T (grey levels, 0-255).
        #[arg(long, default_value_t = 16.0)]
        threshold: f32,
        /// Smallest quadtree block side (a power of two); a block of that size that is still not
        /// homogeneous is split into its pixels for the merge to regroup.
        #[arg(long, default_value_t = 1)]
        min_block: u32,
        /// Run the CPU reference instead of the device.
        #[arg(long)]
        cpu: bool,
        /// Replace existing outputs.
        #[arg(long)]
        overwrite: bool,
    },
    /// Time a model: per-kernel GPU times (timestamp queries), GFLOP/s and GB/s, end-to-end
    /// latency and images/s.
    Bench {
        /// Model file or zoo name.
        #[arg(long)]
        model: String,
        /// Input size WxH (default: the model's run size, or 512x512).
        #[arg(long)]
        size: Option<String>,
        /// Timed iterations (after 2 warm-up runs).
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Add a dense CRF after the network (see `segment --crf`) and time its kernels
        /// separately.
        #[arg(long, value_parser = parse_crf)]
        crf: Option<atrous::crf::CrfParams>,
        /// JSON lines on stdout (one per dispatch, per kernel, and the end-to-end figures).
        #[arg(long)]
        json: bool,
        /// Precision: f32; f16 (feature maps, input and logits as f16, multiply-adds in f32;
        /// needs SHADER_F16); f16-compute (the convolutions' multiply-adds in f16 as well:
        /// faster on GPUs, flips up to ~0.8% of pixels); auto (f16 on a GPU that has it, f32 on
        /// a software adapter).
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Convolutions staging their input through workgroup memory (`conv2d_tiled`): auto (on
        /// GPUs, where the tile pays), on (wherever it pays, also on a CPU adapter), off.
        #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
        conv_tiles: String,
        /// Kernels with a subgroup variant (global average pooling): auto (where the device has
        /// subgroup operations), off (their workgroup-memory variant).
        #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
        subgroups: String,
    },
}

/// How to turn pixels into the network's input, for a model file that does not say (an ONNX
/// export without an `input` metadata property). Overrides what the file says.
#[derive(clap::Args, Clone, Debug, Default)]
struct PixelArgs {
    /// Per-channel mean in pixel units (0-255), three comma-separated values in the model's
    /// channel order: x = (pixel - mean) / std.
    #[arg(long, value_parser = parse_triple)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation in pixel units (0-255); see --mean.
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
    /// The model takes RGB (the default with --mean/--std).
    #[arg(long, conflicts_with = "bgr")]
    rgb: bool,
    /// The model takes BGR.
    #[arg(long)]
    bgr: bool,
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s.split(',').map(|t| t.trim().parse::<f32>().map_err(|e| format!("`{t}`: {e}"))).collect::<Result<_, _>>()?;
    match v[..] {
        [a, b, c] if v.iter().all(|x| x.is_finite()) => Ok([a, b, c]),
        _ => Err(format!("`{s}`: three finite comma-separated values")),
    }
}

/// Sets the model's normalisation from the flags, or fails when neither they nor the file say.
fn apply_pixels(model: &mut Model, p: &PixelArgs) -> Result<()> {
    use atrous::preprocess::{ChannelOrder, Normalize};
    let given = p.mean.is_some() || p.std.is_some() || p.rgb || p.bgr;
    if !given {
        if !model.normalize_known() {
            bail!("{} does not say how to normalise pixels (no `input` metadata property): pass --mean R,G,B --std R,G,B (pixel units) and --rgb or --bgr", model.info.name);
        }
        return Ok(());
    }
    let base = if model.normalize_known() { model.info.normalize } else { Normalize::identity() };
    let mut n = Normalize {
        order: if p.bgr {
            ChannelOrder::Bgr
        } else if p.rgb {
            ChannelOrder::Rgb
        } else {
            base.order
        },
        ..base
    };
    if p.mean.is_some() || p.std.is_some() {
        n.pre_scale = 1.0;
        n.post_scale = 1.0;
        n.mean = p.mean.unwrap_or([0.0; 3]);
        n.std = p.std.unwrap_or([1.0; 3]);
    }
    if n.std.contains(&0.0) {
        bail!("--std must not be 0");
    }
    model.info.normalize = n;
    Ok(())
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`atrous inspect ... | head`) instead of panicking in println!.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("atrous=info")).format_timestamp(None).init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Segment { model, inputs, out, overlay, alpha, probs, crf, overwrite, precision, pixels } => {
            segment(&model, &inputs, &out, Extras { overlay: overlay.then_some(alpha), probs, overwrite, precision: Precision::F32, crf }, &precision, &pixels)
        }
        Cmd::Eval { model, images, labels, ignore, crf, json, precision, pixels } => eval(&model, &images, &labels, &ignore, crf, json, &precision, &pixels),
        Cmd::Convert { input, output, check, external_data, size, overwrite } => convert(&input, output.as_deref(), check, external_data.as_deref(), size.as_deref(), overwrite),
        Cmd::Regions { inputs, out, predicate, threshold, min_block, cpu, overwrite } => regions(&inputs, &out, &predicate, threshold, min_block, cpu, overwrite),
        Cmd::Crf { image, probs, setting, out, marginals, overwrite } => crf(&image, &probs, setting, &out, marginals, overwrite).map(|_| ExitCode::SUCCESS),
        Cmd::Models { fetch } => models(&fetch).map(|_| ExitCode::SUCCESS),
        Cmd::Inspect { model, arch, size, json, precision } => inspect(model.as_deref(), arch.as_deref(), size.as_deref(), json, &precision).map(|_| ExitCode::SUCCESS),
        Cmd::Run { model, input, output, overwrite } => run(&model, &input, &output, overwrite).map(|_| ExitCode::SUCCESS),
        Cmd::Bench { model, size, iters, crf, json, precision, conv_tiles, subgroups } => bench(&model, size.as_deref(), iters, crf, json, &precision, &conv_tiles, subgroups == "off").map(|_| ExitCode::SUCCESS),
    };
    let stdout_failed = {
        use std::io::Write as _;
        std::io::stdout().flush().is_err() || STDOUT_FAILED.load(std::sync::atomic::Ordering::Relaxed)
    };
    match r {
        Ok(_) if stdout_failed => {
            eprintln!("error: writing standard output failed");
            ExitCode::from(1)
        }
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

/// An overlay opacity: a finite number in [0, 1].
fn parse_alpha(s: &str) -> std::result::Result<f32, String> {
    let a: f32 = s.trim().parse().map_err(|e| format!("`{s}`: {e}"))?;
    if !(0.0..=1.0).contains(&a) {
        return Err(format!("`{s}` is not a number in [0, 1]"));
    }
    Ok(a)
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (w, h) = s.split_once(['x', 'X']).with_context(|| format!("size `{s}` is not WxH"))?;
    Ok((h.trim().parse().context("height")?, w.trim().parse().context("width")?))
}

/// Optional outputs of `segment`.
#[derive(Clone, Copy)]
struct Extras {
    overlay: Option<f32>,
    probs: bool,
    /// Replace existing outputs (else an image whose outputs exist is skipped).
    overwrite: bool,
    precision: Precision,
    crf: Option<atrous::crf::CrfParams>,
}

/// The identity of a file (device and inode), which a hard link shares with its target.
#[cfg(unix)]
fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.canonicalize().ok()?.hash(&mut h);
    Some((0, h.finish()))
}

/// Refuses an output path that is a symbolic link, one of `inputs` (also under another name: the
/// same device and inode), or an existing file when `overwrite` is off.
fn refuse_output(t: &Path, inputs: &[&Path], overwrite: bool) -> Result<()> {
    let Ok(md) = std::fs::symlink_metadata(t) else { return Ok(()) };
    if md.file_type().is_symlink() {
        bail!("output {} is a symbolic link; not writing through it", t.display());
    }
    if file_id(t).is_some_and(|id| inputs.iter().any(|i| file_id(i) == Some(id))) {
        bail!("output {} is one of the inputs; not overwriting it", t.display());
    }
    if !overwrite {
        bail!("{} exists (pass --overwrite to replace it)", t.display());
    }
    Ok(())
}

/// Writes `dst` only complete: `write` fills a temporary file beside it, which is renamed into
/// place on success and removed on failure. The rename replaces the directory entry, so a link at
/// `dst` is never written through.
fn write_atomically(dst: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dst.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let r = write(&tmp).and_then(|_| std::fs::rename(&tmp, dst).with_context(|| format!("renaming into {}", dst.display())));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// A `--model` argument: a file, or a zoo name fetched into the cache.
fn load_model(arg: &str) -> Result<Model> {
    if arg == atrous::models::EMBEDDED_NAME && !Path::new(arg).exists() {
        return Model::embedded().context("loading the built-in model");
    }
    let path = atrous::zoo::resolve(arg, &atrous::zoo::FetchOptions::from_env()).with_context(|| format!("finding model `{arg}`"))?;
    Model::load(&path).with_context(|| format!("loading model {}", path.display()))
}

fn models(fetch: &[String]) -> Result<()> {
    let opts = atrous::zoo::FetchOptions::from_env();
    for name in fetch {
        if let Some(n) = atrous::zoo::numerics_cards()?.into_iter().find(|n| &n.name == name) {
            bail!("`{name}` is a numerics-only model, not in the zoo ({}); use ../shared/{}", n.numerics_only, n.shared_file);
        }
        let card = atrous::zoo::card(name)?.with_context(|| format!("`{name}` is not in the zoo"))?;
        atrous::zoo::fetch(&card, &opts)?;
    }
    println!("cache: {}{}", opts.cache.display(), opts.mirror.as_ref().map(|m| format!(" (mirror {m})")).unwrap_or_default());
    println!("{:<20} {:<8} {:<58} upstream", "name", "cached", "architecture");
    for c in atrous::zoo::cards()? {
        let cached = if c.name == atrous::models::EMBEDDED_NAME {
            "built in"
        } else if c.cached_path(&opts.cache).is_file() {
            "yes"
        } else {
            "no"
        };
        println!("{:<20} {:<8} {:<58} {}@{} ({})", c.name, cached, c.architecture.chars().take(58).collect::<String>(), c.upstream.repository, c.upstream.commit, c.licence);
    }
    println!();
    println!("numerics only (not downloaded; the files are in ../shared):");
    for c in atrous::zoo::numerics_cards()? {
        println!("{:<20} {:<40} {}", c.name, c.shared_file, c.numerics_only);
    }
    Ok(())
}

fn segment(model_arg: &str, inputs: &[PathBuf], out: &Path, extras: Extras, precision: &str, pixels: &PixelArgs) -> Result<ExitCode> {
    let mut model = load_model(model_arg)?;
    apply_pixels(&mut model, pixels)?;
    let gpu = Gpu::new().context("opening a GPU")?;
    let extras = Extras { precision: Precision::parse(precision, Some(&gpu))?, ..extras };
    eprintln!("model {} ({}), {} classes; device {}", model.info.name, model.info.architecture, model.info.classes.len(), gpu.describe());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files = expand_inputs(inputs)?;
    if files.is_empty() {
        bail!("no images among the inputs");
    }
    let inputs_canon: Vec<PathBuf> = files.iter().filter_map(|f| f.canonicalize().ok()).collect();
    let input_ids: Vec<(u64, u64)> = files.iter().filter_map(|f| file_id(f)).collect();
    let mut skipped = 0usize;
    let mut sessions: HashMap<(usize, usize), Session> = HashMap::new();
    let mut written: HashMap<PathBuf, PathBuf> = HashMap::new();
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}").expect("valid template"));
    let t0 = Instant::now();
    let mut failed = 0usize;
    // Images are decoded (and resized to the model's run size) on a thread of their own, two
    // ahead, while the device segments the current one.
    let info = model.info.clone();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(2);
        let files_ref = &files;
        scope.spawn(move || {
            for f in files_ref {
                let d = image_io::load_rgb(f).map(|img| {
                    let (h, w) = info.run_size(img.h, img.w);
                    let run = if (h, w) == (img.h, img.w) { None } else { Some(img.resize(h, w)) };
                    (img, run)
                });
                if tx.send(d).is_err() {
                    break;
                }
            }
        });
        for (f, decoded) in files.iter().zip(rx) {
            bar.set_message(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            match segment_one(&model, &gpu, &mut sessions, f, decoded, out, (&inputs_canon, &input_ids), &mut written, extras) {
                Ok(Some(dst)) => bar.suspend(|| eprintln!("{} -> {}", f.display(), dst.display())),
                Ok(None) => skipped += 1,
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("FAILED {}: {e:#}", f.display()));
                }
            }
            bar.inc(1);
        }
    });
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let ok = files.len() - failed - skipped;
    if skipped > 0 {
        eprintln!("{skipped} image(s) skipped: their outputs exist in {} (pass --overwrite to replace them)", out.display());
    }
    eprintln!("{ok} segmented, {failed} failed, {:.2} s ({:.2} images/s)", secs, ok as f64 / secs.max(1e-9));
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A decoded image and, when the model runs at another size, its resized copy.
type Decoded = atrous::Result<(RgbImage, Option<RgbImage>)>;

#[allow(clippy::too_many_arguments)]
fn segment_one(
    model: &Model,
    gpu: &Gpu,
    sessions: &mut HashMap<(usize, usize), Session>,
    f: &Path,
    decoded: Decoded,
    out: &Path,
    (inputs, input_ids): (&[PathBuf], &[(u64, u64)]),
    written: &mut HashMap<PathBuf, PathBuf>,
    extras: Extras,
) -> Result<Option<PathBuf>> {
    let stem = f.file_stem().with_context(|| format!("{} has no file name", f.display()))?.to_string_lossy().into_owned();
    let dst = out.join(format!("{stem}.png"));
    let overlay_dst = out.join(format!("{stem}_overlay.png"));
    let probs_dst = out.join(format!("{stem}.probs.safetensors"));
    let mut targets = vec![dst.clone()];
    if extras.overlay.is_some() {
        targets.push(overlay_dst.clone());
    }
    if extras.probs {
        targets.push(probs_dst.clone());
    }
    for t in &targets {
        if let Some(prev) = written.get(t) {
            bail!("{} was already written for {} (same file stem); not overwriting", t.display(), prev.display());
        }
        if let Ok(c) = t.canonicalize() {
            if inputs.contains(&c) {
                bail!("output {} is one of the inputs; not overwriting it", t.display());
            }
        }
        if let Ok(md) = std::fs::symlink_metadata(t) {
            if md.file_type().is_symlink() {
                bail!("output {} is a symbolic link; not writing through it", t.display());
            }
            if file_id(t).is_some_and(|id| input_ids.contains(&id)) {
                bail!("output {} is one of the inputs (the same file under another name); not overwriting it", t.display());
            }
        }
    }
    // an image is skipped when all its outputs exist; when only some do (a run stopped by a full
    // disk between the mask and the overlay), the missing ones are written and the others kept
    let wanted = |t: &Path| extras.overwrite || !t.exists();
    if !targets.iter().any(|t| wanted(t)) {
        return Ok(None);
    }
    let (img, resized) = decoded?;
    let (h, w) = model.info.run_size(img.h, img.w);
    if resized.is_some() {
        log::info!("{}: {}x{} resized to {}x{} (model size rule {:?})", f.display(), img.w, img.h, w, h, model.info.size);
    }
    let run: &RgbImage = resized.as_ref().unwrap_or(&img);
    let session = match sessions.entry((h, w)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let g = model.graph(h, w)?;
            v.insert(Session::with_options(gpu, &g, SessionOptions { normalize: model.info.pixel_head(), precision: extras.precision, crf: extras.crf, ..Default::default() })?)
        }
    };
    let (map, probs) = model.info.run_image(session, &run.data, extras.probs.then_some(atrous::models::FloatOutput::Probabilities))?;
    let map = map.resize_nearest(img.h, img.w);
    if wanted(&dst) {
        write_atomically(&dst, |tmp| Ok(image_io::save_palette_png(tmp, &map, &model.info.palette)?))?;
    }
    if let Some(alpha) = extras.overlay.filter(|_| wanted(&overlay_dst)) {
        write_atomically(&overlay_dst, |tmp| Ok(image_io::save_rgb_png(tmp, &image_io::overlay(&img, &map, &model.info.palette, alpha))?))?;
    }
    if let Some(p) = probs.filter(|_| wanted(&probs_dst)) {
        let bytes: &[u8] = bytemuck::cast_slice(&p);
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![model.info.classes.len(), h, w], bytes).context("probability tensor")?;
        let meta = HashMap::from([
            ("classes".to_string(), serde_json::to_string(&model.info.classes)?),
            ("image".to_string(), f.display().to_string()),
            ("image_size_hw".to_string(), format!("[{}, {}]", img.h, img.w)),
            (
                "note".to_string(),
                match extras.crf {
                    Some(c) => format!("dense CRF marginals ({}) at the size the model ran at (HxW of the tensor); resize to image_size_hw to overlay", c.describe()),
                    None => "softmax over the model's logits at the size it ran at (HxW of the tensor); resize to image_size_hw to overlay".to_string(),
                },
            ),
        ]);
        write_atomically(&probs_dst, |tmp| safetensors::serialize_to_file([("probabilities", view)], Some(meta), tmp).with_context(|| format!("writing {}", probs_dst.display())))?;
    }
    for t in targets {
        written.insert(t, f.to_path_buf());
    }
    Ok(Some(dst))
}

#[allow(clippy::too_many_arguments)]
fn eval(model_arg: &str, images: &Path, labels: &Path, ignore: &[u8], crf: Option<atrous::crf::CrfParams>, json: bool, precision: &str, pixels: &PixelArgs) -> Result<ExitCode> {
    use atrous::session::{median, percentile};
    let ignore: Vec<u8> = if ignore.is_empty() { vec![255] } else { ignore.to_vec() };
    let mut model = load_model(model_arg)?;
    apply_pixels(&mut model, pixels)?;
    let gpu = Gpu::new().context("opening a GPU")?;
    let (pairs, lonely) = atrous::eval::pair_by_stem(images, labels)?;
    for l in &lonely {
        eprintln!("no label for {} in {}", l.display(), labels.display());
    }
    if pairs.is_empty() {
        bail!("no image in {} has a label of the same stem in {}", images.display(), labels.display());
    }
    eprintln!("evaluating {} on {} image/label pairs, ignoring label values {ignore:?}; device {}", model.info.name, pairs.len(), gpu.describe());
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
    let precision = Precision::parse(precision, Some(&gpu))?;
    if let Some(c) = crf {
        eprintln!("dense CRF after the network: {}", c.describe());
    }
    let report = atrous::eval::evaluate_crf(&model, &gpu, &pairs, &ignore, precision, crf, |p, r| {
        if let Err(e) = r {
            bar.suspend(|| eprintln!("FAILED {}: {e}", p.display()));
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let m = &report.metrics;
    let names = &model.info.classes;
    let med = median(&report.ms_per_image);
    if json {
        let per_class: Vec<serde_json::Value> =
            m.per_class.iter().map(|c| serde_json::json!({"class": names[c.class], "index": c.class, "iou": c.iou, "accuracy": c.accuracy, "gt_pixels": c.gt_pixels, "predicted_pixels": c.predicted_pixels})).collect();
        let n = report.confusion.n;
        let rows: Vec<Vec<u64>> = (0..n).filter(|&g| report.real[g]).map(|g| report.confusion.hist[g * n..(g + 1) * n].to_vec()).collect();
        let v = serde_json::json!({
            "model": model.info.name, "crf": crf.map(|c| c.describe()), "images": report.images, "failed": report.failed.iter().map(|(p, e)| serde_json::json!({"image": p, "error": e})).collect::<Vec<_>>(),
            "unlabelled_images": lonely, "ignore": ignore,
            "pixels": m.pixels, "pixel_acc": m.pixel_acc, "mean_class_acc": m.mean_class_acc, "mean_iou": m.mean_iou, "fw_iou": m.fw_iou,
            "predicted_as_extra": m.predicted_as_extra, "ignored_pixels": m.ignored, "per_class": per_class,
            "confusion": {"rows_gt": (0..n).filter(|&g| report.real[g]).map(|g| names[g].clone()).collect::<Vec<_>>(), "cols_pred": names, "counts": rows},
            "ms_per_image": {"median": med, "p95": percentile(&report.ms_per_image, 0.95), "all": report.ms_per_image},
            "device_bytes": {"peak": report.peak_device_bytes, "mean": report.mean_device_bytes},
            "adapter": gpu.describe(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let n = report.confusion.n;
        println!("confusion matrix (rows: ground truth, columns: prediction):");
        print!("{:>14}", "");
        for name in names.iter().take(n) {
            print!(" {:>9.9}", name);
        }
        println!();
        for g in (0..n).filter(|&g| report.real[g]) {
            print!("{:>14.14}", names[g]);
            for p in 0..n {
                print!(" {:>9}", report.confusion.hist[g * n + p]);
            }
            println!();
        }
        println!();
        println!("{:<16} {:>8} {:>8} {:>12}", "class", "IoU %", "acc %", "gt pixels");
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{:.2}", 100.0 * x));
        for c in &m.per_class {
            println!("{:<16} {:>8} {:>8} {:>12}", names[c.class], pct(c.iou), pct(c.accuracy), c.gt_pixels);
        }
        println!();
        println!("images: {} evaluated, {} failed, {} without a label", report.images, report.failed.len(), lonely.len());
        println!("pixels: {} evaluated, {} ignored, {} predicted as an extra output", m.pixels, m.ignored, m.predicted_as_extra);
        println!("pixel accuracy       {:.2}", 100.0 * m.pixel_acc);
        println!("mean class accuracy  {:.2}", 100.0 * m.mean_class_acc);
        println!("mean IoU             {:.2}", 100.0 * m.mean_iou);
        println!("frequency-weighted   {:.2}", 100.0 * m.fw_iou);
        println!("time per image: median {med:.2} ms, p95 {:.2} ms (upload, one submission, class-map readback)", percentile(&report.ms_per_image, 0.95));
        println!("device memory: peak {} B, mean {:.0} B", report.peak_device_bytes, report.mean_device_bytes);
    }
    Ok(if report.failed.is_empty() && lonely.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn parse_crf(s: &str) -> std::result::Result<atrous::crf::CrfParams, String> {
    atrous::crf::CrfParams::parse(s).map_err(|e| e.to_string())
}

/// `atrous crf`: probabilities from a file refined against an image.
fn crf(image: &Path, probs_path: &Path, params: atrous::crf::CrfParams, out: &Path, marginals: bool, overwrite: bool) -> Result<()> {
    let bytes = std::fs::read(probs_path).with_context(|| format!("reading {}", probs_path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a safetensors file", probs_path.display()))?;
    let names = st.names();
    let name = ["probs", "probabilities"].into_iter().find(|n| names.iter().any(|m| m == n)).map(str::to_string).or_else(|| (names.len() == 1).then(|| names[0].to_string()));
    let name = name.with_context(|| format!("{}: no tensor `probs` or `probabilities` (tensors: {names:?})", probs_path.display()))?;
    let t = st.tensor(&name)?;
    let (c, h, w) = match *t.shape() {
        [c, h, w] | [1, c, h, w] => (c, h, w),
        ref s => bail!("{}: `{name}` has shape {s:?}, not [classes, height, width]", probs_path.display()),
    };
    if t.dtype() != safetensors::Dtype::F32 {
        bail!("{}: `{name}` is {:?}, not F32", probs_path.display(), t.dtype());
    }
    if !(2..=256).contains(&c) || h == 0 || w == 0 || h > 65536 || w > 65536 {
        bail!("{}: `{name}` is {c}x{h}x{w}: need at least 2 classes (at most 256, what a class-map PNG holds) and 1..=65536 pixels a side", probs_path.display());
    }
    let probs: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
    if let Some(i) = probs.iter().position(|v| !v.is_finite() || *v < 0.0) {
        bail!("{}: `{name}` holds {} at element {i}; probabilities are finite and non-negative", probs_path.display(), probs[i]);
    }
    let img = image_io::load_rgb(image)?;
    let resized = ((img.h, img.w) != (h, w)).then(|| img.resize(h, w));
    let run = resized.as_ref().unwrap_or(&img);
    let stem = image.file_stem().with_context(|| format!("{} has no file name", image.display()))?.to_string_lossy().into_owned();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let dst = out.join(format!("{stem}.png"));
    let mdst = out.join(format!("{stem}.marginals.safetensors"));
    for t in std::iter::once(&dst).chain(marginals.then_some(&mdst)) {
        refuse_output(t, &[image, probs_path], overwrite)?;
    }
    let gpu = Gpu::new().context("opening a GPU")?;
    let t0 = Instant::now();
    let q = atrous::session::run_crf(&gpu, &run.data, &probs, c, h, w, params)?;
    let secs = t0.elapsed().as_secs_f64();
    let n = h * w;
    let map = atrous::session::ClassMap { h, w, data: atrous::reference::argmax(&q, c, n) }.resize_nearest(img.h, img.w);
    let palette = atrous::models::default_palette(c);
    write_atomically(&dst, |tmp| Ok(image_io::save_palette_png(tmp, &map, &palette)?))?;
    if marginals {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![c, h, w], bytemuck::cast_slice(&q)).context("marginals tensor")?;
        let meta = HashMap::from([("crf".to_string(), params.describe()), ("image".to_string(), image.display().to_string())]);
        write_atomically(&mdst, |tmp| safetensors::serialize_to_file([("marginals", view)], Some(meta), tmp).with_context(|| format!("writing {}", mdst.display())))?;
    }
    eprintln!("{}: {c} classes at {w}x{h}, CRF {} on {} in {:.3} s -> {}", image.display(), params.describe(), gpu.describe(), secs, dst.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn regions(inputs: &[PathBuf], out: &Path, predicate: &str, threshold: f32, min_block: u32, cpu: bool, overwrite: bool) -> Result<ExitCode> {
    use atrous::regions::{Predicate, RegionParams};
    let params = RegionParams { predicate: if predicate == "std" { Predicate::Std } else { Predicate::Range }, threshold, min_block };
    params.validate()?;
    let files = expand_inputs(inputs)?;
    if files.is_empty() {
        bail!("no images among the inputs");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let gpu = if cpu { None } else { Some(Gpu::new().context("opening a GPU")?) };
    eprintln!("split-and-merge, {predicate} <= {threshold}, min block {min_block}, on {}", gpu.as_ref().map_or("the CPU (reference)".to_string(), |g| g.describe()));
    let mut runners: HashMap<(usize, usize), atrous::regions::RegionsGpu> = HashMap::new();
    let mut failed = 0;
    let mut written: HashMap<PathBuf, PathBuf> = HashMap::new();
    for f in &files {
        let r = (|| -> Result<String> {
            let stem = f.file_stem().with_context(|| format!("{} has no file name", f.display()))?.to_string_lossy().into_owned();
            let (dst, mean_dst) = (out.join(format!("{stem}.regions.png")), out.join(format!("{stem}.regions_mean.png")));
            for t in [&dst, &mean_dst] {
                if let Some(prev) = written.get(t) {
                    bail!("{} was already written for {} (same file stem); not overwriting", t.display(), prev.display());
                }
                refuse_output(t, &[f.as_path()], overwrite)?;
            }
            let img = image_io::load_rgb(f)?;
            let g = atrous::regions::grey(&img.data);
            let t0 = Instant::now();
            let (labels, rounds) = match &gpu {
                Some(gpu) => {
                    let runner = match runners.entry((img.h, img.w)) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => v.insert(atrous::regions::RegionsGpu::new(gpu, img.h, img.w, params)?),
                    };
                    runner.run(&g)?
                }
                None => atrous::regions::split_merge_cpu(&g, img.h, img.w, &params)?,
            };
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let (ids, count) = atrous::regions::compact(&labels);
            if count > 65536 {
                bail!("{count} regions do not fit a 16-bit PNG (raise --threshold)");
            }
            let ids16: Vec<u16> = ids.iter().map(|&i| i as u16).collect();
            write_atomically(&dst, |tmp| {
                image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(img.w as u32, img.h as u32, ids16)
                    .context("label image size")?
                    .save_with_format(tmp, image::ImageFormat::Png)
                    .with_context(|| format!("writing {}", dst.display()))
            })?;
            let mean = RgbImage { h: img.h, w: img.w, data: atrous::regions::mean_colour(&img.data, &ids, count) };
            write_atomically(&mean_dst, |tmp| Ok(image_io::save_rgb_png(tmp, &mean)?))?;
            written.insert(dst.clone(), f.clone());
            written.insert(mean_dst, f.clone());
            Ok(format!("{}: {count} regions ({}x{}, {rounds} merge rounds, {ms:.1} ms) -> {}", f.display(), img.w, img.h, dst.display()))
        })();
        match r {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failed += 1;
                eprintln!("FAILED {}: {e:#}", f.display());
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn model_size(model: &Model, size: Option<&str>) -> Result<(usize, usize)> {
    match size {
        Some(s) => parse_size(s),
        None => Ok(model.info.run_size(512, 512)),
    }
}

fn inspect(model_arg: Option<&str>, arch: Option<&str>, size: Option<&str>, json: bool, precision: &str) -> Result<()> {
    let model = match (model_arg, arch) {
        (_, Some(a)) => atrous::models::shapes_only(a)?,
        (Some(m), None) => load_model(m)?,
        (None, None) => bail!("give --model or --arch"),
    };
    let (h, w) = model_size(&model, size)?;
    let g = model.graph(h, w)?;
    // what an f16 session plans: the builder's precision-sensitive stages stay f32
    let g = match Precision::parse(precision, None)? {
        Precision::F32 => g,
        Precision::F16 | Precision::F16Compute => atrous::passes::half_precision(&g)?,
    };
    let limits = atrous::plan::PlanLimits::unlimited();
    let plan = atrous::plan::Plan::new(&g, limits)?;
    let layers: Vec<serde_json::Value> = g.nodes.iter().map(|n| serde_json::json!({"name": n.name, "op": n.op.kind(), "shape": n.describe(&g), "flops": n.op.flops(&g)})).collect();
    if json {
        let v = serde_json::json!({
            "model": model.info.name,
            "architecture": model.info.architecture,
            "classes": model.info.classes,
            "parameters": model.info.parameters,
            "input": {"width": w, "height": h, "size_rule": format!("{:?}", model.info.size), "normalize": model.info.normalize},
            "flops": g.flops(),
            "layers": layers,
            "inputs": g.inputs.iter().map(|&t| &g.tensors[t].name).collect::<Vec<_>>(),
            "outputs": g.outputs.iter().map(|&t| &g.tensors[t].name).collect::<Vec<_>>(),
            "tensors": g.live_tensors().into_iter().map(|t| {
                let d = &g.tensors[t];
                let role = if g.inputs.contains(&t) { "input" } else if g.outputs.contains(&t) { "output" } else { "intermediate" };
                serde_json::json!({"name": d.name, "dtype": d.dtype.name(), "shape": d.shape(), "bytes": d.bytes(), "role": role})
            }).collect::<Vec<_>>(),
            "memory": {"peak_arena_bytes": plan.peak_bytes(), "sum_of_tensors_bytes": plan.sum_tensors, "live_set_lower_bound_bytes": plan.live_lower_bound, "arenas": plan.arenas},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model: {} ({})", model.info.name, model.info.architecture);
    println!("classes ({}): {}", model.info.classes.len(), model.info.classes.join(", "));
    println!("parameters in file: {}", model.info.parameters);
    println!("input: {w}x{h} (WxH), size rule {:?}, normalisation {:?}", model.info.size, model.info.normalize);
    println!();
    println!("{:<48} {:<18} {:<52} {:>12}", "layer", "op", "shape", "MFLOP");
    for n in &g.nodes {
        println!("{:<48} {:<18} {:<52} {:>12.3}", n.name, n.op.kind(), n.describe(&g), n.op.flops(&g) as f64 / 1e6);
    }
    println!();
    println!("total: {} nodes, {} tensors, {:.3} GFLOP", g.nodes.len(), g.live_tensors().len(), g.flops() as f64 / 1e9);
    println!(
        "memory plan: peak arena {} B, sum of all tensors {} B, live-set lower bound {} B (peak/bound {:.4})",
        plan.peak_bytes(),
        plan.sum_tensors,
        plan.live_lower_bound,
        plan.peak_bytes() as f64 / plan.live_lower_bound.max(1) as f64
    );
    Ok(())
}

/// A tensor of a safetensors file as float32 (from F32, F16, BF16 or F64).
fn tensor_f32(name: &str, t: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>> {
    use safetensors::Dtype;
    let b = t.data();
    Ok(match t.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        // raw pixel values (ENet takes 0..255 as they are)
        Dtype::U8 => b.iter().map(|&v| v as f32).collect(),
        d => bail!("tensor `{name}` has dtype {d:?}; a model input must be F32, F16, BF16, F64 or U8 (raw values)"),
    })
}

/// `atrous convert`: ONNX in, self-describing safetensors out (or, with `check`, the list of
/// what atrous cannot run).
fn convert(input: &Path, output: Option<&Path>, check: bool, external: Option<&Path>, size: Option<&str>, overwrite: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let base = external.map(Path::to_path_buf).unwrap_or_else(|| input.parent().map(Path::to_path_buf).unwrap_or_default());
    let imported = atrous::onnx::import_bytes(&bytes, input, Some(&base))?;
    let g = &imported.graph;
    let (h, w) = match size {
        Some(s) => parse_size(s)?,
        None => g.check_hw(),
    };
    let reader = |name: &str, _t: i32| imported.tensors.get(name).cloned().ok_or_else(|| atrous::Error::MissingTensor { name: name.to_string() });
    let problems = atrous::onnx::lower::check(g, &reader, h, w);
    let ops: std::collections::BTreeSet<&str> = g.nodes.iter().map(|n| n.op.as_str()).collect();
    eprintln!("{}: opset {}, {} nodes ({}), {} initializers; checked at {w}x{h}", input.display(), g.opset, g.nodes.len(), ops.into_iter().collect::<Vec<_>>().join(" "), g.initializers.len());
    if !problems.is_empty() {
        for p in &problems {
            println!("unsupported: {p}");
        }
        bail!("{} node(s) atrous cannot run", problems.len());
    }
    if check {
        println!("every node is supported");
        return Ok(ExitCode::SUCCESS);
    }
    let output = output.context("no --output")?;
    refuse_output(output, &[input], overwrite)?;
    let data = imported.to_safetensors()?;
    write_atomically(output, |tmp| {
        use std::io::Write;
        let mut f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&data).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))
    })?;
    eprintln!("wrote {} ({} bytes, graph format {})", output.display(), data.len(), atrous::onnx::GRAPH_FORMAT);
    Ok(ExitCode::SUCCESS)
}

fn run(model_arg: &str, input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    let model = load_model(model_arg)?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a safetensors file", input.display()))?;
    let names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    // the graph's single input is `input`; take a tensor of that name, or the only tensor
    let name = if names.iter().any(|n| n == "input") {
        "input".to_string()
    } else if names.len() == 1 {
        names[0].clone()
    } else {
        bail!("{}: no tensor called `input` among {names:?}", input.display());
    };
    let t = st.tensor(&name)?;
    let (c, h, w) = match *t.shape() {
        [1, c, h, w] | [c, h, w] => (c, h, w),
        ref s => bail!("tensor `{name}` has shape {s:?}; expected [1, C, H, W] or [C, H, W]"),
    };
    let x = tensor_f32(&name, &t)?;
    let g = model.graph(h, w).with_context(|| format!("building {} for a {w}x{h} input", model.info.name))?;
    let want_c = g.tensors[g.input].c;
    if c != want_c {
        bail!("tensor `{name}` has {c} channels; {} takes {want_c}", model.info.name);
    }
    if output.exists() && !overwrite {
        bail!("{} exists (pass --overwrite to replace it)", output.display());
    }
    if std::fs::canonicalize(output).ok().is_some_and(|o| std::fs::canonicalize(input).ok() == Some(o)) {
        bail!("the output would overwrite the input {}", input.display());
    }
    let gpu = Gpu::new()?;
    let mut session = Session::new(&gpu, &g, None)?;
    let (map, logits) = session.run_tensor_logits(&x)?;
    let classes = session.num_classes();
    // the logits' size: the input's for the builders, maybe another for an imported graph
    let (h, w) = (map.h, map.w);
    let logit_bytes: Vec<u8> = bytemuck::cast_slice(&logits).to_vec();
    let views = vec![
        ("logits".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, classes, h, w], &logit_bytes)?),
        ("classes".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![h, w], &map.data)?),
    ];
    let meta = HashMap::from([("model".to_string(), model.info.name.clone()), ("input".to_string(), input.display().to_string()), ("made_by".to_string(), format!("atrous {} run", env!("CARGO_PKG_VERSION")))]);
    let data = safetensors::serialize(views, Some(meta))?;
    // complete or absent: a temporary file in the same folder, synced, renamed into place (and
    // removed if anything fails, a full disk included)
    write_atomically(output, |tmp| {
        use std::io::Write;
        let mut f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&data).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))
    })?;
    eprintln!("{}: logits [1, {classes}, {h}, {w}] and classes [{h}, {w}] written to {}", model.info.name, output.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(model_arg: &str, size: Option<&str>, iters: usize, crf: Option<atrous::crf::CrfParams>, json: bool, precision: &str, conv_tiles: &str, no_subgroups: bool) -> Result<()> {
    use atrous::session::{median, percentile};
    let iters = iters.max(1);
    let model = load_model(model_arg)?;
    let (h, w) = model_size(&model, size)?;
    let gpu = Gpu::new().context("opening a GPU")?;
    let g = model.graph(h, w)?;
    let precision = Precision::parse(precision, Some(&gpu))?;
    let conv_tiles = match conv_tiles {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    };
    let mut s = Session::with_options(&gpu, &g, SessionOptions { normalize: model.info.pixel_head(), precision, crf, conv_tiles, no_subgroups, ..Default::default() })?;
    eprintln!("bench {} ({}) at {w}x{h} on {}: {:.3} GFLOP per image, {} dispatches", model.info.name, precision.name(), gpu.describe(), g.flops() as f64 / 1e9, s.dispatches.len());
    // a deterministic, textured test image
    let rgb: Vec<u8> = (0..h * w * 3).map(|i| ((i * 2654435761usize) >> 13) as u8).collect();
    for _ in 0..2 {
        model.info.run_image(&mut s, &rgb, None)?;
    }
    let mut e2e = vec![];
    let t_seq = Instant::now();
    for _ in 0..iters {
        let t0 = Instant::now();
        model.info.run_image(&mut s, &rgb, None)?;
        e2e.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let seq_ips = iters as f64 / t_seq.elapsed().as_secs_f64();
    // the same images through the pipelined path (upload/readback overlapped with compute)
    // (models whose input is prepared on the CPU have no pixel head: sequential only)
    let t_pipe = Instant::now();
    let mut failures = 0;
    if model.info.pixel_head().is_some() {
        s.run_rgb_pipelined((0..iters).map(|_| Ok(rgb.clone())), |_, r| failures += r.is_err() as usize)?;
    }
    let pipe_ips = if model.info.pixel_head().is_some() { iters as f64 / t_pipe.elapsed().as_secs_f64() } else { seq_ips };
    if failures > 0 {
        bail!("{failures} pipelined runs failed");
    }
    let prof = s.profile(iters)?;
    let clock = if prof.timestamps { "gpu_timestamps" } else { "wall_clock" };
    let gflops = |flops: u64, ns: f64| if ns > 0.0 { flops as f64 / ns } else { 0.0 };
    let gbs = |bytes: u64, ns: f64| if ns > 0.0 { bytes as f64 / ns } else { 0.0 };
    // per kernel (entry point): dispatch count and summed median times
    let mut kernels: Vec<(&str, usize, f64, u64, u64)> = vec![];
    for d in &prof.dispatches {
        let ns = d.median_ns();
        match kernels.iter_mut().find(|k| k.0 == d.entry) {
            Some(k) => {
                k.1 += 1;
                k.2 += ns;
                k.3 += d.flops;
                k.4 += d.bytes;
            }
            None => kernels.push((d.entry, 1, ns, d.flops, d.bytes)),
        }
    }
    kernels.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total_ns: f64 = prof.dispatches.iter().map(|d| d.median_ns()).sum();
    let (mn, med, p95) = (e2e.iter().cloned().fold(f64::INFINITY, f64::min), median(&e2e), percentile(&e2e, 0.95));
    if json {
        for d in &prof.dispatches {
            let ns = d.median_ns();
            println!(
                "{}",
                serde_json::json!({"type": "dispatch", "name": d.label, "kernel": d.entry, "shape": d.shape, "clock": clock, "median_us": ns / 1e3, "flops": d.flops, "bytes": d.bytes, "gflops": gflops(d.flops, ns), "gbps": gbs(d.bytes, ns)})
            );
        }
        for k in &kernels {
            println!(
                "{}",
                serde_json::json!({"type": "kernel", "kernel": k.0, "dispatches": k.1, "clock": clock, "total_us": k.2 / 1e3, "share": k.2 / total_ns, "flops": k.3, "bytes": k.4, "gflops": gflops(k.3, k.2), "gbps": gbs(k.4, k.2)})
            );
        }
        println!(
            "{}",
            serde_json::json!({"type": "end_to_end", "model": model.info.name, "width": w, "height": h, "adapter": gpu.describe(), "iters": iters, "min_ms": mn, "median_ms": med, "p95_ms": p95, "images_per_s": 1e3 / med, "sequential_images_per_s": seq_ips, "pipelined_images_per_s": pipe_ips, "gpu_sum_of_dispatches_ms": total_ns / 1e6, "flops": g.flops(), "device_bytes": s.device_bytes()})
        );
        return Ok(());
    }
    println!("per dispatch ({clock}, median of {iters}):");
    println!("{:<44} {:<20} {:<52} {:>10} {:>9} {:>8}", "node", "kernel", "shape", "us", "GFLOP/s", "GB/s");
    for d in &prof.dispatches {
        let ns = d.median_ns();
        println!("{:<44} {:<20} {:<52} {:>10.1} {:>9.2} {:>8.2}", d.label, d.entry, d.shape, ns / 1e3, gflops(d.flops, ns), gbs(d.bytes, ns));
    }
    println!();
    println!("per kernel:");
    println!("{:<22} {:>10} {:>12} {:>7} {:>9} {:>8}", "kernel", "dispatches", "total ms", "share", "GFLOP/s", "GB/s");
    for k in &kernels {
        println!("{:<22} {:>10} {:>12.3} {:>6.1}% {:>9.2} {:>8.2}", k.0, k.1, k.2 / 1e6, 100.0 * k.2 / total_ns, gflops(k.3, k.2), gbs(k.4, k.2));
    }
    println!();
    if let Some(c) = crf {
        let crf_ns: f64 = prof.dispatches.iter().filter(|d| d.label.starts_with("crf")).map(|d| d.median_ns()).sum();
        let build_ns: f64 = prof.dispatches.iter().filter(|d| d.entry.starts_with("lattice_") || d.label.contains(".norm.")).map(|d| d.median_ns()).sum();
        println!(
            "dense CRF ({}): {:.3} ms of the {:.3} ms sum ({:.3} ms building the lattices and normalisers, {:.3} ms mean field)",
            c.describe(),
            crf_ns / 1e6,
            total_ns / 1e6,
            build_ns / 1e6,
            (crf_ns - build_ns) / 1e6
        );
    }
    println!("sum of dispatch medians: {:.3} ms ({:.2} GFLOP/s over {:.3} GFLOP)", total_ns / 1e6, gflops(g.flops(), total_ns), g.flops() as f64 / 1e9);
    println!("end to end (upload, one submission, class map readback), {iters} runs: min {mn:.2} ms, median {med:.2} ms, p95 {p95:.2} ms, {:.2} images/s", 1e3 / med);
    println!("throughput over {iters} images: one at a time {seq_ips:.3} images/s, pipelined {pipe_ips:.3} images/s");
    println!("device memory held by the session: {} B", s.device_bytes());
    Ok(())
}
