//! Max pooling that also returns PyTorch's indices: for each output, the flat position
//! `y * in_w + x` of its maximum inside the channel's input plane (the first maximum in row-major
//! window order; NaN wins), as `u32`. SegNet and ENet unpool with them. `ceil_mode` and padding as
//! in [`crate::shape::Pool2dGeom`]. Kernel: `shaders/pool.wgsl` (`max_pool2d_idx`).

use super::{boxed_op, check_view, distinct, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::{pool, Shader, Slot};
use crate::shape::Pool2dGeom;

#[derive(Clone, Debug)]
pub struct MaxPool2dIdx {
    pub x: View,
    /// Pooled values.
    pub y: View,
    /// Indices: a `u32` view of `y`'s shape.
    pub idx: View,
    pub geom: Pool2dGeom,
}

impl Operator for MaxPool2dIdx {
    fn kind(&self) -> &'static str {
        "max_pool2d_idx"
    }
    fn inputs(&self) -> Vec<View> {
        vec![self.x]
    }
    fn outputs(&self) -> Vec<View> {
        vec![self.y, self.idx]
    }
    fn views_mut(&mut self) -> Vec<&mut View> {
        vec![&mut self.x, &mut self.y, &mut self.idx]
    }
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        for v in [self.x, self.y, self.idx] {
            check_view(g, name, v)?;
        }
        distinct(g, name, self.x, self.y)?;
        distinct(g, name, self.x, self.idx)?;
        let geom = &self.geom;
        if geom.c != self.x.c || (geom.in_h, geom.in_w) != g.hw(self.x) {
            return Err(Error::op(name, "geometry does not match the input view"));
        }
        let (oh, ow) = geom.out_hw().map_err(|e| Error::op(name, e.to_string()))?;
        if self.y.c != self.x.c || g.hw(self.y) != (oh, ow) || self.idx.c != self.x.c || g.hw(self.idx) != (oh, ow) {
            return Err(Error::op(name, format!("values and indices must be {}x{oh}x{ow}", self.x.c)));
        }
        if g.desc(self.idx).dtype != DType::U32 {
            return Err(Error::op(name, "indices are a u32 tensor"));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w * self.geom.k_h * self.geom.k_w) as u64
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" k{}x{} s{} ceil={}", self.geom.k_h, self.geom.k_w, self.geom.stride_h, self.geom.ceil_mode)
    }
    fn reference(&self, _g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (v, i) = reference(&read(self.x), &self.geom);
        vec![v, i.into_iter().map(f32::from_bits).collect()]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y, self.idx], self.y.c, cuts).map(|segs| {
            segs.into_iter()
                .map(|(a, b)| {
                    let mut geom = self.geom;
                    geom.c = b - a;
                    Box::new(MaxPool2dIdx { x: sub(self.x, a, b), y: sub(self.y, a, b), idx: sub(self.idx, a, b), geom }) as Box<dyn Operator>
                })
                .collect()
        }))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo), (is, io)) = (cx.resolve(self.x)?, cx.resolve(self.y)?, cx.resolve(self.idx)?);
        let probe = crate::ops::Pool2d { x: self.x, y: self.y, geom: self.geom, kind: crate::shape::PoolKind::Max };
        let (mut pp, groups) = pool::prepare(&probe, xo, yo, false).map_err(|e| Error::op(name, e.to_string()))?;
        pp.aux_off = io;
        let u = cx.uniform(&pp);
        let dispatch = cx.dispatch(Shader::Pool, "max_pool2d_idx", &[xs, ys, Slot::whole(&u), is], groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// `[c, in_h, in_w]` to values and indices `[c, oh, ow]`, PyTorch's loop.
pub fn reference(x: &[f32], g: &Pool2dGeom) -> (Vec<f32>, Vec<u32>) {
    let (oh, ow) = g.out_hw().expect("valid geometry");
    let mut v = vec![0f32; g.c * oh * ow];
    let mut ix = vec![0u32; g.c * oh * ow];
    for c in 0..g.c {
        for oy in 0..oh {
            let (y0, ny, _) = Pool2dGeom::taps(oy, g.k_h, g.stride_h, g.dil_h, g.pad_h, g.pad_b, g.in_h);
            for ox in 0..ow {
                let (x0, nx, _) = Pool2dGeom::taps(ox, g.k_w, g.stride_w, g.dil_w, g.pad_w, g.pad_r, g.in_w);
                let mut m = f32::NEG_INFINITY;
                let mut mi = y0 * g.in_w + x0;
                for yy in (0..ny).map(|t| y0 + t * g.dil_h) {
                    for xx in (0..nx).map(|t| x0 + t * g.dil_w) {
                        let val = x[(c * g.in_h + yy) * g.in_w + xx];
                        if val > m || val.is_nan() {
                            m = val;
                            mi = yy * g.in_w + xx;
                        }
                    }
                }
                v[(c * oh + oy) * ow + ox] = m;
                ix[(c * oh + oy) * ow + ox] = mi as u32;
            }
        }
    }
    (v, ix)
}

/// Test problems: 2x2 and 3x3 windows, strides, ceil mode, odd sizes; quantised values for ties.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let geoms: Vec<Pool2dGeom> = if bench {
        vec![Pool2dGeom::new(16, 256, 256, 2, 2, 0, false)]
    } else {
        (0..6).map(|_| Pool2dGeom::new(rng.range(1, 5), rng.range(2, 13), rng.range(2, 14), rng.range(2, 3), rng.range(1, 2) * 2 - 1 + rng.range(0, 1), 0, rng.range(0, 1) == 1)).collect()
    };
    let mut out = vec![];
    for geom in geoms {
        let Ok((oh, ow)) = geom.out_hw() else { continue };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", geom.c, geom.in_h, geom.in_w);
        let ty = g.tensor("y", geom.c, oh, ow);
        let ti = g.tensor_of("idx", DType::U32, geom.c, oh, ow);
        if g.push("pool", MaxPool2dIdx { x: g.all(tx), y: g.all(ty), idx: g.all(ti), geom }).is_err() {
            continue;
        }
        let mut p = super::problem(format!("max_pool2d_idx {}x{}x{} k{} s{} ceil={}", geom.c, geom.in_h, geom.in_w, geom.k_h, geom.stride_h, geom.ceil_mode), g, &mut rng, 0.0, 0.0);
        for v in p.data.get_mut(&tx).expect("input").iter_mut() {
            *v = (*v * 3.0).round();
        }
        out.push(p);
    }
    out
}
