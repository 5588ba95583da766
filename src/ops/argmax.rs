//! Argmax over channels into the class map: one class per pixel (the first maximum wins, as in
//! PyTorch; NaN counts as the maximum), stored as u8 packed 4 pixels per u32 word. A graph head:
//! [`crate::session`] appends it after the logits. A declared sigmoid head gives a binary map:
//! class 1 where the logit is positive (`p > 0.5`). When the logits are split across bindings the
//! operator runs as passes over the chunks, keeping the best value so far in `best` (its second
//! output, an f32 plane). Kernel: `shaders/argmax.wgsl`.

use super::{boxed_op, check_view, view_cuts, Cuts, EncodeCx, Encoded, Operator, Problem, Rng};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, View};
use crate::kernels::{argmax, Shader, Slot};

#[derive(Clone, Debug)]
pub struct Argmax {
    /// The logits (or one chunk of their channels).
    pub x: View,
    /// The class map: a 1-channel `u8` tensor of the logits' size.
    pub y: View,
    /// Best value per pixel between chunk passes: a 1-channel `f32` tensor.
    pub best: View,
    /// Class index of `x`'s first channel (chunk passes).
    pub c_base: usize,
    /// This pass starts afresh (the first chunk, or the whole).
    pub first: bool,
    /// Run as a chunk pass (reads and writes `best`).
    pub chunked: bool,
    /// A sigmoid head's single logit (see [`crate::graph::Graph::sigmoid_head`]): class 1 where
    /// it is positive (`p > 0.5`). Otherwise one channel means class 0 everywhere, as argmax says.
    pub binary: bool,
}

impl Argmax {
    /// A sigmoid head's logit: the class is `x > 0`, i.e. `p > 0.5`.
    pub fn binary(&self) -> bool {
        self.binary && self.x.c == 1 && !self.chunked && self.c_base == 0
    }
}

impl Operator for Argmax {
    fn kind(&self) -> &'static str {
        "argmax"
    }
    fn inputs(&self) -> Vec<View> {
        if self.chunked && !self.first {
            vec![self.x, self.best]
        } else {
            vec![self.x]
        }
    }
    fn outputs(&self) -> Vec<View> {
        vec![self.y, self.best]
    }
    fn views_mut(&mut self) -> Vec<&mut View> {
        vec![&mut self.x, &mut self.y, &mut self.best]
    }
    fn check(&self, g: &Graph, name: &str) -> Result<()> {
        for v in [self.x, self.y, self.best] {
            check_view(g, name, v)?;
        }
        let (y, b) = (g.desc(self.y), g.desc(self.best));
        if y.dtype != DType::U8 || y.c != 1 || b.dtype != DType::F32 || b.c != 1 || g.hw(self.x) != g.hw(self.y) || g.hw(self.x) != g.hw(self.best) {
            return Err(Error::op(name, "argmax writes a 1-channel u8 class map and a 1-channel f32 best plane of the logits' size"));
        }
        if self.c_base + self.x.c > 256 {
            return Err(Error::op(name, format!("{} classes do not fit the 8-bit class map", self.c_base + self.x.c)));
        }
        Ok(())
    }
    fn flops(&self, g: &Graph) -> u64 {
        let (h, w) = g.hw(self.x);
        (self.x.c * h * w) as u64
    }
    fn describe_params(&self, _g: &Graph) -> String {
        if self.chunked {
            format!(" classes {}..{}", self.c_base, self.c_base + self.x.c)
        } else {
            String::new()
        }
    }
    /// The class of each pixel (as a float) and its value; a chunk pass compares with `best`.
    fn reference(&self, g: &Graph, read: &dyn Fn(View) -> Vec<f32>) -> Vec<Vec<f32>> {
        let (h, w) = g.hw(self.x);
        let hw = h * w;
        let x = read(self.x);
        let (mut cls, mut best) = if self.first || !self.chunked { (vec![0f32; hw], vec![f32::NAN; hw]) } else { (read(self.y), read(self.best)) };
        if self.binary() {
            return vec![x.iter().map(|&v| (v > 0.0) as u8 as f32).collect(), x];
        }
        for p in 0..hw {
            let mut k0 = 0;
            if self.first || !self.chunked {
                cls[p] = self.c_base as f32;
                best[p] = x[p];
                k0 = 1;
            }
            for k in k0..self.x.c {
                let v = x[k * hw + p];
                if !best[p].is_nan() && (v > best[p] || v.is_nan()) {
                    cls[p] = (self.c_base + k) as f32;
                    best[p] = v;
                }
            }
        }
        vec![cls, best]
    }
    fn split(&self, cuts: Cuts<'_>, _name: &str) -> Result<Option<Vec<Box<dyn Operator>>>> {
        let c = view_cuts(self.x, cuts);
        if c.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            super::segments(self.x.c, c)
                .into_iter()
                .enumerate()
                .map(|(k, (a, b))| Box::new(Argmax { x: super::sub(self.x, a, b), c_base: self.c_base + a, first: k == 0, chunked: true, ..self.clone() }) as Box<dyn Operator>)
                .collect(),
        ))
    }
    fn encode(&self, cx: &EncodeCx<'_, '_>, name: &str) -> Result<Encoded> {
        let ((xs, xo), (ys, _)) = (cx.resolve(self.x)?, cx.resolve(self.y)?);
        let (h, w) = cx.graph.hw(self.x);
        let (mut p, groups) = argmax::prepare(self.x.c, h * w, xo, self.c_base, self.first || !self.chunked);
        p.binary = self.binary() as u32;
        let u = cx.uniform(&p);
        let (entry, best) = if self.chunked { ("argmax_chunk", cx.resolve(self.best)?.0) } else { ("argmax", cx.dummy()) };
        let bytes = cx.graph.view_bytes(self.x) + argmax::map_bytes(h * w);
        let dispatch = cx.dispatch(Shader::Argmax, entry, &[xs, ys, Slot::whole(&u), best], groups, name, self.flops(cx.graph), bytes);
        Ok(Encoded { dispatch, buffers: vec![u] })
    }
    boxed_op!();
}

/// Adds the class-map head after `logits`: tensors `classes` (u8) and `argmax.best` (f32);
/// `binary` for a sigmoid head's single logit.
pub fn attach(g: &mut Graph, logits: View, binary: bool) -> Result<(usize, usize)> {
    let (h, w) = g.hw(logits);
    let classes = g.tensor_of("classes", DType::U8, 1, h, w);
    let best = g.tensor_of("argmax.best", DType::F32, 1, h, w);
    g.push("argmax", Argmax { x: logits, y: g.all(classes), best: g.all(best), c_base: 0, first: true, chunked: false, binary })?;
    Ok((classes, best))
}

/// Test problems: random logits with ties, run whole; the op tests cover chunk passes, NaN and
/// infinities through whole sessions.
pub fn problems(seed: u64, bench: bool) -> Vec<Problem> {
    let mut rng = Rng(seed | 1);
    let shapes: Vec<(usize, usize, usize, bool)> =
        if bench { vec![(12, 360, 480, false)] } else { (0..4).map(|_| (rng.range(1, 21), rng.range(1, 9), rng.range(1, 11), false)).chain([(1, 5, 7, true), (1, 3, 3, false)]).collect() };
    let mut out = vec![];
    for (c, h, w, binary) in shapes {
        let mut g = Graph::new(1, 1, 1);
        let tx = g.tensor("x", c, h, w);
        let logits = g.all(tx);
        if attach(&mut g, logits, binary).is_err() {
            continue;
        }
        let mut p = super::problem(format!("argmax {c}x{h}x{w} binary={binary}"), g, &mut rng, 0.0, 0.0);
        // ties: quantise the logits
        for v in p.data.get_mut(&tx).expect("input").iter_mut() {
            *v = (*v * 4.0).round();
        }
        out.push(p);
    }
    out
}
