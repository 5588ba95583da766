//! Splitting an operator at the channel-chunk boundaries of its tensors (see [`crate::plan`]): the
//! result is a list of operators, each of whose views lies inside one chunk, that together compute
//! exactly what the original computes.
//!
//! Per-channel operators split into channel segments. A convolution splits its output channels at
//! the output's cuts and, where a group's input channels straddle an input cut, accumulates over
//! input segments: the first piece adds the bias and the original addend, later pieces add the
//! output to itself, and only the last applies the activation.

use crate::error::{Error, Result};
use crate::graph::{Act, Affine, AdaptiveAvgPool, Conv2d, ConvT2d, Gather, Mul, Node, Op, Pool2d, Resize, View};

/// Cut points of `v` (inside its channel range, relative to its start) given the cuts of its tensor.
fn view_cuts(v: View, cuts: &dyn Fn(usize) -> Vec<usize>) -> Vec<usize> {
    cuts(v.tensor).into_iter().filter(|&k| k > v.c0 && k < v.c0 + v.c).map(|k| k - v.c0).collect()
}

fn segments(n: usize, mut cuts: Vec<usize>) -> Vec<(usize, usize)> {
    cuts.retain(|&k| k > 0 && k < n);
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = vec![];
    let mut a = 0;
    for k in cuts.into_iter().chain(std::iter::once(n)) {
        out.push((a, k));
        a = k;
    }
    out
}

fn sub(v: View, a: usize, b: usize) -> View {
    View { tensor: v.tensor, c0: v.c0 + a, c: b - a }
}

fn slice_act(act: &Act, a: usize, b: usize) -> Act {
    match act {
        Act::PRelu(s) => Act::PRelu(s[a..b].to_vec()),
        other => other.clone(),
    }
}

/// Splits `node` so that each resulting view lies in one chunk. `cuts(t)` lists the channel
/// indices where tensor `t` is cut. A node that needs no split comes back as it is.
pub fn split_node(node: &Node, cuts: &dyn Fn(usize) -> Vec<usize>) -> Result<Vec<Node>> {
    let named = |i: usize, op: Op| Node { name: format!("{}#{}", node.name, i), op };
    let per_channel = |views: &[View], n: usize| -> Vec<(usize, usize)> { segments(n, views.iter().flat_map(|v| view_cuts(*v, cuts)).collect()) };
    let out: Vec<Op> = match &node.op {
        Op::Affine(o) => {
            let views: Vec<View> = [Some(o.x), o.add, Some(o.y)].into_iter().flatten().collect();
            per_channel(&views, o.y.c)
                .into_iter()
                .map(|(a, b)| Op::Affine(Affine { x: sub(o.x, a, b), add: o.add.map(|v| sub(v, a, b)), y: sub(o.y, a, b), scale: o.scale[a..b].to_vec(), shift: o.shift[a..b].to_vec(), act: slice_act(&o.act, a, b) }))
                .collect()
        }
        Op::Pool2d(o) => per_channel(&[o.x, o.y], o.y.c)
            .into_iter()
            .map(|(a, b)| {
                let mut geom = o.geom;
                geom.c = b - a;
                Op::Pool2d(Pool2d { x: sub(o.x, a, b), y: sub(o.y, a, b), geom, kind: o.kind })
            })
            .collect(),
        Op::Resize(o) => per_channel(&[o.x, o.y], o.y.c).into_iter().map(|(a, b)| Op::Resize(Resize { x: sub(o.x, a, b), y: sub(o.y, a, b), align_corners: o.align_corners })).collect(),
        Op::AdaptiveAvgPool(o) => per_channel(&[o.x, o.y], o.y.c).into_iter().map(|(a, b)| Op::AdaptiveAvgPool(AdaptiveAvgPool { x: sub(o.x, a, b), y: sub(o.y, a, b) })).collect(),
        Op::Mul(o) => per_channel(&[o.x, o.s, o.y], o.y.c).into_iter().map(|(a, b)| Op::Mul(Mul { x: sub(o.x, a, b), s: sub(o.s, a, b), y: sub(o.y, a, b) })).collect(),
        Op::Gather(o) => {
            // chunks of x as absolute channel ranges
            let xt = cuts(o.x.tensor);
            let chunk_of = |c: usize| xt.iter().filter(|&&k| k <= c).count();
            let mut out_cuts = view_cuts(o.y, cuts);
            for j in 1..o.perm.len() {
                if chunk_of(o.x.c0 + o.perm[j]) != chunk_of(o.x.c0 + o.perm[j - 1]) {
                    out_cuts.push(j);
                }
            }
            segments(o.y.c, out_cuts)
                .into_iter()
                .map(|(a, b)| {
                    let src: Vec<usize> = o.perm[a..b].iter().map(|&p| o.x.c0 + p).collect();
                    let (lo, hi) = (*src.iter().min().expect("non-empty"), *src.iter().max().expect("non-empty"));
                    let x = View { tensor: o.x.tensor, c0: lo, c: hi + 1 - lo };
                    Op::Gather(Gather { x, y: sub(o.y, a, b), perm: src.iter().map(|&p| p - lo).collect() })
                })
                .collect()
        }
        Op::Conv2d(o) => split_conv(o, cuts)?,
        Op::ConvT2d(o) => split_convt(o, cuts, &node.name)?,
    };
    if out.len() == 1 {
        return Ok(vec![node.clone()]);
    }
    Ok(out.into_iter().enumerate().map(|(i, op)| named(i, op)).collect())
}

fn split_conv(o: &Conv2d, cuts: &dyn Fn(usize) -> Vec<usize>) -> Result<Vec<Op>> {
    let g = &o.geom;
    let (groups, icpg, ocpg) = (g.groups, g.icpg(), g.ocpg());
    let mut oc: Vec<usize> = view_cuts(o.y, cuts);
    if let Some(a) = o.add {
        oc.extend(view_cuts(a, cuts));
    }
    let ic: Vec<usize> = view_cuts(o.x, cuts);
    if oc.is_empty() && ic.is_empty() {
        return Ok(vec![Op::Conv2d(o.clone())]);
    }
    let khw = g.k_h * g.k_w;
    let inside = |cuts: &[usize], a: usize, b: usize| cuts.iter().any(|&k| k > a && k < b);
    let mut ops = vec![];
    // a run of whole groups [g0, g1) that no cut enters
    let emit_run = |g0: usize, g1: usize, ops: &mut Vec<Op>| {
        let n = g1 - g0;
        let (o0, o1) = (g0 * ocpg, g1 * ocpg);
        let mut geom = *g;
        geom.in_c = n * icpg;
        geom.out_c = n * ocpg;
        geom.groups = n;
        ops.push(Op::Conv2d(Conv2d {
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
                ops.push(Op::Conv2d(Conv2d {
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
    Ok(ops)
}

fn split_convt(o: &ConvT2d, cuts: &dyn Fn(usize) -> Vec<usize>, name: &str) -> Result<Vec<Op>> {
    let g = &o.geom;
    let mut oc: Vec<usize> = view_cuts(o.y, cuts);
    if let Some(a) = o.add {
        oc.extend(view_cuts(a, cuts));
    }
    let ic: Vec<usize> = view_cuts(o.x, cuts);
    if oc.is_empty() && ic.is_empty() {
        return Ok(vec![Op::ConvT2d(o.clone())]);
    }
    if g.groups != 1 {
        return Err(Error::op(name, "a grouped transposed convolution over tensors split across bindings is not supported"));
    }
    let khw = g.k_h * g.k_w;
    let in_segs = segments(g.in_c, ic);
    let last = in_segs.len() - 1;
    let mut ops = vec![];
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
            ops.push(Op::ConvT2d(ConvT2d {
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
    Ok(ops)
}
