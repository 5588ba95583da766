//! Model builders: they read tensors by their original names (checking name, shape and dtype), fold
//! batch norm into the preceding convolution where one exists, and emit a [`Graph`] for an input size.

pub mod deeplab_tflite;
pub mod enet;
pub mod espnet;
pub mod espnetv2;
pub mod fcn;
pub mod keras;
pub(crate) mod net;
pub mod segnet;
pub mod torchvision;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::preprocess::Normalize;
use crate::weights::Weights;

/// The largest height or width atrous plans for: with it every size, shape and byte count of a
/// graph stays far inside 64-bit arithmetic (channels x 65536^2 x 4 bytes < 2^63).
pub const MAX_SIDE: usize = 65536;

/// Which input sizes a model accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeRule {
    /// Height and width must be multiples of this.
    MultipleOf(usize),
    /// Exactly this (height, width).
    Fixed(usize, usize),
}

impl SizeRule {
    /// The size to run an image of `h x w` at: the image's own size when accepted, else the
    /// nearest accepted size (the caller resizes the image and maps the class map back).
    pub fn run_size(&self, h: usize, w: usize) -> (usize, usize) {
        match *self {
            SizeRule::MultipleOf(m) => {
                let r = |v: usize| ((v + m / 2) / m).max(1) * m;
                (r(h), r(w))
            }
            SizeRule::Fixed(fh, fw) => (fh, fw),
        }
    }
    pub fn accepts(&self, h: usize, w: usize) -> bool {
        match *self {
            SizeRule::MultipleOf(m) => h % m == 0 && w % m == 0 && h > 0 && w > 0,
            SizeRule::Fixed(fh, fw) => (h, w) == (fh, fw),
        }
    }
}

/// A float output [`ModelInfo::run_image`] can return beside the class map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatOutput {
    Logits,
    Probabilities,
}

/// What a model is: names, classes, palette and its input convention.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub classes: Vec<String>,
    /// RGB colour per class.
    pub palette: Vec<[u8; 3]>,
    pub normalize: Normalize,
    pub size: SizeRule,
    /// The size upstream runs every image at, when it resizes (ESPNetv2 VOC: 384x384); images
    /// are then resized to it and the class map is mapped back.
    pub run_size: Option<(usize, usize)>,
    /// Parameters in the file.
    pub parameters: usize,
    /// The input is one grey channel min-max normalised over the image (U-Net), prepared on the
    /// CPU; `normalize` is then unused.
    pub grey_minmax: bool,
}

impl ModelInfo {
    /// The normalisation a session's pixel head applies, or `None` when images are prepared on
    /// the CPU ([`ModelInfo::grey_minmax`]).
    pub fn pixel_head(&self) -> Option<Normalize> {
        (!self.grey_minmax).then_some(self.normalize)
    }

    /// Runs an RGB image of the session's size: through the session's pixel head, or prepared on
    /// the CPU for models whose input convention the head does not cover. With `extra`, also the
    /// logits or the per-class probabilities (`[classes, h, w]`).
    pub fn run_image(&self, s: &mut crate::session::Session, rgb: &[u8], extra: Option<FloatOutput>) -> Result<(crate::session::ClassMap, Option<Vec<f32>>)> {
        use FloatOutput::*;
        let some = |(m, v)| (m, Some(v));
        if !self.grey_minmax {
            return Ok(match extra {
                None => (s.run_rgb(rgb)?, None),
                Some(Logits) => some(s.run_rgb_logits(rgb)?),
                Some(Probabilities) => some(s.run_rgb_probabilities(rgb)?),
            });
        }
        let (h, w) = s.input_hw();
        if rgb.len() != 3 * h * w {
            return Err(Error::Input(format!("image has {} bytes, the session expects {h}x{w} RGB = {}", rgb.len(), 3 * h * w)));
        }
        let x = crate::preprocess::grey_minmax(rgb);
        Ok(match extra {
            None => (s.run_tensor(&x)?, None),
            Some(Logits) => some(s.run_tensor_logits(&x)?),
            Some(Probabilities) => some(s.run_tensor_probabilities(&x)?),
        })
    }

    /// The (height, width) to run an `h x w` image at.
    pub fn run_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self.run_size {
            Some(s) if self.size.accepts(s.0, s.1) => s,
            _ => self.size.run_size(h, w),
        }
    }
}

/// `atrous_run_size` metadata (`[h, w]`), else the phrase "resizes every image to AxB" in the
/// `input.size` description of the shared model files.
fn run_size_from_metadata(meta: &std::collections::HashMap<String, String>) -> Result<Option<(usize, usize)>> {
    if let Some(s) = meta.get("atrous_run_size") {
        let v: [usize; 2] = serde_json::from_str(s).map_err(|e| Error::Metadata { key: "atrous_run_size".into(), reason: e.to_string() })?;
        if v.iter().any(|&d| d == 0 || d > MAX_SIDE) {
            return Err(Error::Metadata { key: "atrous_run_size".into(), reason: format!("{v:?}: each side must be 1..={MAX_SIDE}") });
        }
        return Ok(Some((v[0], v[1])));
    }
    let size = meta.get("input").and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok()).and_then(|v| v.get("size").and_then(|s| s.as_str()).map(str::to_string));
    let Some(text) = size else { return Ok(None) };
    let Some(rest) = text.split("resizes every image to ").nth(1) else { return Ok(None) };
    let dims: Vec<usize> = rest.split(|c: char| !c.is_ascii_digit()).filter(|t| !t.is_empty()).take(2).filter_map(|t| t.parse().ok()).collect();
    Ok(match dims[..] {
        [a, b] => Some((a, b)),
        _ => None,
    })
}

enum Arch {
    Espnet(espnet::EspNetConfig),
    Torchvision(torchvision::TvConfig),
    DeepLabTflite {
        classes: usize,
    },
    EspNetV2(espnetv2::EspNetV2Config),
    SegNet(segnet::SegNetConfig),
    Fcn(fcn::FcnConfig),
    Enet(enet::EnetConfig),
    Keras(keras::KerasConfig),
    /// A graph stored in the file ([`crate::onnx`]): no builder, the file describes itself.
    Onnx {
        graph: Box<crate::onnx::IrGraph>,
        classes: usize,
    },
}

/// The shape of a 4-D (convolution) weight, checked to be 4-D.
pub(crate) fn conv_shape(w: &Weights, name: &str) -> Result<Vec<usize>> {
    let s = w.require_shape(name)?;
    if s.len() != 4 {
        return Err(Error::ShapeMismatch { name: name.into(), expected: vec![0, 0, 0, 0], got: s });
    }
    Ok(s)
}

/// The zoo name of the model built into the library ([`Model::embedded`]); the CLI's default.
pub const EMBEDDED_NAME: &str = "deeplabv3-mnv2-voc";

/// tensorflow/tflite-support@dd3362ea `deeplabv3.tflite`, converted to safetensors.
static EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../../models/embedded/deeplabv3_mnv2_voc257.safetensors");

/// The `bn_eps` metadata entry, or `default`.
pub(crate) fn bn_eps(w: &Weights, default: f64) -> Result<f64> {
    match w.metadata().get("bn_eps") {
        Some(s) => s.trim().parse::<f64>().map_err(|e| Error::Metadata { key: "bn_eps".into(), reason: e.to_string() }),
        None => Ok(default),
    }
}

/// A loaded model: its weights, checked against the architecture, and the means to build its graph
/// for any accepted input size.
pub struct Model {
    pub info: ModelInfo,
    weights: Weights,
    arch: Arch,
}

impl Model {
    /// Opens a safetensors file and recognises its architecture from its metadata and tensor
    /// names. Every tensor is read and checked here, so a bad file fails now, not at first use.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if is_onnx_file(path)? {
            // the imported tensors are dropped before the file's bytes are lowered
            let bytes = crate::onnx::import_file(path)?.to_safetensors()?;
            return Self::from_weights(Weights::from_bytes(bytes, path)?);
        }
        Self::from_weights(Weights::open(path)?)
    }

    /// The model built into the library, [`EMBEDDED_NAME`]: DeepLabV3-MobileNetV2 (depth 0.5) on
    /// PASCAL VOC's 21 classes (people, animals, vehicles, furniture), 2.7 MB, Apache-2.0 (see
    /// `models/embedded/NOTICE.md`). Needs no file and no network.
    pub fn embedded() -> Result<Self> {
        Self::from_weights(Weights::from_bytes(EMBEDDED_WEIGHTS.to_vec(), format!("<embedded {EMBEDDED_NAME}>"))?)
    }

    pub fn from_weights(weights: Weights) -> Result<Self> {
        let meta = weights.metadata();
        // an ONNX graph is lowered here once (its class count is its logits'), and that lowering
        // is the load-time build below
        let mut lowered_onnx = None;
        let (arch, size) = if let Some(graph) = crate::onnx::stored_graph(&weights)? {
            let (h, w) = graph.check_hw();
            let g = lower_stored(&weights, &graph, h, w)?.graph;
            let classes = g.logits.map(|l| g.tensors[l].c).ok_or_else(|| Error::op("onnx graph", "no float 4-D output to take the class map from"))?;
            lowered_onnx = Some(g);
            (Arch::Onnx { graph: Box::new(graph), classes }, SizeRule::MultipleOf(1))
        } else if espnet::recognise(&weights) {
            (Arch::Espnet(espnet::EspNetConfig::detect(&weights)?), espnet::SIZE)
        } else if espnetv2::recognise(&weights) {
            (Arch::EspNetV2(espnetv2::EspNetV2Config::detect(&weights)?), espnetv2::SIZE)
        } else if deeplab_tflite::recognise(&weights) {
            (Arch::DeepLabTflite { classes: deeplab_tflite::classes(&weights)? }, deeplab_tflite::SIZE)
        } else if keras::recognise(&weights) {
            let c = keras::KerasConfig::detect(&weights)?;
            let size = c.size();
            (Arch::Keras(c), size)
        } else if enet::recognise(&weights) {
            (Arch::Enet(enet::EnetConfig::detect(&weights)?), enet::SIZE)
        } else if segnet::recognise(&weights) {
            (Arch::SegNet(segnet::SegNetConfig::detect(&weights)?), segnet::SIZE)
        } else if fcn::recognise(&weights) {
            (Arch::Fcn(fcn::FcnConfig::detect(&weights)?), fcn::SIZE)
        } else if let Some(c) = torchvision::TvConfig::detect(&weights)? {
            (Arch::Torchvision(c), torchvision::SIZE)
        } else {
            let hint = meta.get("architecture").or_else(|| meta.get("name")).cloned().unwrap_or_else(|| "no `architecture` metadata and no known tensor names".into());
            return Err(Error::UnknownArchitecture(hint));
        };
        let num_classes = match &arch {
            Arch::Espnet(c) => c.classes,
            Arch::Torchvision(c) => c.classes,
            Arch::DeepLabTflite { classes } => *classes,
            Arch::EspNetV2(c) => c.classes,
            Arch::SegNet(c) => c.classes,
            Arch::Fcn(c) => c.classes,
            Arch::Enet(c) => c.classes,
            Arch::Keras(c) => c.classes(),
            Arch::Onnx { classes, .. } => *classes,
        };
        let classes = match meta.get("classes") {
            Some(s) => serde_json::from_str::<Vec<String>>(s).map_err(|e| Error::Metadata { key: "classes".into(), reason: e.to_string() })?,
            None if num_classes == VOC_CLASSES.len() => VOC_CLASSES.iter().map(|s| s.to_string()).collect(),
            None => (0..num_classes).map(|i| format!("class{i}")).collect(),
        };
        // a single sigmoid output names its positive class; the class map also has the negative one
        let binary = matches!(&arch, Arch::Keras(c) if c.outputs == 1);
        let classes = if binary && classes.len() == 1 { vec!["background".to_string(), classes[0].clone()] } else { classes };
        if classes.len() != num_classes {
            return Err(Error::Metadata { key: "classes".into(), reason: format!("{} names for {} model outputs", classes.len(), num_classes) });
        }
        let palette = match meta.get("palette_rgb") {
            Some(s) => serde_json::from_str::<Vec<[u8; 3]>>(s).map_err(|e| Error::Metadata { key: "palette_rgb".into(), reason: e.to_string() })?,
            None => default_palette(num_classes),
        };
        if palette.len() < num_classes {
            return Err(Error::Metadata { key: "palette_rgb".into(), reason: format!("{} colours for {} classes", palette.len(), num_classes) });
        }
        // a one-channel Keras model (the U-Net): grey, min-max normalised over the image
        let grey_minmax = matches!(&arch, Arch::Keras(c) if c.input_channels == 1);
        let info = ModelInfo {
            name: meta.get("name").cloned().unwrap_or_else(|| weights.path().file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
            architecture: match &arch {
                Arch::Espnet(c) => c.describe(),
                Arch::Torchvision(c) => c.describe(),
                Arch::DeepLabTflite { classes } => format!("DeepLabV3 MobileNetV2-0.5 OS8, TFLite layout ({classes} classes)"),
                Arch::EspNetV2(c) => c.describe(),
                Arch::SegNet(c) => c.describe(),
                Arch::Fcn(c) => c.describe(),
                Arch::Enet(c) => c.describe(),
                Arch::Keras(c) => c.describe(),
                Arch::Onnx { graph, .. } => format!("ONNX graph (opset {}, {} nodes{})", graph.opset, graph.nodes.len(), if graph.producer.is_empty() { String::new() } else { format!(", from {}", graph.producer) }),
            },
            classes,
            palette,
            normalize: if grey_minmax {
                Normalize::identity()
            } else if matches!(arch, Arch::Onnx { .. }) && !meta.contains_key("input") && !meta.contains_key("atrous_normalize") {
                // an ONNX file that does not say: the caller passes --mean/--std (see `normalize_known`)
                Normalize::identity()
            } else {
                Normalize::from_metadata(meta)?
            },
            size,
            run_size: run_size_from_metadata(meta)?.or(match &arch {
                Arch::Enet(_) => Some(enet::RUN_SIZE),
                Arch::Onnx { graph, .. } => match graph.declared_hw() {
                    (Some(h), Some(w)) => Some((h, w)),
                    _ => None,
                },
                _ => None,
            }),
            parameters: 0,
            grey_minmax,
        };
        let mut model = Model { info, weights, arch };
        // Build once at the smallest accepted size (an ONNX graph at its own, lowered above):
        // this reads and checks every tensor.
        match lowered_onnx {
            Some(mut g) => {
                g.validate()?;
                crate::passes::optimize(&mut g)?;
            }
            None => {
                let (h, w) = model.info.size.run_size(1, 1);
                model.graph(h, w)?;
            }
        }
        let arch_name = model.info.architecture.clone();
        model.weights.check_all_used(&arch_name, |_| false)?;
        model.info.parameters = model.weights.names().map(|n| model.weights.shape(n).map_or(0, |s| s.iter().product::<usize>())).sum();
        Ok(model)
    }

    /// The graph for an `h x w` input, after the rewrite passes ([`crate::passes::optimize`]).
    pub fn graph(&self, h: usize, w: usize) -> Result<Graph> {
        let mut g = self.plain_graph(h, w)?;
        crate::passes::optimize(&mut g)?;
        Ok(g)
    }

    /// The graph for an `h x w` input as the builder emits it: plain operators, nothing fused.
    pub fn plain_graph(&self, h: usize, w: usize) -> Result<Graph> {
        if h > MAX_SIDE || w > MAX_SIDE {
            return Err(Error::InputSize { model: self.info.name.clone(), h, w, reason: format!("larger than {MAX_SIDE} pixels on a side, the most atrous plans (checked before any size arithmetic)") });
        }
        if !self.info.size.accepts(h, w) {
            let reason = match self.info.size {
                SizeRule::MultipleOf(m) => format!("height and width must be positive multiples of {m}"),
                SizeRule::Fixed(fh, fw) => format!("the model takes exactly {fh}x{fw}"),
            };
            return Err(Error::InputSize { model: self.info.name.clone(), h, w, reason });
        }
        let g = match &self.arch {
            Arch::Espnet(c) => espnet::build(&self.weights, c, h, w)?,
            Arch::Torchvision(c) => torchvision::build(&self.weights, c, h, w)?,
            Arch::DeepLabTflite { .. } => deeplab_tflite::build(&self.weights, h, w)?,
            Arch::EspNetV2(c) => espnetv2::build(&self.weights, c, h, w)?,
            Arch::SegNet(c) => segnet::build(&self.weights, c, h, w)?,
            Arch::Fcn(c) => fcn::build(&self.weights, c, h, w)?,
            Arch::Enet(c) => enet::build(&self.weights, c, h, w)?,
            Arch::Keras(c) => keras::build(&self.weights, c, h, w)?,
            Arch::Onnx { graph, .. } => lower_stored(&self.weights, graph, h, w)?.graph,
        };
        g.validate()?;
        Ok(g)
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The stored ONNX graph, for a model read from an ONNX file or a converted one.
    pub fn onnx_graph(&self) -> Option<&crate::onnx::IrGraph> {
        match &self.arch {
            Arch::Onnx { graph, .. } => Some(graph),
            _ => None,
        }
    }

    /// Whether the file says how to normalise pixels (an ONNX file may not: the caller then
    /// sets [`ModelInfo::normalize`]).
    pub fn normalize_known(&self) -> bool {
        let m = self.weights.metadata();
        !matches!(self.arch, Arch::Onnx { .. }) || m.contains_key("input") || m.contains_key("atrous_normalize")
    }
}

/// Whether `path` holds an ONNX model (by extension, else by its first bytes).
pub fn is_onnx_file(path: &Path) -> Result<bool> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        return Ok(true);
    }
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        f.read(&mut head).map_err(|e| Error::io(path, e))?
    };
    Ok(crate::onnx::looks_like_onnx(&head[..n]))
}

/// Lowers a stored graph, its initializers read from the file.
fn lower_stored(w: &Weights, g: &crate::onnx::IrGraph, h: usize, wd: usize) -> Result<crate::onnx::Lowered> {
    crate::onnx::lower(g, &|name: &str, t: i32| crate::onnx::stored_tensor(w, name, t), h, wd, &HashMap::new())
}

/// Architectures [`shapes_only`] can build without weights.
pub const SHAPES_ONLY: [&str; 2] = ["fcn8s-vgg16", "segnet-vgg16bn"];

/// A model of a known architecture at its canonical full width with zero weights (held as f16
/// in memory), for planning and inspection when no weights file is at hand: `fcn8s-vgg16` (Caffe
/// voc-fcn8s, VGG16 widths 64..512, fc6/fc7 4096, 21 classes) or `segnet-vgg16bn` (12 classes).
pub fn shapes_only(arch: &str) -> Result<Model> {
    let vgg = [(1, [64, 64, 0]), (2, [128, 128, 0]), (3, [256, 256, 256]), (4, [512, 512, 512]), (5, [512, 512, 512])];
    let mut shapes: Vec<(String, Vec<usize>)> = vec![];
    let conv = |shapes: &mut Vec<(String, Vec<usize>)>, name: &str, o: usize, i: usize, k: usize, bias: bool| {
        shapes.push((format!("{name}.weight"), vec![o, i, k, k]));
        if bias {
            shapes.push((format!("{name}.bias"), vec![o]));
        }
    };
    let bn = |shapes: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for t in ["weight", "bias", "running_mean", "running_var"] {
            shapes.push((format!("{name}.{t}"), vec![c]));
        }
    };
    let mut c_in = 3;
    let mut encoder = vec![];
    for (s, widths) in vgg {
        for (i, &w) in widths.iter().enumerate().filter(|(_, &w)| w > 0) {
            encoder.push((format!("conv{s}_{}", i + 1), c_in, w));
            c_in = w;
        }
    }
    match arch {
        "fcn8s-vgg16" => {
            for (n, i, o) in &encoder {
                conv(&mut shapes, n, *o, *i, 3, true);
            }
            conv(&mut shapes, "fc6", 4096, 512, 7, true);
            conv(&mut shapes, "fc7", 4096, 4096, 1, true);
            conv(&mut shapes, "score_fr", 21, 4096, 1, true);
            conv(&mut shapes, "score_pool4", 21, 512, 1, true);
            conv(&mut shapes, "score_pool3", 21, 256, 1, true);
            conv(&mut shapes, "upscore2", 21, 21, 4, false);
            conv(&mut shapes, "upscore_pool4", 21, 21, 4, false);
            conv(&mut shapes, "upscore8", 21, 21, 16, false);
        }
        "segnet-vgg16bn" => {
            for (n, i, o) in &encoder {
                conv(&mut shapes, n, *o, *i, 3, true);
                bn(&mut shapes, &format!("{n}_bn"), *o);
                // the decoder mirror: conv{s}_{i}_D maps o -> i (the classifier conv1_1_D -> 12)
                let out = if n == "conv1_1" { 12 } else { *i };
                conv(&mut shapes, &format!("{n}_D"), out, *o, 3, true);
                if n != "conv1_1" {
                    bn(&mut shapes, &format!("{n}_D_bn"), out);
                }
            }
        }
        other => return Err(Error::UnknownArchitecture(format!("`{other}` (shapes-only models: {SHAPES_ONLY:?})"))),
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(n, s)| {
            let bytes = vec![0u8; 2 * s.iter().product::<usize>()];
            (n, s, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        data.iter().map(|(n, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b).map_err(|e| Error::op(n, e.to_string()))?))).collect::<Result<_>>()?;
    let meta = HashMap::from([
        ("name".to_string(), format!("{arch} (shapes only, zero weights)")),
        ("input".to_string(), r#"{"channel_order": "RGB", "formula": "x[c] = (pixel[c]/255 - mean[c]) / std[c]", "mean_rgb": [0.485, 0.456, 0.406], "std_rgb": [0.229, 0.224, 0.225]}"#.to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::op(arch, e.to_string()))?;
    Model::from_weights(Weights::from_bytes(bytes, format!("<{arch}>"))?)
}

/// PASCAL VOC class names (also torchvision's `COCO_WITH_VOC_LABELS`), the default for 21-class
/// files without a `classes` entry.
pub const VOC_CLASSES: [&str; 21] =
    ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"];

/// The PASCAL VOC colour map (bit-interleaved), used when a file has no palette.
pub fn default_palette(n: usize) -> Vec<[u8; 3]> {
    (0..n.max(256))
        .map(|i| {
            let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
            let mut c = i;
            for j in 0..8 {
                r |= ((c & 1) as u8) << (7 - j);
                g |= (((c >> 1) & 1) as u8) << (7 - j);
                b |= (((c >> 2) & 1) as u8) << (7 - j);
                c >>= 3;
            }
            [r, g, b]
        })
        .collect()
}

/// Inference batch norm as a per-channel affine map.
pub(crate) struct BatchNorm {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl BatchNorm {
    /// From gamma, beta, mean and variance: `scale = gamma / sqrt(var + eps)`,
    /// `shift = beta - mean * scale` (float64, rounded once).
    pub fn from_stats(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64) -> Self {
        let (mut scale, mut shift) = (vec![0f32; gamma.len()], vec![0f32; gamma.len()]);
        for i in 0..gamma.len() {
            let s = gamma[i] as f64 / (var[i] as f64 + eps).sqrt();
            scale[i] = s as f32;
            shift[i] = (beta[i] as f64 - mean[i] as f64 * s) as f32;
        }
        BatchNorm { scale, shift }
    }

    /// Reads `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`, each `[c]`.
    pub fn load(w: &Weights, prefix: &str, c: usize, eps: f64) -> Result<Self> {
        let gamma = w.get(&format!("{prefix}.weight"), &[c])?;
        let beta = w.get(&format!("{prefix}.bias"), &[c])?;
        let mean = w.get(&format!("{prefix}.running_mean"), &[c])?;
        let var = w.get(&format!("{prefix}.running_var"), &[c])?;
        let mut scale = vec![0f32; c];
        let mut shift = vec![0f32; c];
        for i in 0..c {
            let s = gamma[i] as f64 / (var[i] as f64 + eps).sqrt();
            scale[i] = s as f32;
            shift[i] = (beta[i] as f64 - mean[i] as f64 * s) as f32;
        }
        Ok(BatchNorm { scale, shift })
    }

    /// Folds into a preceding convolution with `out_c` output channels (weights laid out with the
    /// output channel outermost): returns the new weights and bias.
    pub fn fold_into(&self, weight: &[f32], bias: Option<&[f32]>, out_c: usize) -> (Vec<f32>, Vec<f32>) {
        let per = weight.len() / out_c;
        let w = weight.iter().enumerate().map(|(i, &v)| (v as f64 * self.scale[i / per] as f64) as f32).collect();
        let b = (0..out_c).map(|o| (bias.map_or(0.0, |b| b[o] as f64) * self.scale[o] as f64 + self.shift[o] as f64) as f32).collect();
        (w, b)
    }
}

/// Per-channel BN (+ activation) over a channel concatenation of `inputs`, written to `out`: one
/// affine node per input range, so the concatenation itself is never materialised.
pub(crate) fn affine_over_concat(g: &mut Graph, name: &str, inputs: &[View], out: View, bn: &BatchNorm, slopes: Option<&[f32]>) -> Result<()> {
    let total: usize = inputs.iter().map(|v| v.c).sum();
    if total != out.c || bn.scale.len() != total {
        return Err(Error::op(name, format!("concatenation of {total} channels into {} with {} norms", out.c, bn.scale.len())));
    }
    let mut c0 = 0;
    for (i, v) in inputs.iter().enumerate() {
        let r = c0..c0 + v.c;
        let act = match slopes {
            Some(s) => Act::PRelu(s[r.clone()].to_vec()),
            None => Act::None,
        };
        let y = View { tensor: out.tensor, c0: out.c0 + c0, c: v.c };
        g.affine(&format!("{name}[{i}]"), *v, None, y, bn.scale[r.clone()].to_vec(), bn.shift[r].to_vec(), act)?;
        c0 += v.c;
    }
    Ok(())
}
