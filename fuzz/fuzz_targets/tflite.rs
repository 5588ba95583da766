//! The TFLite flatbuffer reader on arbitrary bytes: constants or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(constants) = atrous::convert::tflite::read_constants(data, "fuzz.tflite") {
        for c in constants {
            let (shape, n) = match &c {
                atrous::convert::tflite::Constant::F32 { shape, data, .. } => (shape, data.len()),
                atrous::convert::tflite::Constant::I32 { shape, data, .. } => (shape, data.len()),
            };
            assert!(4 * n <= data.len());
            assert_eq!(n, shape.iter().product::<usize>());
        }
    }
});
