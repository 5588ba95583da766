//! Reading images and writing class maps as palette PNGs.

use std::path::Path;

use crate::error::{Error, Result};
use crate::session::ClassMap;

/// An 8-bit RGB image, row-major.
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

/// Decodes any image file the `image` crate reads (PNG, JPEG) into RGB8. A missing, unreadable or
/// corrupt file is an [`Error::Image`] naming it.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let img_err = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    let reader = image::ImageReader::open(path).map_err(|e| img_err(e.to_string()))?;
    decode_rgb(reader.into_inner(), path)
}

/// [`load_rgb`] for an image already in memory; `name` names it in errors.
pub fn load_rgb_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<RgbImage> {
    decode_rgb(std::io::Cursor::new(bytes), name.as_ref())
}

/// The decoder's default limits stay on (at most 512 MiB allocated), so a decompression bomb is an
/// error, not an abort.
fn decode_rgb<R: std::io::BufRead + std::io::Seek>(source: R, path: &Path) -> Result<RgbImage> {
    let img_err = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    let reader = image::ImageReader::new(source).with_guessed_format().map_err(|e| img_err(e.to_string()))?;
    let img = reader.decode().map_err(|e| img_err(e.to_string()))?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(img_err("image has no pixels".into()));
    }
    Ok(RgbImage { h, w, data: img.into_raw() })
}

impl RgbImage {
    /// Bilinear resize (the `image` crate's triangle filter).
    pub fn resize(&self, h: usize, w: usize) -> RgbImage {
        if (h, w) == (self.h, self.w) {
            return self.clone();
        }
        let src = image::RgbImage::from_raw(self.w as u32, self.h as u32, self.data.clone()).expect("buffer matches size");
        let out = image::imageops::resize(&src, w as u32, h as u32, image::imageops::FilterType::Triangle);
        RgbImage { h, w, data: out.into_raw() }
    }
}

impl ClassMap {
    /// Nearest-neighbour resize (pixel centres), to map a class map back to the image size.
    pub fn resize_nearest(&self, h: usize, w: usize) -> ClassMap {
        if (h, w) == (self.h, self.w) {
            return self.clone();
        }
        let mut data = Vec::with_capacity(h * w);
        for y in 0..h {
            let sy = ((y * 2 + 1) * self.h / (2 * h)).min(self.h - 1);
            for x in 0..w {
                let sx = ((x * 2 + 1) * self.w / (2 * w)).min(self.w - 1);
                data.push(self.data[sy * self.w + sx]);
            }
        }
        ClassMap { h, w, data }
    }

    /// Pixels per class.
    pub fn histogram(&self, classes: usize) -> Vec<u64> {
        let mut h = vec![0u64; classes.max(256)];
        for &c in &self.data {
            h[c as usize] += 1;
        }
        h.truncate(classes);
        h
    }
}

/// Class colours blended over the image: `round((1 - alpha) * pixel + alpha * palette[class])`
/// per channel (what the GPU overlay kernel computes). `map` must have the image's size.
pub fn overlay(img: &RgbImage, map: &ClassMap, palette: &[[u8; 3]], alpha: f32) -> RgbImage {
    assert_eq!((img.h, img.w), (map.h, map.w), "class map and image sizes differ");
    let a = alpha.clamp(0.0, 1.0);
    let data = img
        .data
        .chunks_exact(3)
        .zip(&map.data)
        .flat_map(|(px, &c)| {
            let col = palette.get(c as usize).copied().unwrap_or([0, 0, 0]);
            [0, 1, 2].map(|k| ((1.0 - a) * px[k] as f32 + a * col[k] as f32).round().clamp(0.0, 255.0) as u8)
        })
        .collect();
    RgbImage { h: img.h, w: img.w, data }
}

/// Writes an RGB image as PNG.
pub fn save_rgb_png(path: impl AsRef<Path>, img: &RgbImage) -> Result<()> {
    let path = path.as_ref();
    image::RgbImage::from_raw(img.w as u32, img.h as u32, img.data.clone())
        .expect("buffer matches size")
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Image { path: path.to_path_buf(), reason: e.to_string() })
}

/// Writes a class map as an 8-bit indexed PNG whose palette is `palette` (class i -> colour i), so
/// viewers show colours and tools reading raw indices get class ids.
pub fn save_palette_png(path: impl AsRef<Path>, map: &ClassMap, palette: &[[u8; 3]]) -> Result<()> {
    let path = path.as_ref();
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let mut enc = png::Encoder::new(&mut out, map.w as u32, map.h as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    let mut plte: Vec<u8> = palette.iter().take(256).flatten().copied().collect();
    if plte.is_empty() {
        plte = vec![0, 0, 0];
    }
    enc.set_palette(plte);
    let werr = |e: png::EncodingError| Error::Image { path: path.to_path_buf(), reason: e.to_string() };
    let mut wr = enc.write_header().map_err(werr)?;
    wr.write_image_data(&map.data).map_err(werr)?;
    wr.finish().map_err(werr)?;
    // flush and sync explicitly: a full disk must be an error, not a silently truncated file
    use std::io::Write;
    out.flush().map_err(|e| Error::io(path, e))?;
    out.get_ref().sync_all().map_err(|e| Error::io(path, e))
}

/// The most bytes a decoded label mask may take (the `image` crate's default allocation limit).
const MAX_DECODED_BYTES: usize = 512 << 20;

/// Reads an 8-bit PNG of raw indices without palette expansion (class maps and label masks).
pub fn load_index_png(path: impl AsRef<Path>) -> Result<ClassMap> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    decode_index_png(std::io::BufReader::new(file), path)
}

/// [`load_index_png`] for a PNG already in memory; `name` names it in errors.
pub fn load_index_png_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<ClassMap> {
    decode_index_png(std::io::Cursor::new(bytes), name.as_ref())
}

fn decode_index_png<R: std::io::BufRead + std::io::Seek>(source: R, path: &Path) -> Result<ClassMap> {
    let img_err = |reason: String| Error::Image { path: path.to_path_buf(), reason };
    let mut dec = png::Decoder::new(source);
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| img_err(e.to_string()))?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    if info.bit_depth != png::BitDepth::Eight || !matches!(info.color_type, png::ColorType::Grayscale | png::ColorType::Indexed) {
        return Err(img_err(format!("expected an 8-bit grayscale or indexed PNG, got {:?} {:?}", info.color_type, info.bit_depth)));
    }
    // the header's size is checked before anything is allocated (the png decoder's own limits do
    // not cover the output buffer): a label mask is at most MAX_SIDE a side and 512 MiB decoded
    let size = reader.output_buffer_size().filter(|&n| n <= MAX_DECODED_BYTES && w <= crate::models::MAX_SIDE && h <= crate::models::MAX_SIDE);
    let size = size.ok_or_else(|| img_err(format!("{w}x{h} is larger than a label mask may be ({} a side, {} MiB decoded)", crate::models::MAX_SIDE, MAX_DECODED_BYTES >> 20)))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| img_err(e.to_string()))?;
    let stride = frame.line_size;
    let data = (0..h).flat_map(|y| buf[y * stride..y * stride + w].to_vec()).collect();
    Ok(ClassMap { h, w, data })
}

#[cfg(test)]
mod hostile {
    use super::*;

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    /// An 8-bit grayscale PNG header claiming `w` x `h`, then a few bytes of image data.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = b"IHDR".to_vec();
        chunk.extend(w.to_be_bytes());
        chunk.extend(h.to_be_bytes());
        chunk.extend([8, 0, 0, 0, 0]);
        p.extend(13u32.to_be_bytes());
        p.extend(&chunk);
        p.extend(crc32(&chunk).to_be_bytes());
        let idat = b"IDATx\xda\x01\x00\x00\xff\xff";
        p.extend(7u32.to_be_bytes());
        p.extend(idat);
        p.extend(crc32(idat).to_be_bytes());
        p
    }

    /// Found by the `image` fuzz target: a label mask's header of 257 x 33 million pixels was
    /// allocated (and zeroed) before decoding. Now a typed error, for photos and masks alike.
    #[test]
    fn huge_headers_are_refused_before_allocating() {
        for (w, h) in [(257, 0x01ff_0501), (1 << 20, 1 << 20), (u32::MAX >> 1, 3), (65537, 1)] {
            let p = png_header(w, h);
            let e = load_index_png_bytes(&p, "huge.png").err().unwrap_or_else(|| panic!("{w}x{h} decoded"));
            assert!(matches!(e, Error::Image { .. }), "{e}");
            let e = load_rgb_bytes(&p, "huge.png").err().unwrap_or_else(|| panic!("{w}x{h} decoded"));
            assert!(matches!(e, Error::Image { .. }), "{e}");
        }
        // the header builder itself is sound: a 3x2 image with truncated data is a decode error
        // past the size check, not a size error
        let e = load_index_png_bytes(&png_header(3, 2), "small.png").err().unwrap();
        assert!(!e.to_string().contains("larger than"), "{e}");
    }
}
