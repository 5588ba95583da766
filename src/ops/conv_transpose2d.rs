//! Transposed 2-D convolution (strided, dilated, grouped, padded, `output_padding`), optional
//! bias, then `+ add`, then the activation. Kernel: `shaders/conv.wgsl` (`conv_transpose2d`, and
//! `conv_transpose2d_tiled` where kernel = stride), parameter block in [`crate::kernels::conv`].

use super::conv2d::{check_addend, check_conv, conv_parameters, encode_conv_family, slice_act};
use super::{boxed_op, segments, sub, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::kernels::conv;
use crate::shape::{ConvT2dGeom, Pad};

#[derive(Clone, Debug)]
pub struct ConvT2d {
    pub x: View,
    pub y: View,
    pub add: Option<View>,
    pub geom: ConvT2dGeom,
    /// `[in_c, out_c/groups, k_h, k_w]`
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub act: Act,
}

impl Operator for ConvT2d {
    fn kind(&self) -> &'static str {
        "conv_transpose2d"
    }
    super::addend_views!();
    fn check(&self, g: &Graph, op: &str) -> Result<()> {
        let geom = &self.geom;
        let out_hw = geom.out_hw().map_err(|e| Error::op(op, e.to_string()))?;
        check_conv(g, op, self.x, self.y, (geom.in_c, geom.in_h, geom.in_w), (geom.out_c, out_hw), &geom.weight_shape(), self.weight.len(), self.bias.as_deref())?;
        if let Some(a) = self.add {
            check_addend(g, op, a, self.y)?;
        }
        self.act.check(op, geom.out_c)
    }
    fn flops(&self, _g: &Graph) -> u64 {
        2 * self.geom.macs().unwrap_or(0)
    }
    fn describe_params(&self, _g: &Graph) -> String {
        let add = if self.add.is_some() { " +add" } else { "" };
        format!(" k{}x{} s{} g{}{add}", self.geom.k_h, self.geom.k_w, self.geom.stride_h, self.geom.groups)
    }
    fn parameters(&self) -> usize {
        conv_parameters(&self.weight, self.bias.as_ref(), &self.act)
    }
    fn reference(&self, _g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let add = self.add.map(read);
        vec![reference(&read(self.x), &self.geom, &self.weight, self.bias.as_deref(), add.as_deref(), &self.act)]
    }
    fn split(&self, cuts: Cuts<'_>, name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        split(self, cuts, name)
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        encode_conv_family(cx, name, self, (self.x, self.y, self.add), |xo, yo, add| conv::prepare_conv_t2d(self, xo, yo, add))
    }
    boxed_op!();
}

/// `x`: `[in_c, in_h, in_w]`, weight `[in_c, out_c/groups, k_h, k_w]`; scatter form, as the
/// definition reads: every input pixel adds its kernel into the output.
pub fn reference(x: &[f32], g: &ConvT2dGeom, weight: &[f32], bias: Option<&[f32]>, add: Option<&[f32]>, act: &Act) -> Vec<f32> {
    let (oh, ow) = g.out_hw().expect("valid geometry");
    let (icpg, ocpg) = (g.icpg(), g.ocpg());
    let mut acc = vec![0f64; g.out_c * oh * ow];
    for ic in 0..g.in_c {
        let grp = ic / icpg;
        for iy in 0..g.in_h {
            for ix in 0..g.in_w {
                let xv = x[(ic * g.in_h + iy) * g.in_w + ix] as f64;
                for o in 0..ocpg {
                    let oc = grp * ocpg + o;
                    for ky in 0..g.k_h {
                        let y = (iy * g.stride_h + ky * g.dil_h) as isize - g.pad.top as isize;
                        if y < 0 || y >= oh as isize {
                            continue;
                        }
                        for kx in 0..g.k_w {
                            let xx = (ix * g.stride_w + kx * g.dil_w) as isize - g.pad.left as isize;
                            if xx < 0 || xx >= ow as isize {
                                continue;
                            }
                            let wv = weight[((ic * ocpg + o) * g.k_h + ky) * g.k_w + kx] as f64;
                            acc[(oc * oh + y as usize) * ow + xx as usize] += xv * wv;
                        }
                    }
                }
            }
        }
    }
    let hw = oh * ow;
    acc.iter()
        .enumerate()
        .map(|(i, &a)| {
            let oc = i / hw;
            act.apply((a + bias.map_or(0.0, |b| b[oc] as f64) + add.map_or(0.0, |v| v[i] as f64)) as f32, oc)
        })
        .collect()
}

fn split(o: &ConvT2d, cuts: Cuts<'_>, name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
    let g = &o.geom;
    let mut oc: Vec<usize> = view_cuts(o.y, cuts);
    if let Some(a) = o.add {
        oc.extend(view_cuts(a, cuts));
    }
    let ic: Vec<usize> = view_cuts(o.x, cuts);
    if oc.is_empty() && ic.is_empty() {
        return Ok(None);
    }
    if g.groups != 1 {
        return Err(Error::op(name, "a grouped transposed convolution over tensors split across bindings is not supported"));
    }
    let khw = g.k_h * g.k_w;
    let in_segs = segments(g.in_c, ic);
    let last = in_segs.len() - 1;
    let mut ops: Vec<Box<dyn Operator>> = vec![];
    for (o0, o1) in segments(g.out_c, oc) {
        for (k, &(p, q)) in in_segs.iter().enumerate() {
            let mut geom = *g;
            geom.in_c = q - p;
            geom.out_c = o1 - o0;
            // weights [in, out, kh, kw]
            let mut weight = Vec::with_capacity((q - p) * (o1 - o0) * khw);
            for i in p..q {
                let base = i * g.out_c * khw;
                weight.extend_from_slice(&o.weight[base + o0 * khw..base + o1 * khw]);
            }
            let y = sub(o.y, o0, o1);
            ops.push(Box::new(ConvT2d {
                x: sub(o.x, p, q),
                y,
                add: if k == 0 { o.add.map(|v| sub(v, o0, o1)) } else { Some(y) },
                geom,
                weight,
                bias: if k == 0 { o.bias.as_ref().map(|bv| bv[o0..o1].to_vec()) } else { None },
                act: if k == last { slice_act(&o.act, o0, o1) } else { Act::None },
            }));
        }
    }
    Ok(Some(ops))
}

/// Test problems: random strides, dilations, padding, output padding and groups; or ESPNet's
/// 2x2 stride-2 upsamplers for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![];
    let geoms: Vec<ConvT2dGeom> = if bench {
        vec![ConvT2dGeom { in_c: 12, in_h: 180, in_w: 240, out_c: 12, k_h: 2, k_w: 2, stride_h: 2, stride_w: 2, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 }]
    } else {
        (0..8)
            .map(|_| {
                let groups = rng.range(1, 2);
                let k = rng.range(1, 4);
                let stride = rng.range(1, 3);
                let dil = rng.range(1, 2);
                let p = rng.range(0, (dil * (k - 1)).min(2));
                let op = rng.range(0, stride - 1).min(dil.max(stride) - 1);
                ConvT2dGeom {
                    in_c: rng.range(1, 5) * groups,
                    in_h: rng.range(1, 9),
                    in_w: rng.range(1, 11),
                    out_c: rng.range(1, 5) * groups,
                    k_h: k,
                    k_w: k,
                    stride_h: stride,
                    stride_w: stride,
                    dil_h: dil,
                    dil_w: dil,
                    pad: Pad::same(p),
                    out_pad_h: op,
                    out_pad_w: op,
                    groups,
                }
            })
            .chain(
                // the tiled kernel (kernel = stride, no padding or dilation): stride 2 (its
                // uniform-tap path: ESPNet's 2x2 upsampling) on odd widths, one wider than a
                // workgroup, grouped; strides 3 and 1 (its general path)
                [(5, 7, 9, 6, 2, 1), (3, 4, 150, 5, 2, 1), (4, 5, 7, 6, 2, 2), (3, 4, 5, 5, 3, 1), (6, 3, 13, 3, 1, 3)].map(|(in_c, in_h, in_w, out_c, k, groups)| ConvT2dGeom {
                    in_c,
                    in_h,
                    in_w,
                    out_c,
                    k_h: k,
                    k_w: k,
                    stride_h: k,
                    stride_w: k,
                    dil_h: 1,
                    dil_w: 1,
                    pad: Pad::default(),
                    out_pad_h: 0,
                    out_pad_w: 0,
                    groups,
                }),
            )
            .collect()
    };
    for geom in geoms {
        let Ok((oh, ow)) = geom.out_hw() else { continue };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", geom.in_c, geom.in_h, geom.in_w);
        let ty = g.tensor("y", geom.out_c + 1, oh, ow);
        let weight = rng.vec(geom.weight_shape().iter().product());
        let bias = Some(rng.vec(geom.out_c));
        let name = format!("conv_transpose2d {}x{}x{} -> {}x{}x{} k{} s{} d{} g{}", geom.in_c, geom.in_h, geom.in_w, geom.out_c, oh, ow, geom.k_h, geom.stride_h, geom.dil_h, geom.groups);
        let y = g.slice(ty, 1, geom.out_c);
        if g.conv_transpose2d("convt", g.all(tx), y, geom, weight, bias, Act::Relu).is_err() {
            continue;
        }
        let k = (geom.in_c * geom.k_h * geom.k_w + 1) as f32;
        out.push(super::problem(name, g, &mut rng, 1e-5 + k * k * f32::EPSILON, 0.0));
    }
    out
}
