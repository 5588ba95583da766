//! FCN-8s (Long, Shelhamer, Darrell 2015) in Caffe's voc-fcn8s geometry (wkentaro's `FCN8s`, not
//! `FCN8sAtOnce`): a VGG16 trunk whose first convolution pads by 100, five 2x2 max pools with
//! `ceil_mode`, fc6 (7x7, no padding) and fc7 (1x1) as convolutions, `score_fr`, and three
//! transposed convolutions (`upscore2` and `upscore_pool4` k4 s2, `upscore8` k16 s8, no bias) fused
//! with the scores of pool4 and pool3 cropped at offsets 5 and 9; the output is cropped at 31 to
//! the input size. Every width comes from the weights.

use super::net::{Conv, Net};
use super::SizeRule;
use crate::error::Result;
use crate::graph::{Act, Graph, View};
use crate::ops::Crop;
use crate::shape::{ConvT2dGeom, Pad, Pool2dGeom, PoolKind};
use crate::weights::Weights;

/// Any size.
pub const SIZE: SizeRule = SizeRule::MultipleOf(1);
const STAGES: [usize; 5] = [2, 2, 3, 3, 3];

pub fn recognise(w: &Weights) -> bool {
    w.has("conv1_1.weight") && w.has("fc6.weight") && w.has("score_fr.weight") && w.has("upscore8.weight")
}

#[derive(Clone, Debug)]
pub struct FcnConfig {
    pub classes: usize,
}

impl FcnConfig {
    pub fn detect(w: &Weights) -> Result<Self> {
        let s = w.require_shape("score_fr.weight")?;
        Ok(FcnConfig { classes: s[0] })
    }
    pub fn describe(&self) -> String {
        format!("FCN-8s (VGG16 trunk, Caffe voc-fcn8s geometry; {} classes)", self.classes)
    }
}

/// A transposed convolution without bias, `k` x `k`, stride `s`.
fn upscore(n: &mut Net<'_>, name: &str, x: View, k: usize, s: usize, add: Option<View>) -> Result<View> {
    let ws = super::conv_shape(n.w, &format!("{name}.weight"))?;
    let (h, w) = n.g.hw(x);
    let geom = ConvT2dGeom { in_c: x.c, in_h: h, in_w: w, out_c: ws[1], k_h: k, k_w: k, stride_h: s, stride_w: s, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 };
    let weight = n.w.get(&format!("{name}.weight"), &geom.weight_shape())?;
    let (oh, ow) = geom.out_hw()?;
    let t = n.tensor(&format!("{name}:convt"), geom.out_c, oh, ow);
    n.g.conv_transpose2d(name, x, t, geom, weight, None, Act::None)?;
    match add {
        None => Ok(t),
        Some(a) => {
            let y = n.tensor(&format!("{name}.fuse"), geom.out_c, oh, ow);
            n.g.add(&format!("{name}.fuse"), t, a, y)?;
            Ok(y)
        }
    }
}

fn crop(n: &mut Net<'_>, name: &str, x: View, at: usize, (h, w): (usize, usize)) -> Result<View> {
    let y = n.tensor(name, x.c, h, w);
    n.g.push(name, Crop { x, y, top: at, left: at })?;
    Ok(y)
}

pub fn build(w: &Weights, _cfg: &FcnConfig, h: usize, wd: usize) -> Result<Graph> {
    let mut n = Net::new(w, 3, h, wd, 1e-5);
    let mut x = n.input();
    let mut pooled = vec![];
    for (s, &convs) in STAGES.iter().enumerate().map(|(i, c)| (i + 1, c)) {
        for i in 1..=convs {
            let name = format!("conv{s}_{i}.weight");
            let oc = super::conv_shape(w, &name)?[0];
            let mut c = Conv::new(&name, oc, 3).bias(format!("conv{s}_{i}.bias")).act(Act::Relu);
            if s == 1 && i == 1 {
                c.pad = Some(Pad::same(100));
            }
            x = n.conv(x, c, None, None)?;
        }
        let (ph, pw) = n.g.hw(x);
        let geom = Pool2dGeom::new(x.c, ph, pw, 2, 2, 0, true);
        let (oh, ow) = geom.out_hw()?;
        let y = n.tensor(&format!("pool{s}"), x.c, oh, ow);
        n.g.pool2d(&format!("pool{s}"), x, y, geom, PoolKind::Max)?;
        pooled.push(y);
        x = y;
    }
    let fc6 = super::conv_shape(w, "fc6.weight")?;
    let mut c6 = Conv::new("fc6.weight", fc6[0], fc6[2]).bias("fc6.bias").act(Act::Relu);
    c6.pad = Some(Pad::default());
    x = n.conv(x, c6, None, None)?;
    let fc7 = super::conv_shape(w, "fc7.weight")?;
    x = n.conv(x, Conv::new("fc7.weight", fc7[0], 1).bias("fc7.bias").act(Act::Relu), None, None)?;
    let classes = super::conv_shape(w, "score_fr.weight")?[0];
    let score_fr = n.conv(x, Conv::new("score_fr.weight", classes, 1).bias("score_fr.bias"), None, None)?;
    // upscore2's size decides the crops; the crops come first so the adds fuse into the
    // transposed convolutions
    let up2_hw = {
        let (h2, w2) = n.g.hw(score_fr);
        (2 * h2 + 2, 2 * w2 + 2)
    };
    let sp4 = n.conv(pooled[3], Conv::new("score_pool4.weight", classes, 1).bias("score_pool4.bias"), None, None)?;
    let sp4c = crop(&mut n, "score_pool4c", sp4, 5, up2_hw)?;
    let fuse4 = upscore(&mut n, "upscore2", score_fr, 4, 2, Some(sp4c))?;
    let up4_hw = (2 * up2_hw.0 + 2, 2 * up2_hw.1 + 2);
    let sp3 = n.conv(pooled[2], Conv::new("score_pool3.weight", classes, 1).bias("score_pool3.bias"), None, None)?;
    let sp3c = crop(&mut n, "score_pool3c", sp3, 9, up4_hw)?;
    let fuse3 = upscore(&mut n, "upscore_pool4", fuse4, 4, 2, Some(sp3c))?;
    let up8 = upscore(&mut n, "upscore8", fuse3, 16, 8, None)?;
    let out = crop(&mut n, "score", up8, 31, (h, wd))?;
    n.g.set_logits(out.tensor);
    Ok(n.g)
}
