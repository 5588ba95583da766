//! A safetensors file through the loader, builder detection and graph building (CPU only): any
//! input is a model or a typed error, never a panic, abort or unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(w) = atrous::weights::Weights::from_bytes(data.to_vec(), "fuzz.safetensors") else { return };
    let Ok(model) = atrous::models::Model::from_weights(w) else { return };
    // the model's own run size rule on a small image, then a graph at that size
    let (h, w) = model.info.run_size(48, 64);
    if h * w <= 1 << 20 {
        let _ = model.graph(h, w);
    }
});
