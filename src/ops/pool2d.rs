//! Average or max pooling (`ceil_mode`, padding, `count_include_pad`). Kernel:
//! `shaders/pool.wgsl` (`pool2d`), parameter block in [`crate::kernels::pool`].

use super::{boxed_op, check_view, distinct, per_channel_segments, sub, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{pool, Shader, Slot};
use crate::shape::{Pool2dGeom, PoolKind};

#[derive(Clone, Debug)]
pub struct Pool2d {
    pub x: View,
    pub y: View,
    pub geom: Pool2dGeom,
    pub kind: PoolKind,
}

impl Operator for Pool2d {
    fn kind(&self) -> &'static str {
        "pool2d"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, op: &str) -> Result<()> {
        let (x, y, geom) = (self.x, self.y, &self.geom);
        check_view(g, op, x)?;
        check_view(g, op, y)?;
        distinct(g, op, x, y)?;
        let (h, w) = g.hw(x);
        if geom.c != x.c || geom.in_h != h || geom.in_w != w {
            return Err(Error::op(op, "geometry does not match the input view"));
        }
        let (oh, ow) = geom.out_hw().map_err(|e| Error::op(op, e.to_string()))?;
        if y.c != x.c || g.hw(y) != (oh, ow) {
            return Err(Error::op(op, format!("output view {}x{:?} but geometry gives {}x{:?}", y.c, g.hw(y), x.c, (oh, ow))));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.y);
        (self.y.c * h * w * self.geom.k_h * self.geom.k_w) as u64
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" {:?} k{} s{}", self.kind, self.geom.k_h, self.geom.stride_h)
    }
    fn reference(&self, _g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        vec![reference(&read(self.x), &self.geom, self.kind)]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        Ok(per_channel_segments(&[self.x, self.y], self.y.c, cuts).map(|segs| {
            segs.into_iter()
                .map(|(a, b)| {
                    let mut geom = self.geom;
                    geom.c = b - a;
                    Box::new(Pool2d { x: sub(self.x, a, b), y: sub(self.y, a, b), geom, kind: self.kind }) as Box<dyn Operator>
                })
                .collect()
        }))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (pp, groups) = pool::prepare(self, xo, yo, true).map_err(|e| Error::op(name, e.to_string()))?;
        let u = cx.uniform(&pp);
        let dispatch = cx.dispatch(Shader::Pool, "pool2d", &[xs, ys, Slot::whole(&u), cx.dummy()], groups, name, self.flops(cx.graph), cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

pub fn reference(x: &[f32], g: &Pool2dGeom, kind: PoolKind) -> Vec<f32> {
    let (oh, ow) = g.out_hw().expect("valid geometry");
    let mut y = vec![0f32; g.c * oh * ow];
    for c in 0..g.c {
        for oy in 0..oh {
            let (y0, ny, sy) = Pool2dGeom::taps(oy, g.k_h, g.stride_h, g.dil_h, g.pad_h, g.pad_b, g.in_h);
            let rows: Vec<usize> = (0..ny).map(|t| y0 + t * g.dil_h).collect();
            for ox in 0..ow {
                let (x0, nx, sx) = Pool2dGeom::taps(ox, g.k_w, g.stride_w, g.dil_w, g.pad_w, g.pad_r, g.in_w);
                let cols: Vec<usize> = (0..nx).map(|t| x0 + t * g.dil_w).collect();
                let v = match kind {
                    PoolKind::Avg { count_include_pad } => {
                        let mut s = 0f64;
                        for &iy in &rows {
                            for &ix in &cols {
                                s += x[(c * g.in_h + iy) * g.in_w + ix] as f64;
                            }
                        }
                        let div = if count_include_pad { sy * sx } else { ny * nx };
                        (s / div.max(1) as f64) as f32
                    }
                    PoolKind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for &iy in &rows {
                            for &ix in &cols {
                                let v = x[(c * g.in_h + iy) * g.in_w + ix];
                                if v > m || v.is_nan() {
                                    m = v;
                                }
                            }
                        }
                        m
                    }
                };
                y[(c * oh + oy) * ow + ox] = v;
            }
        }
    }
    y
}

/// Test problems: random windows, strides, padding and `ceil_mode`, both kinds; or ESPNet's
/// input pyramid for the benchmarks.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let geoms: Vec<(Pool2dGeom, PoolKind)> = if bench {
        vec![(Pool2dGeom::new(3, 360, 480, 3, 2, 1, false), PoolKind::Avg { count_include_pad: true })]
    } else {
        // the last three have rows of half a workgroup or more (the grid of rows)
        (0..19)
            .map(|i| {
                let k = rng.range(1, 4);
                let kind = match i % 3 {
                    0 => PoolKind::Max,
                    1 => PoolKind::Avg { count_include_pad: true },
                    _ => PoolKind::Avg { count_include_pad: false },
                };
                let w = if i >= 16 { rng.range(70, 140) } else { rng.range(k, 14) };
                let mut g = Pool2dGeom::new(rng.range(1, 6), rng.range(k, 13), w, k, rng.range(1, 3), rng.range(0, k / 2), rng.range(0, 1) == 1);
                if (10..16).contains(&i) {
                    // ONNX's pools: padding up to the window on either side, dilation
                    (g.dil_h, g.dil_w) = (rng.range(1, 3), rng.range(1, 2));
                    let (eh, ew) = ((k - 1) * g.dil_h + 1, (k - 1) * g.dil_w + 1);
                    (g.pad_h, g.pad_b, g.pad_w, g.pad_r) = (rng.range(0, eh - 1), rng.range(0, eh - 1), rng.range(0, ew - 1), rng.range(0, ew - 1));
                }
                (g, kind)
            })
            .collect()
    };
    let mut out = vec![];
    for (geom, kind) in geoms {
        let Ok((oh, ow)) = geom.out_hw() else { continue };
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", geom.c, geom.in_h, geom.in_w);
        let ty = g.tensor("y", geom.c + 1, oh, ow);
        let y = g.slice(ty, 0, geom.c);
        if g.pool2d("pool", g.all(tx), y, geom, kind).is_err() {
            continue;
        }
        let name = format!(
            "pool2d {kind:?} {}x{}x{} k{} s{} p{},{},{},{} d{},{} ceil={}",
            geom.c, geom.in_h, geom.in_w, geom.k_h, geom.stride_h, geom.pad_h, geom.pad_w, geom.pad_b, geom.pad_r, geom.dil_h, geom.dil_w, geom.ceil_mode
        );
        let k = (geom.k_h * geom.k_w) as f32;
        out.push(super::problem(name, g, &mut rng, 1e-6 + 2.0 * k * k * f32::EPSILON, 0.0));
    }
    out
}
