//! SegNet (Badrinarayanan, Kendall, Cipolla 2017) with Caffe layer names: a VGG16-BN encoder
//! (`conv{s}_{i}` + `conv{s}_{i}_bn`, ReLU; stages of 2, 2, 3, 3, 3 convolutions, each followed by
//! a 2x2 max pool that keeps its indices) and a mirrored decoder (`conv{s}_{i}_D`): each stage
//! max-unpools with its encoder stage's indices back to the pre-pool size, then convolution + BN +
//! ReLU, except `conv1_1_D` (the classifier: no BN, no ReLU). Every width comes from the weights.

use super::net::{Conv, Net};
use super::SizeRule;
use crate::error::Result;
use crate::graph::{Act, DType, Graph, View};
use crate::ops::{MaxPool2dIdx, MaxUnpool2d};
use crate::shape::Pool2dGeom;
use crate::weights::Weights;

/// Five 2x2 pools: sizes must divide by 32.
pub const SIZE: SizeRule = SizeRule::MultipleOf(32);
const STAGES: [usize; 5] = [2, 2, 3, 3, 3];

pub fn recognise(w: &Weights) -> bool {
    w.has("conv1_1.weight") && w.has("conv1_1_bn.running_var") && w.has("conv1_1_D.weight")
}

#[derive(Clone, Debug)]
pub struct SegNetConfig {
    pub classes: usize,
    pub eps: f64,
}

impl SegNetConfig {
    pub fn detect(w: &Weights) -> Result<Self> {
        let s = w.require_shape("conv1_1_D.weight")?;
        let eps = super::bn_eps(w, 1e-5)?;
        Ok(SegNetConfig { classes: s[0], eps })
    }
    pub fn describe(&self) -> String {
        format!("SegNet (VGG16-BN encoder, max-unpooling decoder; {} classes)", self.classes)
    }
}

fn out_c(w: &Weights, name: &str) -> Result<usize> {
    Ok(super::conv_shape(w, name)?[0])
}

pub fn build(w: &Weights, cfg: &SegNetConfig, h: usize, wd: usize) -> Result<Graph> {
    let mut n = Net::new(w, 3, h, wd, cfg.eps);
    let mut x = n.input();
    let mut pools: Vec<(View, (usize, usize))> = vec![];
    for (s, &convs) in STAGES.iter().enumerate().map(|(i, c)| (i + 1, c)) {
        for i in 1..=convs {
            let name = format!("conv{s}_{i}.weight");
            let oc = out_c(w, &name)?;
            x = n.conv(x, Conv::new(&name, oc, 3).bias(format!("conv{s}_{i}.bias")).bn(format!("conv{s}_{i}_bn")).act(Act::Relu), None, None)?;
        }
        let (ph, pw) = n.g.hw(x);
        let geom = Pool2dGeom::new(x.c, ph, pw, 2, 2, 0, false);
        let (oh, ow) = geom.out_hw()?;
        let y = n.tensor(&format!("pool{s}"), x.c, oh, ow);
        let idx = n.g.tensor_of(&format!("pool{s}.indices"), DType::U32, x.c, oh, ow);
        let idx = n.g.all(idx);
        n.g.push(&format!("pool{s}"), MaxPool2dIdx { x, y, idx, geom })?;
        pools.push((idx, (ph, pw)));
        x = y;
    }
    for (s, &convs) in STAGES.iter().enumerate().map(|(i, c)| (i + 1, c)).rev() {
        let (idx, (ph, pw)) = pools[s - 1];
        let y = n.tensor(&format!("upsample{s}"), x.c, ph, pw);
        n.g.push(&format!("upsample{s}"), MaxUnpool2d { x, idx, y, stride: (2, 2) })?;
        x = y;
        for i in (1..=convs).rev() {
            let name = format!("conv{s}_{i}_D.weight");
            let oc = out_c(w, &name)?;
            let mut c = Conv::new(&name, oc, 3).bias(format!("conv{s}_{i}_D.bias"));
            if !(s == 1 && i == 1) {
                c = c.bn(format!("conv{s}_{i}_D_bn")).act(Act::Relu);
            }
            x = n.conv(x, c, None, None)?;
        }
    }
    n.g.set_logits(x.tensor);
    Ok(n.g)
}
