//! Half precision against the original frameworks (issue 13): every model in `../shared` with a
//! reference, run with every feature map, its input and its logits stored as f16
//! (`Precision::F16`), compared with the reference's class map and logits; the f32 run beside it;
//! and with the convolutions computing in f16 as well (`Precision::F16Compute`, opt-in).
//!
//! f16 arithmetic adds to every product the rounding of its weight to f16 and of the product and
//! of 8-product partial sums to f16 (`kernels::conv::f16_chunk`): per layer a few more f16
//! roundings of the same size as the storage's one. Measured here it flips 0.1-0.8% of the pixels
//! (worst 99.25%, ESPNet-Cityscapes on a CamVid frame), so it is held to 99.0% agreement and the
//! same logits bound; the seeded networks with known shortfalls to their floor minus 20 points
//! and four times their logits bound (both lose a further 10-20% of pixels: no class margins). This is
//! why plain `f16` keeps f32 accumulation on every adapter.
//!
//! Bounds, argued: an f16 store rounds with relative error at most 2^-11 (4.9e-4); each layer adds
//! one such rounding of its output to the error it inherits, which the following layers carry and
//! grow by their gain. Over 20-100 layers that is empirically 0.3-3% of the largest logit here, so
//! the logits bound is 5% of the largest reference logit (plus 0.05): generous for the deep
//! networks, still an order of magnitude below a wrong computation (a missed channel or a
//! wrong variant gives errors of the size of the logits themselves). Class maps must agree on at
//! least 99.5% of the pixels of every case (the bar), except the known shortfalls listed
//! in `CASES` with their reason and the floor they are held to (so they cannot get worse unseen).
//!
//! ENet runs mixed: its builder marks the initial block, stage 1 and stage 2's max-pooling as f32
//! (`Graph::f32_nodes`). All f16 it agreed on 98.1-99.1% only: a CPU emulation of f16 storage
//! reproduced that and showed the loss comes from those stages (f16 rounding ties in the pooling
//! windows whose indices the decoder unpools with, and the stage-1 residual stream).

mod common;

use atrous::session::{Precision, Session, SessionOptions};

struct Case {
    model: &'static str,
    dir: &'static str,
    prefix: &'static str,
    nhwc: bool,
    logits: &'static str,
    argmax: &'static str,
    /// A known shortfall: the floor this model's f16 class-map agreement is held to instead of
    /// 99.5%, and its logits bound relative to the largest logit instead of 5%, with the reason.
    known: Option<(f64, f32, &'static str)>,
}

/// The seeded SegNet: random weights leave class margins so small that rounding only its input to
/// f16 (everything else f32, in emulation) already flips 5% of the pixels.
const SEEDED_SEGNET: &str = "random weights: rounding the input alone to f16 flips 5% of pixels (emulation)";
const SEEDED_DEEP: &str = "random weights, 50 layers: large residual activations and tiny class margins";

const CASES: &[Case] = &[
    Case { model: "espnet_camvid", dir: "espnet_camvid", prefix: "", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "espnet_cityscapes", dir: "espnet_cityscapes", prefix: "", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "espnetv2_s2.0_voc384", dir: "espnetv2_s2.0_voc384", prefix: "", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "deeplabv3_mnv2_voc257", dir: "deeplabv3_mnv2_voc257", prefix: "", nhwc: true, logits: "logits", argmax: "argmax", known: None },
    Case { model: "enet_camvid", dir: "enet_camvid", prefix: "camvid_val", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "unet_rbm", dir: "unet_rbm", prefix: "", nhwc: false, logits: "logit", argmax: "mask", known: None },
    Case { model: "seeded/segnet_vgg16bn_w4", dir: "seeded", prefix: "segnet_vgg16bn_w4", nhwc: false, logits: "logits", argmax: "argmax", known: Some((78.0, 0.4, SEEDED_SEGNET)) },
    Case { model: "seeded/fcn8s_vgg16_w8", dir: "seeded", prefix: "fcn8s_vgg16_w8", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "torchvision/deeplabv3_mobilenet_v3_large", dir: "torchvision", prefix: "deeplabv3_mobilenet_v3_large_", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "torchvision/lraspp_mobilenet_v3_large", dir: "torchvision", prefix: "lraspp_mobilenet_v3_large_", nhwc: false, logits: "logits", argmax: "argmax", known: None },
    Case { model: "torchvision/deeplabv3_resnet50", dir: "torchvision", prefix: "deeplabv3_resnet50_", nhwc: false, logits: "logits", argmax: "argmax", known: Some((88.0, 0.1, SEEDED_DEEP)) },
];

/// (class-map agreement, logits max|err|) of one run.
fn run(gpu: &atrous::gpu::Gpu, m: &atrous::models::Model, input: &[f32], (h, w): (usize, usize), precision: Precision, (ref_logits, ref_map): (&[f32], &[f32])) -> (usize, f32) {
    let g = m.graph(h, w).unwrap();
    let mut s = Session::with_options(gpu, &g, SessionOptions { normalize: None, precision, ..Default::default() }).unwrap();
    let (map, logits) = s.run_tensor_logits(input).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
    let agree = map.data.iter().zip(ref_map).filter(|(a, b)| **a as f32 == **b).count();
    let err = logits.iter().zip(ref_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    (agree, err)
}

#[test]
fn every_model_in_f16_matches_its_reference() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu_f16() else { return };
    let mut worst = (100.0f64, String::new());
    let mut worst_c = (100.0f64, String::new());
    eprintln!("| model | case | size | f16 agreement | f16 logits max\\|err\\| | f16-compute agreement | f16-compute logits max\\|err\\| | f32 agreement | f32 logits max\\|err\\| | max\\|logit\\| |");
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    let mut failures = vec![];
    for c in CASES {
        let m = atrous::models::Model::load(shared.join(format!("models/{}.safetensors", c.model))).unwrap();
        for case in common::reference_cases(&shared, c.dir, c.prefix) {
            if case.to_string_lossy().contains("full512") {
                continue;
            }
            let t = common::read_tensors(&case);
            let (ishape, input) = &t["input"];
            let (h, w, input) = if c.nhwc { (ishape[1], ishape[2], common::nhwc_to_nchw(input, ishape[1], ishape[2], ishape[3])) } else { (ishape[2], ishape[3], input.clone()) };
            let (lshape, ref_logits) = &t[c.logits];
            let ref_logits = if c.nhwc { common::nhwc_to_nchw(ref_logits, lshape[1], lshape[2], lshape[3]) } else { ref_logits.clone() };
            let ref_map = &t[c.argmax].1;
            let (a16, e16) = run(&gpu, &m, &input, (h, w), Precision::F16, (&ref_logits, ref_map));
            let (ac, ec) = run(&gpu, &m, &input, (h, w), Precision::F16Compute, (&ref_logits, ref_map));
            let (a32, e32) = run(&gpu, &m, &input, (h, w), Precision::F32, (&ref_logits, ref_map));
            let max_logit = ref_logits.iter().fold(0f32, |a, v| a.max(v.abs()));
            let n = (h * w) as f64;
            let name = case.file_stem().unwrap().to_string_lossy().into_owned();
            eprintln!("| {} | {name} | {w}x{h} | {:.3}% | {e16:.3e} | {:.3}% | {ec:.3e} | {:.3}% | {e32:.3e} | {max_logit:.2} |", c.model, 100.0 * a16 as f64 / n, 100.0 * ac as f64 / n, 100.0 * a32 as f64 / n);
            if (100.0 * a16 as f64 / n) < worst.0 {
                worst = (100.0 * a16 as f64 / n, format!("{} {name}", c.model));
            }
            if (100.0 * ac as f64 / n) < worst_c.0 {
                worst_c = (100.0 * ac as f64 / n, format!("{} {name}", c.model));
            }
            let (floor, rel, why) = c.known.unwrap_or((99.5, 0.05, ""));
            let compute_bars = if c.known.is_some() { (floor - 20.0, 4.0 * rel) } else { (99.0, rel) };
            for (what, a, e, (floor, rel)) in [("f16", a16, e16, (floor, rel)), ("f16-compute", ac, ec, compute_bars)] {
                if 100.0 * (a as f64) < floor * n {
                    failures.push(format!("{} {name}: {what} agreement {a}/{n} below {floor}%", c.model));
                }
                if e > 0.05 + rel * max_logit {
                    failures.push(format!("{} {name}: {what} logits error {e} > 0.05 + {rel} x {max_logit}", c.model));
                }
            }
            if !why.is_empty() {
                eprintln!("|   | known shortfall: {why} | | | | | | | | |");
            }
        }
    }
    eprintln!("worst f16 agreement: {:.3}% ({}); with f16 arithmetic: {:.3}% ({})", worst.0, worst.1, worst_c.0, worst_c.1);
    assert!(failures.is_empty(), "{failures:#?}");
}
