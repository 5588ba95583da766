//! Naive, obviously-correct CPU implementations of every operator, written from PyTorch's
//! definitions with float64 accumulation. Each operator's reference lives in its module under
//! [`crate::ops`] (re-exported here under the names the tests use); this file adds the graph
//! heads (softmax, argmax) and the whole-graph interpreter. They share their shape arithmetic
//! with the GPU path ([`crate::shape`]) and are the yardstick of the GPU kernels' tests.

use crate::graph::{Graph, View};

pub use crate::ops::adaptive_avg_pool::reference as adaptive_avg_pool;
pub use crate::ops::affine::reference as affine;
pub use crate::ops::conv2d::reference as conv2d;
pub use crate::ops::conv_transpose2d::reference as conv_transpose2d;
pub use crate::ops::gather::reference as gather;
pub use crate::ops::mul::reference as mul;
pub use crate::ops::pool2d::reference as pool2d;
pub use crate::ops::resize::reference as resize_bilinear;

pub use crate::ops::softmax::reference as softmax;

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
        let outs = {
            let read = |v: View| -> Vec<f32> {
                let d = &g.tensors[v.tensor];
                let hw = d.h * d.w;
                t[v.tensor][v.c0 * hw..(v.c0 + v.c) * hw].to_vec()
            };
            n.op.reference(g, &read)
        };
        for (y, out) in n.op.outputs().into_iter().zip(outs) {
            let d = &g.tensors[y.tensor];
            let hw = d.h * d.w;
            t[y.tensor][y.c0 * hw..(y.c0 + y.c) * hw].copy_from_slice(&out);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Act;
    use crate::shape::{Conv2dGeom, ConvT2dGeom, Pad, Pool2dGeom, PoolKind};

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
