//! Every operator in `atrous::ops::REGISTRY` against its own CPU reference, on the test problems
//! its module defines (seeded random shapes; outputs pre-filled with NaN, so an unwritten value
//! or a write outside the output view shows). The same problems, at benchmark sizes, drive the
//! `registry` group of `cargo bench --bench ops`. Each module's problems state their tolerance:
//! float32 dot products within `K^2 * 2^-24` for inputs and weights in [-1, 1], copies exact.

mod common;

/// A problem with every float tensor stored as f16 (`passes::to_half`) and its input data rounded
/// to f16 first, so the reference sees what the kernel sees.
fn to_f16(p: &mut atrous::ops::Problem) {
    p.graph = atrous::passes::to_half(&p.graph);
    for (t, d) in p.data.iter_mut() {
        if p.graph.tensors[*t].dtype == atrous::graph::DType::F16 {
            d.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
    }
}

/// The K of a dot-product problem, from its f32 tolerance `1e-5 + K^2 2^-23` (0 for copies and
/// exact kernels).
fn dot_terms(p: &atrous::ops::Problem) -> f32 {
    ((p.abs_tol - 1e-5).max(0.0) * 8_388_608.0).sqrt()
}

#[test]
fn every_registered_operator_matches_its_reference() {
    let Some(gpu) = common::gpu() else { return };
    let runner = atrous::session::OpRunner::new(&gpu);
    let mut total = 0;
    for &(kind, make) in atrous::ops::REGISTRY {
        if kind == "cast" && !gpu.has_f16() {
            // f32 <-> f16 needs SHADER_F16; f16 sessions (the only users of casts) require it too
            assert!(!common::ci(), "CI=true and the adapter has no SHADER_F16");
            continue;
        }
        let mut n = 0;
        for seed in [1u64, 0x9e37_79b9, 0xdead_beef] {
            for p in make(seed, false) {
                assert_eq!(p.graph.nodes[p.node].op.kind(), kind, "{}", p.name);
                let got = runner.run(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {}: {e}", p.name));
                let want = p.expected();
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    if w.is_nan() {
                        assert!(g.is_nan(), "{}: wrote {g} at {i}, outside the output view", p.name);
                    } else {
                        let tol = p.abs_tol + p.rel_tol * w.abs();
                        assert!((g - w).abs() <= tol, "{}: element {i}: gpu {g} vs reference {w} (tol {tol})", p.name);
                    }
                }
                n += 1;
            }
        }
        assert!(n >= 3, "{kind}: only {n} problems");
        total += n;
    }
    eprintln!("{total} problems over {} operators", atrous::ops::REGISTRY.len());
}

/// The same problems with every float tensor stored as f16 (`passes::to_half`; the kernels' f16
/// variants load and store f16 and compute in f32). The inputs are rounded to f16 first, so the
/// reference sees what the kernel sees; the one extra error is the final store, so the tolerance
/// is the f32 one plus half an f16 ulp of the result (`2^-11 |w|`) plus the f16 subnormal step
/// (`2^-24`). Integer outputs (indices, class maps) stay exact.
#[test]
fn every_registered_operator_matches_its_reference_in_f16() {
    let Some(gpu) = common::gpu_f16() else { return };
    let (total, worst) = check_in_f16(&atrous::session::OpRunner::new(&gpu), "f16", 0.0);
    eprintln!("{total} problems in f16; worst error {:.2} of its tolerance ({})", worst.0, worst.1);
}

/// The same f16 problems with the convolutions' multiply-adds in f16 (`Arith::F16`: weights
/// rounded to f16 at use, f16 partial sums of 8 products). A dot product of K terms in f16 errs by
/// at most `K u sum|x w|` (u = 2^-11), i.e. `K^2 u` for inputs and weights in [-1, 1] (the f32
/// argument of the problems with u = 2^-24; their tolerance `1e-5 + K^2 2^-23` gives K back);
/// rounding the weights adds `K u`. That worst case assumes every rounding errs the same way;
/// rounding errors of a running sum are independent and of either sign, so they grow as
/// `sqrt(K)` steps of at most `u |partial sum|`, and partial sums of these problems stay below
/// `sqrt(K)`: the test allows `4 K u` (four times that typical bound) on top of the f16-storage
/// tolerance — tight enough that a tap read from the wrong place (an error of order 1) fails.
/// Operators without an f16-arithmetic variant compute in f32 here and meet the storage
/// tolerance anyway.
#[test]
fn every_registered_operator_matches_its_reference_with_f16_arithmetic() {
    let Some(gpu) = common::gpu_f16() else { return };
    let runner = atrous::session::OpRunner::with_arith(&gpu, atrous::kernels::Arith::F16);
    let (total, worst) = check_in_f16(&runner, "f16 arithmetic", 4.0);
    eprintln!("{total} problems with f16 arithmetic; worst error {:.2} of its tolerance ({})", worst.0, worst.1);
}

/// Every registered operator's problems (two seeds) in f16 on `runner`, with the f16-storage
/// tolerance plus `k_units * K * 2^-11` for a dot product of K terms. Returns the number of
/// problems and the worst error as a fraction of its tolerance.
fn check_in_f16(runner: &atrous::session::OpRunner, what: &str, k_units: f32) -> (usize, (f32, String)) {
    let (mut total, mut worst) = (0, (0.0f32, String::new()));
    for &(kind, make) in atrous::ops::REGISTRY {
        if kind == "cast" {
            // already between f32 and f16 in the f32 test
            continue;
        }
        for seed in [1u64, 0x9e37_79b9] {
            for mut p in make(seed, false) {
                to_f16(&mut p);
                let got = runner.run(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {} ({what}): {e}", p.name));
                let want = p.expected();
                let extra = k_units * dot_terms(&p) / 2048.0;
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    if w.is_nan() {
                        assert!(g.is_nan(), "{} ({what}): wrote {g} at {i}, outside the output view", p.name);
                    } else {
                        let tol = p.abs_tol + p.rel_tol * w.abs() + w.abs() / 2048.0 + 6e-8 + extra;
                        assert!((g - w).abs() <= tol, "{} ({what}): element {i}: gpu {g} vs reference {w} (tol {tol})", p.name);
                        if (g - w).abs() / tol > worst.0 {
                            worst = ((g - w).abs() / tol, p.name.clone());
                        }
                    }
                }
                total += 1;
            }
        }
    }
    (total, worst)
}

/// The GPU kernel variants on this adapter: the convolutions with their input staged through
/// workgroup memory (`conv2d_tiled`, chosen on GPUs where it pays), in f32 with the problems' own
/// tolerance, and in f16 with f16 arithmetic with the tolerance argued above. Problems where the
/// tile does not pay run the plain kernel; the test checks that the tiled one ran on several.
#[test]
fn convolutions_with_workgroup_tiles_match_their_reference() {
    let Some(gpu) = common::gpu_f16() else { return };
    use atrous::kernels::Arith;
    let (mut tiled, mut total) = (0, 0);
    for (half, arith) in [(false, Arith::F32), (true, Arith::F16)] {
        let runner = atrous::session::OpRunner::with_variants(&gpu, arith, true);
        for &(kind, make) in atrous::ops::REGISTRY.iter().filter(|(k, _)| k.starts_with("conv")) {
            for seed in [1u64, 0x9e37_79b9, 0xdead_beef] {
                for mut p in make(seed, false) {
                    if half {
                        to_f16(&mut p);
                    }
                    let prepared = runner.prepare(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {}: {e}", p.name));
                    tiled += usize::from(prepared.dispatch.entry == "conv2d_tiled");
                    let got = runner.run(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {}: {e}", p.name));
                    let want = p.expected();
                    let k = dot_terms(&p);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        if w.is_nan() {
                            assert!(g.is_nan(), "{} (tiles, f16 {half}): wrote {g} at {i}, outside the output view", p.name);
                            continue;
                        }
                        let mut tol = p.abs_tol + p.rel_tol * w.abs();
                        if half {
                            tol += w.abs() / 2048.0 + 6e-8 + 4.0 * k / 2048.0;
                        }
                        assert!((g - w).abs() <= tol, "{} (tiles, f16 {half}): element {i}: gpu {g} vs reference {w} (tol {tol})", p.name);
                    }
                    total += 1;
                }
            }
        }
    }
    eprintln!("{total} convolution problems with tiles allowed, {tiled} ran conv2d_tiled");
    assert!(tiled >= 10, "only {tiled} problems ran the tiled kernel");
}

/// Kernels with a subgroup variant (global average pooling: `mean_subgroup.wgsl`), which the
/// other tests run where the adapter has subgroups (lavapipe does), run here in their plain
/// variant (`mean.wgsl`, a tree in workgroup memory) against the same references.
#[test]
fn kernels_without_subgroups_match_their_reference() {
    let Some(gpu) = common::gpu() else { return };
    let with = atrous::session::OpRunner::new(&gpu);
    let without = atrous::session::OpRunner::new(&gpu).without_subgroups();
    let (mut plain, mut subgroup) = (0, 0);
    for &(kind, make) in atrous::ops::REGISTRY.iter().filter(|(k, _)| *k == "adaptive_avg_pool2d") {
        for seed in [1u64, 0x9e37_79b9, 0xdead_beef] {
            for p in make(seed, false) {
                for runner in [&with, &without] {
                    let entry = runner.prepare(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {}: {e}", p.name)).dispatch.entry;
                    plain += usize::from(entry == "plane_mean");
                    subgroup += usize::from(entry == "plane_mean_subgroup");
                    let got = runner.run(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {}: {e}", p.name));
                    for (i, (g, w)) in got.iter().zip(&p.expected()).enumerate() {
                        let tol = p.abs_tol + p.rel_tol * w.abs();
                        assert!(w.is_nan() && g.is_nan() || (g - w).abs() <= tol, "{} ({entry}): element {i}: gpu {g} vs reference {w} (tol {tol})", p.name);
                    }
                }
            }
        }
    }
    eprintln!("global pooling: {plain} problems ran plane_mean, {subgroup} plane_mean_subgroup");
    assert!(plain >= 6, "only {plain} problems ran the plain variant");
    if gpu.has_subgroups() {
        assert!(subgroup >= 6, "only {subgroup} problems ran the subgroup variant");
    }
}
