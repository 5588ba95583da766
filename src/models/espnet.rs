//! ESPNet (Mehta et al., 2018): ESPNet-C encoder (p, q blocks) and the light-weight RUM decoder,
//! as in github.com/sacmehta/ESPNet@afe71c38. Two decoder variants exist upstream: `train/Model.py`
//! concatenates the decoder with `output0_cat` (19 channels, the CamVid checkpoint) and
//! `test/Model.py` with `output0` (16 channels, the Cityscapes checkpoint); the variant is read off
//! the shape of `conv.conv.weight`.
//!
//! Concatenations are never copied: producers write into channel ranges of the consumer's tensor,
//! and a batch norm over a concatenation is applied range by range.

use super::{affine_over_concat, BatchNorm, SizeRule};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::shape::{conv_out, Conv2dGeom, ConvT2dGeom, Pad, Pool2dGeom, PoolKind};
use crate::weights::Weights;

/// The decoder's 2x-upsampled maps are concatenated with skip maps at 1/2 and 1/4: sizes must be
/// multiples of 8.
pub const SIZE: SizeRule = SizeRule::MultipleOf(8);

/// Which encoder map the decoder's last convolution concatenates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `output0_cat`: BR(cat[level1, input/2]), 19 channels (train/Model.py).
    Output0Cat,
    /// `output0`: the level1 output, 16 channels (test/Model.py).
    Output0,
}

#[derive(Clone, Debug)]
pub struct EspNetConfig {
    pub classes: usize,
    pub p: usize,
    pub q: usize,
    pub skip: Skip,
    pub eps: f64,
}

impl EspNetConfig {
    pub fn describe(&self) -> String {
        format!("ESPNet p={} q={} ({} outputs, decoder skip {:?})", self.p, self.q, self.classes, self.skip)
    }

    /// Reads the configuration off tensor shapes and names (and `bn_eps` from the metadata, 1e-3
    /// by default as in upstream).
    pub fn detect(w: &Weights) -> Result<Self> {
        let cls = w.require_shape("classifier.weight")?;
        if cls.len() != 4 || cls[0] != cls[1] || cls[2..] != [2, 2] {
            return Err(Error::ShapeMismatch { name: "classifier.weight".into(), expected: vec![cls[0], cls[0], 2, 2], got: cls });
        }
        let classes = cls[0];
        let count = |prefix: &str| (0..).take_while(|i| w.has(&format!("{prefix}.{i}.c1.conv.weight"))).count();
        let (p, q) = (count("encoder.level2"), count("encoder.level3"));
        let conv = w.require_shape("conv.conv.weight")?;
        let skip = match conv.get(1).map(|c| c.wrapping_sub(classes)) {
            Some(19) => Skip::Output0Cat,
            Some(16) => Skip::Output0,
            _ => return Err(Error::ShapeMismatch { name: "conv.conv.weight".into(), expected: vec![classes, classes + 19, 3, 3], got: conv }),
        };
        let eps = match w.metadata().get("bn_eps") {
            Some(s) => s.trim().parse::<f64>().map_err(|e| Error::Metadata { key: "bn_eps".into(), reason: e.to_string() })?,
            None => 1e-3,
        };
        if let Some(n) = w.metadata().get("num_classes") {
            if n.trim() != classes.to_string() {
                return Err(Error::Metadata { key: "num_classes".into(), reason: format!("says {n}, but classifier.weight has {classes} outputs") });
            }
        }
        Ok(EspNetConfig { classes, p, q, skip, eps })
    }
}

/// True when the file has ESPNet's tensor names.
pub fn recognise(w: &Weights) -> bool {
    w.has("encoder.level1.conv.weight") && w.has("encoder.level2_0.c1.conv.weight") && w.has("up_l3.0.weight")
}

struct B<'a> {
    g: Graph,
    w: &'a Weights,
    eps: f64,
}

impl B<'_> {
    /// A convolution without bias, `k x k`, padding `dil*(k-1)/2`.
    /// A plain convolution (no bias) into `y`; with `add`, into a tensor of its own followed by
    /// an element-wise add into `y` (the passes fuse the two).
    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, name: &str, x: View, y: View, k: usize, stride: usize, dil: usize, add: Option<View>) -> Result<()> {
        let (h, w) = self.g.hw(x);
        let geom = Conv2dGeom::new(x.c, h, w, y.c, k, stride, dil * (k - 1) / 2, dil, 1);
        let wt = self.w.get(&format!("{name}.weight"), &geom.weight_shape())?;
        match add {
            None => self.g.conv2d(name, x, y, geom, wt, None, Act::None, None),
            Some(a) => {
                let t = self.new_tensor(&format!("{name}:conv"), y.c, y_hw(&self.g, y).0, y_hw(&self.g, y).1);
                self.g.conv2d(name, x, t, geom, wt, None, Act::None, None)?;
                self.g.add(&format!("{name}.add"), t, a, y)
            }
        }
    }

    /// Convolution, batch norm, PReLU: three plain nodes.
    fn cbr(&mut self, prefix: &str, x: View, y: View, k: usize, stride: usize) -> Result<()> {
        let (h, w) = self.g.hw(x);
        let geom = Conv2dGeom::new(x.c, h, w, y.c, k, stride, (k - 1) / 2, 1, 1);
        let wt = self.w.get(&format!("{prefix}.conv.weight"), &geom.weight_shape())?;
        let bn = BatchNorm::load(self.w, &format!("{prefix}.bn"), y.c, self.eps)?;
        let slopes = self.w.get(&format!("{prefix}.act.weight"), &[y.c])?;
        let (oh, ow) = y_hw(&self.g, y);
        let t = self.new_tensor(&format!("{prefix}.conv"), y.c, oh, ow);
        let u = self.new_tensor(&format!("{prefix}.bn"), y.c, oh, ow);
        self.g.conv2d(prefix, x, t, geom, wt, None, Act::None, None)?;
        self.g.affine(&format!("{prefix}.bn"), t, None, u, bn.scale, bn.shift, Act::None)?;
        self.g.affine(&format!("{prefix}.act"), u, None, y, vec![1.0; y.c], vec![0.0; y.c], Act::PRelu(slopes))
    }

    fn br(&mut self, prefix: &str, inputs: &[View], out: View) -> Result<()> {
        let bn = BatchNorm::load(self.w, &format!("{prefix}.bn"), out.c, self.eps)?;
        let slopes = self.w.get(&format!("{prefix}.act.weight"), &[out.c])?;
        affine_over_concat(&mut self.g, prefix, inputs, out, &bn, Some(&slopes))
    }

    fn pool(&mut self, name: &str, x: View, y: View) -> Result<()> {
        let (h, w) = self.g.hw(x);
        self.g.pool2d(name, x, y, Pool2dGeom::new(x.c, h, w, 3, 2, 1, false), PoolKind::Avg { count_include_pad: true })
    }

    /// `ConvTranspose2d(c, c, 2, stride=2)`, optionally followed by BR folded into it.
    /// 2x2 stride-2 transposed convolution, then (with `br`) batch norm and PReLU as plain nodes.
    fn up(&mut self, name: &str, x: View, y: View, br: Option<&str>) -> Result<()> {
        let (h, w) = self.g.hw(x);
        let geom = ConvT2dGeom { in_c: x.c, in_h: h, in_w: w, out_c: y.c, k_h: 2, k_w: 2, stride_h: 2, stride_w: 2, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 };
        let wt = self.w.get(&format!("{name}.weight"), &geom.weight_shape())?;
        match br {
            None => self.g.conv_transpose2d(name, x, y, geom, wt, None, Act::None),
            Some(p) => {
                let bn = BatchNorm::load(self.w, &format!("{p}.bn"), y.c, self.eps)?;
                let slopes = self.w.get(&format!("{p}.act.weight"), &[y.c])?;
                let (oh, ow) = y_hw(&self.g, y);
                let t = self.new_tensor(&format!("{name}:convt"), y.c, oh, ow);
                let u = self.new_tensor(&format!("{p}.bn"), y.c, oh, ow);
                self.g.conv_transpose2d(name, x, t, geom, wt, None, Act::None)?;
                self.g.affine(&format!("{p}.bn"), t, None, u, bn.scale, bn.shift, Act::None)?;
                self.g.affine(&format!("{p}.act"), u, None, y, vec![1.0; y.c], vec![0.0; y.c], Act::PRelu(slopes))
            }
        }
    }

    fn esp(&mut self, prefix: &str, x: View, out: View, down: bool, residual: bool) -> Result<()> {
        let n = out.c / 5;
        let n1 = out.c - 4 * n;
        let (h, w) = self.g.hw(out);
        let red = self.g.tensor(&format!("{prefix}.c1"), n, h, w);
        let red = self.g.all(red);
        if down {
            self.conv(&format!("{prefix}.c1.conv"), x, red, 3, 2, 1, None)?;
        } else {
            self.conv(&format!("{prefix}.c1.conv"), x, red, 1, 1, 1, None)?;
        }
        // each branch into a tensor of its own, then a concatenation (done in place by the passes)
        let cat = self.g.tensor(&format!("{prefix}.cat"), out.c, h, w);
        let d1 = self.new_tensor(&format!("{prefix}.d1"), n1, h, w);
        self.conv(&format!("{prefix}.d1.conv"), red, d1, 3, 1, 1, None)?;
        let mut branches = vec![d1];
        let mut prev: Option<View> = None;
        for d in [2usize, 4, 8, 16] {
            let y = self.new_tensor(&format!("{prefix}.d{d}"), n, h, w);
            self.conv(&format!("{prefix}.d{d}.conv"), red, y, 3, 1, d, prev)?;
            branches.push(y);
            prev = Some(y);
        }
        self.g.concat(&format!("{prefix}.cat"), branches, self.g.all(cat))?;
        let (bn, act) = if down { (format!("{prefix}.bn"), format!("{prefix}.act.weight")) } else { (format!("{prefix}.bn.bn"), format!("{prefix}.bn.act.weight")) };
        let bn = BatchNorm::load(self.w, &bn, out.c, self.eps)?;
        let slopes = self.w.get(&act, &[out.c])?;
        let cat = self.g.all(cat);
        if residual && x.c != out.c {
            return Err(Error::op(prefix, format!("residual block with {} -> {} channels", x.c, out.c)));
        }
        self.g.affine(&format!("{prefix}.bn"), cat, residual.then_some(x), out, bn.scale, bn.shift, Act::PRelu(slopes))
    }

    fn new_tensor(&mut self, name: &str, c: usize, h: usize, w: usize) -> View {
        let t = self.g.tensor(name, c, h, w);
        self.g.all(t)
    }
}

/// Builds the graph for an `h x w` input (multiples of 8).
fn y_hw(g: &Graph, y: View) -> (usize, usize) {
    g.hw(y)
}

pub fn build(w: &Weights, cfg: &EspNetConfig, h: usize, wd: usize) -> Result<Graph> {
    let c = cfg.classes;
    let half = |n: usize| conv_out(n, 3, 2, 1, 1, 1).expect("positive size");
    let (h2, w2) = (half(h), half(wd));
    let (h4, w4) = (half(h2), half(w2));
    let (h8, w8) = (half(h4), half(w4));
    let mut b = B { g: Graph::new(3, h, wd), w, eps: cfg.eps };
    let input = b.g.all(b.g.input);

    // The decoder's last convolution reads cat[up_l2 output (C), skip]: allocate it now and let
    // the skip's producer write straight into it.
    let skip_c = match cfg.skip {
        Skip::Output0Cat => 19,
        Skip::Output0 => 16,
    };
    let fin = b.g.tensor("decoder.cat", c + skip_c, h2, w2);

    // level 1 and the input pyramid
    let output0 = match cfg.skip {
        Skip::Output0 => b.g.slice(fin, c, 16),
        Skip::Output0Cat => b.new_tensor("output0", 16, h2, w2),
    };
    b.cbr("encoder.level1", input, output0, 3, 2)?;
    let inp1 = b.new_tensor("inp1", 3, h2, w2);
    b.pool("encoder.sample1.pool.0", input, inp1)?;
    let s2 = b.new_tensor("sample2.0", 3, h2, w2);
    b.pool("encoder.sample2.pool.0", input, s2)?;
    let output0_cat = match cfg.skip {
        Skip::Output0Cat => b.g.slice(fin, c, 19),
        Skip::Output0 => b.new_tensor("output0_cat", 19, h2, w2),
    };
    b.br("encoder.b1", &[output0, inp1], output0_cat)?;

    // level 2
    let output1_0 = b.new_tensor("output1_0", 64, h4, w4);
    b.esp("encoder.level2_0", output0_cat, output1_0, true, false)?;
    let mut output1 = output1_0;
    for i in 0..cfg.p {
        let y = b.new_tensor(&format!("encoder.level2.{i}"), 64, h4, w4);
        b.esp(&format!("encoder.level2.{i}"), output1, y, false, true)?;
        output1 = y;
    }
    let inp2 = b.new_tensor("inp2", 3, h4, w4);
    b.pool("encoder.sample2.pool.1", s2, inp2)?;
    let output1_cat = b.new_tensor("output1_cat", 131, h4, w4);
    b.br("encoder.b2", &[output1, output1_0, inp2], output1_cat)?;

    // level 3
    let output2_0 = b.new_tensor("output2_0", 128, h8, w8);
    b.esp("encoder.level3_0", output1_cat, output2_0, true, false)?;
    let mut output2 = output2_0;
    for i in 0..cfg.q {
        let y = b.new_tensor(&format!("encoder.level3.{i}"), 128, h8, w8);
        b.esp(&format!("encoder.level3.{i}"), output2, y, false, true)?;
        output2 = y;
    }
    let output2_cat = b.new_tensor("output2_cat", 256, h8, w8);
    b.br("encoder.b3", &[output2_0, output2], output2_cat)?;

    // encoder classifier (1x1) with the decoder's `br` batch norm folded in
    let enc = b.new_tensor("encoder.classifier", c, h8, w8);
    {
        let geom = Conv2dGeom::new(256, h8, w8, c, 1, 1, 0, 1, 1);
        let wt = w.get("encoder.classifier.conv.weight", &geom.weight_shape())?;
        let bn = BatchNorm::load(w, "br", c, cfg.eps)?;
        let (wt, bias) = bn.fold_into(&wt, None, c);
        b.g.conv2d("encoder.classifier+br", output2_cat, enc, geom, wt, Some(bias), Act::None, None)?;
    }

    // decoder: RUM
    let output2_c = b.new_tensor("output2_c", c, h4, w4);
    b.up("up_l3.0", enc, output2_c, None)?;
    let output1_c = b.new_tensor("output1_C", c, h4, w4);
    b.conv("level3_C.conv", output1_cat, output1_c, 1, 1, 1, None)?;
    let comb_in = b.new_tensor("combine_l2_l3.0", 2 * c, h4, w4);
    b.br("combine_l2_l3.0", &[output1_c, output2_c], comb_in)?;
    let comb = b.new_tensor("combine_l2_l3.1", c, h4, w4);
    b.esp("combine_l2_l3.1", comb_in, comb, false, false)?;
    let up2 = b.g.slice(fin, 0, c);
    b.up("up_l2.0", comb, up2, Some("up_l2.1"))?;
    let dec = b.new_tensor("conv", c, h2, w2);
    let fin_all = b.g.all(fin);
    b.cbr("conv", fin_all, dec, 3, 1)?;
    let logits = b.g.tensor("logits", c, h, wd);
    let logits_v = b.g.all(logits);
    b.up("classifier", dec, logits_v, None)?;
    b.g.set_logits(logits);
    Ok(b.g)
}
