//! ESPNetv2 segmentation (Mehta et al., 2019), as in github.com/sacmehta/EdgeNets@2b232d3f
//! `model/segmentation/espnetv2.py`: the EESPNet encoder (levels 1-4) and a bottom-up decoder of
//! EfficientPyrPool blocks merged with encoder maps through EfficientPWConv.
//!
//! The width scale is read off `base_net.level1.conv.weight` and the block counts off the tensor
//! names. Concatenations are written in place; the hierarchical sums of the EESP branches are
//! fused into the depthwise convolutions as addends; residual adds, input reinforcement and the
//! decoder's skip additions are fused into the convolution or batch norm that precedes them.

use super::net::{Conv, Net};
use super::{affine_over_concat, BatchNorm, SizeRule};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::shape::{Pool2dGeom, PoolKind};
use crate::weights::Weights;

/// The decoder adds 2x-upsampled maps to encoder maps at 1/8, 1/4 and 1/2.
pub const SIZE: SizeRule = SizeRule::MultipleOf(16);

#[derive(Clone, Debug)]
pub struct EspNetV2Config {
    pub classes: usize,
    /// Channels of levels 1-4 (32, 128, 256, 512 for s = 2.0).
    pub channels: [usize; 4],
    pub level3_blocks: usize,
    pub level4_blocks: usize,
    pub eps: f64,
}

pub fn recognise(w: &Weights) -> bool {
    w.has("base_net.level1.conv.weight") && w.has("base_net.level2_0.eesp.proj_1x1.conv.weight") && w.has("bu_dec_l1.projection_layer.cbr.0.weight")
}

impl EspNetV2Config {
    pub fn detect(w: &Weights) -> Result<Self> {
        let c1 = w.require_shape("base_net.level1.conv.weight")?[0];
        let c = |name: &str| -> Result<usize> { Ok(w.require_shape(name)?[0]) };
        let channels = [c1, c("base_net.level2_0.inp_reinf.1.conv.weight")?, c("base_net.level3_0.inp_reinf.1.conv.weight")?, c("base_net.level4_0.inp_reinf.1.conv.weight")?];
        let count = |p: &str| (0..).take_while(|i| w.has(&format!("base_net.{p}.{i}.proj_1x1.conv.weight"))).count();
        let classes = c("bu_dec_l4.merge_layer.3.weight")?;
        let eps = match w.metadata().get("bn_eps") {
            Some(s) => s.trim().parse::<f64>().map_err(|e| Error::Metadata { key: "bn_eps".into(), reason: e.to_string() })?,
            None => 1e-5,
        };
        Ok(EspNetV2Config { classes, channels, level3_blocks: count("level3"), level4_blocks: count("level4"), eps })
    }

    pub fn describe(&self) -> String {
        format!("ESPNetv2 channels {:?}, {} + {} EESP blocks ({} classes)", self.channels, self.level3_blocks, self.level4_blocks, self.classes)
    }
}

struct B<'a> {
    n: Net<'a>,
}

impl B<'_> {
    fn w(&self) -> &Weights {
        self.n.w
    }

    /// EdgeNets' `CBR` (`{p}.conv`, `{p}.bn`, `{p}.act`) or `CB` when `prelu` is false.
    fn cbr(&mut self, p: &str, x: View, (out_c, k, stride, groups): (usize, usize, usize, usize), prelu: bool, into: Option<View>, add: Option<View>) -> Result<View> {
        let wn = format!("{p}.conv.weight");
        let act = if prelu { Act::PRelu(self.w().get(&format!("{p}.act.weight"), &[out_c])?) } else { Act::None };
        self.n.conv(x, Conv::new(&wn, out_c, k).stride(stride).groups(groups).bn(format!("{p}.bn")).act(act), into, add)
    }

    /// `cnn_utils.CBR` (`{p}.cbr.0` conv, `.cbr.1` BN, `.cbr.2` PReLU).
    fn cbr_seq(&mut self, p: &str, x: View, out_c: usize, k: usize, groups: usize) -> Result<View> {
        let wn = format!("{p}.cbr.0.weight");
        let act = Act::PRelu(self.w().get(&format!("{p}.cbr.2.weight"), &[out_c])?);
        self.n.conv(x, Conv::new(&wn, out_c, k).groups(groups).bn(format!("{p}.cbr.1")).act(act), None, None)
    }

    fn avg_pool(&mut self, name: &str, x: View, into: Option<View>) -> Result<View> {
        let (h, w) = self.n.g.hw(x);
        let geom = Pool2dGeom::new(x.c, h, w, 3, 2, 1, false);
        let (oh, ow) = geom.out_hw()?;
        let y = match into {
            Some(v) => v,
            None => self.n.tensor(name, x.c, oh, ow),
        };
        self.n.g.pool2d(name, x, y, geom, PoolKind::Avg { count_include_pad: true })?;
        Ok(y)
    }

    /// The EESP unit up to and including its grouped 1x1 expansion (+ BN). With stride 1 the
    /// input is added and `module_act` applied; with stride 2 the result goes into `into`.
    fn eesp(&mut self, p: &str, x: View, out_c: usize, stride: usize, dils: [usize; 4], into: Option<View>) -> Result<View> {
        let k = 4;
        let n = out_c / k;
        if n * k != out_c {
            return Err(Error::op(p, format!("{out_c} output channels are not divisible by {k} branches")));
        }
        let proj = self.cbr(&format!("{p}.proj_1x1"), x, (n, 1, 1, k), true, None, None)?;
        let (h, w) = self.n.g.hw(proj);
        let (oh, ow) = (crate::shape::conv_out(h, 3, stride, 1, 1, 1).expect("size"), crate::shape::conv_out(w, 3, stride, 1, 1, 1).expect("size"));
        let cat = self.n.tensor(&format!("{p}.cat"), out_c, oh, ow);
        let mut prev = None;
        for (i, d) in dils.into_iter().enumerate() {
            let wn = format!("{p}.spp_dw.{i}.conv.weight");
            let slot = self.n.g.slice(cat.tensor, i * n, n);
            self.n.conv(proj, Conv::new(&wn, n, 3).stride(stride).dil(d).groups(n), Some(slot), prev)?;
            prev = Some(slot);
        }
        let bn = BatchNorm::load(self.w(), &format!("{p}.br_after_cat.bn"), out_c, self.n.eps)?;
        let slopes = self.w().get(&format!("{p}.br_after_cat.act.weight"), &[out_c])?;
        let br = self.n.tensor(&format!("{p}.br_after_cat"), out_c, oh, ow);
        affine_over_concat(&mut self.n.g, &format!("{p}.br_after_cat"), &[cat], br, &bn, Some(&slopes))?;
        if stride == 1 {
            let slopes = self.w().get(&format!("{p}.module_act.weight"), &[out_c])?;
            let wn = format!("{p}.conv_1x1_exp.conv.weight");
            self.n.conv(br, Conv::new(&wn, out_c, 1).groups(k).bn(format!("{p}.conv_1x1_exp.bn")).act(Act::PRelu(slopes)), None, Some(x))
        } else {
            // Upstream builds `module_act` for every EESP but applies it only with stride 1; the
            // checkpoint still holds it, so it is checked here and then left out.
            self.w().get(&format!("{p}.module_act.weight"), &[out_c])?;
            self.cbr(&format!("{p}.conv_1x1_exp"), br, (out_c, 1, 1, k), false, into, None)
        }
    }

    /// DownSampler: `prelu(cat[avgpool(x), eesp_s2(x)] + inp_reinf(image pyramid level))`.
    fn downsampler(&mut self, p: &str, x: View, out_c: usize, img: View) -> Result<View> {
        let (h, w) = self.n.g.hw(x);
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        if self.n.g.hw(img) != (oh, ow) {
            return Err(Error::op(p, format!("input reinforcement at {:?}, block output at {:?}", self.n.g.hw(img), (oh, ow))));
        }
        let cat = self.n.tensor(&format!("{p}.cat"), out_c, oh, ow);
        self.avg_pool(&format!("{p}.avg"), x, Some(self.n.g.slice(cat.tensor, 0, x.c)))?;
        let eesp_out = self.n.g.slice(cat.tensor, x.c, out_c - x.c);
        self.eesp(&format!("{p}.eesp"), x, out_c - x.c, 2, [1, 2, 3, 4], Some(eesp_out))?;
        let r = self.cbr(&format!("{p}.inp_reinf.0"), img, (3, 3, 1, 1), true, None, None)?;
        let slopes = self.w().get(&format!("{p}.act.weight"), &[out_c])?;
        let wn = format!("{p}.inp_reinf.1.conv.weight");
        self.n.conv(r, Conv::new(&wn, out_c, 1).bn(format!("{p}.inp_reinf.1.bn")).act(Act::PRelu(slopes)), None, Some(cat))
    }

    /// EfficientPyrPool: project to 10 channels, five scales (2, 1.5, 1, 0.5, 0.1) each through a
    /// depthwise 3x3, concatenated in place, BR, channel shuffle (5 groups), grouped 3x3 CBR, 1x1,
    /// and BR (`last`: the 1x1 has a bias and there is no BR).
    fn pyr_pool(&mut self, p: &str, x: View, out_c: usize, last: bool) -> Result<View> {
        let proj_c = 10;
        let scales = [2.0f64, 1.5, 1.0, 0.5, 0.1];
        let proj = self.cbr_seq(&format!("{p}.projection_layer"), x, proj_c, 1, 1)?;
        let (h, w) = self.n.g.hw(proj);
        let cat = self.n.tensor(&format!("{p}.cat"), proj_c * scales.len(), h, w);
        for (i, s) in scales.iter().enumerate() {
            let wn = format!("{p}.stages.{i}.weight");
            let dw = Conv::new(&wn, proj_c, 3).groups(proj_c);
            let slot = self.n.g.slice(cat.tensor, i * proj_c, proj_c);
            let size = |n: usize| ((n as f64 * s).ceil() as usize).max(5);
            let (hs, ws) = (size(h), size(w));
            if *s > 1.0 {
                let up = self.n.resize(&format!("{p}.stages.{i}.up"), proj, hs, ws, true, None)?;
                let y = self.n.conv(up, dw, None, None)?;
                self.n.g.adaptive_avg_pool(&format!("{p}.stages.{i}.pool"), y, slot)?;
            } else if *s < 1.0 {
                let pooled = self.n.tensor(&format!("{p}.stages.{i}.pool"), proj_c, hs, ws);
                self.n.g.adaptive_avg_pool(&format!("{p}.stages.{i}.pool"), proj, pooled)?;
                let y = self.n.conv(pooled, dw, None, None)?;
                self.n.resize(&format!("{p}.stages.{i}.up"), y, h, w, true, Some(slot))?;
            } else {
                self.n.conv(proj, dw, Some(slot), None)?;
            }
        }
        let c = cat.c;
        let bn = BatchNorm::load(self.w(), &format!("{p}.merge_layer.0.br.0"), c, self.n.eps)?;
        let slopes = self.w().get(&format!("{p}.merge_layer.0.br.1.weight"), &[c])?;
        let br = self.n.tensor(&format!("{p}.merge_layer.0"), c, h, w);
        affine_over_concat(&mut self.n.g, &format!("{p}.merge_layer.0"), &[cat], br, &bn, Some(&slopes))?;
        // Shuffle(groups = 5): view [5, 10] -> transpose -> [10, 5]
        let groups = scales.len();
        let perm: Vec<usize> = (0..c).map(|j| (j % groups) * (c / groups) + j / groups).collect();
        let shuffled = self.n.tensor(&format!("{p}.merge_layer.1"), c, h, w);
        self.n.g.gather(&format!("{p}.merge_layer.1"), br, shuffled, perm)?;
        let m = self.cbr_seq(&format!("{p}.merge_layer.2"), shuffled, proj_c, 3, proj_c)?;
        let wn = format!("{p}.merge_layer.3.weight");
        if last {
            self.n.conv(m, Conv::new(&wn, out_c, 1).bias(format!("{p}.merge_layer.3.bias")), None, None)
        } else {
            let bn = format!("{p}.br.br.0");
            let act = Act::PRelu(self.w().get(&format!("{p}.br.br.1.weight"), &[out_c])?);
            self.n.conv(m, Conv::new(&wn, out_c, 1).bn(bn).act(act), None, None)
        }
    }

    /// `BR(EfficientPWConv(skip) + up)`: `expansion(skip) * sigmoid(wt(gap(skip)))`, plus the
    /// upsampled decoder map, then the decoder's BR (`bu_br_lN`).
    fn merge(&mut self, p: &str, br: &str, skip: View, up: View) -> Result<View> {
        let out_c = up.c;
        let gap = self.n.global_pool(&format!("{p}.wt_layer.0"), skip)?;
        let wn = format!("{p}.wt_layer.1.weight");
        let wt = self.n.conv(gap, Conv::new(&wn, out_c, 1).act(Act::Sigmoid), None, None)?;
        let g = gcd(skip.c, out_c);
        let e = self.cbr_seq(&format!("{p}.expansion_layer"), skip, out_c, 3, g)?;
        let (h, w) = self.n.g.hw(e);
        let m = self.n.tensor(&format!("{p}.mul"), out_c, h, w);
        self.n.g.mul(&format!("{p}.mul"), e, wt, m)?;
        let bn = BatchNorm::load(self.w(), &format!("{br}.0"), out_c, self.n.eps)?;
        let slopes = self.w().get(&format!("{br}.1.weight"), &[out_c])?;
        let y = self.n.tensor(br, out_c, h, w);
        self.n.g.affine(br, m, Some(up), y, bn.scale, bn.shift, Act::PRelu(slopes))?;
        Ok(y)
    }

    fn up2(&mut self, name: &str, x: View) -> Result<View> {
        let (h, w) = self.n.g.hw(x);
        self.n.resize(name, x, 2 * h, 2 * w, true, None)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub fn build(w: &Weights, cfg: &EspNetV2Config, h: usize, wd: usize) -> Result<Graph> {
    let mut b = B { n: Net::new(w, 3, h, wd, cfg.eps) };
    let [c1, c2, c3, c4] = cfg.channels;
    let input = b.n.input();
    // the input pyramid for input reinforcement: 1/2, 1/4, 1/8, 1/16
    let p1 = b.avg_pool("input.pool1", input, None)?;
    let p2 = b.avg_pool("input.pool2", p1, None)?;
    let p3 = b.avg_pool("input.pool3", p2, None)?;
    let p4 = b.avg_pool("input.pool4", p3, None)?;

    let l1 = b.cbr("base_net.level1", input, (c1, 3, 2, 1), true, None, None)?;
    let l2 = b.downsampler("base_net.level2_0", l1, c2, p2)?;
    let mut l3 = b.downsampler("base_net.level3_0", l2, c3, p3)?;
    for i in 0..cfg.level3_blocks {
        l3 = b.eesp(&format!("base_net.level3.{i}"), l3, c3, 1, [1, 2, 3, 4], None)?;
    }
    let mut l4 = b.downsampler("base_net.level4_0", l3, c4, p4)?;
    for i in 0..cfg.level4_blocks {
        l4 = b.eesp(&format!("base_net.level4.{i}"), l4, c4, 1, [1, 1, 2, 3], None)?;
    }

    let dec_c = w.require_shape("bu_dec_l1.merge_layer.3.weight")?[0];
    let d = b.pyr_pool("bu_dec_l1", l4, dec_c, false)?;
    let d = b.up2("bu_dec_l1.up", d)?;
    let d = b.merge("merge_enc_dec_l2", "bu_br_l2", l3, d)?;
    let dec_c = w.require_shape("bu_dec_l2.merge_layer.3.weight")?[0];
    let d = b.pyr_pool("bu_dec_l2", d, dec_c, false)?;
    let d = b.up2("bu_dec_l2.up", d)?;
    let d = b.merge("merge_enc_dec_l3", "bu_br_l3", l2, d)?;
    let dec_c = w.require_shape("bu_dec_l3.merge_layer.3.weight")?[0];
    let d = b.pyr_pool("bu_dec_l3", d, dec_c, false)?;
    let d = b.up2("bu_dec_l3.up", d)?;
    let d = b.merge("merge_enc_dec_l4", "bu_br_l4", l1, d)?;
    let d = b.pyr_pool("bu_dec_l4", d, cfg.classes, true)?;
    let logits = b.n.resize("upsample", d, h, wd, true, None)?;
    b.n.g.set_logits(logits.tensor);
    Ok(b.n.g)
}
