//! Pipelined runs (upload of image n+1 and readback of image n overlapped with compute) give the
//! same class maps, in order, as one-at-a-time runs, and pass errors through without stopping.

mod common;

use atrous::models::Model;
use atrous::session::Session;

#[test]
fn pipelined_runs_equal_sequential_runs() {
    let Some(shared) = common::shared() else { return };
    let Some(gpu) = common::gpu() else { return };
    let m = Model::load(shared.join("models/espnet_camvid.safetensors")).unwrap();
    let (h, w) = (96, 128);
    let mut s = Session::new(&gpu, &m.graph(h, w).unwrap(), Some(m.info.normalize)).unwrap();
    let names = ["0016E5_07959.png", "0016E5_07961.png", "0016E5_07963.png", "0016E5_07965.png", "0016E5_07967.png"];
    let imgs: Vec<Vec<u8>> = names.iter().map(|n| atrous::image_io::load_rgb(shared.join("data/camvid/val/images").join(n)).unwrap().resize(h, w).data).collect();
    let sequential: Vec<Vec<u8>> = imgs.iter().map(|px| s.run_rgb(px).unwrap().data).collect();
    // distinct images give distinct maps, so a mix-up would show
    assert_ne!(sequential[0], sequential[4]);
    let mut inputs: Vec<atrous::Result<Vec<u8>>> = imgs.iter().cloned().map(Ok).collect();
    inputs.insert(2, Err(atrous::Error::Input("a bad file".into())));
    inputs.insert(4, Ok(vec![0u8; 10]));
    let mut got: Vec<(usize, Result<Vec<u8>, String>)> = vec![];
    s.run_rgb_pipelined(inputs, |i, r| got.push((i, r.map(|m| m.data).map_err(|e| e.to_string())))).unwrap();
    assert_eq!(got.len(), 7);
    let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 6], "results come back in order");
    assert!(got[2].1.is_err() && got[4].1.is_err());
    let maps: Vec<&Vec<u8>> = got.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    assert_eq!(maps.len(), 5);
    for (a, b) in maps.iter().zip(&sequential) {
        assert_eq!(*a, b);
    }
}
