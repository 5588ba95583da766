//! Rewrite passes over a [`Graph`]: builders and importers emit plain operators (convolution,
//! batch norm and activations as [`Affine`] maps, element-wise add, [`Concat`]); these passes
//! fuse them once, for every graph, whoever built it.
//!
//! - [`concat_in_place`]: the producers of a concatenation's inputs write their channel range of
//!   the output directly, and every reader reads it there; the concatenation disappears.
//! - [`fold_affine`]: a per-channel affine map (inference batch norm, a shift, an activation)
//!   after a (transposed) convolution is folded into its weights, bias and activation.
//! - [`fuse_add`]: `act(conv(x) + a)` becomes one convolution with an addend.
//!
//! Each rewrite is checked: the rewritten operators must pass their own checks and the graph must
//! still validate, or the rewrite is undone. Passes never change what the graph computes beyond
//! float rounding of the folded weights (tested against the CPU reference).

use crate::error::{Error, Result};
use crate::graph::{Act, Graph, TensorId, View};
use crate::ops::{Affine, Concat, Conv2d, ConvT2d, Op};

/// What [`optimize`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub concats_in_place: usize,
    /// Concatenation inputs that had to be copied.
    pub concat_copies: usize,
    pub affines_folded: usize,
    pub adds_fused: usize,
}

/// Runs every pass, in order: concatenations in place, then affine folding and addend fusion
/// until nothing changes, then any remaining concatenation lowered to copies.
pub fn optimize(g: &mut Graph) -> Result<Stats> {
    let mut s = Stats::default();
    let (a, b) = concat_in_place(g);
    s.concats_in_place += a;
    s.concat_copies += b;
    loop {
        let f = fold_affine(g) + fold_affine_chain(g);
        let a = fuse_add(g);
        s.affines_folded += f;
        s.adds_fused += a;
        if f + a == 0 {
            break;
        }
    }
    g.validate()?;
    Ok(s)
}

/// Whether `v` covers all of its tensor.
fn whole(g: &Graph, v: View) -> bool {
    v.c0 == 0 && v.c == g.tensors[v.tensor].c
}

fn overlaps(a: View, b: View) -> bool {
    a.tensor == b.tensor && a.c0 < b.c0 + b.c && b.c0 < a.c0 + a.c
}

/// Whether any node strictly between `i` and `j` reads or writes channels overlapping `v`.
fn touched_between(g: &Graph, i: usize, j: usize, v: View) -> bool {
    g.nodes[i + 1..j].iter().any(|n| n.op.reads().into_iter().chain(n.op.outputs()).any(|u| overlaps(u, v)))
}

/// Whether every channel of `v` is written only by nodes before `i` (or is a graph input).
fn ready_before(g: &Graph, i: usize, v: View) -> bool {
    if g.inputs.contains(&v.tensor) {
        return true;
    }
    g.nodes.iter().enumerate().all(|(k, n)| k < i || !n.op.outputs().into_iter().any(|u| overlaps(u, v)))
}

/// Edits node `i` in place and keeps the edit if the node still checks against the graph;
/// otherwise restores it. Only the edited node is copied, so a rewrite costs one node.
fn try_edit(g: &mut Graph, i: usize, edit: impl FnOnce(&mut crate::graph::Node) -> bool) -> bool {
    let saved = g.nodes[i].clone();
    if edit(&mut g.nodes[i]) && g.nodes[i].op.check(g, &g.nodes[i].name).is_ok() {
        return true;
    }
    g.nodes[i] = saved;
    false
}

/// The single producer of tensor `t` if exactly one node writes it, it writes all of it, and
/// exactly one node (`reader`) reads it; `t` must not be a graph input or output.
fn sole_producer(g: &Graph, t: TensorId, reader: usize) -> Option<usize> {
    if g.is_io(t) {
        return None;
    }
    let w = g.writers(t);
    let r = g.readers(t);
    (w.len() == 1 && r == [reader] && w[0] < reader && g.nodes[w[0]].op.outputs().len() == 1 && whole(g, g.nodes[w[0]].op.writes())).then(|| w[0])
}

/// Moves every view of each input tensor of a concatenation onto its channel range of the
/// output, removing the concatenation; inputs that cannot move (graph inputs or outputs, partial
/// views, tensors written after the concatenation) are copied instead. Returns the number of
/// concatenations removed and of inputs copied.
pub fn concat_in_place(g: &mut Graph) -> (usize, usize) {
    let (mut removed, mut copies) = (0, 0);
    let mut k = 0;
    while k < g.nodes.len() {
        let Some(cat) = g.nodes[k].op.get::<Concat>().cloned() else {
            k += 1;
            continue;
        };
        let name = g.nodes[k].name.clone();
        // nothing else may touch the output's channels before the concatenation
        let y_free = g.nodes[..k].iter().all(|n| !n.op.reads().into_iter().chain(n.op.outputs()).any(|u| overlaps(u, cat.y)));
        let mut c0 = cat.y.c0;
        let mut moves: Vec<(TensorId, View)> = vec![];
        let mut kept: Vec<Affine> = vec![];
        for (x, copy) in cat.xs.iter().zip(cat.copies()) {
            let t = x.tensor;
            let target = View { tensor: cat.y.tensor, c0, c: x.c };
            c0 += x.c;
            let movable = y_free && whole(g, *x) && !g.is_io(t) && !moves.iter().any(|m| m.0 == t) && t != cat.y.tensor && g.writers(t).iter().all(|&w| w < k);
            if movable {
                moves.push((t, target));
            } else {
                kept.push(copy);
            }
        }
        let moved = !moves.is_empty() && {
            let before: Vec<Vec<View>> = g.nodes.iter_mut().map(|n| n.op.views_mut().into_iter().map(|v| *v).collect()).collect();
            for n in g.nodes.iter_mut() {
                for v in n.op.views_mut() {
                    if let Some((_, target)) = moves.iter().find(|m| m.0 == v.tensor) {
                        *v = View { tensor: target.tensor, c0: target.c0 + v.c0, c: v.c };
                    }
                }
            }
            // an affine sum whose input moved into its own output tensor takes the other operand
            // as input instead (scale * (x + a) + shift is symmetric in x and a)
            for n in g.nodes.iter_mut() {
                if let Some(a) = n.op.get_mut::<Affine>() {
                    if let Some(add) = a.add {
                        if a.x.tensor == a.y.tensor && add.tensor != a.y.tensor {
                            (a.x, a.add) = (add, Some(a.x));
                        }
                    }
                }
            }
            let ok = g.nodes.iter().enumerate().all(|(i, n)| i == k || n.op.check(g, &n.name).is_ok());
            if !ok {
                for (n, vs) in g.nodes.iter_mut().zip(before) {
                    for (v, old) in n.op.views_mut().into_iter().zip(vs) {
                        *v = old;
                    }
                }
            } else {
                g.nodes.remove(k);
                for (i, a) in kept.iter().enumerate() {
                    g.nodes.insert(k + i, crate::graph::Node { name: format!("{name}.copy{i}"), op: Op::new(a.clone()) });
                }
            }
            ok
        };
        if moved {
            removed += 1;
            copies += kept.len();
            k += kept.len();
        } else {
            // lower to copies
            let all = cat.copies();
            copies += all.len();
            g.nodes.remove(k);
            for (i, a) in all.iter().enumerate() {
                g.nodes.insert(k + i, crate::graph::Node { name: format!("{name}.copy{i}"), op: Op::new(a.clone()) });
            }
            k += all.len();
        }
    }
    (removed, copies)
}

/// Folds `y = act(scale * t + shift)` into the convolution that alone produces `t`, when `t` has
/// no other reader: weights and bias scaled per output channel, the shift added to the bias, the
/// activation taken over, the convolution writing `y`. Returns the number folded.
pub fn fold_affine(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut j = 0;
    while j < g.nodes.len() {
        let Some(a) = g.nodes[j].op.get::<Affine>().cloned() else {
            j += 1;
            continue;
        };
        let ok = a.add.is_none()
            && sole_producer(g, a.x.tensor, j).is_some_and(|i| {
                let op = &g.nodes[i].op;
                let conv_ok = epilogue(op).is_some_and(|(add, act, y)| *act == Act::None && y == a.x && (add.is_none() || a.scale.iter().all(|&s| s == 1.0)));
                conv_ok && !touched_between(g, i, j, a.y)
            });
        if ok {
            let i = sole_producer(g, a.x.tensor, j).expect("checked");
            let name = g.nodes[j].name.clone();
            let done = try_edit(g, i, |node| {
                // the weights' layouts differ; bias, activation and output are the same fields
                let bias = if let Some(c) = node.op.get_mut::<Conv2d>() {
                    let per = c.weight.len() / c.geom.out_c;
                    scale_weights(&mut c.weight, &a.scale, |idx| idx / per);
                    &mut c.bias
                } else if let Some(c) = node.op.get_mut::<ConvT2d>() {
                    // [in, out/groups, kh, kw]: output channel of element idx
                    let (khw, ocpg, icpg) = (c.geom.k_h * c.geom.k_w, c.geom.ocpg(), c.geom.icpg());
                    scale_weights(&mut c.weight, &a.scale, |idx| {
                        let ic = idx / (ocpg * khw);
                        (ic / icpg) * ocpg + (idx / khw) % ocpg
                    });
                    &mut c.bias
                } else {
                    return false;
                };
                *bias = Some(fold_bias(bias.as_deref(), &a.scale, &a.shift));
                let Some((_, act, y)) = epilogue_mut(&mut node.op) else { return false };
                (*act, *y) = (a.act.clone(), a.y);
                node.name = format!("{}+{}", node.name, short(&name));
                true
            });
            if done {
                g.nodes.remove(j);
                n += 1;
                continue;
            }
        }
        j += 1;
    }
    n
}

/// Merges `y = act(s2 * t + b2)` into the activation-free affine map that alone produces `t`
/// (`t = s1 * (x + a) + b1`), when `t` has no other reader: one map with scale `s1 * s2`, shift
/// `s2 * b1 + b2` (in float64, rounded once), the second's activation and output. Imported
/// graphs emit batch norm and its activation as two nodes where no convolution precedes them
/// (after a concatenation). Returns the number merged.
pub fn fold_affine_chain(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut j = 0;
    while j < g.nodes.len() {
        let Some(b) = g.nodes[j].op.get::<Affine>().cloned() else {
            j += 1;
            continue;
        };
        let producer = if b.add.is_none() { sole_producer(g, b.x.tensor, j) } else { None };
        let ok = producer.is_some_and(|i| g.nodes[i].op.get::<Affine>().is_some_and(|a| a.act == Act::None && a.y == b.x) && !touched_between(g, i, j, b.y));
        if ok {
            let i = producer.expect("checked");
            let name = g.nodes[j].name.clone();
            let done = try_edit(g, i, |node| {
                let Some(a) = node.op.get_mut::<Affine>() else { return false };
                let shift: Vec<f32> = (0..a.scale.len()).map(|c| (b.scale[c] as f64 * a.shift[c] as f64 + b.shift[c] as f64) as f32).collect();
                let scale: Vec<f32> = (0..a.scale.len()).map(|c| (a.scale[c] as f64 * b.scale[c] as f64) as f32).collect();
                (a.scale, a.shift, a.act, a.y) = (scale, shift, b.act.clone(), b.y);
                node.name = format!("{}+{}", node.name, short(&name));
                true
            });
            if done {
                g.nodes.remove(j);
                n += 1;
                continue;
            }
        }
        j += 1;
    }
    n
}

/// The epilogue of a (transposed) convolution: addend, activation and output view.
fn epilogue(op: &Op) -> Option<(Option<View>, &Act, View)> {
    match op.get::<Conv2d>() {
        Some(c) => Some((c.add, &c.act, c.y)),
        None => op.get::<ConvT2d>().map(|c| (c.add, &c.act, c.y)),
    }
}

/// [`epilogue`], mutable.
fn epilogue_mut(op: &mut Op) -> Option<(&mut Option<View>, &mut Act, &mut View)> {
    if op.get::<Conv2d>().is_some() {
        return op.get_mut::<Conv2d>().map(|c| (&mut c.add, &mut c.act, &mut c.y));
    }
    op.get_mut::<ConvT2d>().map(|c| (&mut c.add, &mut c.act, &mut c.y))
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// `w * scale[oc]` in float64, rounded once (the same arithmetic as folding batch norm by hand).
fn scale_weights(w: &mut [f32], scale: &[f32], oc_of: impl Fn(usize) -> usize) {
    for (i, v) in w.iter_mut().enumerate() {
        *v = (*v as f64 * scale[oc_of(i)] as f64) as f32;
    }
}

fn fold_bias(bias: Option<&[f32]>, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    (0..scale.len()).map(|o| (bias.map_or(0.0, |b| b[o] as f64) * scale[o] as f64 + shift[o] as f64) as f32).collect()
}

/// Fuses `y = act(t + a)` (an identity affine map with an addend) into the convolution that alone
/// produces `t` (or `a`), when the other operand is ready by then: the convolution adds it and
/// applies the activation, writing `y`. Returns the number fused.
pub fn fuse_add(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut j = 0;
    while j < g.nodes.len() {
        let Some(a) = g.nodes[j].op.get::<Affine>().cloned() else {
            j += 1;
            continue;
        };
        let Some(addend) = a.add.filter(|_| a.is_identity_map()) else {
            j += 1;
            continue;
        };
        let mut fused = false;
        for (t, other) in [(a.x, addend), (addend, a.x)] {
            let Some(i) = sole_producer(g, t.tensor, j) else { continue };
            let op = &g.nodes[i].op;
            let fits = |act: &Act, y: View, add: Option<View>| *act == Act::None && y == t && add.is_none();
            let is_conv = epilogue(op).is_some_and(|(add, act, y)| fits(act, y, add));
            if !is_conv || !ready_before(g, i, other) || touched_between(g, i, j, a.y) || g.nodes[i + 1..j].iter().any(|m| m.op.outputs().iter().any(|u| overlaps(*u, other))) {
                continue;
            }
            let name = g.nodes[j].name.clone();
            fused = try_edit(g, i, |node| {
                let Some((add, act, y)) = epilogue_mut(&mut node.op) else { return false };
                (*add, *act, *y) = (Some(other), a.act.clone(), a.y);
                node.name = format!("{}+{}", node.name, short(&name));
                true
            });
            if fused {
                g.nodes.remove(j);
                break;
            }
        }
        if fused {
            n += 1;
        } else {
            j += 1;
        }
    }
    n
}

/// Half precision storage: every f32 tensor of the graph becomes f16 (feature maps, its input and
/// its logits), so every arena holds half the bytes. Parameters stay f32 in their buffers and the
/// kernels' arithmetic stays f32 (their f16 variant converts on load and store), so the result is
/// the f32 network with every stored activation rounded to f16.
/// The heads' f32 outputs stay f32: the argmax's running-best plane (exact across chunks) and
/// softmax probabilities (always f32 for the caller).
pub fn to_half(g: &Graph) -> Graph {
    let mut g = g.clone();
    let keep: Vec<usize> = g
        .nodes
        .iter()
        .flat_map(|n| match n.op.kind() {
            "argmax" => n.op.outputs().into_iter().skip(1).map(|v| v.tensor).collect(),
            "softmax" => n.op.outputs().into_iter().map(|v| v.tensor).collect(),
            // the CRF computes in f32 only
            "dense_crf" => n.op.inputs().into_iter().chain(n.op.outputs()).map(|v| v.tensor).collect(),
            _ => vec![],
        })
        .collect();
    for (i, t) in g.tensors.iter_mut().enumerate() {
        if t.dtype == crate::graph::DType::F32 && !keep.contains(&i) {
            t.dtype = crate::graph::DType::F16;
        }
    }
    g
}

/// The graph an f16 session runs: [`to_half_except`] keeping f32 the nodes whose names start with
/// one of the network's [`Graph::f32_nodes`](crate::graph::Graph) prefixes.
pub fn half_precision(g: &Graph) -> Result<Graph> {
    to_half_except(g, &|name| g.f32_nodes.iter().any(|p| name.starts_with(p.as_str())))
}

/// Mixed precision: like [`to_half`], but every tensor written by a node that `keep_f32` selects
/// (by name) stays f32, and a cast node is inserted wherever a node reads a tensor of the other
/// element type (each node computes in the element type of its outputs). For networks (before the
/// session's heads). Networks with precision-sensitive stages name them
/// ([`Graph::f32_nodes`](crate::graph::Graph)); with no such node this is [`to_half`].
pub fn to_half_except(g: &Graph, keep_f32: &dyn Fn(&str) -> bool) -> Result<Graph> {
    use crate::graph::{DType, Node, View};
    let mut g = g.clone();
    let is_float = |d: DType| matches!(d, DType::F32 | DType::F16);
    let mut stay = vec![false; g.tensors.len()];
    for n in g.nodes.iter().filter(|n| keep_f32(&n.name)) {
        for v in n.op.outputs() {
            stay[v.tensor] = true;
        }
    }
    if !stay.iter().any(|&s| s) {
        return Ok(to_half(&g));
    }
    for (t, d) in g.tensors.iter_mut().enumerate() {
        if d.dtype == DType::F32 && !stay[t] {
            d.dtype = DType::F16;
        }
    }
    let nodes = std::mem::take(&mut g.nodes);
    for mut node in nodes {
        let want = node.op.outputs().iter().map(|v| g.tensors[v.tensor].dtype).find(|&d| is_float(d));
        if let Some(want) = want {
            let inputs = node.op.inputs();
            let outs: Vec<usize> = node.op.outputs().iter().map(|v| v.tensor).collect();
            let mut casts = vec![];
            for (k, v) in inputs.iter().enumerate() {
                let d = g.tensors[v.tensor].dtype;
                // an input that is also an output (an addend accumulated in place) has its dtype
                if !is_float(d) || d == want || outs.contains(&v.tensor) {
                    continue;
                }
                let src = &g.tensors[v.tensor];
                let name = format!("{}.{}", src.name, if want == DType::F16 { "f16" } else { "f32" });
                let (c, h, w) = (src.c, src.h, src.w);
                let t = g.tensor_of(&name, want, c, h, w);
                let cast = crate::ops::cast::Cast { x: View { tensor: v.tensor, c0: v.c0, c: v.c }, y: View { tensor: t, c0: v.c0, c: v.c } };
                casts.push((k, v.tensor, t, cast));
            }
            // the cast inputs, found by value (a tensor that is also an output was skipped above,
            // so a view equal to an input view on its tensor is that input)
            for (k, from, to, _) in &casts {
                let mut hit = false;
                for v in node.op.0.views_mut() {
                    if *v == inputs[*k] && v.tensor == *from {
                        v.tensor = *to;
                        hit = true;
                    }
                }
                if !hit {
                    return Err(Error::op(&node.name, "an input view is missing from views_mut"));
                }
            }
            for (_, _, _, cast) in casts {
                let name = format!("{}.cast{}", node.name, g.nodes.len());
                crate::ops::Operator::check(&cast, &g, &name)?;
                g.nodes.push(Node { name, op: crate::ops::Op::new(cast) });
            }
        }
        node.op.check(&g, &node.name)?;
        g.nodes.push(node);
    }
    g.validate()?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Rng;
    use crate::reference::run_graph;
    use crate::shape::Conv2dGeom;

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// conv -> batch norm (affine) -> PReLU (affine) -> add of a residual, concatenated with a
    /// second branch: the plain graph a builder emits.
    fn plain(rng: &mut Rng) -> Graph {
        let (c, h, w) = (3, 7, 9);
        let mut g = Graph::new(c, h, w);
        let x = g.all(g.input);
        let geom = Conv2dGeom::new(c, h, w, 5, 3, 1, 1, 1, 1);
        let geom2 = Conv2dGeom::new(c, h, w, 4, 3, 1, 2, 2, 1);
        let t1 = g.tensor("b1.conv", 5, h, w);
        let t2 = g.tensor("b1.bn", 5, h, w);
        let t3 = g.tensor("b1.act", 5, h, w);
        let r = g.tensor("res", 5, h, w);
        let t4 = g.tensor("b1.add", 5, h, w);
        let u1 = g.tensor("b2.conv", 4, h, w);
        let cat = g.tensor("cat", 9, h, w);
        let out = g.tensor("out", 9, h, w);
        let (a1, b1) = (rng.vec(5), rng.vec(5));
        g.conv2d("b1.conv", x, g.all(t1), geom, rng.vec(5 * c * 9), None, Act::None, None).unwrap();
        g.affine("b1.bn", g.all(t1), None, g.all(t2), a1, b1, Act::None).unwrap();
        g.affine("b1.act", g.all(t2), None, g.all(t3), vec![1.0; 5], vec![0.0; 5], Act::PRelu(rng.vec(5))).unwrap();
        g.conv2d("res", x, g.all(r), geom, rng.vec(5 * c * 9), Some(rng.vec(5)), Act::None, None).unwrap();
        g.add("b1.add", g.all(t3), g.all(r), g.all(t4)).unwrap();
        g.conv2d("b2.conv", x, g.all(u1), geom2, rng.vec(4 * c * 9), Some(rng.vec(4)), Act::None, None).unwrap();
        g.concat("cat", vec![g.all(t4), g.all(u1)], g.all(cat)).unwrap();
        g.affine("head", g.all(cat), None, g.all(out), rng.vec(9), rng.vec(9), Act::Relu6).unwrap();
        g.set_logits(out);
        g.validate().unwrap();
        g
    }

    #[test]
    fn passes_keep_the_result_and_fuse() {
        let mut rng = Rng(7);
        let g = plain(&mut rng);
        let input = rng.vec(g.tensors[g.input].numel());
        let before = run_graph(&g, &input);
        let mut f = g.clone();
        let s = optimize(&mut f).unwrap();
        let after = run_graph(&f, &input);
        let l = g.logits.unwrap();
        assert!(max_diff(&before[l], &after[l]) < 1e-5, "max diff {}", max_diff(&before[l], &after[l]));
        // b1.conv+bn (folded), +act (folded), res, +add (fused into res or b1), b2.conv, head:
        // concat gone, 8 nodes -> 4
        assert_eq!(s, Stats { concats_in_place: 1, concat_copies: 0, affines_folded: 2, adds_fused: 1 });
        assert_eq!(f.nodes.len(), 4, "{:#?}", f.nodes.iter().map(|n| &n.name).collect::<Vec<_>>());
        assert!(f.nodes.iter().all(|n| n.op.kind() != "concat"));
    }

    /// Mixed precision: the nodes named `b1.*` keep f32 outputs, everything else is f16, and a
    /// cast sits exactly where a node reads the other element type; the CPU reference (which
    /// ignores storage) is unchanged, so only casts were added.
    #[test]
    fn mixed_precision_inserts_casts_at_the_boundaries() {
        use crate::graph::DType;
        let mut rng = Rng(11);
        let g = plain(&mut rng);
        let input = rng.vec(g.tensors[g.input].numel());
        let m = to_half_except(&g, &|name| name.starts_with("b1.")).unwrap();
        for n in &m.nodes {
            let out = n.op.outputs()[0];
            let want = m.tensors[out.tensor].dtype;
            if n.op.kind() != "cast" {
                assert_eq!(want, if n.name.starts_with("b1.") { DType::F32 } else { DType::F16 }, "{}", n.name);
                for v in n.op.inputs() {
                    assert_eq!(m.tensors[v.tensor].dtype, want, "{}: reads {} as {:?}", n.name, m.tensors[v.tensor].name, m.tensors[v.tensor].dtype);
                }
            }
        }
        // b1.conv reads the f16 input; b1.add reads res (f16); cat reads b1.add (f32)
        let casts = m.nodes.iter().filter(|n| n.op.kind() == "cast").count();
        assert_eq!(casts, 3, "{:#?}", m.nodes.iter().map(|n| &n.name).collect::<Vec<_>>());
        let l = g.logits.unwrap();
        assert_eq!(run_graph(&g, &input)[l], run_graph(&m, &input)[l]);
        // nothing selected: plain to_half, no casts
        let h = to_half_except(&g, &|_| false).unwrap();
        assert!(h.nodes.iter().all(|n| n.op.kind() != "cast"));
        assert!(h.tensors.iter().all(|t| t.dtype == DType::F16));
    }

    #[test]
    fn a_shared_tensor_is_not_folded() {
        // the conv output is read by two nodes: folding the affine would change the other reader
        let mut rng = Rng(3);
        let mut g = Graph::new(2, 5, 5);
        let x = g.all(g.input);
        let geom = Conv2dGeom::new(2, 5, 5, 2, 1, 1, 0, 1, 1);
        let t = g.tensor("t", 2, 5, 5);
        let y = g.tensor("y", 2, 5, 5);
        let z = g.tensor("z", 2, 5, 5);
        g.conv2d("c", x, g.all(t), geom, rng.vec(4), None, Act::None, None).unwrap();
        g.affine("bn", g.all(t), None, g.all(y), rng.vec(2), rng.vec(2), Act::None).unwrap();
        g.add("sum", g.all(t), g.all(y), g.all(z)).unwrap();
        g.set_logits(z);
        let input = rng.vec(50);
        let before = run_graph(&g, &input);
        let mut f = g.clone();
        let s = optimize(&mut f).unwrap();
        assert_eq!((s.affines_folded, s.adds_fused, f.nodes.len()), (0, 0, 3));
        assert_eq!(run_graph(&f, &input)[z], before[z]);
    }

    #[test]
    fn a_concat_of_the_graph_input_copies_it() {
        let mut rng = Rng(5);
        let mut g = Graph::new(2, 4, 6);
        let x = g.all(g.input);
        let t = g.tensor("t", 3, 4, 6);
        let cat = g.tensor("cat", 5, 4, 6);
        g.conv2d("c", x, g.all(t), Conv2dGeom::new(2, 4, 6, 3, 3, 1, 1, 1, 1), rng.vec(54), None, Act::Relu, None).unwrap();
        g.concat("cat", vec![x, g.all(t)], g.all(cat)).unwrap();
        g.set_logits(cat);
        let input = rng.vec(48);
        let before = run_graph(&g, &input);
        let mut f = g.clone();
        let s = optimize(&mut f).unwrap();
        assert_eq!((s.concats_in_place, s.concat_copies), (1, 1));
        assert_eq!(f.nodes.len(), 2);
        assert_eq!(run_graph(&f, &input)[cat], before[cat]);
    }
}
