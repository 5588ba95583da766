//! Criterion benchmarks: the per-operator cases of the tests at ESPNet's real sizes (480x360
//! input), and the whole ESPNet CamVid model at 480x360. Each operator sample is 10 dispatches in
//! one submission; GFLOP/s follow from the printed FLOP counts. Without a GPU adapter or without
//! `../shared` the affected benchmarks are skipped with a message.

use std::collections::HashMap;
use std::path::PathBuf;

use atrous::gpu::Gpu;
use atrous::graph::{Act, Graph};
use atrous::session::{OpRunner, Session};
use atrous::shape::{Conv2dGeom, ConvT2dGeom, Pad, Pool2dGeom, PoolKind};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ITERS: usize = 10;

fn data_for(g: &Graph) -> HashMap<usize, Vec<f32>> {
    (0..g.tensors.len()).map(|t| (t, (0..g.tensors[t].numel()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect())).collect()
}

fn conv_case(name: &str, geom: Conv2dGeom) -> (String, Graph) {
    let (oh, ow) = geom.out_hw().unwrap();
    let mut g = Graph::new(geom.in_c, geom.in_h, geom.in_w);
    let y = g.tensor("y", geom.out_c, oh, ow);
    let n = geom.weight_shape().iter().product();
    g.conv2d(name, g.all(g.input), g.all(y), geom, vec![0.01; n], Some(vec![0.0; geom.out_c]), Act::PRelu(vec![0.25; geom.out_c]), None).unwrap();
    (name.to_string(), g)
}

fn cases() -> Vec<(String, Graph)> {
    let mut v = vec![
        conv_case("conv3x3_s2_3to16_480x360", Conv2dGeom::new(3, 360, 480, 16, 3, 2, 1, 1, 1)),
        conv_case("conv3x3_s2_131to25_240x180", Conv2dGeom::new(131, 90, 120, 25, 3, 2, 1, 1, 1)),
        conv_case("conv1x1_128to25_60x45", Conv2dGeom::new(128, 45, 60, 25, 1, 1, 0, 1, 1)),
        conv_case("conv3x3_d16_25to25_60x45", Conv2dGeom::new(25, 45, 60, 25, 3, 1, 16, 16, 1)),
        conv_case("conv3x3_d2_12to12_120x90", Conv2dGeom::new(12, 90, 120, 12, 3, 1, 2, 2, 1)),
        conv_case("conv3x3_31to12_240x180", Conv2dGeom::new(31, 180, 240, 12, 3, 1, 1, 1, 1)),
        conv_case("dwconv3x3_96_120x90", Conv2dGeom::new(96, 90, 120, 96, 3, 1, 1, 1, 96)),
    ];
    let geom = ConvT2dGeom { in_c: 12, in_h: 180, in_w: 240, out_c: 12, k_h: 2, k_w: 2, stride_h: 2, stride_w: 2, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 };
    let mut g = Graph::new(12, 180, 240);
    let y = g.tensor("y", 12, 360, 480);
    g.conv_transpose2d("convT2x2_12_240x180", g.all(g.input), g.all(y), geom, vec![0.01; 12 * 12 * 4], None, Act::None).unwrap();
    v.push(("convT2x2_12_240x180".into(), g));
    let mut g = Graph::new(3, 360, 480);
    let y = g.tensor("y", 3, 180, 240);
    g.pool2d("avgpool3_s2_480x360", g.all(g.input), g.all(y), Pool2dGeom::new(3, 360, 480, 3, 2, 1, false), PoolKind::Avg { count_include_pad: true }).unwrap();
    v.push(("avgpool3_s2_480x360".into(), g));
    let mut g = Graph::new(131, 90, 120);
    let y = g.tensor("y", 131, 90, 120);
    g.affine("bn_prelu_131_120x90", g.all(g.input), None, g.all(y), vec![1.0; 131], vec![0.0; 131], Act::PRelu(vec![0.1; 131])).unwrap();
    v.push(("bn_prelu_131_120x90".into(), g));
    v
}

fn bench_ops(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping operator benchmarks: {e}");
            return;
        }
    };
    eprintln!("device: {}", gpu.describe());
    let runner = OpRunner::new(&gpu);
    let mut group = c.benchmark_group("ops");
    group.sample_size(10);
    for (name, g) in cases() {
        let op = runner.prepare(&g, 0, &data_for(&g)).unwrap();
        let flops = g.nodes[0].op.flops(&g) * ITERS as u64;
        eprintln!("{name}: {} FLOP per dispatch", flops / ITERS as u64);
        group.throughput(Throughput::Elements(flops));
        op.submit(1).unwrap();
        group.bench_function(&name, |b| b.iter(|| op.submit(ITERS).unwrap()));
    }
    group.finish();
    // the test problems of every registered operator, at the sizes they give for benchmarks
    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    for &(kind, make) in atrous::ops::REGISTRY {
        for p in make(1, true) {
            let op = runner.prepare(&p.graph, p.node, &p.data).unwrap();
            let flops = p.graph.nodes[p.node].op.flops(&p.graph) * ITERS as u64;
            group.throughput(Throughput::Elements(flops.max(1)));
            op.submit(1).unwrap();
            group.bench_function(format!("{kind}: {}", p.name), |b| b.iter(|| op.submit(ITERS).unwrap()));
        }
    }
    group.finish();
}

fn bench_model(c: &mut Criterion) {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let Ok(model) = atrous::models::Model::load(shared.join("models/espnet_camvid.safetensors")) else {
        eprintln!("skipping model benchmark: ../shared/models/espnet_camvid.safetensors not readable");
        return;
    };
    let Ok(gpu) = Gpu::new() else { return };
    let img = atrous::image_io::load_rgb(shared.join("data/camvid/val/images/0016E5_07959.png")).unwrap();
    let g = model.graph(img.h, img.w).unwrap();
    let mut s = Session::new(&gpu, &g, Some(model.info.normalize)).unwrap();
    eprintln!("espnet_camvid 480x360: {:.3} GFLOP per image", g.flops() as f64 / 1e9);
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("espnet_camvid_480x360", |b| b.iter(|| s.run_rgb(&img.data).unwrap()));
    group.finish();
}

criterion_group!(benches, bench_ops, bench_model);
criterion_main!(benches);
