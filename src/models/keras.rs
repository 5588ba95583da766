//! Keras functional models described by their own `model_config` JSON (the `keras_model_config`
//! metadata entry), with weights named `<layer>/<weight>` in Keras layout (Conv2D kernels HWIO,
//! activations channels-last). Layers: InputLayer, Conv2D (padding `same`/`valid`, strides,
//! dilation, bias, activation), BatchNormalization (channel axis, epsilon, center/scale),
//! MaxPooling2D (`valid`), UpSampling2D (nearest), Concatenate (channel axis), Dropout (identity at
//! inference) and Activation. Anything else is a typed error naming the layer. The U-Net in
//! `../shared/models/unet_rbm.safetensors` is such a model.
//!
//! A single-channel output whose last layer applies a sigmoid becomes the pre-sigmoid logit: the
//! class map is then `p > 0.5` (`logit > 0`) and the probabilities head applies the sigmoid.

use std::collections::HashMap;

use super::net::Net;
use super::{BatchNorm, SizeRule};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::ops::UpsampleNearest;
use crate::shape::{Conv2dGeom, Pad, Pool2dGeom, PoolKind};
use crate::weights::Weights;

pub fn recognise(w: &Weights) -> bool {
    w.metadata().contains_key("keras_model_config")
}

/// The parsed layer list.
#[derive(Clone, Debug)]
pub struct KerasConfig {
    pub name: String,
    layers: Vec<Layer>,
    pub input_channels: usize,
    /// Output channels (1 with a sigmoid head: a binary mask).
    pub outputs: usize,
    /// The output layer's activation is a sigmoid (kept out of the logits).
    pub sigmoid_head: bool,
    /// Every size must be a multiple of this (2 per pooling).
    pub multiple: usize,
}

#[derive(Clone, Debug)]
struct Layer {
    class: String,
    name: String,
    config: serde_json::Value,
    inputs: Vec<String>,
}

fn bad(layer: &str, reason: impl Into<String>) -> Error {
    Error::Metadata { key: "keras_model_config".into(), reason: format!("layer `{layer}`: {}", reason.into()) }
}

fn pair(c: &serde_json::Value, key: &str, layer: &str) -> Result<(usize, usize)> {
    match c.get(key) {
        Some(serde_json::Value::Array(a)) if a.len() == 2 => {
            let v: Vec<usize> = a.iter().map(|x| x.as_u64().map(|v| v as usize)).collect::<Option<_>>().ok_or_else(|| bad(layer, format!("`{key}` is not two integers")))?;
            Ok((v[0], v[1]))
        }
        Some(serde_json::Value::Number(n)) => {
            let v = n.as_u64().ok_or_else(|| bad(layer, format!("`{key}` is not an integer")))? as usize;
            Ok((v, v))
        }
        _ => Err(bad(layer, format!("no `{key}`"))),
    }
}

fn string<'a>(c: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    c.get(key).and_then(|v| v.as_str())
}

impl KerasConfig {
    pub fn detect(w: &Weights) -> Result<Self> {
        let raw = w.metadata().get("keras_model_config").ok_or_else(|| bad("model", "missing"))?;
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad("model", e.to_string()))?;
        let config = v.get("config").ok_or_else(|| bad("model", "no `config`"))?;
        let name = string(config, "name").unwrap_or("keras model").to_string();
        let list = config.get("layers").and_then(|l| l.as_array()).ok_or_else(|| bad("model", "no `layers` list"))?;
        let mut layers = vec![];
        for l in list {
            let lname = string(l.get("config").unwrap_or(&serde_json::Value::Null), "name").or_else(|| string(l, "name")).ok_or_else(|| bad("?", "a layer without a name"))?.to_string();
            let class = string(l, "class_name").ok_or_else(|| bad(&lname, "no class_name"))?.to_string();
            let mut inputs = vec![];
            if let Some(nodes) = l.get("inbound_nodes").and_then(|n| n.as_array()) {
                if nodes.len() > 1 {
                    return Err(bad(&lname, "a layer applied more than once (shared layers) is not supported"));
                }
                for node in nodes {
                    for inb in node.as_array().ok_or_else(|| bad(&lname, "inbound node is not a list"))? {
                        let src = inb.get(0).and_then(|s| s.as_str()).ok_or_else(|| bad(&lname, "inbound entry without a layer name"))?;
                        inputs.push(src.to_string());
                    }
                }
            }
            layers.push(Layer { class, name: lname, config: l.get("config").cloned().unwrap_or(serde_json::Value::Null), inputs });
        }
        let input = layers.iter().find(|l| l.class == "InputLayer").ok_or_else(|| bad("model", "no InputLayer"))?;
        let shape = input.config.get("batch_input_shape").and_then(|s| s.as_array()).ok_or_else(|| bad(&input.name, "no batch_input_shape"))?;
        let input_channels = shape.last().and_then(|c| c.as_u64()).ok_or_else(|| bad(&input.name, "the channel count (last axis) is not fixed"))? as usize;
        let out = layers.last().ok_or_else(|| bad("model", "no layers"))?;
        if out.class != "Conv2D" {
            return Err(bad(&out.name, format!("the output layer is a {}; a Conv2D is expected", out.class)));
        }
        let outputs = out.config.get("filters").and_then(|f| f.as_u64()).ok_or_else(|| bad(&out.name, "no filters"))? as usize;
        let sigmoid_head = string(&out.config, "activation") == Some("sigmoid");
        let pools = layers.iter().filter(|l| l.class == "MaxPooling2D").count();
        Ok(KerasConfig { name, layers, input_channels, outputs, sigmoid_head, multiple: 1 << pools })
    }

    pub fn size(&self) -> SizeRule {
        SizeRule::MultipleOf(self.multiple)
    }

    pub fn describe(&self) -> String {
        let head = if self.sigmoid_head && self.outputs == 1 { "sigmoid mask".to_string() } else { format!("{} outputs", self.outputs) };
        format!("Keras model `{}` ({} layers; {} input channel(s), {head})", self.name, self.layers.len(), self.input_channels)
    }

    /// Class-map classes: 2 for a single-channel (sigmoid) output, else the output channels.
    pub fn classes(&self) -> usize {
        if self.outputs == 1 {
            2
        } else {
            self.outputs
        }
    }
}

/// TF's padding for one axis: `same` pads `total = max((ceil(n/s) - 1) * s + (k - 1) * d + 1 - n, 0)`
/// with the odd pixel after; `valid` none.
fn tf_pad(n: usize, k: usize, s: usize, d: usize, same: bool) -> (usize, usize) {
    if !same {
        return (0, 0);
    }
    let total = ((n.div_ceil(s) - 1) * s + (k - 1) * d + 1).saturating_sub(n);
    (total / 2, total - total / 2)
}

fn activation(name: Option<&str>, layer: &str, c: usize) -> Result<Act> {
    Ok(match name {
        None | Some("linear") => Act::None,
        Some("relu") => Act::Relu,
        Some("sigmoid") => Act::Sigmoid,
        Some("hard_sigmoid") => Act::HardSigmoid,
        Some(other) => return Err(bad(layer, format!("activation `{other}` is not supported ({c} channels)"))),
    })
}

pub fn build(w: &Weights, cfg: &KerasConfig, h: usize, wd: usize) -> Result<Graph> {
    let mut n = Net::new(w, cfg.input_channels, h, wd, 1e-3);
    let mut at: HashMap<String, View> = HashMap::new();
    let last = cfg.layers.len() - 1;
    for (li, l) in cfg.layers.iter().enumerate() {
        let c = &l.config;
        let input = |i: usize| -> Result<View> {
            let src = l.inputs.get(i).ok_or_else(|| bad(&l.name, "missing input"))?;
            at.get(src).copied().ok_or_else(|| bad(&l.name, format!("input `{src}` is not defined before it")))
        };
        let y = match l.class.as_str() {
            "InputLayer" => n.input(),
            "Conv2D" => {
                let x = input(0)?;
                if string(c, "data_format").is_some_and(|f| f != "channels_last") {
                    return Err(bad(&l.name, "only channels_last is supported"));
                }
                let filters = c.get("filters").and_then(|f| f.as_u64()).ok_or_else(|| bad(&l.name, "no filters"))? as usize;
                let (kh, kw) = pair(c, "kernel_size", &l.name)?;
                let (sh, sw) = pair(c, "strides", &l.name).unwrap_or((1, 1));
                let (dh, dw) = pair(c, "dilation_rate", &l.name).unwrap_or((1, 1));
                let same = match string(c, "padding") {
                    Some("same") => true,
                    Some("valid") | None => false,
                    Some(p) => return Err(bad(&l.name, format!("padding `{p}`"))),
                };
                let (hh, ww) = n.g.hw(x);
                let (pt, pb) = tf_pad(hh, kh, sh, dh, same);
                let (pl, pr) = tf_pad(ww, kw, sw, dw, same);
                let geom =
                    Conv2dGeom { in_c: x.c, in_h: hh, in_w: ww, out_c: filters, k_h: kh, k_w: kw, stride_h: sh, stride_w: sw, dil_h: dh, dil_w: dw, pad: Pad { top: pt, left: pl, bottom: pb, right: pr }, groups: 1 };
                // HWIO -> OIHW
                let k = w.get(&format!("{}/kernel", l.name), &[kh, kw, x.c, filters])?;
                let mut weight = vec![0f32; k.len()];
                for o in 0..filters {
                    for i in 0..x.c {
                        for a in 0..kh {
                            for b in 0..kw {
                                weight[((o * x.c + i) * kh + a) * kw + b] = k[((a * kw + b) * x.c + i) * filters + o];
                            }
                        }
                    }
                }
                let bias = if c.get("use_bias").and_then(|b| b.as_bool()).unwrap_or(true) { Some(w.get(&format!("{}/bias", l.name), &[filters])?) } else { None };
                let mut act = activation(string(c, "activation"), &l.name, filters)?;
                if li == last && cfg.sigmoid_head && filters == 1 {
                    act = Act::None; // the logit; the sigmoid is the probabilities head
                }
                let (oh, ow) = geom.out_hw()?;
                let t = n.tensor(&format!("{}:conv", l.name), filters, oh, ow);
                n.g.conv2d(&l.name, x, t, geom, weight, bias, Act::None, None)?;
                if act == Act::None {
                    t
                } else {
                    let y = n.tensor(&l.name, filters, oh, ow);
                    n.g.affine(&format!("{}.act", l.name), t, None, y, vec![1.0; filters], vec![0.0; filters], act)?;
                    y
                }
            }
            "Activation" => {
                let x = input(0)?;
                let act = activation(string(c, "activation"), &l.name, x.c)?;
                let (hh, ww) = n.g.hw(x);
                let y = n.tensor(&l.name, x.c, hh, ww);
                n.g.affine(&l.name, x, None, y, vec![1.0; x.c], vec![0.0; x.c], act)?;
                y
            }
            "BatchNormalization" => {
                let x = input(0)?;
                let axis = c.get("axis").and_then(|a| a.as_i64()).unwrap_or(-1);
                if axis != -1 && axis != 3 {
                    return Err(bad(&l.name, format!("normalisation over axis {axis}; only the channel axis (-1 or 3) is supported")));
                }
                let eps = c.get("epsilon").and_then(|e| e.as_f64()).unwrap_or(1e-3);
                let get = |wn: &str, default: f32| -> Result<Vec<f32>> {
                    let full = format!("{}/{wn}", l.name);
                    if w.has(&full) {
                        w.get(&full, &[x.c])
                    } else {
                        Ok(vec![default; x.c])
                    }
                };
                let gamma = if c.get("scale").and_then(|v| v.as_bool()).unwrap_or(true) { w.get(&format!("{}/gamma", l.name), &[x.c])? } else { get("gamma", 1.0)? };
                let beta = if c.get("center").and_then(|v| v.as_bool()).unwrap_or(true) { w.get(&format!("{}/beta", l.name), &[x.c])? } else { get("beta", 0.0)? };
                let mean = w.get(&format!("{}/moving_mean", l.name), &[x.c])?;
                let var = w.get(&format!("{}/moving_variance", l.name), &[x.c])?;
                let bn = BatchNorm::from_stats(&gamma, &beta, &mean, &var, eps);
                let (hh, ww) = n.g.hw(x);
                let y = n.tensor(&l.name, x.c, hh, ww);
                n.g.affine(&l.name, x, None, y, bn.scale, bn.shift, Act::None)?;
                y
            }
            "MaxPooling2D" => {
                let x = input(0)?;
                let (kh, kw) = pair(c, "pool_size", &l.name)?;
                let (sh, sw) = pair(c, "strides", &l.name).unwrap_or((kh, kw));
                if string(c, "padding").is_some_and(|p| p != "valid") || kh != kw || sh != sw {
                    return Err(bad(&l.name, "only square 'valid' max pooling is supported"));
                }
                let (hh, ww) = n.g.hw(x);
                let geom = Pool2dGeom::new(x.c, hh, ww, kh, sh, 0, false);
                let (oh, ow) = geom.out_hw()?;
                let y = n.tensor(&l.name, x.c, oh, ow);
                n.g.pool2d(&l.name, x, y, geom, PoolKind::Max)?;
                y
            }
            "UpSampling2D" => {
                let x = input(0)?;
                let (fh, fw) = pair(c, "size", &l.name)?;
                if string(c, "interpolation").is_some_and(|i| i != "nearest") {
                    return Err(bad(&l.name, "only nearest upsampling is supported"));
                }
                let (hh, ww) = n.g.hw(x);
                let y = n.tensor(&l.name, x.c, hh * fh, ww * fw);
                n.g.push(&l.name, UpsampleNearest { x, y })?;
                y
            }
            "Concatenate" => {
                let axis = c.get("axis").and_then(|a| a.as_i64()).unwrap_or(-1);
                if axis != -1 && axis != 3 {
                    return Err(bad(&l.name, format!("concatenation over axis {axis}; only channels are supported")));
                }
                let xs: Vec<View> = (0..l.inputs.len()).map(input).collect::<Result<_>>()?;
                let (hh, ww) = n.g.hw(xs[0]);
                let y = n.tensor(&l.name, xs.iter().map(|v| v.c).sum(), hh, ww);
                n.g.concat(&l.name, xs, y)?;
                y
            }
            "Dropout" | "SpatialDropout2D" => input(0)?,
            other => return Err(bad(&l.name, format!("layer type {other} is not supported"))),
        };
        at.insert(l.name.clone(), y);
    }
    let out = at[&cfg.layers[last].name];
    n.g.set_logits(out.tensor);
    n.g.sigmoid_head = cfg.sigmoid_head && cfg.outputs == 1;
    Ok(n.g)
}
