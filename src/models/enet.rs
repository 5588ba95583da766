//! ENet (Paszke, Chaurasia, Kim, Culurciello 2016), as ntkhoa95/ENet_PyTorch names it: an initial
//! block (`cat[BN(conv3x3 s2), maxpool2x2]`, PReLU), bottlenecks b10-b14, b20-b28, b31-b38 (regular,
//! dilated, asymmetric 1x5 + 5x1, and downsampling ones whose main branch max-pools with indices
//! and pads channels with zeros), upsampling bottlenecks b40-b42, b50-b51 whose main branch
//! max-unpools with the indices of b20 and b10, and a final 3x3 stride-2 transposed convolution.
//! Every bottleneck has one PReLU slope (stored under four alias names, all checked equal). Widths
//! come from the weights.

use super::net::{Conv, Net};
use super::{BatchNorm, SizeRule};
use crate::error::{Error, Result};
use crate::graph::{Act, DType, Graph, View};
use crate::ops::{MaxPool2dIdx, MaxUnpool2d};
use crate::shape::{ConvT2dGeom, Pad, Pool2dGeom, PoolKind};
use crate::weights::Weights;

/// Three stride-2 stages, and unpooling back to the pre-pool sizes: multiples of 8.
pub const SIZE: SizeRule = SizeRule::MultipleOf(8);
/// Upstream resizes every frame to 512x512.
pub const RUN_SIZE: (usize, usize) = (512, 512);

pub fn recognise(w: &Weights) -> bool {
    w.has("initial.conv.weight") && w.has("b10.conv1.weight") && w.has("b40.main_conv.weight") && w.has("fullconv.weight")
}

#[derive(Clone, Debug)]
pub struct EnetConfig {
    pub classes: usize,
    pub eps: f64,
}

impl EnetConfig {
    pub fn detect(w: &Weights) -> Result<Self> {
        let s = w.require_shape("fullconv.weight")?;
        if s.len() != 4 {
            return Err(Error::ShapeMismatch { name: "fullconv.weight".into(), expected: vec![16, 12, 3, 3], got: s });
        }
        Ok(EnetConfig { classes: s[1], eps: super::bn_eps(w, 1e-5)? })
    }
    pub fn describe(&self) -> String {
        format!("ENet (initial block, 24 bottlenecks with max-unpooling decoder; {} classes)", self.classes)
    }
}

enum Kind {
    Regular(usize),
    Asymmetric,
    Down,
}

const BLOCKS: [(&str, Kind); 21] = [
    ("b11", Kind::Regular(1)),
    ("b12", Kind::Regular(1)),
    ("b13", Kind::Regular(1)),
    ("b14", Kind::Regular(1)),
    ("b20", Kind::Down),
    ("b21", Kind::Regular(1)),
    ("b22", Kind::Regular(2)),
    ("b23", Kind::Asymmetric),
    ("b24", Kind::Regular(4)),
    ("b25", Kind::Regular(1)),
    ("b26", Kind::Regular(8)),
    ("b27", Kind::Asymmetric),
    ("b28", Kind::Regular(16)),
    ("b31", Kind::Regular(1)),
    ("b32", Kind::Regular(2)),
    ("b33", Kind::Asymmetric),
    ("b34", Kind::Regular(4)),
    ("b35", Kind::Regular(1)),
    ("b36", Kind::Regular(8)),
    ("b37", Kind::Asymmetric),
    ("b38", Kind::Regular(16)),
];

/// A pooling's indices and the size before it (what unpooling needs).
type Pooled = (View, (usize, usize));

struct B<'a> {
    n: Net<'a>,
}

impl B<'_> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        super::conv_shape(self.n.w, name)
    }

    /// The block's one PReLU slope, read under its four alias names (which must agree).
    fn slope(&self, p: &str) -> Result<f32> {
        let a = self.n.w.get(&format!("{p}.activation.weight"), &[1])?[0];
        for alias in ["activation1", "activation2", "activation3"] {
            let b = self.n.w.get(&format!("{p}.{alias}.weight"), &[1])?[0];
            if b != a {
                return Err(Error::Metadata { key: format!("{p}.{alias}.weight"), reason: format!("{b} differs from {p}.activation.weight = {a}: ENet's bottleneck has one PReLU") });
            }
        }
        Ok(a)
    }

    /// `out = PReLU(side + main)` where `main` covers the first `main.c` channels of `side` (the
    /// rest of the main branch is zeros): one node per channel range.
    fn merge(&mut self, p: &str, side: View, main: View, a: f32, out: View) -> Result<()> {
        let m = main.c;
        let g = &mut self.n.g;
        if m == side.c {
            return g.affine(&format!("{p}.out"), side, Some(main), out, vec![1.0; m], vec![0.0; m], Act::PRelu(vec![a; m]));
        }
        let (s0, o0) = (View { c: m, ..side }, View { c: m, ..out });
        g.affine(&format!("{p}.out"), s0, Some(main), o0, vec![1.0; m], vec![0.0; m], Act::PRelu(vec![a; m]))?;
        let r = side.c - m;
        let (s1, o1) = (View { c0: side.c0 + m, c: r, ..side }, View { c0: out.c0 + m, c: r, ..out });
        g.affine(&format!("{p}.out_pad"), s1, None, o1, vec![1.0; r], vec![0.0; r], Act::PRelu(vec![a; r]))
    }

    /// Regular, dilated, asymmetric and downsampling bottlenecks.
    fn bottleneck(&mut self, p: &str, x: View, kind: &Kind) -> Result<(View, Option<Pooled>)> {
        let a = self.slope(p)?;
        let c1 = self.shape(&format!("{p}.conv1.weight"))?[0];
        let prelu = |c: usize| Act::PRelu(vec![a; c]);
        let mut pool = None;
        let main = match kind {
            Kind::Down => {
                let (h, w) = self.n.g.hw(x);
                let geom = Pool2dGeom::new(x.c, h, w, 2, 2, 0, false);
                let (oh, ow) = geom.out_hw()?;
                let y = self.n.tensor(&format!("{p}.max_pool"), x.c, oh, ow);
                let idx = self.n.g.tensor_of(&format!("{p}.indices"), DType::U32, x.c, oh, ow);
                let idx = self.n.g.all(idx);
                self.n.g.push(&format!("{p}.max_pool"), MaxPool2dIdx { x, y, idx, geom })?;
                pool = Some((idx, (h, w)));
                y
            }
            _ => x,
        };
        let s = self.n.conv(x, Conv::new(&format!("{p}.conv1.weight"), c1, 1).bn(format!("{p}.norm1")).act(prelu(c1)), None, None)?;
        let s = match kind {
            Kind::Asymmetric => {
                let c21 = self.shape(&format!("{p}.conv21.weight"))?[0];
                let s = self.n.conv(s, Conv::rect(&format!("{p}.conv21.weight"), c21, 1, 5), None, None)?;
                let c22 = self.shape(&format!("{p}.conv22.weight"))?[0];
                self.n.conv(s, Conv::rect(&format!("{p}.conv22.weight"), c22, 5, 1).bn(format!("{p}.norm2")).act(prelu(c22)), None, None)?
            }
            Kind::Regular(d) => {
                let c2 = self.shape(&format!("{p}.conv2.weight"))?[0];
                self.n.conv(s, Conv::new(&format!("{p}.conv2.weight"), c2, 3).dil(*d).bias(format!("{p}.conv2.bias")).bn(format!("{p}.norm2")).act(prelu(c2)), None, None)?
            }
            Kind::Down => {
                let c2 = self.shape(&format!("{p}.conv2.weight"))?[0];
                self.n.conv(s, Conv::new(&format!("{p}.conv2.weight"), c2, 3).stride(2).bias(format!("{p}.conv2.bias")).bn(format!("{p}.norm2")).act(prelu(c2)), None, None)?
            }
        };
        let c3 = self.shape(&format!("{p}.conv3.weight"))?[0];
        let side = self.n.conv(s, Conv::new(&format!("{p}.conv3.weight"), c3, 1).bn(format!("{p}.norm3")), None, None)?;
        if main.c > side.c || self.n.g.hw(main) != self.n.g.hw(side) {
            return Err(Error::op(p, format!("main branch {}x{:?} does not fit the side branch {}x{:?}", main.c, self.n.g.hw(main), side.c, self.n.g.hw(side))));
        }
        let (h, w) = self.n.g.hw(side);
        let out = self.n.tensor(p, side.c, h, w);
        self.merge(p, side, main, a, out)?;
        Ok((out, pool))
    }

    /// A transposed convolution (PyTorch layout `[in, out, k, k]`), then batch norm and activation
    /// as plain nodes.
    #[allow(clippy::too_many_arguments)]
    fn convt(&mut self, name: &str, x: View, k: usize, (stride, pad, out_pad): (usize, usize, usize), bn: Option<&str>, act: Act, add: Option<View>) -> Result<View> {
        let ws = self.shape(&format!("{name}.weight"))?;
        let (h, w) = self.n.g.hw(x);
        let geom =
            ConvT2dGeom { in_c: x.c, in_h: h, in_w: w, out_c: ws[1], k_h: k, k_w: k, stride_h: stride, stride_w: stride, dil_h: 1, dil_w: 1, pad: Pad::same(pad), out_pad_h: out_pad, out_pad_w: out_pad, groups: 1 };
        let weight = self.n.w.get(&format!("{name}.weight"), &geom.weight_shape())?;
        let (oh, ow) = geom.out_hw()?;
        let oc = geom.out_c;
        let mut y = self.n.tensor(&format!("{name}:convt"), oc, oh, ow);
        self.n.g.conv_transpose2d(name, x, y, geom, weight, None, Act::None)?;
        if let Some(b) = bn {
            let bn = BatchNorm::load(self.n.w, b, oc, self.n.eps)?;
            let t = self.n.tensor(&format!("{b}:out"), oc, oh, ow);
            self.n.g.affine(b, y, None, t, bn.scale, bn.shift, if add.is_none() { act.clone() } else { Act::None })?;
            y = t;
        }
        if let Some(a) = add {
            let t = self.n.tensor(&format!("{name}.add"), oc, oh, ow);
            self.n.g.affine(&format!("{name}.add"), y, Some(a), t, vec![1.0; oc], vec![0.0; oc], act)?;
            y = t;
        }
        Ok(y)
    }

    /// Upsampling bottleneck: the main branch (1x1 conv + bias, unpooled with the encoder's
    /// indices) first, so the side branch's last convolution can take it as its addend.
    fn upsample(&mut self, p: &str, x: View, (idx, pre): Pooled) -> Result<View> {
        let a = self.slope(p)?;
        let mc = self.shape(&format!("{p}.main_conv.weight"))?[0];
        let m = self.n.conv(x, Conv::new(&format!("{p}.main_conv.weight"), mc, 1).bias(format!("{p}.main_conv.bias")), None, None)?;
        if m.c != idx.c || self.n.g.hw(m) != self.n.g.hw(idx) {
            return Err(Error::op(p, format!("main branch {}x{:?} does not match the encoder indices {}x{:?}", m.c, self.n.g.hw(m), idx.c, self.n.g.hw(idx))));
        }
        let main = self.n.tensor(&format!("{p}.unpool"), m.c, pre.0, pre.1);
        self.n.g.push(&format!("{p}.unpool"), MaxUnpool2d { x: m, idx, y: main, stride: (2, 2) })?;
        let prelu = |c: usize| Act::PRelu(vec![a; c]);
        let c1 = self.shape(&format!("{p}.convt1.weight"))?[1];
        let s = self.convt(&format!("{p}.convt1"), x, 1, (1, 0, 0), Some(&format!("{p}.norm1")), prelu(c1), None)?;
        let c2 = self.shape(&format!("{p}.convt2.weight"))?[1];
        let s = self.convt(&format!("{p}.convt2"), s, 3, (2, 1, 1), Some(&format!("{p}.norm2")), prelu(c2), None)?;
        let c3 = self.shape(&format!("{p}.convt3.weight"))?[1];
        if self.n.g.hw(s) != pre || c3 != main.c {
            return Err(Error::op(p, format!("side branch {c3}x{:?} does not match the unpooled main branch {}x{pre:?}", self.n.g.hw(s), main.c)));
        }
        self.convt(&format!("{p}.convt3"), s, 1, (1, 0, 0), Some(&format!("{p}.norm3")), prelu(c3), Some(main))
    }
}

pub fn build(w: &Weights, cfg: &EnetConfig, h: usize, wd: usize) -> Result<Graph> {
    let mut b = B { n: Net::new(w, 3, h, wd, cfg.eps) };
    let x = b.n.input();
    // initial block: cat[BN(conv3x3 s2 + bias), maxpool2x2(input)] -> PReLU
    let ic = b.shape("initial.conv.weight")?[0];
    let conv = b.n.conv(x, Conv::new("initial.conv.weight", ic, 3).stride(2).bias("initial.conv.bias").bn("initial.norm"), None, None)?;
    let (ch, cw) = b.n.g.hw(conv);
    let pooled = b.n.tensor("initial.pool", 3, ch, cw);
    b.n.g.pool2d("initial.pool", x, pooled, Pool2dGeom::new(3, h, wd, 2, 2, 0, false), PoolKind::Max)?;
    let cat = b.n.tensor("initial.cat", ic + 3, ch, cw);
    b.n.g.concat("initial.cat", vec![conv, pooled], cat)?;
    let slopes = w.get("initial.activation.weight", &[ic + 3])?;
    let mut x = b.n.tensor("initial", ic + 3, ch, cw);
    b.n.g.affine("initial.act", cat, None, x, vec![1.0; ic + 3], vec![0.0; ic + 3], Act::PRelu(slopes))?;
    // encoder
    let (y, p10) = b.bottleneck("b10", x, &Kind::Down)?;
    x = y;
    let mut p20 = None;
    for (name, kind) in &BLOCKS {
        let (y, pool) = b.bottleneck(name, x, kind)?;
        if pool.is_some() {
            p20 = pool;
        }
        x = y;
    }
    let (p10, p20) = (p10.expect("b10 pools"), p20.expect("b20 pools"));
    // decoder
    x = b.upsample("b40", x, p20)?;
    for name in ["b41", "b42"] {
        x = b.bottleneck(name, x, &Kind::Regular(1))?.0;
    }
    x = b.upsample("b50", x, p10)?;
    x = b.bottleneck("b51", x, &Kind::Regular(1))?.0;
    let logits = b.convt("fullconv", x, 3, (2, 1, 1), None, Act::None, None)?;
    if logits.c != cfg.classes || b.n.g.hw(logits) != (h, wd) {
        return Err(Error::op("fullconv", format!("output {}x{:?}, expected {}x{h}x{wd}", logits.c, b.n.g.hw(logits), cfg.classes)));
    }
    b.n.g.set_logits(logits.tensor);
    // f16 storage in the initial block and stage 1 costs ENet 1-2% of its class map (a CPU
    // emulation of f16 storage: 98.1-99.2% agreement; these stages in f32: 99.8-99.9%), so an
    // f16 session keeps them f32 (a quarter of the activations at most)
    b.n.g.f32_nodes = vec!["initial".into(), "b1".into(), "b20.max_pool".into()];
    Ok(b.n.g)
}
