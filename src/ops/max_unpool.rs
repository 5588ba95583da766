//! Max unpooling: `y = 0; y[c].flat[idx[c, i]] = x[c, i]` with the indices of a
//! [`super::MaxPool2dIdx`] whose kernel equals its stride (SegNet's and ENet's MaxUnpool2d(2, 2)),
//! the output size given by `y` (the pre-pool size). The kernel gathers (each output checks the
//! one window it lies in), which equals the scatter for such indices. Kernel: `shaders/pool.wgsl`
//! (`max_unpool2d`).

use super::{boxed_op, check_view, distinct, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::{pool, Shader, Slot};
use crate::shape::Pool2dGeom;

#[derive(Clone, Debug)]
pub struct MaxUnpool2d {
    pub x: View,
    /// `u32` indices of `x`'s shape.
    pub idx: View,
    pub y: View,
    /// The pooling's kernel = stride.
    pub stride: (usize, usize),
}

impl Operator for MaxUnpool2d {
    fn kind(&self) -> &'static str {
        "max_unpool2d"
    }
    fn inputs(&self) -> Vec<View> {
        vec![self.x, self.idx]
    }
    fn outputs(&self) -> Vec<View> {
        vec![self.y]
    }
    fn views_mut(&mut self) -> Vec<&mut View> {
        vec![&mut self.x, &mut self.idx, &mut self.y]
    }
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        for v in [self.x, self.idx, self.y] {
            check_view(g, name, v)?;
        }
        distinct(g, name, self.x, self.y)?;
        distinct(g, name, self.idx, self.y)?;
        let ((h, w), (oh, ow), (sh, sw)) = (g.hw(self.x), g.hw(self.y), self.stride);
        if g.desc(self.idx).dtype != DType::U32 || self.idx.c != self.x.c || g.hw(self.idx) != (h, w) || self.y.c != self.x.c {
            return Err(Error::op(name, "unpooling takes values and u32 indices of one shape, and keeps the channels"));
        }
        if sh == 0 || sw == 0 || oh < h * sh || oh >= (h + 1) * sh || ow < w * sw || ow >= (w + 1) * sw {
            return Err(Error::op(name, format!("output {oh}x{ow} is not the pre-pool size of a {h}x{w} map pooled with stride {sh}x{sw}")));
        }
        Ok(())
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" s{}x{}", self.stride.0, self.stride.1)
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((h, w), (oh, ow)) = (g.hw(self.x), g.hw(self.y));
        let idx: Vec<u32> = read(self.idx).into_iter().map(f32::to_bits).collect();
        vec![reference(&read(self.x), &idx, self.x.c, h * w, oh * ow)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.idx, self.y], self.y.c, cuts)
            .map(|segs| segs.into_iter().map(|(a, b)| Box::new(MaxUnpool2d { x: sub(self.x, a, b), idx: sub(self.idx, a, b), y: sub(self.y, a, b), stride: self.stride }) as Box<dyn Operator>).collect()))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (is, io), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.idx)?, cx.resolve(self.y)?);
        let (mut pp, groups) = pool::per_element(self.y.c, cx.graph.hw(self.x), cx.graph.hw(self.y), xo, yo);
        (pp.stride_h, pp.stride_w, pp.aux_off) = (self.stride.0 as u32, self.stride.1 as u32, io);
        let u = cx.uniform(&pp);
        let dispatch = cx.dispatch(Shader::Pool, "max_unpool2d", &[xs, ys, Slot::whole(&u), is], groups, name, 0, cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Scatter over `c` planes: `hw` inputs each, `ohw` outputs each.
pub fn reference(x: &[f32], idx: &[u32], c: usize, hw: usize, ohw: usize) -> Vec<f32> {
    let mut y = vec![0f32; c * ohw];
    for ch in 0..c {
        for i in 0..hw {
            let j = idx[ch * hw + i] as usize;
            if j < ohw {
                y[ch * ohw + j] = x[ch * hw + i];
            }
        }
    }
    y
}

/// Test problems: the indices of a real 2x2 (or 3x3) max pool, odd pre-pool sizes included.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, usize)> = if bench { vec![(16, 256, 256, 2)] } else { (0..6).map(|_| (rng.range(1, 5), rng.range(2, 13), rng.range(2, 14), rng.range(2, 3))).collect() };
    let mut out = vec![];
    for (c, hh, ww, k) in shapes {
        let geom = Pool2dGeom::new(c, hh, ww, k, k, 0, false);
        let Ok((h, w)) = geom.out_hw() else { continue };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let ti = g.tensor_of("idx", DType::U32, c, h, w);
        let ty = g.tensor("y", c, hh, ww);
        if g.push("unpool", MaxUnpool2d { x: g.all(tx), idx: g.all(ti), y: g.all(ty), stride: (k, k) }).is_err() {
            continue;
        }
        let mut p = super::problem(format!("max_unpool2d {c}x{h}x{w} -> {hh}x{ww} s{k}"), g, &mut rng, 0.0, 0.0);
        let pre = rng.vec(c * hh * ww);
        let (_, idx) = super::max_pool_idx::reference(&pre, &geom);
        p.data.insert(ti, idx.into_iter().map(f32::from_bits).collect());
        out.push(p);
    }
    out
}
