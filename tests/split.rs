//! Tensors larger than one storage binding: with a forced 1 MiB (or smaller) binding limit, every
//! model's tensors are cut into channel chunks and every operator into pieces; the results must
//! equal the unsplit run within the convolution tolerance (split convolutions sum their input
//! channels in pieces, so the order of additions changes).

mod common;

use atrous::graph::Graph;
use atrous::models::Model;
use atrous::plan::{Plan, PlanLimits};
use atrous::session::Session;

/// The graph with every node replaced by its pieces under `limits`, for the CPU reference.
fn split_graph(g: &Graph, limits: PlanLimits) -> (Graph, usize) {
    let plan = Plan::new(g, limits).unwrap();
    let mut s = g.clone();
    s.nodes = g.nodes.iter().flat_map(|n| atrous::split::split_node(n, &|t| plan.cuts(t)).unwrap()).collect();
    let chunked = plan.placements.iter().filter(|p| p.len() > 1).count();
    (s, chunked)
}

#[test]
fn split_operators_compute_the_same_on_the_cpu_reference() {
    let Some(shared) = common::shared() else { return };
    for (file, h, w, binding) in
        [("espnet_camvid", 64, 64, 40 * 1024), ("espnetv2_s2.0_voc384", 64, 64, 40 * 1024), ("torchvision/lraspp_mobilenet_v3_large", 33, 47, 8 * 1024), ("torchvision/deeplabv3_resnet50", 33, 47, 16 * 1024)]
    {
        let m = Model::load(shared.join(format!("models/{file}.safetensors"))).unwrap();
        let g = m.graph(h, w).unwrap();
        let limits = PlanLimits { align: 256, max_arena: 1 << 40, max_binding: binding, budget: None };
        let (sg, chunked) = split_graph(&g, limits);
        assert!(chunked > 3, "{file}: only {chunked} tensors split");
        assert!(sg.nodes.len() > g.nodes.len());
        let mut rng = common::Rng(3);
        let x = rng.vec(3 * h * w);
        let a = atrous::reference::run_graph(&g, &x);
        let b = atrous::reference::run_graph(&sg, &x);
        let l = g.logits.unwrap();
        let max_logit = a[l].iter().map(|v| v.abs()).fold(0f32, f32::max);
        let diff = a[l].iter().zip(&b[l]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        eprintln!("{file} {h}x{w}: {} tensors split, {} -> {} nodes, max|diff| {diff:.2e} (max|logit| {max_logit:.2})", chunked, g.nodes.len(), sg.nodes.len());
        assert!(diff <= 1e-5 * (1.0 + max_logit), "{file}: {diff}");
    }
}

#[test]
fn split_sessions_match_unsplit_sessions_on_the_gpu() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let align = gpu.limits().min_storage_buffer_offset_alignment as u64;
    for (file, h, w, binding) in [
        ("espnet_camvid", 136, 136, 96 * 1024),
        ("espnetv2_s2.0_voc384", 96, 96, 64 * 1024),
        ("deeplabv3_mnv2_voc257", 257, 257, 1 << 20),
        ("torchvision/deeplabv3_mobilenet_v3_large", 97, 131, 256 * 1024),
        ("torchvision/lraspp_mobilenet_v3_large", 97, 131, 64 * 1024),
    ] {
        let m = Model::load(shared.join(format!("models/{file}.safetensors"))).unwrap();
        let g = m.graph(h, w).unwrap();
        let mut rng = common::Rng(11);
        let rgb: Vec<u8> = (0..h * w * 3).map(|_| rng.below(256) as u8).collect();
        let mut whole = Session::new(&gpu, &g, Some(m.info.normalize)).unwrap();
        let mut split = Session::with_limits(&gpu, &g, Some(m.info.normalize), PlanLimits { align, max_arena: 1 << 30, max_binding: binding, budget: None }).unwrap();
        split.fill_arenas(f32::NAN);
        let chunked = split.plan.placements.iter().filter(|p| p.len() > 1).count();
        let (m1, l1) = whole.run_rgb_logits(&rgb).unwrap();
        let (m2, l2) = split.run_rgb_logits(&rgb).unwrap();
        let max_logit = l1.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let diff = l1.iter().zip(&l2).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        let agree = m1.data.iter().zip(&m2.data).filter(|(a, b)| a == b).count();
        eprintln!("{file} {h}x{w}, binding {binding} B: {chunked} tensors split, {} -> {} dispatches, logits max|diff| {diff:.2e}, class maps {agree}/{}", whole.dispatches.len(), split.dispatches.len(), m1.data.len());
        assert!(chunked > 0, "{file}: nothing was split");
        assert!(l2.iter().all(|v| v.is_finite()), "{file}: unwritten values");
        assert!(diff <= 1e-4 + 1e-5 * max_logit, "{file}: {diff}");
        assert!(agree as f64 >= 0.999 * m1.data.len() as f64, "{file}: {agree}");
    }
}
