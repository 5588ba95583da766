//! PyTorch checkpoints (legacy and zip) on arbitrary bytes: tensors or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = atrous::convert::pytorch::read_checkpoint(data, "fuzz.pth") {
        for t in tensors {
            // never more elements than the file has bytes
            assert!(t.data.len() <= data.len());
            assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
    }
});
