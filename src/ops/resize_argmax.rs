//! Bilinear upsampling fused with the class-map argmax: the class of each pixel of the map from
//! the logits interpolated on the fly, so the full-resolution logits are never stored or read
//! back (for ESPNetv2 at 384 x 384, 12 MB written and read again). [`crate::session`] uses it for
//! the class map when the network's logits are a bilinear upsampling that `bilinear_rows8` would
//! run ([`crate::kernels::argmax::fuses_resize`]); the logits themselves, when asked for, still
//! come from the network's own resize. Its result is the argmax of what that resize stores:
//! the same interpolation arithmetic, rounded to the logits' element type. Kernel:
//! `shaders/argmax.wgsl` (`resize_argmax`).

use super::{boxed_op, check_view, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::{argmax, Shader, Slot};

#[derive(Clone, Debug)]
pub struct ResizeArgmax {
    /// The logits before upsampling.
    pub x: View,
    /// The class map: a 1-channel `u8` tensor of the upsampled size.
    pub y: View,
    pub align_corners: bool,
}

impl Operator for ResizeArgmax {
    fn kind(&self) -> &'static str {
        "resize_argmax"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_view(g, name, self.x)?;
        check_view(g, name, self.y)?;
        let (x, y) = (g.desc(self.x), g.desc(self.y));
        if !matches!(x.dtype, DType::F32 | DType::F16) || y.dtype != DType::U8 || y.c != 1 {
            return Err(Error::op(name, "resize_argmax reads float logits and writes a 1-channel u8 class map"));
        }
        if !argmax::fuses_resize(self.x.c, g.hw(self.x), g.hw(self.y), self.align_corners) {
            let ((ih, iw), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
            return Err(Error::op(name, format!("{} classes {ih}x{iw} -> {oh}x{ow}: resize_argmax needs an upsampling by 7/4 or more to a width divisible by 4, and at most 256 classes", self.x.c)));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.x.c * h * w) as u64 * 7
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" align_corners={}", self.align_corners)
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let half = g.desc(self.x).dtype == DType::F16;
        vec![reference(&read(self.x), self.x.c, g.hw(self.x), g.hw(self.y), self.align_corners, half)]
    }
    fn split(&self, cuts: Cuts<'_>, name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        if view_cuts(self.x, cuts).is_empty() {
            return Ok(None);
        }
        // the session fuses only logits that fit one binding
        Err(Error::op(name, "resize_argmax reads its logits from one binding; they are split across several"))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, _)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (oh, ow) = cx.graph.hw(self.y);
        let (p, groups, constants) = argmax::prepare_resize(self.x.c, cx.graph.hw(self.x), (oh, ow), xo, self.align_corners);
        let u = cx.uniform(&p);
        let bytes = cx.graph.view_bytes(self.x) + argmax::map_bytes(oh * ow);
        let dispatch = cx.dispatch_specialized(Shader::Argmax, "resize_argmax", &constants, &[xs, ys, Slot::whole(&u), cx.dummy()], groups, name, self.flops(cx.graph), bytes);
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// The class map (one class per pixel, as f32) of `x` (`c` channels of `ih x iw`) upsampled to
/// `oh x ow` the way `bilinear_rows8` does it: the two source rows blended first, then the two
/// columns, each as WGSL's `mix(a, b, t) = a (1 - t) + b t` in float32, the value rounded to f16
/// for f16 logits (`half`); then the argmax (the first maximum wins, NaN counts as the maximum).
pub fn reference(x: &[f32], c: usize, (ih, iw): (usize, usize), (oh, ow): (usize, usize), align_corners: bool, half: bool) -> Vec<f32> {
    let mix = |a: f32, b: f32, t: f32| a * (1.0 - t) + b * t;
    let (sh, sw) = (crate::kernels::resize::scale(ih, oh, align_corners), crate::kernels::resize::scale(iw, ow, align_corners));
    let coord = |o: usize, scale: f32, n: usize| -> (usize, usize, f32) {
        let s = if align_corners { scale * o as f32 } else { (scale * (o as f32 + 0.5) - 0.5).max(0.0) };
        let i0 = (s as usize).min(n - 1);
        (i0, (i0 + 1).min(n - 1), s - i0 as f32)
    };
    let mut up = vec![0f32; c * oh * ow];
    for k in 0..c {
        let at = |y: usize, x0: usize| x[(k * ih + y) * iw + x0];
        for oy in 0..oh {
            let (y0, y1, ly) = coord(oy, sh, ih);
            for ox in 0..ow {
                let (x0, x1, lx) = coord(ox, sw, iw);
                let v = mix(mix(at(y0, x0), at(y1, x0), ly), mix(at(y0, x1), at(y1, x1), ly), lx);
                up[(k * oh + oy) * ow + ox] = if half { half::f16::from_f32(v).to_f32() } else { v };
            }
        }
    }
    crate::reference::argmax(&up, c, oh * ow).into_iter().map(f32::from).collect()
}

/// Test problems whose interpolated logits are exact, in float32 and in f16, so the class map has
/// one right answer on every device (an exact tie goes to the lower class; with rounded values a
/// near tie would come down to each device's last bit: fused multiply-adds or not, and WGSL leaves
/// the rounding of an f32 -> f16 conversion to the implementation): logits that are multiples of
/// 1/4 in [-1, 1], weights that are multiples of 1/16 (no corner alignment and upsampling by 2,
/// 4 or 8, where 8 outputs can read all 6 columns; with aligned corners, along y only), so every
/// value is a multiple of 2^-10 in [-1, 1]. Many pixels tie exactly: class 1 is a copy of class
/// 0, and logits this coarse often interpolate to the same value. Last invocations of one word
/// of the map; one class.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    // (classes, in_h, in_w, out_h, out_w, align_corners)
    let shapes: Vec<(usize, usize, usize, usize, usize, bool)> = if bench {
        vec![(21, 48, 48, 384, 384, false)]
    } else {
        let f = [2, 4, 8][rng.range(0, 2)];
        // (an even width at 2x, for a map width divisible by 4)
        let (ih, iw) = (rng.range(1, 6), rng.range(64 / f, 160 / f) & !usize::from(f == 2));
        vec![(rng.range(2, 21), ih, iw, ih * f, iw * f, false), (5, 3, 9, 6, 72, false), (21, 5, 17, 40, 136, false), (3, 4, 34, 8, 68, false), (1, 3, 9, 24, 72, false), (7, 5, 1, 17, 64, true), (4, 2, 1, 9, 68, true)]
    };
    let mut out = vec![];
    for (c, ih, iw, oh, ow, align_corners) in shapes {
        if !argmax::fuses_resize(c, (ih, iw), (oh, ow), align_corners) {
            continue;
        }
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, ih, iw);
        let ty = g.tensor_of("classes", DType::U8, 1, oh, ow);
        if g.push("resize_argmax", ResizeArgmax { x: g.all(tx), y: g.all(ty), align_corners }).is_err() {
            continue;
        }
        let mut p = super::problem(format!("resize_argmax {c}x{ih}x{iw} -> {oh}x{ow} align_corners={align_corners}"), g, &mut rng, 0.0, 0.0);
        let x = p.data.get_mut(&tx).expect("input");
        for v in x.iter_mut() {
            *v = (*v * 4.0).round() / 4.0;
        }
        if c >= 2 {
            x.copy_within(0..ih * iw, ih * iw);
        }
        out.push(p);
    }
    out
}
