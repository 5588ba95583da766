//! The image loaders (photos and label masks) on arbitrary bytes: pixels or a typed error,
//! decompression bombs included.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = atrous::image_io::load_rgb_bytes(data, "fuzz.img") {
        assert_eq!(img.data.len(), 3 * img.h * img.w);
    }
    if let Ok(map) = atrous::image_io::load_index_png_bytes(data, "fuzz.png") {
        assert_eq!(map.data.len(), map.h * map.w);
    }
});
