//! `DepthToSpace` (ONNX; PyTorch's `pixel_shuffle` is the CRD mode): blocks of `b x b` channels
//! become `b x b` pixels, `y[c, h*b + i, w*b + j] = x[src, h, w]` with `src = (i*b + j)*C + c`
//! (DCR) or `c*b*b + i*b + j` (CRD). Kernel: `shaders/eltwise.wgsl` (`depth_to_space`).

use super::{boxed_op, check_view, distinct, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{Graph, View};
use crate::kernels::{eltwise, grid_1d, Shader, Slot};

#[derive(Clone, Debug)]
pub struct DepthToSpace {
    pub x: View,
    pub y: View,
    pub block: usize,
    /// Column-row-depth order (else depth-column-row, ONNX's default).
    pub crd: bool,
}

impl DepthToSpace {
    /// The input channel output channel `c` reads at block offset (`i`, `j`).
    fn source(&self, c: usize, i: usize, j: usize) -> usize {
        let b = self.block;
        if self.crd {
            c * b * b + i * b + j
        } else {
            (i * b + j) * self.y.c + c
        }
    }
}

impl Operator for DepthToSpace {
    fn kind(&self) -> &'static str {
        "depth_to_space"
    }
    super::unary_views!();
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        check_view(g, name, self.x)?;
        check_view(g, name, self.y)?;
        distinct(g, name, self.x, self.y)?;
        let ((h, w), (oh, ow), b) = (g.hw(self.x), g.hw(self.y), self.block);
        if b == 0 || self.x.c != self.y.c * b * b || (oh, ow) != (h * b, w * b) {
            return Err(Error::op(name, format!("{}x{h}x{w} to {}x{oh}x{ow} with block {b}", self.x.c, self.y.c)));
        }
        Ok(())
    }
    fn flops(&self, _g: &Graph) -> u64 {
        0
    }
    fn describe_params(&self, _g: &Graph) -> String {
        format!(" block {} {}", self.block, if self.crd { "CRD" } else { "DCR" })
    }
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let ((h, w), b) = (g.hw(self.x), self.block);
        let x = read(self.x);
        let (oh, ow) = (h * b, w * b);
        let mut y = Vec::with_capacity(self.y.c * oh * ow);
        for c in 0..self.y.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let s = self.source(c, oy % b, ox % b);
                    y.push(x[(s * h + oy / b) * w + ox / b]);
                }
            }
        }
        vec![y]
    }
    fn split(&self, cuts: Cuts<'_>, name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        if view_cuts(self.x, cuts).is_empty() && view_cuts(self.y, cuts).is_empty() {
            return Ok(None);
        }
        Err(Error::op(name, "depth_to_space reads channels from every part of its input: its tensors must each fit one binding"))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, yo)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let ohw = h * w * self.block * self.block;
        let (groups, row) = grid_1d(self.y.c * ohw, eltwise::WG);
        let p = eltwise::AffineParams { c: self.y.c as u32, hw: ohw as u32, x_off: xo, y_off: yo, row, ..Default::default() };
        let prm = cx.storage(name, &[self.block as f32, self.crd as u8 as f32, h as f32, w as f32])?;
        let u = cx.uniform(&p);
        let slots = [xs, Slot::whole(&prm), ys, cx.dummy(), Slot::whole(&u)];
        let dispatch = cx.dispatch(Shader::Eltwise, "depth_to_space", &slots, groups, name, 0, cx.act_bytes(self));
        Ok(Encoded { dispatch, buffers: vec![prm, u] })
    }
    boxed_op!();
}

/// Test problems: blocks of 1-3, both orders, odd sizes, an output view inside a larger tensor.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, usize)> = if bench { vec![(16, 2, 128, 128)] } else { (0..8).map(|_| (rng.range(1, 5), rng.range(1, 3), rng.range(1, 9), rng.range(1, 9))).collect() };
    let mut out = vec![];
    for (i, (c, b, h, w)) in shapes.into_iter().enumerate() {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c * b * b, h, w);
        let ty = g.tensor("y", c + 1, h * b, w * b);
        let crd = i % 2 == 1;
        if g.push("depth_to_space", DepthToSpace { x: g.all(tx), y: g.slice(ty, 1, c), block: b, crd }).is_err() {
            continue;
        }
        out.push(super::problem(format!("depth_to_space {}x{h}x{w} block {b} crd={crd}", c * b * b), g, &mut rng, 0.0, 0.0));
    }
    out
}
