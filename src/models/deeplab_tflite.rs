//! DeepLabV3 with a MobileNetV2 (depth 0.5) backbone at output stride 8, from the TFLite file of
//! tensorflow/tflite-support (`deeplabv3.tflite`, converted to safetensors with the TFLite tensor
//! names and layouts kept). Filters are OHWI (`[out, kh, kw, in]`) and depthwise filters `[1, kh,
//! kw, C]`; they are transposed to PyTorch's layout at load. Batch norm is already folded into
//! the biases; activations (ReLU6, ReLU) are fused. Padding is TensorFlow's "SAME".

use super::net::Net;
use super::SizeRule;
use crate::error::Result;
use crate::graph::{Act, Graph, View};
use crate::shape::{tf_same_pad, Conv2dGeom};
use crate::weights::Weights;

/// The graph has a fixed input size.
pub const SIZE: SizeRule = SizeRule::Fixed(257, 257);

/// (output channels, depthwise stride, depthwise dilation) of `expanded_conv`, `expanded_conv_1`
/// .. `expanded_conv_16`: MobileNetV2 with depth multiplier 0.5, strides past 1/8 turned into
/// dilation (blocks 6 and 13 keep the previous rate).
const BLOCKS: [(usize, usize, usize); 17] =
    [(8, 1, 1), (12, 2, 1), (12, 1, 1), (16, 2, 1), (16, 1, 1), (16, 1, 1), (32, 1, 1), (32, 1, 2), (32, 1, 2), (32, 1, 2), (48, 1, 2), (48, 1, 2), (48, 1, 2), (80, 1, 2), (80, 1, 4), (80, 1, 4), (160, 1, 4)];

pub fn recognise(w: &Weights) -> bool {
    w.has("MobilenetV2/Conv/weights") && w.has("concat_projection/weights")
}

pub fn classes(w: &Weights) -> Result<usize> {
    Ok(w.require_shape("logits/semantic/weights")?[0])
}

/// A TFLite convolution (OHWI, or `[1, kh, kw, C]` when depthwise) with "SAME" padding.
#[allow(clippy::too_many_arguments)]
fn conv(n: &mut Net, prefix: &str, weight: &str, bias: &str, x: View, out_c: usize, k: usize, stride: usize, dil: usize, depthwise: bool, act: Act, into: Option<View>, add: Option<View>) -> Result<View> {
    let (h, w) = n.g.hw(x);
    let ph = tf_same_pad(h, k, stride, dil);
    let pw = tf_same_pad(w, k, stride, dil);
    let groups = if depthwise { x.c } else { 1 };
    let geom =
        Conv2dGeom { in_c: x.c, in_h: h, in_w: w, out_c, k_h: k, k_w: k, stride_h: stride, stride_w: stride, dil_h: dil, dil_w: dil, pad: crate::shape::Pad { top: ph.0, bottom: ph.1, left: pw.0, right: pw.1 }, groups };
    let wname = format!("{prefix}{weight}");
    let torch = if depthwise {
        let raw = n.w.get(&wname, &[1, k, k, out_c])?;
        // [1, kh, kw, C] -> [C, 1, kh, kw]
        (0..out_c * k * k).map(|i| raw[(i % (k * k)) * out_c + i / (k * k)]).collect::<Vec<f32>>()
    } else {
        let raw = n.w.get(&wname, &[out_c, k, k, x.c])?;
        // OHWI -> OIHW
        let ic = x.c;
        (0..out_c * ic * k * k)
            .map(|i| {
                let (o, r) = (i / (ic * k * k), i % (ic * k * k));
                let (c, yx) = (r / (k * k), r % (k * k));
                raw[(o * k * k + yx) * ic + c]
            })
            .collect::<Vec<f32>>()
    };
    let b = n.w.get(&format!("{prefix}{bias}"), &[out_c])?;
    n.conv_with(prefix.trim_end_matches('/'), x, geom, torch, Some(b), act, into, add)
}

pub fn build(w: &Weights, h: usize, wd: usize) -> Result<Graph> {
    let classes = classes(w)?;
    let mut n = Net::new(w, 3, h, wd, 0.0);
    let x = n.input();
    let mut x = conv(&mut n, "MobilenetV2/Conv/", "weights", "Conv2D_bias", x, 16, 3, 2, 1, false, Act::Relu6, None, None)?;
    for (i, &(out, stride, dil)) in BLOCKS.iter().enumerate() {
        let p = if i == 0 { "MobilenetV2/expanded_conv/".to_string() } else { format!("MobilenetV2/expanded_conv_{i}/") };
        let input = x;
        let mut h = x;
        if i > 0 {
            h = conv(&mut n, &format!("{p}expand/"), "weights", "Conv2D_bias", h, 6 * x.c, 1, 1, 1, false, Act::Relu6, None, None)?;
        }
        h = conv(&mut n, &format!("{p}depthwise/"), "depthwise_weights", "depthwise_bias", h, h.c, 3, stride, dil, true, Act::Relu6, None, None)?;
        let residual = stride == 1 && input.c == out;
        x = conv(&mut n, &format!("{p}project/"), "weights", "Conv2D_bias", h, out, 1, 1, 1, false, Act::None, None, residual.then_some(input))?;
    }
    // head: image pooling and a 1x1 branch, concatenated in one tensor
    let (fh, fw) = n.g.hw(x);
    let cat = n.tensor("concat", 512, fh, fw);
    let pooled = n.global_pool("AvgPool2D", x)?;
    let pooled = conv(&mut n, "image_pooling/", "weights", "Conv2D_bias", pooled, 256, 1, 1, 1, false, Act::Relu, None, None)?;
    n.resize("ResizeBilinear_1", pooled, fh, fw, true, Some(n.g.slice(cat.tensor, 0, 256)))?;
    let aspp0 = n.g.slice(cat.tensor, 256, 256);
    conv(&mut n, "aspp0/", "weights", "Conv2D_bias", x, 256, 1, 1, 1, false, Act::Relu, Some(aspp0), None)?;
    let p = conv(&mut n, "concat_projection/", "weights", "Conv2D_bias", cat, 256, 1, 1, 1, false, Act::Relu, None, None)?;
    let logits = conv(&mut n, "logits/semantic/", "weights", "Conv2D_bias", p, classes, 1, 1, 1, false, Act::None, None, None)?;
    // ResizeBilinear_2 (33 -> 33 with aligned corners) is the identity and is left out.
    let up = n.resize("ResizeBilinear_3", logits, h, wd, true, None)?;
    n.g.set_logits(up.tensor);
    Ok(n.g)
}
