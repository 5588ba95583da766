//! 2-D convolution (dense, grouped, depthwise, dilated, strided, asymmetric padding) with an
//! optional bias, then `+ add` (a residual or hierarchical sum), then the activation.
//! Kernel: `shaders/conv.wgsl` (`conv2d`, `conv2d_dw`), parameter block in [`crate::kernels::conv`].

use super::{boxed_op, check_same_shape, check_view, distinct, same_slot, segments, sub, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Act, Graph, View};
use crate::kernels::{conv, Shader, Slot};
use crate::shape::{Conv2dGeom, Pad};

#[derive(Clone, Debug)]
pub struct Conv2d {
    pub x: View,
    pub y: View,
    pub add: Option<View>,
    pub geom: Conv2dGeom,
    /// `[out_c, in_c/groups, k_h, k_w]`
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub act: Act,
}

/// Checks the views, sizes, weight and bias of a (transposed) convolution.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_conv(g: &Graph, op: &str, x: View, y: View, (in_c, in_h, in_w): (usize, usize, usize), (out_c, (oh, ow)): (usize, (usize, usize)), ws: &[usize], weights: usize, bias: Option<&[f32]>) -> Result<()> {
    check_view(g, op, x)?;
    check_view(g, op, y)?;
    distinct(g, op, x, y)?;
    let (h, w) = g.hw(x);
    if in_c != x.c || in_h != h || in_w != w {
        return Err(Error::op(op, format!("geometry expects input {in_c}x{in_h}x{in_w}, got {}x{h}x{w}", x.c)));
    }
    if y.c != out_c || g.hw(y) != (oh, ow) {
        return Err(Error::op(op, format!("output view {}x{:?} but geometry gives {out_c}x{:?}", y.c, g.hw(y), (oh, ow))));
    }
    if weights != ws.iter().product::<usize>() {
        return Err(Error::op(op, format!("weight has {weights} values, shape {ws:?} needs {}", ws.iter().product::<usize>())));
    }
    if let Some(b) = bias {
        if b.len() != out_c {
            return Err(Error::op(op, format!("bias has {} values for {out_c} channels", b.len())));
        }
    }
    Ok(())
}

/// Checks an addend view of an operator writing `y`.
pub(crate) fn check_addend(g: &Graph, op: &str, a: View, y: View) -> Result<()> {
    check_view(g, op, a)?;
    check_same_shape(g, op, a, y)?;
    if a.tensor == y.tensor && a.c0 < y.c0 + y.c && y.c0 < a.c0 + a.c {
        return Err(Error::op(op, "addend overlaps the output channels"));
    }
    Ok(())
}

pub(crate) fn slice_act(act: &Act, a: usize, b: usize) -> Act {
    match act {
        Act::PRelu(s) => Act::PRelu(s[a..b].to_vec()),
        other => other.clone(),
    }
}

/// Where an addend is, relative to the input and output bindings.
pub(crate) fn add_from<'a>(cx: &EncodeCx<'a, '_>, x: &Slot<'a>, y: &Slot<'a>, add: Option<View>) -> Result<(conv::AddFrom, Option<Slot<'a>>)> {
    Ok(match add {
        None => (conv::AddFrom::None, None),
        Some(a) => {
            let (s, off) = cx.resolve(a)?;
            if same_slot(&s, y) {
                (conv::AddFrom::Dst(off), None)
            } else if same_slot(&s, x) {
                (conv::AddFrom::Src(off), None)
            } else {
                (conv::AddFrom::Other(off), Some(s))
            }
        }
    })
}

/// Encodes a member of the convolution family: input, packed parameters, output, addend (where it
/// has its own binding) and the parameter block, as `shaders/conv.wgsl` binds them.
pub(crate) fn encode_conv_family(
    cx: &EncodeCx<'_, '_>,
    name: &str,
    op: &dyn Operator,
    (x, y, add): (View, View, Option<View>),
    prepare: impl FnOnce(u32, u32, conv::AddFrom) -> Result<conv::Prepared>,
) -> Result<Encoded> {
    let ((xs, xo), (ys, yo)) = (cx.resolve(x)?, cx.resolve(y)?);
    let (add, add_slot) = add_from(cx, &xs, &ys, add)?;
    let prep = prepare(xo, yo, add).map_err(|e| Error::op(name, e.to_string()))?;
    let prm = cx.storage(name, &prep.prm)?;
    let u = cx.uniform(&prep.params);
    let slots = [xs, Slot::whole(&prm), ys, add_slot.unwrap_or(cx.dummy()), Slot::whole(&u)];
    let dispatch = cx.dispatch_specialized(Shader::Conv, prep.entry, &prep.constants, &slots, prep.groups, name, op.flops(cx.graph), cx.act_bytes(op) + prm.size());
    Ok(Encoded { dispatch, buffers: vec![prm, u] })
}

/// Parameters of a convolution-family operator: weights, bias and PReLU slopes.
pub(crate) fn conv_parameters(weight: &[f32], bias: Option<&Vec<f32>>, act: &Act) -> usize {
    weight.len() + bias.map_or(0, |b| b.len()) + act.slopes().map_or(0, |s| s.len())
}

impl Operator for Conv2d {
    fn kind(&self) -> &'static str {
        "conv2d"
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
        let c = &self.geom;
        let add = if self.add.is_some() { " +add" } else { "" };
        format!(" k{}x{} s{} d{} g{}{add}", c.k_h, c.k_w, c.stride_h, c.dil_h, c.groups)
    }
    fn parameters(&self) -> usize {
        conv_parameters(&self.weight, self.bias.as_ref(), &self.act)
    }
    fn reference(&self, _g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let add = self.add.map(read);
        vec![reference(&read(self.x), &self.geom, &self.weight, self.bias.as_deref(), add.as_deref(), &self.act)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        split(self, cuts)
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        encode_conv_family(cx, name, self, (self.x, self.y, self.add), |xo, yo, add| conv::prepare_conv2d(self, xo, yo, add, cx.kernels.tiles(), cx.f16_math(Shader::Conv)))
    }
    boxed_op!();
}

/// `x`: `[in_c, in_h, in_w]`; returns `[out_c, oh, ow]`. float64 accumulation.
pub fn reference(x: &[f32], g: &Conv2dGeom, weight: &[f32], bias: Option<&[f32]>, add: Option<&[f32]>, act: &Act) -> Vec<f32> {
    let (oh, ow) = g.out_hw().expect("valid geometry");
    let (icpg, ocpg) = (g.icpg(), g.ocpg());
    let mut y = vec![0f32; g.out_c * oh * ow];
    for oc in 0..g.out_c {
        let grp = oc / ocpg;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias.map_or(0.0, |b| b[oc] as f64);
                for ic in 0..icpg {
                    let c = grp * icpg + ic;
                    for ky in 0..g.k_h {
                        let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad.top as isize;
                        if iy < 0 || iy >= g.in_h as isize {
                            continue;
                        }
                        for kx in 0..g.k_w {
                            let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad.left as isize;
                            if ix < 0 || ix >= g.in_w as isize {
                                continue;
                            }
                            let xv = x[(c * g.in_h + iy as usize) * g.in_w + ix as usize] as f64;
                            let wv = weight[((oc * icpg + ic) * g.k_h + ky) * g.k_w + kx] as f64;
                            acc += xv * wv;
                        }
                    }
                }
                let i = (oc * oh + oy) * ow + ox;
                if let Some(a) = add {
                    acc += a[i] as f64;
                }
                y[i] = act.apply(acc as f32, oc);
            }
        }
    }
    y
}

/// Splits output channels at the output's cuts and, where a group's input channels straddle an
/// input cut, accumulates over input segments: the first piece adds the bias and the original
/// addend, later pieces add the output to itself, and only the last applies the activation.
fn split(o: &Conv2d, cuts: Cuts<'_>) -> Result<Option<Vec<Box<dyn Operator>>>> {
    let g = &o.geom;
    let (groups, icpg, ocpg) = (g.groups, g.icpg(), g.ocpg());
    let mut oc: Vec<usize> = view_cuts(o.y, cuts);
    if let Some(a) = o.add {
        oc.extend(view_cuts(a, cuts));
    }
    let ic: Vec<usize> = view_cuts(o.x, cuts);
    if oc.is_empty() && ic.is_empty() {
        return Ok(None);
    }
    let khw = g.k_h * g.k_w;
    let inside = |cuts: &[usize], a: usize, b: usize| cuts.iter().any(|&k| k > a && k < b);
    let mut ops: Vec<Box<dyn Operator>> = vec![];
    // a run of whole groups [g0, g1) that no cut enters
    let emit_run = |g0: usize, g1: usize, ops: &mut Vec<Box<dyn Operator>>| {
        let n = g1 - g0;
        let (o0, o1) = (g0 * ocpg, g1 * ocpg);
        let mut geom = *g;
        geom.in_c = n * icpg;
        geom.out_c = n * ocpg;
        geom.groups = n;
        ops.push(Box::new(Conv2d {
            x: sub(o.x, g0 * icpg, g1 * icpg),
            y: sub(o.y, o0, o1),
            add: o.add.map(|v| sub(v, o0, o1)),
            geom,
            weight: o.weight[o0 * icpg * khw..o1 * icpg * khw].to_vec(),
            bias: o.bias.as_ref().map(|b| b[o0..o1].to_vec()),
            act: slice_act(&o.act, o0, o1),
        }));
    };
    let mut run_start: Option<usize> = None;
    for grp in 0..groups {
        let (ob, oe, ib, ie) = (grp * ocpg, (grp + 1) * ocpg, grp * icpg, (grp + 1) * icpg);
        let clean = !inside(&oc, ob, oe) && !inside(&ic, ib, ie);
        // a cut at this group's start ends the current run
        if let Some(s) = run_start {
            if !clean || oc.contains(&ob) || ic.contains(&ib) {
                emit_run(s, grp, &mut ops);
                run_start = None;
            }
        }
        if clean {
            if run_start.is_none() {
                run_start = Some(grp);
            }
            continue;
        }
        let in_segs: Vec<(usize, usize)> = segments(icpg, ic.iter().filter(|&&k| k > ib && k < ie).map(|k| k - ib).collect());
        for (a, b) in segments(ocpg, oc.iter().filter(|&&k| k > ob && k < oe).map(|k| k - ob).collect()) {
            let (o0, o1) = (ob + a, ob + b);
            let last = in_segs.len() - 1;
            for (k, &(p, q)) in in_segs.iter().enumerate() {
                let mut geom = *g;
                geom.in_c = q - p;
                geom.out_c = o1 - o0;
                geom.groups = 1;
                let mut weight = Vec::with_capacity((o1 - o0) * (q - p) * khw);
                for oc_ in o0..o1 {
                    let base = oc_ * icpg * khw;
                    weight.extend_from_slice(&o.weight[base + p * khw..base + q * khw]);
                }
                let y = sub(o.y, o0, o1);
                ops.push(Box::new(Conv2d {
                    x: sub(o.x, ib + p, ib + q),
                    y,
                    add: if k == 0 { o.add.map(|v| sub(v, o0, o1)) } else { Some(y) },
                    geom,
                    weight,
                    bias: if k == 0 { o.bias.as_ref().map(|bv| bv[o0..o1].to_vec()) } else { None },
                    act: if k == last { slice_act(&o.act, o0, o1) } else { Act::None },
                }));
            }
        }
    }
    if let Some(s) = run_start {
        emit_run(s, groups, &mut ops);
    }
    Ok(Some(ops))
}

/// Test problems: random small geometries (odd sizes, channels not divisible by 4, dilation,
/// stride, groups, depthwise, asymmetric padding, every activation, addends), or ESPNet's real
/// layer sizes for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![];
    let cases: Vec<(Conv2dGeom, bool)> = if bench {
        vec![
            (Conv2dGeom::new(31, 180, 240, 12, 3, 1, 1, 1, 1), false),
            (Conv2dGeom::new(25, 45, 60, 25, 3, 1, 16, 16, 1), true),
            (Conv2dGeom::new(131, 90, 120, 25, 3, 2, 1, 1, 1), false),
            (Conv2dGeom::new(96, 45, 60, 96, 3, 1, 1, 1, 96), false),
            (Conv2dGeom::new(131, 90, 120, 12, 1, 1, 0, 1, 1), false),
        ]
    } else {
        (0..12)
            .map(|_| {
                let groups = [1, 1, 2, 3][rng.range(0, 3)];
                let icpg = rng.range(1, 5);
                let depthwise = rng.range(0, 3) == 0;
                let (in_c, out_c, groups) = if depthwise {
                    let c = rng.range(1, 9);
                    (c, c, c)
                } else {
                    (icpg * groups, rng.range(1, 3) * groups * [1, 3][rng.range(0, 1)], groups)
                };
                let k = [1, 3, 5, 2][rng.range(0, 3)];
                let dil = rng.range(1, 3);
                let stride = rng.range(1, 2);
                let (h, w) = (rng.range(k * dil, 17), rng.range(k * dil, 19));
                let mut geom = Conv2dGeom::new(in_c, h, w, out_c, k, stride, dil * (k - 1) / 2, dil, groups);
                if rng.range(0, 3) == 0 {
                    geom.pad = Pad { top: 0, left: 1, bottom: 1, right: 0 };
                    geom.k_w = 1.max(k - 1);
                }
                (geom, rng.range(0, 1) == 0)
            })
            .chain([
                // channel counts where the blocks per invocation (NB) do not divide the blocks of
                // a group, so the last invocation computes blocks past the group's end: 25 channels
                // (7 blocks: NB 4 on GPUs), two groups of 20 (5 blocks each: NB 4 on GPUs) and 33
                // channels (9 blocks: NB 5 on CPU adapters)
                (Conv2dGeom::new(5, 9, 11, 25, 3, 1, 2, 2, 1), true),
                (Conv2dGeom::new(6, 7, 10, 40, 3, 2, 1, 1, 2), false),
                (Conv2dGeom::new(4, 9, 11, 33, 3, 1, 1, 1, 1), false),
                // maps larger than a workgroup (8 rows, 32 columns) with wide dilations, where
                // whole workgroups skip the taps that only read padding (DeepLab's ASPP)
                (Conv2dGeom::new(3, 21, 41, 5, 3, 1, 12, 12, 1), true),
                (Conv2dGeom::new(2, 17, 35, 6, 3, 1, 36, 36, 1), false),
                (Conv2dGeom::new(3, 25, 70, 4, 3, 2, 9, 9, 1), false),
                // padding 11 > dilation 4: the first workgroup's last row reads its first valid
                // input row exactly at tap 1 (the boundary of the skipped range)
                (Conv2dGeom::new(2, 10, 12, 3, 3, 1, 11, 4, 1), false),
                // the workgroup-tiled variant (GPUs): several workgroups, input channels in two
                // tile loads (11 > the 9 that fit), stride 2
                (Conv2dGeom::new(11, 20, 70, 6, 3, 1, 2, 2, 1), true),
                (Conv2dGeom::new(5, 37, 75, 9, 3, 2, 1, 1, 1), false),
                // `conv2d_planes` (kernels::conv::planes): groups of one output channel (3x3 with a
                // partial last invocation of 8 pixels; 1x1; stride 2 with a 5-wide kernel at
                // dilation 4, whose 31 columns exceed the window and are loaded tap by tap), and
                // depthwise 3x3 at dilation 2, with a channel multiplier of 2
                (Conv2dGeom::new(15, 13, 37, 3, 3, 1, 1, 1, 3), true),
                (Conv2dGeom::new(12, 9, 20, 4, 1, 1, 0, 1, 4), false),
                (Conv2dGeom::new(8, 30, 45, 2, 5, 2, 8, 4, 2), false),
                (Conv2dGeom::new(10, 19, 53, 10, 3, 1, 2, 2, 10), true),
                (Conv2dGeom::new(4, 11, 21, 8, 3, 1, 1, 1, 4), false),
            ])
            .collect()
    };
    for (i, (geom, add)) in cases.into_iter().enumerate() {
        let Ok((oh, ow)) = geom.out_hw() else { continue };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", geom.in_c + 1, geom.in_h, geom.in_w);
        let ty = g.tensor("y", geom.out_c + 2, oh, ow);
        let ta = g.tensor("add", geom.out_c, oh, ow);
        let act = match i % 9 {
            0 => Act::None,
            1 => Act::Relu,
            2 => Act::Relu6,
            3 => Act::PRelu(rng.vec(geom.out_c)),
            4 => Act::Sigmoid,
            5 => Act::HardSwish,
            6 => Act::Tanh,
            7 => Act::Erf,
            _ => Act::HardSigmoid,
        };
        let weight = rng.vec(geom.weight_shape().iter().product());
        let bias = Some(rng.vec(geom.out_c));
        let (x, y) = (g.slice(tx, 1, geom.in_c), g.slice(ty, 1, geom.out_c));
        let name = format!("conv2d {}x{}x{} -> {}x{}x{} k{}x{} s{} d{} g{}", geom.in_c, geom.in_h, geom.in_w, geom.out_c, oh, ow, geom.k_h, geom.k_w, geom.stride_h, geom.dil_h, geom.groups);
        if g.conv2d("conv", x, y, geom, weight, bias, act, add.then(|| g.all(ta))).is_err() {
            continue;
        }
        // |x|, |w| <= 1: the float32 error of a K-term sum is below K * 2^-24 * sum|x*w| <= K^2 2^-24
        let k = (geom.icpg() * geom.k_h * geom.k_w + 2) as f32;
        out.push(super::problem(name, g, &mut rng, 1e-5 + 2.0 * k * k * f32::EPSILON / 2.0, 0.0));
    }
    out
}
