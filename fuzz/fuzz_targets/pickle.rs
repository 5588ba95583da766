//! The pickle reader on arbitrary bytes: a value tree or a typed error, in bounded time, memory
//! and stack; the value is walked and described as callers do.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((v, end)) = atrous::convert::pickle::read(data, 0, "fuzz.pkl") {
        assert!(end <= data.len());
        let _ = v.brief();
        let _ = v.as_tuple().map(|t| t.len());
    }
});
