//! Every operator in `atrous::ops::REGISTRY` against its own CPU reference, on the test problems
//! its module defines (seeded random shapes; outputs pre-filled with NaN, so an unwritten value
//! or a write outside the output view shows). The same problems, at benchmark sizes, drive the
//! `registry` group of `cargo bench --bench ops`. Each module's problems state their tolerance:
//! float32 dot products within `K^2 * 2^-24` for inputs and weights in [-1, 1], copies exact.

mod common;

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
    let runner = atrous::session::OpRunner::new(&gpu);
    let mut total = 0;
    let mut worst = (0.0f32, String::new());
    for &(kind, make) in atrous::ops::REGISTRY {
        if kind == "cast" {
            // already between f32 and f16 in the test above
            continue;
        }
        for seed in [1u64, 0x9e37_79b9] {
            for mut p in make(seed, false) {
                p.graph = atrous::passes::to_half(&p.graph);
                for (t, d) in p.data.iter_mut() {
                    if p.graph.tensors[*t].dtype == atrous::graph::DType::F16 {
                        d.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
                    }
                }
                let got = runner.run(&p.graph, p.node, &p.data).unwrap_or_else(|e| panic!("{kind} {} (f16): {e}", p.name));
                let want = p.expected();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    if w.is_nan() {
                        assert!(g.is_nan(), "{} (f16): wrote {g} at {i}, outside the output view", p.name);
                    } else {
                        let tol = p.abs_tol + p.rel_tol * w.abs() + w.abs() / 2048.0 + 6e-8;
                        assert!((g - w).abs() <= tol, "{} (f16): element {i}: gpu {g} vs reference {w} (tol {tol})", p.name);
                        if w.abs() > 1e-3 && (g - w).abs() / w.abs() > worst.0 {
                            worst = ((g - w).abs() / w.abs(), p.name.clone());
                        }
                    }
                }
                total += 1;
            }
        }
    }
    eprintln!("{total} problems in f16; worst relative error {:.2e} ({})", worst.0, worst.1);
}
