//! Naive, obviously-correct CPU implementations of every operator, written from PyTorch's
//! definitions with float64 accumulation. They share their shape arithmetic with the GPU path
//! ([`crate::shape`]) and are the yardstick of the GPU kernels' tests.

use crate::graph::{Act, Graph, Op};
use crate::shape::{Conv2dGeom, ConvT2dGeom, Pool2dGeom, PoolKind};

/// `x`: `[in_c, in_h, in_w]`; returns `[out_c, oh, ow]`.
pub fn conv2d(x: &[f32], g: &Conv2dGeom, weight: &[f32], bias: Option<&[f32]>, add: Option<&[f32]>, act: &Act) -> Vec<f32> {
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

/// `x`: `[in_c, in_h, in_w]`, weight `[in_c, out_c/groups, k_h, k_w]`; scatter form, as the
/// definition reads: every input pixel adds its kernel into the output.
pub fn conv_transpose2d(x: &[f32], g: &ConvT2dGeom, weight: &[f32], bias: Option<&[f32]>, add: Option<&[f32]>, act: &Act) -> Vec<f32> {
    let (oh, ow) = g.out_hw().expect("valid geometry");
    let (icpg, ocpg) = (g.icpg(), g.ocpg());
    let mut acc = vec![0f64; g.out_c * oh * ow];
    for ic in 0..g.in_c {
        let grp = ic / icpg;
        for iy in 0..g.in_h {
            for ix in 0..g.in_w {
                let xv = x[(ic * g.in_h + iy) * g.in_w + ix] as f64;
                for o in 0..ocpg {
                    let oc = grp * ocpg + o;
                    for ky in 0..g.k_h {
                        let y = (iy * g.stride_h + ky * g.dil_h) as isize - g.pad.top as isize;
                        if y < 0 || y >= oh as isize {
                            continue;
                        }
                        for kx in 0..g.k_w {
                            let xx = (ix * g.stride_w + kx * g.dil_w) as isize - g.pad.left as isize;
                            if xx < 0 || xx >= ow as isize {
                                continue;
                            }
                            let wv = weight[((ic * ocpg + o) * g.k_h + ky) * g.k_w + kx] as f64;
                            acc[(oc * oh + y as usize) * ow + xx as usize] += xv * wv;
                        }
                    }
                }
            }
        }
    }
    let hw = oh * ow;
    acc.iter()
        .enumerate()
        .map(|(i, &a)| {
            let oc = i / hw;
            act.apply((a + bias.map_or(0.0, |b| b[oc] as f64) + add.map_or(0.0, |v| v[i] as f64)) as f32, oc)
        })
        .collect()
}

pub fn pool2d(x: &[f32], g: &Pool2dGeom, kind: PoolKind) -> Vec<f32> {
    let (oh, ow) = g.out_hw().expect("valid geometry");
    let mut y = vec![0f32; g.c * oh * ow];
    for c in 0..g.c {
        for oy in 0..oh {
            let (y0, y1, sy) = Pool2dGeom::window(oy, g.k_h, g.stride_h, g.pad_h, g.in_h);
            for ox in 0..ow {
                let (x0, x1, sx) = Pool2dGeom::window(ox, g.k_w, g.stride_w, g.pad_w, g.in_w);
                let v = match kind {
                    PoolKind::Avg { count_include_pad } => {
                        let mut s = 0f64;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                s += x[(c * g.in_h + iy) * g.in_w + ix] as f64;
                            }
                        }
                        let div = if count_include_pad { sy * sx } else { (y1 - y0) * (x1 - x0) };
                        (s / div as f64) as f32
                    }
                    PoolKind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
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

/// `y[c] = act(scale[c] * (x[c] + add[c]) + shift[c])` over `[c, hw]`.
pub fn affine(x: &[f32], add: Option<&[f32]>, hw: usize, scale: &[f32], shift: &[f32], act: &Act) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / hw;
            let s = v as f64 + add.map_or(0.0, |a| a[i] as f64);
            act.apply((scale[c] as f64 * s + shift[c] as f64) as f32, c)
        })
        .collect()
}

/// Bilinear resize `[c, ih, iw]` to `[c, oh, ow]`, PyTorch's arithmetic (float32 source
/// coordinates, as its CPU kernel for float tensors).
pub fn resize_bilinear(x: &[f32], c: usize, ih: usize, iw: usize, oh: usize, ow: usize, align_corners: bool) -> Vec<f32> {
    let coord = |o: usize, n_in: usize, n_out: usize| -> (usize, usize, f32) {
        let src = if align_corners {
            if n_out > 1 {
                o as f32 * ((n_in - 1) as f32 / (n_out - 1) as f32)
            } else {
                0.0
            }
        } else {
            ((o as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, src - i0 as f32)
    };
    let mut y = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            let (y0, y1, ly) = coord(oy, ih, oh);
            for ox in 0..ow {
                let (x0, x1, lx) = coord(ox, iw, ow);
                let at = |yy: usize, xx: usize| x[(ch * ih + yy) * iw + xx] as f64;
                let (ly, lx) = (ly as f64, lx as f64);
                let v = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
                y[(ch * oh + oy) * ow + ox] = v as f32;
            }
        }
    }
    y
}

/// Adaptive average pooling `[c, ih, iw]` to `[c, oh, ow]`.
pub fn adaptive_avg_pool(x: &[f32], c: usize, ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    let mut y = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for oy in 0..oh {
            let (y0, y1) = (oy * ih / oh, ((oy + 1) * ih).div_ceil(oh));
            for ox in 0..ow {
                let (x0, x1) = (ox * iw / ow, ((ox + 1) * iw).div_ceil(ow));
                let mut s = 0f64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        s += x[(ch * ih + yy) * iw + xx] as f64;
                    }
                }
                y[(ch * oh + oy) * ow + ox] = (s / ((y1 - y0) * (x1 - x0)) as f64) as f32;
            }
        }
    }
    y
}

/// `x * s` over `[c, hw]`, `s` either `[c, hw]` or `[c]`.
pub fn mul(x: &[f32], s: &[f32], hw: usize) -> Vec<f32> {
    let per_channel = s.len() * hw == x.len() && hw != 1;
    x.iter().enumerate().map(|(i, &v)| v * if per_channel { s[i / hw] } else { s[i] }).collect()
}

/// `y[c] = x[perm[c]]` over `[c, hw]`.
pub fn gather(x: &[f32], perm: &[usize], hw: usize) -> Vec<f32> {
    perm.iter().flat_map(|&p| x[p * hw..(p + 1) * hw].iter().copied()).collect()
}

/// Softmax over channels of `[c, hw]`.
pub fn softmax(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut y = vec![0f32; c * hw];
    for p in 0..hw {
        let m = (0..c).map(|k| x[k * hw + p] as f64).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = (0..c).map(|k| (x[k * hw + p] as f64 - m).exp()).sum();
        for k in 0..c {
            y[k * hw + p] = ((x[k * hw + p] as f64 - m).exp() / s) as f32;
        }
    }
    y
}

/// Argmax over channels of `[c, hw]`: the first maximum wins (PyTorch), and NaN counts as the maximum.
pub fn argmax(x: &[f32], c: usize, hw: usize) -> Vec<u8> {
    (0..hw)
        .map(|p| {
            let mut best = 0usize;
            let mut bv = x[p];
            for k in 1..c {
                let v = x[k * hw + p];
                if !bv.is_nan() && (v > bv || v.is_nan()) {
                    best = k;
                    bv = v;
                }
            }
            best as u8
        })
        .collect()
}

/// Runs a whole graph on the CPU; returns every tensor (`[c, h, w]` flattened).
pub fn run_graph(g: &Graph, input: &[f32]) -> Vec<Vec<f32>> {
    let mut t: Vec<Vec<f32>> = g.tensors.iter().map(|d| vec![f32::NAN; d.numel()]).collect();
    t[g.input].copy_from_slice(input);
    run_graph_from(g, t)
}

/// Runs every node of `g` over the given initial tensor contents.
pub fn run_graph_from(g: &Graph, mut t: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    for n in &g.nodes {
        let read = |t: &Vec<Vec<f32>>, v: crate::graph::View| -> Vec<f32> {
            let d = &g.tensors[v.tensor];
            let hw = d.h * d.w;
            t[v.tensor][v.c0 * hw..(v.c0 + v.c) * hw].to_vec()
        };
        let out = match &n.op {
            Op::Conv2d(o) => {
                let add = o.add.map(|a| read(&t, a));
                conv2d(&read(&t, o.x), &o.geom, &o.weight, o.bias.as_deref(), add.as_deref(), &o.act)
            }
            Op::ConvT2d(o) => {
                let add = o.add.map(|a| read(&t, a));
                conv_transpose2d(&read(&t, o.x), &o.geom, &o.weight, o.bias.as_deref(), add.as_deref(), &o.act)
            }
            Op::Pool2d(o) => pool2d(&read(&t, o.x), &o.geom, o.kind),
            Op::Affine(o) => {
                let (h, w) = g.hw(o.x);
                let add = o.add.map(|a| read(&t, a));
                affine(&read(&t, o.x), add.as_deref(), h * w, &o.scale, &o.shift, &o.act)
            }
            Op::Resize(o) => {
                let ((ih, iw), (oh, ow)) = (g.hw(o.x), g.hw(o.y));
                resize_bilinear(&read(&t, o.x), o.x.c, ih, iw, oh, ow, o.align_corners)
            }
            Op::AdaptiveAvgPool(o) => {
                let ((ih, iw), (oh, ow)) = (g.hw(o.x), g.hw(o.y));
                adaptive_avg_pool(&read(&t, o.x), o.x.c, ih, iw, oh, ow)
            }
            Op::Mul(o) => {
                let (h, w) = g.hw(o.x);
                mul(&read(&t, o.x), &read(&t, o.s), h * w)
            }
            Op::Gather(o) => {
                let (h, w) = g.hw(o.x);
                gather(&read(&t, o.x), &o.perm, h * w)
            }
        };
        let y = n.op.writes();
        let d = &g.tensors[y.tensor];
        let hw = d.h * d.w;
        t[y.tensor][y.c0 * hw..(y.c0 + y.c) * hw].copy_from_slice(&out);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Pad;

    #[test]
    fn conv_hand_computed() {
        // 1 channel 3x3 input, 2x2 kernel of ones, no padding: sums of 2x2 windows.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let g = Conv2dGeom::new(1, 3, 3, 1, 2, 1, 0, 1, 1);
        let y = conv2d(&x, &g, &[1.0; 4], Some(&[0.5]), None, &Act::None);
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
        // dilation 2 with padding 2 on a 3x3 picks the corners around the centre.
        let g = Conv2dGeom::new(1, 3, 3, 1, 3, 1, 2, 2, 1);
        let mut w = vec![0.0; 9];
        w[0] = 1.0; // top-left tap
        let y = conv2d(&x, &g, &w, None, None, &Act::None);
        // output (2,2) reads input (0,0) = 1; output (0,0) reads (-2,-2) = padding.
        assert_eq!(y[8], 1.0);
        assert_eq!(y[0], 0.0);
    }

    #[test]
    fn conv_transpose_hand_computed() {
        // 2x2 stride 2: each input pixel becomes a 2x2 block scaled by the kernel.
        let x = vec![1.0, 2.0];
        let g = ConvT2dGeom { in_c: 1, in_h: 1, in_w: 2, out_c: 1, k_h: 2, k_w: 2, stride_h: 2, stride_w: 2, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 };
        let y = conv_transpose2d(&x, &g, &[1.0, 2.0, 3.0, 4.0], None, None, &Act::None);
        assert_eq!(y, vec![1.0, 2.0, 2.0, 4.0, 3.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn avg_pool_counts_padding() {
        // AvgPool(3, 2, 1) on 2x2 of ones: one output, 4 real values / 9.
        let g = Pool2dGeom::new(1, 2, 2, 3, 2, 1, false);
        let y = pool2d(&[1.0; 4], &g, PoolKind::Avg { count_include_pad: true });
        assert_eq!(y.len(), 1);
        assert!((y[0] - 4.0 / 9.0).abs() < 1e-7);
        let y = pool2d(&[1.0; 4], &g, PoolKind::Avg { count_include_pad: false });
        assert!((y[0] - 1.0).abs() < 1e-7);
    }

    #[test]
    fn argmax_ties_and_nan() {
        // 3 channels, 3 pixels: tie -> lowest index; NaN wins; -inf loses.
        let x = vec![1.0, 0.0, f32::NEG_INFINITY, 1.0, f32::NAN, f32::NEG_INFINITY, 0.5, 2.0, f32::NEG_INFINITY];
        assert_eq!(argmax(&x, 3, 3), vec![0, 1, 0]);
    }
}
