//! torchvision segmentation models with `state_dict` names exactly as torchvision writes them
//! (pytorch/vision v0.29): `deeplabv3_mobilenet_v3_large`, `lraspp_mobilenet_v3_large`,
//! `deeplabv3_resnet50` (and `deeplabv3_resnet101`, whose layer counts are read off the names).

use super::net::{Conv, Net};
use super::SizeRule;
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::weights::Weights;

/// Any input size works: every resize is to an explicit size.
pub const SIZE: SizeRule = SizeRule::MultipleOf(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TvArch {
    DeepLabV3MobileNetV3Large,
    LrasppMobileNetV3Large,
    /// Bottleneck counts of layer1..layer4 ([3, 4, 6, 3] for ResNet-50).
    DeepLabV3ResNet(Vec<usize>),
}

#[derive(Clone, Debug)]
pub struct TvConfig {
    pub arch: TvArch,
    pub classes: usize,
}

impl TvConfig {
    pub fn describe(&self) -> String {
        match &self.arch {
            TvArch::DeepLabV3MobileNetV3Large => format!("torchvision deeplabv3_mobilenet_v3_large ({} classes)", self.classes),
            TvArch::LrasppMobileNetV3Large => format!("torchvision lraspp_mobilenet_v3_large ({} classes)", self.classes),
            TvArch::DeepLabV3ResNet(l) => format!("torchvision deeplabv3_resnet{} ({} classes)", if l[2] == 23 { 101 } else { 50 }, self.classes),
        }
    }

    /// Recognises the architecture from tensor names; None when the file is not a torchvision
    /// segmentation model.
    pub fn detect(w: &Weights) -> Result<Option<Self>> {
        let arch = if w.has("classifier.cbr.0.weight") && w.has("backbone.16.0.weight") {
            TvArch::LrasppMobileNetV3Large
        } else if w.has("classifier.0.convs.0.0.weight") && w.has("backbone.16.0.weight") {
            TvArch::DeepLabV3MobileNetV3Large
        } else if w.has("classifier.0.convs.0.0.weight") && w.has("backbone.layer4.0.conv1.weight") {
            let count = |l: usize| (0..).take_while(|i| w.has(&format!("backbone.layer{l}.{i}.conv1.weight"))).count();
            TvArch::DeepLabV3ResNet((1..=4).map(count).collect())
        } else {
            return Ok(None);
        };
        let cls = match arch {
            TvArch::LrasppMobileNetV3Large => "classifier.low_classifier.weight",
            _ => "classifier.4.weight",
        };
        let shape = w.require_shape(cls)?;
        let classes = *shape.first().ok_or_else(|| Error::ShapeMismatch { name: cls.into(), expected: vec![0, 0, 1, 1], got: shape.clone() })?;
        Ok(Some(TvConfig { arch, classes }))
    }
}

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: usize) -> usize {
    let d = 8;
    let mut n = ((v + d / 2) / d * d).max(d);
    if (n as f64) < 0.9 * v as f64 {
        n += d;
    }
    n
}

/// MobileNetV3-Large inverted-residual settings: kernel, expanded, out, SE, hardswish, stride,
/// dilation (segmentation models use the dilated variant: the last stage keeps stride 16).
const MNV3_LARGE: [(usize, usize, usize, bool, bool, usize, usize); 15] = [
    (3, 16, 16, false, false, 1, 1),
    (3, 64, 24, false, false, 2, 1),
    (3, 72, 24, false, false, 1, 1),
    (5, 72, 40, true, false, 2, 1),
    (5, 120, 40, true, false, 1, 1),
    (5, 120, 40, true, false, 1, 1),
    (3, 240, 80, false, true, 2, 1),
    (3, 200, 80, false, true, 1, 1),
    (3, 184, 80, false, true, 1, 1),
    (3, 184, 80, false, true, 1, 1),
    (3, 480, 112, true, true, 1, 1),
    (3, 672, 112, true, true, 1, 1),
    (5, 672, 160, true, true, 2, 2),
    (5, 960, 160, true, true, 1, 2),
    (5, 960, 160, true, true, 1, 2),
];

/// MobileNetV3-Large features; returns the outputs of `features[4]` (stride 8) and
/// `features[16]` (stride 16, 960 channels).
fn mobilenet_v3_large(n: &mut Net) -> Result<(View, View)> {
    n.eps = 1e-3;
    let x = n.input();
    let mut x = n.conv(x, Conv::new("backbone.0.0.weight", 16, 3).stride(2).bn("backbone.0.1").act(Act::HardSwish), None, None)?;
    let mut low = x;
    for (i, &(k, exp, out, se, hs, stride, dil)) in MNV3_LARGE.iter().enumerate() {
        let f = i + 1;
        let act = if hs { Act::HardSwish } else { Act::Relu };
        let input = x;
        let mut j = 0;
        let mut h = x;
        if exp != x.c {
            let wn = format!("backbone.{f}.block.{j}.0.weight");
            h = n.conv(h, Conv::new(&wn, exp, 1).bn(format!("backbone.{f}.block.{j}.1")).act(act.clone()), None, None)?;
            j += 1;
        }
        let stride = if dil > 1 { 1 } else { stride };
        let wn = format!("backbone.{f}.block.{j}.0.weight");
        h = n.conv(h, Conv::new(&wn, exp, k).stride(stride).dil(dil).groups(exp).bn(format!("backbone.{f}.block.{j}.1")).act(act), None, None)?;
        j += 1;
        if se {
            let sq = make_divisible(exp / 4);
            let p = format!("backbone.{f}.block.{j}");
            let s = n.global_pool(&format!("{p}.avgpool"), h)?;
            let (w1, w2) = (format!("{p}.fc1.weight"), format!("{p}.fc2.weight"));
            let s = n.conv(s, Conv::new(&w1, sq, 1).bias(format!("{p}.fc1.bias")).act(Act::Relu), None, None)?;
            let s = n.conv(s, Conv::new(&w2, exp, 1).bias(format!("{p}.fc2.bias")).act(Act::HardSigmoid), None, None)?;
            let (hh, ww) = n.g.hw(h);
            let y = n.tensor(&format!("{p}.scaled"), exp, hh, ww);
            n.g.mul(&format!("{p}.scale"), h, s, y)?;
            h = y;
            j += 1;
        }
        let residual = stride == 1 && input.c == out;
        let wn = format!("backbone.{f}.block.{j}.0.weight");
        x = n.conv(h, Conv::new(&wn, out, 1).bn(format!("backbone.{f}.block.{j}.1")), None, residual.then_some(input))?;
        if f == 4 {
            low = x;
        }
    }
    let high = n.conv(x, Conv::new("backbone.16.0.weight", 960, 1).bn("backbone.16.1").act(Act::HardSwish), None, None)?;
    Ok((low, high))
}

/// torchvision ResNet with dilated layer3/layer4 (`replace_stride_with_dilation=[False, True,
/// True]`, output stride 8); returns layer4's output.
fn resnet(n: &mut Net, layers: &[usize]) -> Result<View> {
    n.eps = 1e-5;
    let x = n.input();
    let x = n.conv(x, Conv::new("backbone.conv1.weight", 64, 7).stride(2).bn("backbone.bn1").act(Act::Relu), None, None)?;
    let (h, w) = n.g.hw(x);
    let geom = crate::shape::Pool2dGeom::new(64, h, w, 3, 2, 1, false);
    let (ph, pw) = geom.out_hw()?;
    let mut x_out = n.tensor("backbone.maxpool", 64, ph, pw);
    n.g.pool2d("backbone.maxpool", x, x_out, geom, crate::shape::PoolKind::Max)?;
    let mut dilation = 1;
    for (li, (&blocks, (width, stride, dilate))) in layers.iter().zip([(64, 1, false), (128, 2, false), (256, 2, true), (512, 2, true)]).enumerate() {
        let l = li + 1;
        let prev = dilation;
        let mut stride = stride;
        if dilate {
            dilation *= stride;
            stride = 1;
        }
        for b in 0..blocks {
            let p = format!("backbone.layer{l}.{b}");
            let (s, d) = if b == 0 { (stride, prev) } else { (1, dilation) };
            let input = x_out;
            let identity = if b == 0 && (stride != 1 || input.c != width * 4) {
                let wn = format!("{p}.downsample.0.weight");
                n.conv(input, Conv::new(&wn, width * 4, 1).stride(stride).bn(format!("{p}.downsample.1")), None, None)?
            } else {
                input
            };
            let (w1, w2, w3) = (format!("{p}.conv1.weight"), format!("{p}.conv2.weight"), format!("{p}.conv3.weight"));
            let h = n.conv(input, Conv::new(&w1, width, 1).bn(format!("{p}.bn1")).act(Act::Relu), None, None)?;
            let h = n.conv(h, Conv::new(&w2, width, 3).stride(s).dil(d).bn(format!("{p}.bn2")).act(Act::Relu), None, None)?;
            x_out = n.conv(h, Conv::new(&w3, width * 4, 1).bn(format!("{p}.bn3")).act(Act::Relu), None, Some(identity))?;
        }
    }
    Ok(x_out)
}

/// torchvision's DeepLabHead: ASPP (1x1, three atrous 3x3 at rates 12/24/36, image pooling) with
/// every branch writing into its channel range of one tensor, projection, 3x3, classifier.
fn deeplab_head(n: &mut Net, x: View, classes: usize) -> Result<View> {
    n.eps = 1e-5;
    let (h, w) = n.g.hw(x);
    let cat = n.tensor("classifier.0.cat", 5 * 256, h, w);
    let t = cat.tensor;
    n.conv(x, Conv::new("classifier.0.convs.0.0.weight", 256, 1).bn("classifier.0.convs.0.1").act(Act::Relu), Some(n.g.slice(t, 0, 256)), None)?;
    for (i, rate) in [(1usize, 12usize), (2, 24), (3, 36)] {
        let wn = format!("classifier.0.convs.{i}.0.weight");
        n.conv(x, Conv::new(&wn, 256, 3).dil(rate).bn(format!("classifier.0.convs.{i}.1")).act(Act::Relu), Some(n.g.slice(t, 256 * i, 256)), None)?;
    }
    let pooled = n.global_pool("classifier.0.convs.4.0", x)?;
    let pooled = n.conv(pooled, Conv::new("classifier.0.convs.4.1.weight", 256, 1).bn("classifier.0.convs.4.2").act(Act::Relu), None, None)?;
    n.resize("classifier.0.convs.4.upsample", pooled, h, w, false, Some(n.g.slice(t, 1024, 256)))?;
    let p = n.conv(cat, Conv::new("classifier.0.project.0.weight", 256, 1).bn("classifier.0.project.1").act(Act::Relu), None, None)?;
    let p = n.conv(p, Conv::new("classifier.1.weight", 256, 3).bn("classifier.2").act(Act::Relu), None, None)?;
    n.conv(p, Conv::new("classifier.4.weight", classes, 1).bias("classifier.4.bias"), None, None)
}

/// torchvision's LRASPPHead.
fn lraspp_head(n: &mut Net, low: View, high: View, classes: usize) -> Result<View> {
    n.eps = 1e-5;
    let x = n.conv(high, Conv::new("classifier.cbr.0.weight", 128, 1).bn("classifier.cbr.1").act(Act::Relu), None, None)?;
    let s = n.global_pool("classifier.scale.0", high)?;
    let s = n.conv(s, Conv::new("classifier.scale.1.weight", 128, 1).act(Act::Sigmoid), None, None)?;
    let (hh, hw) = n.g.hw(x);
    let y = n.tensor("classifier.scaled", 128, hh, hw);
    n.g.mul("classifier.scale.mul", x, s, y)?;
    let (lh, lw) = n.g.hw(low);
    let up = n.resize("classifier.upsample", y, lh, lw, false, None)?;
    let hi = n.conv(up, Conv::new("classifier.high_classifier.weight", classes, 1).bias("classifier.high_classifier.bias"), None, None)?;
    n.conv(low, Conv::new("classifier.low_classifier.weight", classes, 1).bias("classifier.low_classifier.bias"), None, Some(hi))
}

pub fn build(w: &Weights, cfg: &TvConfig, h: usize, wd: usize) -> Result<Graph> {
    let mut n = Net::new(w, 3, h, wd, 1e-5);
    let out = match &cfg.arch {
        TvArch::DeepLabV3MobileNetV3Large => {
            let (_, high) = mobilenet_v3_large(&mut n)?;
            deeplab_head(&mut n, high, cfg.classes)?
        }
        TvArch::LrasppMobileNetV3Large => {
            let (low, high) = mobilenet_v3_large(&mut n)?;
            lraspp_head(&mut n, low, high, cfg.classes)?
        }
        TvArch::DeepLabV3ResNet(layers) => {
            let x = resnet(&mut n, layers)?;
            deeplab_head(&mut n, x, cfg.classes)?
        }
    };
    let logits = n.resize("upsample", out, h, wd, false, None)?;
    n.g.set_logits(logits.tensor);
    Ok(n.g)
}

#[cfg(test)]
mod tests {
    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(super::make_divisible(72 / 4), 24);
        assert_eq!(super::make_divisible(120 / 4), 32);
        assert_eq!(super::make_divisible(480 / 4), 120);
        assert_eq!(super::make_divisible(672 / 4), 168);
        assert_eq!(super::make_divisible(960 / 4), 240);
    }
}
