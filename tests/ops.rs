//! Every GPU operator against its CPU reference over seeded random cases (proptest with a fixed
//! seed) and named edge cases. Outputs start as NaN so an unwritten value shows, and values
//! outside the written channel range must stay NaN.
//!
//! Tolerances (per output element): a K-term dot product in float32 is off by at most
//! K * 2^-24 * sum|x*w| from the exact value, so convolutions and pools allow
//! `1e-6 + 2 * K * 2^-24 * sum|terms|` (the factor 2 covers the activations' slope); the
//! per-element affine map allows `1e-6 + 4 * 2^-24 * |terms|`; argmax is exact.

mod common;

use std::collections::HashMap;

use atrous::graph::{Act, Graph};
use atrous::reference;
use atrous::session::{OpRunner, Session};
use atrous::shape::{Conv2dGeom, ConvT2dGeom, Pad, Pool2dGeom, PoolKind};
use common::Rng;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

const EPS: f32 = 1.0 / (1u32 << 24) as f32;

fn runner() -> Option<OpRunner> {
    common::gpu().map(|g| OpRunner::new(&g))
}

fn config(cases: u32, seed: u64) -> Config {
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, max_shrink_iters: 64, ..Config::default() }
}

/// Compares the whole output tensor: NaN where nothing may be written, within `tol` elsewhere.
fn compare(what: &str, got: &[f32], expected: &[f32], tol: &[f32]) -> Result<(), String> {
    assert_eq!(got.len(), expected.len());
    for i in 0..got.len() {
        if expected[i].is_nan() {
            if !got[i].is_nan() {
                return Err(format!("{what}: wrote {} at element {i}, outside its output range", got[i]));
            }
        } else if got[i].is_nan() {
            return Err(format!("{what}: element {i} not written (still NaN), expected {}", expected[i]));
        } else if (got[i] - expected[i]).abs() > tol[i] {
            return Err(format!("{what}: element {i}: gpu {} vs reference {} (|diff| {} > tol {})", got[i], expected[i], (got[i] - expected[i]).abs(), tol[i]));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum AddMode {
    None,
    /// addend in other channels of the output tensor
    SameTensor,
    /// addend in a tensor of its own
    Separate,
}

#[derive(Clone, Debug)]
struct ConvCase {
    geom: Conv2dGeom,
    bias: bool,
    act: u8,
    add: AddMode,
    /// extra channels before the input view and the output view
    x_c0: usize,
    y_c0: usize,
    seed: u64,
}

fn make_act(code: u8, c: usize, rng: &mut Rng) -> Act {
    match code % 7 {
        0 => Act::None,
        1 => Act::Relu,
        2 => Act::Relu6,
        3 => Act::PRelu(rng.vec(c)),
        4 => Act::Sigmoid,
        5 => Act::HardSwish,
        _ => Act::HardSigmoid,
    }
}

fn run_conv(r: &OpRunner, case: &ConvCase) -> Result<(), String> {
    let g0 = case.geom;
    let (oh, ow) = g0.out_hw().map_err(|e| e.to_string())?;
    let mut rng = Rng(case.seed);
    let mut g = Graph::new(1, 1, 1);
    let tx = g.tensor("x", g0.in_c + case.x_c0 + 1, g0.in_h, g0.in_w);
    let extra = if matches!(case.add, AddMode::SameTensor) { g0.out_c } else { 0 };
    let ty = g.tensor("y", case.y_c0 + g0.out_c + extra + 1, oh, ow);
    let x = g.slice(tx, case.x_c0, g0.in_c);
    let y = g.slice(ty, case.y_c0, g0.out_c);
    let (add, ta) = match case.add {
        AddMode::None => (None, None),
        AddMode::SameTensor => (Some(g.slice(ty, case.y_c0 + g0.out_c, g0.out_c)), None),
        AddMode::Separate => {
            let ta = g.tensor("add", g0.out_c + 2, oh, ow);
            (Some(g.slice(ta, 1, g0.out_c)), Some(ta))
        }
    };
    let weight = rng.vec(g0.weight_shape().iter().product());
    let bias = case.bias.then(|| rng.vec(g0.out_c));
    let act = make_act(case.act, g0.out_c, &mut rng);
    g.conv2d("conv", x, y, g0, weight.clone(), bias.clone(), act.clone(), add).map_err(|e| e.to_string())?;

    let ohw = oh * ow;
    let xdata = rng.vec(g.tensors[tx].numel());
    let mut ydata = vec![f32::NAN; g.tensors[ty].numel()];
    if let (AddMode::SameTensor, Some(a)) = (case.add, add) {
        for v in &mut ydata[a.c0 * ohw..(a.c0 + a.c) * ohw] {
            *v = rng.uniform();
        }
    }
    let mut data = HashMap::from([(tx, xdata.clone()), (ty, ydata.clone())]);
    if let Some(ta) = ta {
        data.insert(ta, rng.vec(g.tensors[ta].numel()));
    }
    let got = r.run(&g, 0, &data).map_err(|e| e.to_string())?;

    let hw = g0.in_h * g0.in_w;
    let xin = &xdata[x.c0 * hw..(x.c0 + x.c) * hw];
    let addv: Option<Vec<f32>> = add.map(|a| {
        let t = &data[&a.tensor];
        t[a.c0 * ohw..(a.c0 + a.c) * ohw].to_vec()
    });
    let want = reference::conv2d(xin, &g0, &weight, bias.as_deref(), addv.as_deref(), &act);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mag = reference::conv2d(&abs(xin), &g0, &abs(&weight), bias.as_ref().map(|b| abs(b)).as_deref(), addv.as_ref().map(|a| abs(a)).as_deref(), &Act::None);
    let k = (g0.icpg() * g0.k_h * g0.k_w + 2) as f32;
    let mut expected = ydata.clone();
    let mut tol = vec![0f32; expected.len()];
    for i in 0..want.len() {
        expected[y.c0 * ohw + i] = want[i];
        tol[y.c0 * ohw + i] = 1e-6 + 2.0 * k * EPS * mag[i];
    }
    // untouched values (tolerance 0) must come back bit-identical, or NaN where they were NaN
    compare(&format!("{case:?}"), &got, &expected, &tol)
}

fn conv_strategy() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=5, 1usize..=4, 1usize..=7, 1usize..=24, 1usize..=24),
        (1usize..=5, 1usize..=5, 1usize..=3, 1usize..=3, 1usize..=16, 1usize..=16),
        (0usize..=8, 0usize..=8, 0usize..=8, 0usize..=8),
        (any::<bool>(), 0u8..7, 0u8..3, 0usize..3, 0usize..3, any::<u64>()),
    )
        .prop_map(|((groups, icpg, ocpg, h, w), (kh, kw, sh, sw, dh, dw), (pt, pb, pl, pr), (bias, act, add, x_c0, y_c0, seed))| {
            let geom = Conv2dGeom {
                in_c: groups * icpg,
                in_h: h,
                in_w: w,
                out_c: groups * ocpg,
                k_h: kh,
                k_w: kw,
                stride_h: sh,
                stride_w: sw,
                dil_h: dh,
                dil_w: dw,
                pad: Pad { top: pt, bottom: pb, left: pl, right: pr },
                groups,
            };
            let add = [AddMode::None, AddMode::SameTensor, AddMode::Separate][add as usize];
            ConvCase { geom, bias, act, add, x_c0, y_c0, seed }
        })
        .prop_filter("kernel must fit the padded input", |c| c.geom.out_hw().is_ok())
}

#[test]
fn conv2d_random_cases() {
    let Some(r) = runner() else { return };
    let mut tr = TestRunner::new(config(64, 0xC0417));
    tr.run(&conv_strategy(), |case| run_conv(&r, &case).map_err(TestCaseError::fail)).unwrap();
}

fn named_conv(geom: Conv2dGeom, add: AddMode, act: u8) -> ConvCase {
    ConvCase { geom, bias: true, act, add, x_c0: 1, y_c0: 2, seed: 7 }
}

#[test]
fn conv2d_named_cases() {
    let Some(r) = runner() else { return };
    let cases = [
        // ESPNet's dilation-16 branch at 1/8 of a 136x136 crop: taps 16 px off-centre in bounds
        named_conv(Conv2dGeom::new(25, 17, 17, 25, 3, 1, 16, 16, 1), AddMode::SameTensor, 0),
        // strided 3x3 on odd sizes, channel counts not divisible by 4
        named_conv(Conv2dGeom::new(131, 45, 61, 25, 3, 2, 1, 1, 1), AddMode::None, 3),
        // 1x1 131 -> 12
        named_conv(Conv2dGeom::new(131, 9, 15, 12, 1, 1, 0, 1, 1), AddMode::None, 0),
        // depthwise, channel multiplier 2, dilation 2
        named_conv(Conv2dGeom::new(13, 11, 9, 26, 3, 1, 2, 2, 13), AddMode::Separate, 2),
        // plain depthwise stride 2 (MobileNet)
        named_conv(Conv2dGeom::new(18, 17, 16, 18, 3, 2, 1, 1, 18), AddMode::None, 5),
        // grouped 1x1 with 4 groups (ESPNetv2)
        named_conv(Conv2dGeom::new(36, 7, 10, 20, 1, 1, 0, 1, 4), AddMode::Separate, 3),
        // dilation larger than the input: only the centre tap lands
        named_conv(Conv2dGeom::new(5, 6, 7, 6, 3, 1, 24, 24, 1), AddMode::None, 1),
        // TF "SAME" stride 2 on an even size: padding only after
        named_conv(Conv2dGeom { pad: Pad { top: 0, bottom: 1, left: 0, right: 1 }, ..Conv2dGeom::new(8, 16, 16, 8, 3, 2, 0, 1, 1) }, AddMode::None, 2),
        // 7x7 stride 2 (ResNet stem)
        named_conv(Conv2dGeom::new(3, 33, 29, 16, 7, 2, 3, 1, 1), AddMode::None, 1),
    ];
    for c in &cases {
        run_conv(&r, c).unwrap();
    }
}

#[derive(Clone, Debug)]
struct ConvTCase {
    geom: ConvT2dGeom,
    bias: bool,
    act: u8,
    seed: u64,
}

fn run_convt(r: &OpRunner, case: &ConvTCase) -> Result<(), String> {
    let g0 = case.geom;
    let (oh, ow) = g0.out_hw().map_err(|e| e.to_string())?;
    let mut rng = Rng(case.seed);
    let mut g = Graph::new(1, 1, 1);
    let tx = g.tensor("x", g0.in_c + 1, g0.in_h, g0.in_w);
    let ty = g.tensor("y", g0.out_c + 2, oh, ow);
    let (x, y) = (g.slice(tx, 1, g0.in_c), g.slice(ty, 1, g0.out_c));
    let weight = rng.vec(g0.weight_shape().iter().product());
    let bias = case.bias.then(|| rng.vec(g0.out_c));
    let act = make_act(case.act, g0.out_c, &mut rng);
    g.conv_transpose2d("convt", x, y, g0, weight.clone(), bias.clone(), act.clone()).map_err(|e| e.to_string())?;
    let xdata = rng.vec(g.tensors[tx].numel());
    let ydata = vec![f32::NAN; g.tensors[ty].numel()];
    let got = r.run(&g, 0, &HashMap::from([(tx, xdata.clone()), (ty, ydata.clone())])).map_err(|e| e.to_string())?;
    let hw = g0.in_h * g0.in_w;
    let xin = &xdata[hw..(1 + g0.in_c) * hw];
    let want = reference::conv_transpose2d(xin, &g0, &weight, bias.as_deref(), None, &act);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mag = reference::conv_transpose2d(&abs(xin), &g0, &abs(&weight), bias.as_ref().map(|b| abs(b)).as_deref(), None, &Act::None);
    let k = (g0.icpg() * g0.k_h * g0.k_w + 2) as f32;
    let ohw = oh * ow;
    let mut expected = ydata;
    let mut tol = vec![0f32; expected.len()];
    for i in 0..want.len() {
        expected[ohw + i] = want[i];
        tol[ohw + i] = 1e-6 + 2.0 * k * EPS * mag[i];
    }
    compare(&format!("{case:?}"), &got, &expected, &tol)
}

#[test]
fn conv_transpose2d_random_cases() {
    let Some(r) = runner() else { return };
    let strat = ((1usize..=3, 1usize..=5, 1usize..=6, 1usize..=13, 1usize..=13), (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3), (0usize..=2, 0usize..=2, 0usize..=2, any::<bool>(), 0u8..7, any::<u64>()))
        .prop_map(|((groups, icpg, ocpg, h, w), (kh, kw, sh, sw, dil), (p, oph, opw, bias, act, seed))| ConvTCase {
            geom: ConvT2dGeom {
                in_c: groups * icpg,
                in_h: h,
                in_w: w,
                out_c: groups * ocpg,
                k_h: kh,
                k_w: kw,
                stride_h: sh,
                stride_w: sw,
                dil_h: dil,
                dil_w: dil,
                pad: Pad::same(p),
                out_pad_h: oph,
                out_pad_w: opw,
                groups,
            },
            bias,
            act,
            seed,
        })
        .prop_filter("valid geometry", |c| c.geom.out_hw().is_ok());
    let mut tr = TestRunner::new(config(32, 0x7A45));
    tr.run(&strat, |case| run_convt(&r, &case).map_err(TestCaseError::fail)).unwrap();
    // ESPNet's decoder: 2x2 stride 2, 12 -> 12 at odd input size
    let geom = ConvT2dGeom { in_c: 12, in_h: 17, in_w: 23, out_c: 12, k_h: 2, k_w: 2, stride_h: 2, stride_w: 2, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 };
    run_convt(&r, &ConvTCase { geom, bias: true, act: 3, seed: 3 }).unwrap();
}

fn run_pool(r: &OpRunner, geom: Pool2dGeom, kind: PoolKind, seed: u64) -> Result<(), String> {
    let (oh, ow) = geom.out_hw().map_err(|e| e.to_string())?;
    let mut rng = Rng(seed);
    let mut g = Graph::new(1, 1, 1);
    let tx = g.tensor("x", geom.c + 2, geom.in_h, geom.in_w);
    let ty = g.tensor("y", geom.c + 1, oh, ow);
    let (x, y) = (g.slice(tx, 2, geom.c), g.slice(ty, 0, geom.c));
    g.pool2d("pool", x, y, geom, kind).map_err(|e| e.to_string())?;
    let xdata = rng.vec(g.tensors[tx].numel());
    let ydata = vec![f32::NAN; g.tensors[ty].numel()];
    let got = r.run(&g, 0, &HashMap::from([(tx, xdata.clone()), (ty, ydata.clone())])).map_err(|e| e.to_string())?;
    let hw = geom.in_h * geom.in_w;
    let xin = &xdata[2 * hw..];
    let want = reference::pool2d(xin, &geom, kind);
    let mag = reference::pool2d(&xin.iter().map(|v| v.abs()).collect::<Vec<_>>(), &geom, PoolKind::Avg { count_include_pad: false });
    let k = (geom.k_h * geom.k_w + 2) as f32;
    let mut expected = ydata;
    let mut tol = vec![0f32; expected.len()];
    for i in 0..want.len() {
        expected[i] = want[i];
        tol[i] = if matches!(kind, PoolKind::Max) { 0.0 } else { 1e-6 + 2.0 * k * EPS * mag[i] };
    }
    compare(&format!("{geom:?} {kind:?}"), &got, &expected, &tol)
}

#[test]
fn pool2d_random_cases() {
    let Some(r) = runner() else { return };
    let strat = (1usize..=6, 1usize..=20, 1usize..=20, 1usize..=5, 1usize..=3, 0usize..=2, any::<bool>(), 0u8..3, any::<u64>())
        .prop_map(|(c, h, w, k, s, p, ceil, kind, seed)| {
            let kind = [PoolKind::Avg { count_include_pad: true }, PoolKind::Avg { count_include_pad: false }, PoolKind::Max][kind as usize];
            (Pool2dGeom::new(c, h, w, k, s, p, ceil), kind, seed)
        })
        .prop_filter("valid", |(g, _, _)| g.out_hw().is_ok());
    let mut tr = TestRunner::new(config(48, 0x9001));
    tr.run(&strat, |(g, k, s)| run_pool(&r, g, k, s).map_err(TestCaseError::fail)).unwrap();
    // ESPNet's input pyramid: AvgPool(3, 2, 1) on odd sizes
    run_pool(&r, Pool2dGeom::new(3, 45, 61, 3, 2, 1, false), PoolKind::Avg { count_include_pad: true }, 1).unwrap();
    // ResNet's stem max pool
    run_pool(&r, Pool2dGeom::new(5, 49, 66, 3, 2, 1, false), PoolKind::Max, 2).unwrap();
}

fn run_affine(r: &OpRunner, c: usize, h: usize, w: usize, with_add: bool, act: u8, seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    let mut g = Graph::new(1, 1, 1);
    let tx = g.tensor("x", c + 3, h, w);
    let ty = g.tensor("y", c + 1, h, w);
    let ta = g.tensor("a", c, h, w);
    let (x, y) = (g.slice(tx, 3, c), g.slice(ty, 1, c));
    let add = with_add.then(|| g.all(ta));
    let (scale, shift) = (rng.vec(c), rng.vec(c));
    let act = make_act(act, c, &mut rng);
    g.affine("affine", x, add, y, scale.clone(), shift.clone(), act.clone()).map_err(|e| e.to_string())?;
    let hw = h * w;
    let data = HashMap::from([(tx, rng.vec((c + 3) * hw)), (ty, vec![f32::NAN; (c + 1) * hw]), (ta, rng.vec(c * hw))]);
    let got = r.run(&g, 0, &data).map_err(|e| e.to_string())?;
    let xin = &data[&tx][3 * hw..];
    let want = reference::affine(xin, with_add.then(|| data[&ta].as_slice()), hw, &scale, &shift, &act);
    let mut expected = vec![f32::NAN; (c + 1) * hw];
    let mut tol = vec![0f32; expected.len()];
    for i in 0..want.len() {
        expected[hw + i] = want[i];
        let s = scale[i / hw].abs() * (xin[i].abs() + if with_add { data[&ta][i].abs() } else { 0.0 }) + shift[i / hw].abs();
        tol[hw + i] = 1e-6 + 8.0 * EPS * s;
    }
    compare(&format!("affine c={c} {h}x{w} add={with_add} {act:?}"), &got, &expected, &tol)
}

#[test]
fn affine_random_cases() {
    let Some(r) = runner() else { return };
    let strat = (1usize..=19, 1usize..=17, 1usize..=17, any::<bool>(), 0u8..7, any::<u64>());
    let mut tr = TestRunner::new(config(40, 0xAFF1));
    tr.run(&strat, |(c, h, w, add, act, seed)| run_affine(&r, c, h, w, add, act, seed).map_err(TestCaseError::fail)).unwrap();
}

/// Argmax through a session: identity graph whose logits are the input.
fn argmax_gpu(x: &[f32], c: usize, h: usize, w: usize) -> Vec<u8> {
    let gpu = common::gpu().expect("gpu checked by caller");
    let mut g = Graph::new(c, h, w);
    let t = g.tensor("logits", c, h, w);
    g.copy("copy", g.all(g.input), g.all(t)).unwrap();
    g.set_logits(t);
    let mut s = Session::new(&gpu, &g, None).unwrap();
    s.run_tensor(x).unwrap().data
}

#[test]
fn argmax_ties_infinities_nan_and_odd_sizes() {
    if common::gpu().is_none() {
        return;
    }
    // 3 classes, 5 pixels (not a multiple of 4): tie -> lowest index; -inf loses; +inf wins; NaN wins.
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let x = vec![
        1.0, -inf, 0.0, 2.0, 0.5, // class 0
        1.0, -inf, inf, 2.0, nan, // class 1
        0.5, -inf, inf, 3.0, 9.0, // class 2
    ];
    let got = argmax_gpu(&x, 3, 1, 5);
    assert_eq!(got, reference::argmax(&x, 3, 5));
    assert_eq!(got, vec![0, 0, 1, 2, 1]);
    // random cases with many exact ties (values quantised to 4 levels)
    let mut rng = Rng(5);
    for &(c, h, w) in &[(1, 3, 3), (12, 7, 9), (21, 5, 13), (256, 2, 3)] {
        let x: Vec<f32> = (0..c * h * w).map(|_| (rng.below(4) as f32) - 1.5).collect();
        assert_eq!(argmax_gpu(&x, c, h, w), reference::argmax(&x, c, h * w), "c={c} {h}x{w}");
    }
}

#[test]
fn argmax_rejects_more_than_256_classes() {
    let Some(gpu) = common::gpu() else { return };
    let mut g = Graph::new(257, 1, 1);
    let t = g.tensor("logits", 257, 1, 1);
    g.copy("copy", g.all(g.input), g.all(t)).unwrap();
    g.set_logits(t);
    let err = Session::new(&gpu, &g, None).err().expect("257 classes must be refused");
    assert!(err.to_string().contains("257 classes"), "{err}");
}

#[test]
fn preprocess_matches_cpu_reference() {
    let Some(gpu) = common::gpu() else { return };
    use atrous::preprocess::{ChannelOrder, Normalize};
    let (h, w) = (7, 9);
    let mut rng = Rng(11);
    let rgb: Vec<u8> = (0..h * w * 3).map(|_| rng.below(256) as u8).collect();
    for n in [
        Normalize { order: ChannelOrder::Bgr, pre_scale: 1.0, mean: [110.3, 108.4, 105.0], std: [72.1, 72.7, 69.9], post_scale: 1.0 / 255.0 },
        Normalize { order: ChannelOrder::Rgb, pre_scale: 1.0 / 255.0, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], post_scale: 1.0 },
    ] {
        let mut g = Graph::new(3, h, w);
        let t = g.tensor("logits", 3, h, w);
        g.copy("copy", g.all(g.input), g.all(t)).unwrap();
        g.set_logits(t);
        let mut s = Session::new(&gpu, &g, Some(n)).unwrap();
        s.fill_arenas(f32::NAN);
        let (_, logits) = s.run_rgb_logits(&rgb).unwrap();
        let want = n.apply(&rgb, h, w);
        for (i, (a, b)) in logits.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{n:?} element {i}: gpu {a} cpu {b}");
        }
    }
}

/// Builds a one-node graph with `make`, runs it on the GPU and compares with the CPU reference
/// graph (`reference::run_graph`) on the node's output tensor, NaN outside the written range.
fn run_single(r: &OpRunner, g: &Graph, seed: u64, tol: impl Fn(usize, f32) -> f32) -> Result<(), String> {
    let mut rng = Rng(seed);
    let n = &g.nodes[0];
    let out = n.op.writes();
    let mut data = HashMap::new();
    for v in n.op.reads() {
        data.entry(v.tensor).or_insert_with(|| rng.vec(g.tensors[v.tensor].numel()));
    }
    data.insert(out.tensor, vec![f32::NAN; g.tensors[out.tensor].numel()]);
    let got = r.run(g, 0, &data).map_err(|e| e.to_string())?;
    // CPU: the same node through the reference interpreter, starting from the same data
    let mut t: Vec<Vec<f32>> = g.tensors.iter().map(|d| vec![f32::NAN; d.numel()]).collect();
    for (k, v) in &data {
        t[*k] = v.clone();
    }
    let mut single = g.clone();
    single.input = n.op.reads()[0].tensor;
    let want = reference::run_graph_from(&single, t);
    let expected = &want[out.tensor];
    let tols: Vec<f32> = expected.iter().enumerate().map(|(i, v)| if v.is_nan() { 0.0 } else { tol(i, *v) }).collect();
    compare(&format!("{} {:?}", n.name, n.op.kind()), &got, expected, &tols)
}

#[test]
fn resize_bilinear_random_cases() {
    let Some(r) = runner() else { return };
    let strat = (1usize..=5, 1usize..=19, 1usize..=19, 1usize..=41, 1usize..=41, any::<bool>(), any::<u64>());
    let mut tr = TestRunner::new(config(48, 0x2E51));
    let case = |c: usize, ih: usize, iw: usize, oh: usize, ow: usize, align: bool, seed: u64| {
        let mut g = Graph::new(c + 1, ih, iw);
        let y = g.tensor("y", c + 2, oh, ow);
        let x = g.slice(g.input, 1, c);
        g.resize("resize", x, g.slice(y, 1, c), align).unwrap();
        // four float32 products of values in [-1, 1] with weights summing to 1
        run_single(&r, &g, seed, |_, _| 4e-6)
    };
    tr.run(&strat, |(c, ih, iw, oh, ow, align, seed)| case(c, ih, iw, oh, ow, align, seed).map_err(TestCaseError::fail)).unwrap();
    // broadcast of a 1x1 map (ASPP pooling branch, TFLite image pooling) and DeepLab's 33 -> 257
    case(3, 1, 1, 17, 23, false, 1).unwrap();
    case(3, 1, 1, 33, 33, true, 2).unwrap();
    case(2, 33, 33, 257, 257, true, 3).unwrap();
    case(2, 7, 9, 97, 131, false, 4).unwrap();
}

#[test]
fn adaptive_avg_pool_random_cases() {
    let Some(r) = runner() else { return };
    let strat = (1usize..=5, 1usize..=23, 1usize..=23, 1usize..=9, 1usize..=9, any::<u64>());
    let mut tr = TestRunner::new(config(40, 0xADA9));
    let case = |c: usize, ih: usize, iw: usize, oh: usize, ow: usize, seed: u64| {
        let mut g = Graph::new(c, ih, iw);
        let y = g.tensor("y", c + 1, oh, ow);
        g.adaptive_avg_pool("pool", g.all(g.input), g.slice(y, 0, c)).unwrap();
        let k = (ih.div_ceil(oh) + 1) * (iw.div_ceil(ow) + 1);
        run_single(&r, &g, seed, move |_, _| 1e-6 + 2.0 * k as f32 * EPS)
    };
    tr.run(&strat, |(c, ih, iw, oh, ow, seed)| case(c, ih, iw, oh, ow, seed).map_err(TestCaseError::fail)).unwrap();
    // global pooling of a large map; ESPNetv2's pyramid (overlapping windows, 24 -> 5)
    case(4, 65, 129, 1, 1, 5).unwrap();
    case(3, 24, 24, 5, 5, 6).unwrap();
}

#[test]
fn mul_and_gather_cases() {
    let Some(r) = runner() else { return };
    for (i, &(c, h, w, per_channel)) in [(5usize, 7usize, 9usize, true), (6, 5, 3, false), (13, 1, 1, true), (3, 11, 2, true)].iter().enumerate() {
        let mut g = Graph::new(c, h, w);
        let s = if per_channel { g.tensor("s", c + 1, 1, 1) } else { g.tensor("s", c, h, w) };
        let y = g.tensor("y", c, h, w);
        g.mul("mul", g.all(g.input), g.slice(s, 0, c), g.all(y)).unwrap();
        run_single(&r, &g, i as u64, |_, v| 2.0 * EPS * v.abs()).unwrap();
    }
    // ESPNetv2's channel shuffle: [5, 10] -> transpose -> [10, 5]
    let (groups, per) = (5, 10);
    let perm: Vec<usize> = (0..groups * per).map(|c| (c % groups) * per + c / groups).collect();
    let mut g = Graph::new(50, 6, 7);
    let y = g.tensor("y", 52, 6, 7);
    g.gather("shuffle", g.all(g.input), g.slice(y, 1, 50), perm).unwrap();
    run_single(&r, &g, 9, |_, _| 0.0).unwrap();
}

#[test]
fn softmax_probabilities_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = Rng(21);
    for &(c, h, w, scale) in &[(21usize, 5usize, 7usize, 1.0f32), (12, 3, 3, 80.0), (1, 2, 3, 1.0)] {
        let x: Vec<f32> = rng.vec(c * h * w).into_iter().map(|v| v * scale).collect();
        let mut g = Graph::new(c, h, w);
        let t = g.tensor("logits", c, h, w);
        g.copy("copy", g.all(g.input), g.all(t)).unwrap();
        g.set_logits(t);
        let mut s = Session::new(&gpu, &g, None).unwrap();
        let (map, probs) = s.run_tensor_probabilities(&x).unwrap();
        let want = reference::softmax(&x, c, h * w);
        for (i, (a, b)) in probs.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 2e-6, "c={c} scale={scale} element {i}: gpu {a} cpu {b}");
        }
        assert_eq!(map.data, reference::argmax(&x, c, h * w));
    }
}
