//! Separable resampling with a tap table: `y[c,i,j] = sum_a wy[i,a] * sum_b wx[j,b] *
//! x[c, iy[i,a], ix[j,b]]`, or a constant where an output row or column lies outside the source.
//! The table is built on the host ([`onnx_axis`]: ONNX Resize's coordinate transformations,
//! nearest rounding modes, linear, cubic, antialiasing, `exclude_outside`, `tf_crop_and_resize`),
//! so one kernel runs every Resize mode; the fixed bilinear and nearest kernels stay for the
//! cases they cover exactly (they need no table).

use super::{boxed_op, check_unary, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{grid_1d, resize, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Resample {
    pub x: View,
    pub y: View,
    /// Taps per output row and per output column.
    pub ky: usize,
    pub kx: usize,
    /// `[iy: oh*ky][wy: oh*ky][ix: ow*kx][wx: ow*kx]`; indices as exact small floats, a first
    /// index of -1 marks an outside row or column.
    pub taps: Vec<f32>,
    /// The value of outside points.
    pub ext: f32,
}

/// One axis of a tap table: `k` taps for each of `out` positions.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisTaps {
    pub k: usize,
    pub idx: Vec<f32>,
    pub w: Vec<f32>,
}

impl AxisTaps {
    /// Output `o` reads input `o`.
    pub fn identity(n: usize) -> Self {
        AxisTaps { k: 1, idx: (0..n).map(|i| i as f32).collect(), w: vec![1.0; n] }
    }
    pub fn out(&self) -> usize {
        self.idx.len() / self.k.max(1)
    }
}

impl Resample {
    pub fn new(x: View, y: View, rows: &AxisTaps, cols: &AxisTaps, ext: f32) -> Self {
        let mut taps = rows.idx.clone();
        taps.extend(&rows.w);
        taps.extend(&cols.idx);
        taps.extend(&cols.w);
        Resample { x, y, ky: rows.k, kx: cols.k, taps, ext }
    }
    /// (iy, wy, ix, wx) slices of the table for an `oh x ow` output.
    fn parts(&self, oh: usize, ow: usize) -> (&[f32], &[f32], &[f32], &[f32]) {
        let (a, b) = (oh * self.ky, ow * self.kx);
        let t = &self.taps;
        (&t[..a], &t[a..2 * a], &t[2 * a..2 * a + b], &t[2 * a + b..2 * a + 2 * b])
    }
}

impl Operator for Resample {
    fn kind(&self) -> &'static str {
        "resample"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_unary(g, name, self.x, self.y)?;
        let ((ih, iw), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        if self.ky == 0 || self.kx == 0 || self.taps.len() != 2 * (oh * self.ky + ow * self.kx) {
            return Err(Error::op(name, format!("a table of {} values for {oh}x{ow} outputs with {}x{} taps", self.taps.len(), self.ky, self.kx)));
        }
        let (iy, _, ix, _) = self.parts(oh, ow);
        let ok = |idx: &[f32], k: usize, n: usize| idx.chunks(k).all(|c| c[0] == -1.0 || c.iter().all(|&v| v >= 0.0 && v < n as f32 && v.fract() == 0.0));
        if !ok(iy, self.ky, ih) || !ok(ix, self.kx, iw) {
            return Err(Error::op(name, format!("a tap index outside the {ih}x{iw} source")));
        }
        if !self.ext.is_finite() {
            return Err(Error::op(name, "a non-finite outside value"));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w * self.ky * (self.kx + 1)) as u64 * 2
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" taps {}x{}", self.ky, self.kx)
    }
    fn parameters(&self) -> usize {
        self.taps.len()
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((ih, iw), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        let x = read(self.x);
        let (iy, wy, ix, wx) = self.parts(oh, ow);
        let mut y = Vec::with_capacity(self.x.c * oh * ow);
        for c in 0..self.x.c {
            for i in 0..oh {
                for j in 0..ow {
                    if iy[i * self.ky] < 0.0 || ix[j * self.kx] < 0.0 {
                        y.push(self.ext);
                        continue;
                    }
                    let mut acc = 0f64;
                    for a in 0..self.ky {
                        let r = (c * ih + iy[i * self.ky + a] as usize) * iw;
                        let row: f64 = (0..self.kx).map(|b| wx[j * self.kx + b] as f64 * x[r + ix[j * self.kx + b] as usize] as f64).sum();
                        acc += wy[i * self.ky + a] as f64 * row;
                    }
                    y.push(acc as f32);
                }
            }
        }
        vec![y]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts)
            .map(|segs| segs.into_iter().map(|(a, b)| Box::new(Resample { x: sub(self.x, a, b), y: sub(self.y, a, b), ..self.clone() }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let ((ih, iw), (oh, ow)) = (cx.graph.hw(self.x), cx.graph.hw(self.y));
        let (groups, row) = grid_1d(self.y.c * oh * ow, resize::WG);
        let rp = resize::ResizeParams {
            c: self.y.c as u32,
            in_h: ih as u32,
            in_w: iw as u32,
            in_off: xo,
            out_h: oh as u32,
            out_w: ow as u32,
            out_off: yo,
            row,
            ky: self.ky as u32,
            kx: self.kx as u32,
            ext: self.ext,
            ..Default::default()
        };
        let u = cx.uniform(&rp);
        let t = cx.storage(name, &self.taps)?;
        let dispatch = cx.dispatch(Shader::Resize, "resample", &[xs, ys, Slot::whole(&u), Slot::whole(&t)], groups, name, self.flops(cx.graph), cx.act_bytes(self) + t.size());
        Ok(Encoded { dispatch, buffers: vec![u, t] })
    }
    boxed_op!();
}

/// Interpolation of an ONNX Resize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interp<'a> {
    /// `nearest_mode`: round_prefer_floor, round_prefer_ceil, floor, ceil.
    Nearest(&'a str),
    Linear,
    /// `cubic_coeff_a`.
    Cubic(f64),
}

/// One axis of ONNX Resize (the onnx package's reference semantics): output positions `0..out`
/// of an input of `n`, with `scale` (the `scales` value, or out/in for `sizes`), the coordinate
/// transformation `ctm`, `roi` (start, end) for `tf_crop_and_resize`, `exclude_outside` and
/// `antialias`. Neighbours past the edge read the edge (ONNX pads with edge values).
#[allow(clippy::too_many_arguments)]
pub fn onnx_axis(n: usize, out: usize, scale: f64, interp: Interp<'_>, ctm: &str, roi: (f64, f64), exclude_outside: bool, antialias: bool) -> std::result::Result<AxisTaps, String> {
    if (scale - 1.0).abs() < 1e-9 && out == n && (ctm != "tf_crop_and_resize" || (roi.0.abs() < 1e-9 && (roi.1 - 1.0).abs() < 1e-9)) {
        return Ok(AxisTaps::identity(n));
    }
    let out_f = scale * n as f64;
    let nf = n as f64;
    let coeffs = |ratio: f64| -> Vec<f64> {
        match interp {
            Interp::Nearest(mode) => {
                if ratio.fract() == 0.0 {
                    return vec![0.0, 1.0];
                }
                let up = match mode {
                    "round_prefer_ceil" => ratio >= 0.5,
                    "floor" => false,
                    "ceil" => true,
                    _ => ratio > 0.5,
                };
                vec![(!up) as u8 as f64, up as u8 as f64]
            }
            Interp::Linear if antialias => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let foot = 2 - 2 * start;
                let c: Vec<f64> = (start..start + foot).map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect();
                let sum: f64 = c.iter().sum();
                c.iter().map(|v| v / sum).collect()
            }
            Interp::Linear => vec![1.0 - ratio, ratio],
            Interp::Cubic(a) if antialias => {
                let s = scale.min(1.0);
                let f = |x: f64| {
                    let x = x.abs();
                    if x <= 1.0 {
                        (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
                    } else if x < 2.0 {
                        a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / s).floor() as i64 + 1;
                let end = 2 - start;
                let c: Vec<f64> = (start..end).map(|i| f(s * (i as f64 - ratio))).collect();
                let sum: f64 = c.iter().sum();
                c.iter().map(|v| v / sum).collect()
            }
            Interp::Cubic(a) => {
                let (r, q) = (ratio, 1.0 - ratio);
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
                ]
            }
        }
    };
    let mut k = 0;
    let (mut idx, mut w) = (vec![], vec![]);
    for o in 0..out {
        let y = o as f64;
        let x = match ctm {
            "align_corners" => {
                if out_f == 1.0 {
                    0.0
                } else {
                    y * (nf - 1.0) / (out_f - 1.0)
                }
            }
            "asymmetric" => y / scale,
            "tf_crop_and_resize" => {
                let x = if out_f == 1.0 { (roi.1 - roi.0) * (nf - 1.0) / 2.0 } else { y * (roi.1 - roi.0) * (nf - 1.0) / (out_f - 1.0) } + roi.0 * (nf - 1.0);
                if x < 0.0 || x > nf - 1.0 {
                    f64::NAN
                } else {
                    x
                }
            }
            "pytorch_half_pixel" => {
                if out_f == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (y + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adj = out as f64 / out_f;
                let c = nf / 2.0;
                c * (1.0 - adj) + (y + 0.5) / scale - 0.5
            }
            m => return Err(format!("coordinate_transformation_mode {m}")),
        };
        if x.is_nan() {
            // outside: one marked tap (the kernel writes the extrapolation value)
            let c = coeffs(0.5).len();
            k = k.max(c);
            idx.push(vec![-1.0; c]);
            w.push(vec![0.0; c]);
            continue;
        }
        let ratio = if x.fract() == 0.0 { 1.0 } else { x - x.floor() };
        let mut c = coeffs(ratio);
        let m = c.len();
        // the m neighbours nearest x in edge-padded coordinates, ties to the smaller index
        let pad = m.div_ceil(2) as f64;
        let xp = x + pad;
        let p = xp.floor();
        let frac = xp - p;
        let off = if m % 2 == 0 {
            if frac == 0.0 {
                -((m / 2) as f64)
            } else {
                -((m / 2) as f64) + 1.0
            }
        } else {
            let base = -(((m - 1) / 2) as f64);
            if frac <= 0.5 {
                base
            } else {
                base + 1.0
            }
        };
        let start = p + off - pad;
        let ids: Vec<i64> = (0..m).map(|t| start as i64 + t as i64).collect();
        if exclude_outside {
            for (t, &i) in ids.iter().enumerate() {
                if i < 0 || i >= n as i64 {
                    c[t] = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            c.iter_mut().for_each(|v| *v /= s);
        }
        k = k.max(m);
        idx.push(ids.iter().map(|&i| i.clamp(0, n as i64 - 1) as f32).collect());
        w.push(c.iter().map(|&v| v as f32).collect());
    }
    // pad every position to k taps (weight 0 at the edge index)
    let mut t = AxisTaps { k, idx: vec![], w: vec![] };
    for (i, ww) in idx.into_iter().zip(w) {
        let extra = k - i.len();
        let fill = if i[0] < 0.0 { -1.0 } else { i[i.len() - 1] };
        t.idx.extend(i.iter().copied().chain(std::iter::repeat_n(fill, extra)));
        t.w.extend(ww.iter().copied().chain(std::iter::repeat_n(0.0, extra)));
    }
    Ok(t)
}

/// Test problems: random tables (1-4 taps, some outside rows and columns) over odd sizes, and
/// ONNX tables (cubic, antialiased linear, cropping).
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, usize, usize)> =
        if bench { vec![(21, 33, 33, 257, 257)] } else { (0..8).map(|_| (rng.range(1, 5), rng.range(1, 9), rng.range(1, 9), rng.range(1, 13), rng.range(1, 13))).collect() };
    let mut out = vec![];
    for (i, (c, ih, iw, oh, ow)) in shapes.into_iter().enumerate() {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, ih, iw);
        let ty = g.tensor("y", c, oh, ow);
        let (rows, cols) = if bench || i % 2 == 0 {
            let interp = [Interp::Cubic(-0.75), Interp::Linear, Interp::Nearest("round_prefer_ceil")][i % 3];
            let r = onnx_axis(ih, oh, oh as f64 / ih as f64, interp, "half_pixel", (0.0, 1.0), i % 4 == 0, true).expect("known mode");
            let cc = onnx_axis(iw, ow, ow as f64 / iw as f64, interp, "tf_crop_and_resize", (0.2, 0.9), false, false).expect("known mode");
            (r, cc)
        } else {
            let mut random = |n: usize, o: usize| {
                let k = rng.range(1, 4);
                let mut t = AxisTaps { k, idx: vec![], w: vec![] };
                for _ in 0..o {
                    let outside = rng.range(0, 5) == 0;
                    for _ in 0..k {
                        t.idx.push(if outside { -1.0 } else { rng.range(0, n - 1) as f32 });
                        t.w.push(rng.uniform());
                    }
                }
                t
            };
            (random(ih, oh), random(iw, ow))
        };
        let op = Resample::new(g.all(tx), g.all(ty), &rows, &cols, 0.5);
        if g.push("resample", op).is_err() {
            continue;
        }
        out.push(super::problem(format!("resample {c}x{ih}x{iw} -> {oh}x{ow} taps {}x{}", rows.k, cols.k), g, &mut rng, 1e-5, 1e-5));
    }
    out
}
