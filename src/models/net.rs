//! A small graph-building helper shared by the model builders: convolutions read by weight name
//! (PyTorch layout) with optional bias, batch norm folded in, activation and addend.

use crate::error::Result;
use crate::graph::{Act, Graph, View};
use crate::models::BatchNorm;
use crate::shape::{Conv2dGeom, Pad};
use crate::weights::Weights;

/// A convolution to add: weight tensor name and hyper-parameters. Padding defaults to PyTorch's
/// `dil * (k - 1) / 2` on every side.
#[derive(Clone, Debug)]
pub(crate) struct Conv<'s> {
    pub weight: &'s str,
    pub out_c: usize,
    pub k: usize,
    /// Kernel width when it differs from the height (`k`).
    pub k_w: Option<usize>,
    pub stride: usize,
    pub dil: usize,
    pub groups: usize,
    pub pad: Option<Pad>,
    pub bias: Option<String>,
    pub bn: Option<String>,
    pub act: Act,
}

impl<'s> Conv<'s> {
    pub fn new(weight: &'s str, out_c: usize, k: usize) -> Self {
        Conv { weight, out_c, k, k_w: None, stride: 1, dil: 1, groups: 1, pad: None, bias: None, bn: None, act: Act::None }
    }
    /// A `kh x kw` kernel (padding defaults to `dil * (k - 1) / 2` along each axis).
    pub fn rect(weight: &'s str, out_c: usize, kh: usize, kw: usize) -> Self {
        Conv { k_w: Some(kw), ..Conv::new(weight, out_c, kh) }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn dil(mut self, d: usize) -> Self {
        self.dil = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Bias tensor name.
    pub fn bias(mut self, name: impl Into<String>) -> Self {
        self.bias = Some(name.into());
        self
    }
    /// Batch-norm prefix (`{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`), folded in.
    pub fn bn(mut self, prefix: impl Into<String>) -> Self {
        self.bn = Some(prefix.into());
        self
    }
    pub fn act(mut self, a: Act) -> Self {
        self.act = a;
        self
    }
}

pub(crate) struct Net<'a> {
    pub g: Graph,
    pub w: &'a Weights,
    /// Batch-norm epsilon for the `bn` folds that follow.
    pub eps: f64,
}

impl<'a> Net<'a> {
    pub fn new(w: &'a Weights, c: usize, h: usize, wd: usize, eps: f64) -> Self {
        Net { g: Graph::new(c, h, wd), w, eps }
    }

    pub fn input(&self) -> View {
        self.g.all(self.g.input)
    }

    pub fn tensor(&mut self, name: &str, c: usize, h: usize, w: usize) -> View {
        let t = self.g.tensor(name, c, h, w);
        self.g.all(t)
    }

    pub fn geom(&self, x: View, c: &Conv) -> Conv2dGeom {
        let (h, w) = self.g.hw(x);
        Conv2dGeom {
            in_c: x.c,
            in_h: h,
            in_w: w,
            out_c: c.out_c,
            k_h: c.k,
            k_w: c.k_w.unwrap_or(c.k),
            stride_h: c.stride,
            stride_w: c.stride,
            dil_h: c.dil,
            dil_w: c.dil,
            pad: c.pad.unwrap_or_else(|| {
                let (ph, pw) = (c.dil * (c.k - 1) / 2, c.dil * (c.k_w.unwrap_or(c.k) - 1) / 2);
                Pad { top: ph, left: pw, bottom: ph, right: pw }
            }),
            groups: c.groups,
        }
    }

    /// Adds the convolution, writing into `into` or a new tensor named after the weight; returns
    /// the output view. Emits plain operators — the convolution, then batch norm, the activation
    /// and the addend as separate nodes — which [`crate::passes`] fuses.
    pub fn conv(&mut self, x: View, c: Conv, into: Option<View>, add: Option<View>) -> Result<View> {
        let geom = self.geom(x, &c);
        let weight = self.w.get(c.weight, &geom.weight_shape())?;
        let bias = match &c.bias {
            Some(b) => Some(self.w.get(b, &[c.out_c])?),
            None => None,
        };
        let bn = match &c.bn {
            Some(p) => Some(BatchNorm::load(self.w, p, c.out_c, self.eps)?),
            None => None,
        };
        let name = c.weight.trim_end_matches(".weight");
        let (oh, ow) = geom.out_hw()?;
        // the steps after the convolution, each writing a tensor of its own, the last `into`
        let steps = bn.is_some() as usize + (c.act != Act::None && add.is_none()) as usize + add.is_some() as usize;
        let mut left = steps;
        let mut next = |n: &mut Self, what: &str| -> View {
            left -= 1;
            match (left, into) {
                (0, Some(v)) => v,
                (0, None) => n.tensor(name, c.out_c, oh, ow),
                _ => n.tensor(&format!("{name}:{what}"), c.out_c, oh, ow),
            }
        };
        let mut y = if steps == 0 { into.unwrap_or_else(|| self.tensor(name, c.out_c, oh, ow)) } else { self.tensor(&format!("{name}:conv"), c.out_c, oh, ow) };
        self.g.conv2d(name, x, y, geom, weight, bias, Act::None, None)?;
        if let Some(bn) = bn {
            let out = next(self, "bn");
            self.g.affine(&format!("{name}.bn"), y, None, out, bn.scale, bn.shift, Act::None)?;
            y = out;
        }
        if c.act != Act::None && add.is_none() {
            let out = next(self, "act");
            self.g.affine(&format!("{name}.act"), y, None, out, vec![1.0; c.out_c], vec![0.0; c.out_c], c.act.clone())?;
            y = out;
        }
        if let Some(a) = add {
            let out = next(self, "add");
            self.g.affine(&format!("{name}.add"), y, Some(a), out, vec![1.0; c.out_c], vec![0.0; c.out_c], c.act.clone())?;
            y = out;
        }
        Ok(y)
    }

    /// Adds a convolution with weights already in PyTorch layout.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_with(&mut self, name: &str, x: View, geom: Conv2dGeom, weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act, into: Option<View>, add: Option<View>) -> Result<View> {
        let (oh, ow) = geom.out_hw()?;
        let y = match into {
            Some(v) => v,
            None => self.tensor(name, geom.out_c, oh, ow),
        };
        self.g.conv2d(name, x, y, geom, weight, bias, act, add)?;
        Ok(y)
    }

    /// Global average pooling to `c x 1 x 1`.
    pub fn global_pool(&mut self, name: &str, x: View) -> Result<View> {
        let y = self.tensor(name, x.c, 1, 1);
        self.g.adaptive_avg_pool(name, x, y)?;
        Ok(y)
    }

    /// Bilinear resize to `h x w`, into a new tensor or `into`.
    pub fn resize(&mut self, name: &str, x: View, h: usize, w: usize, align_corners: bool, into: Option<View>) -> Result<View> {
        let y = match into {
            Some(v) => v,
            None => self.tensor(name, x.c, h, w),
        };
        self.g.resize(name, x, y, align_corners)?;
        Ok(y)
    }
}
