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
