//! Input normalisation: how a model wants its pixels, read from the model file's metadata.

use crate::error::{Error, Result};

/// Channel order of the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// `x[c] = ((pixel[order[c]] * pre_scale - mean[c]) / std[c]) * post_scale` with `pixel` in 0..255
/// and `mean`, `std` given in the model's channel order.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    pub order: ChannelOrder,
    pub pre_scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub post_scale: f32,
}

impl Normalize {
    /// Model channel `c` reads image channel `perm()[c]` (0 = R, 1 = G, 2 = B).
    pub fn perm(&self) -> [u32; 3] {
        match self.order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        }
    }

    /// CPU reference: RGB8 pixels (row-major, 3 bytes each) to NCHW `[3, h, w]`, computed exactly as
    /// the GPU kernel does.
    pub fn apply(&self, rgb: &[u8], h: usize, w: usize) -> Vec<f32> {
        let hw = h * w;
        let mut out = vec![0f32; 3 * hw];
        let perm = self.perm();
        for c in 0..3 {
            let inv = 1.0 / self.std[c];
            for i in 0..hw {
                let px = rgb[i * 3 + perm[c] as usize] as f32;
                out[c * hw + i] = ((px * self.pre_scale - self.mean[c]) * inv) * self.post_scale;
            }
        }
        out
    }

    /// No change: raw values in RGB order.
    pub fn identity() -> Self {
        Normalize { order: ChannelOrder::Rgb, pre_scale: 1.0, mean: [0.0; 3], std: [1.0; 3], post_scale: 1.0 }
    }

    /// Reads the `input` metadata entry of the model files in `../shared/models`: a JSON object
    /// with `channel_order`, `mean_<order>` / `std_<order>` arrays and a `formula` that says where
    /// the /255 goes. An `atrous_normalize` entry (this struct as JSON) takes precedence.
    pub fn from_metadata(meta: &std::collections::HashMap<String, String>) -> Result<Self> {
        if let Some(s) = meta.get("atrous_normalize") {
            let n: Normalize = serde_json::from_str(s).map_err(|e| Error::Metadata { key: "atrous_normalize".into(), reason: e.to_string() })?;
            return n.validated("atrous_normalize");
        }
        let raw = meta.get("input").ok_or_else(|| Error::Metadata { key: "input".into(), reason: "missing: the file does not say how to normalise pixels".into() })?;
        let bad = |reason: String| Error::Metadata { key: "input".into(), reason };
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let order = match v.get("channel_order").and_then(|o| o.as_str()) {
            Some("RGB") => ChannelOrder::Rgb,
            Some("BGR") => ChannelOrder::Bgr,
            other => return Err(bad(format!("channel_order {other:?} is not RGB or BGR"))),
        };
        let formula = v.get("formula").and_then(|f| f.as_str()).unwrap_or("").replace(' ', "");
        let triple = |key: &str| -> Result<Option<[f32; 3]>> {
            let (own, other) = match order {
                ChannelOrder::Rgb => (format!("{key}_rgb"), format!("{key}_bgr")),
                ChannelOrder::Bgr => (format!("{key}_bgr"), format!("{key}_rgb")),
            };
            let read = |k: &str| -> Result<Option<[f32; 3]>> {
                match v.get(k) {
                    None => Ok(None),
                    Some(a) => {
                        let a: Vec<f64> = serde_json::from_value(a.clone()).map_err(|e| bad(format!("{k}: {e}")))?;
                        if a.len() != 3 {
                            return Err(bad(format!("{k} has {} values", a.len())));
                        }
                        Ok(Some([a[0] as f32, a[1] as f32, a[2] as f32]))
                    }
                }
            };
            Ok(match read(&own)? {
                Some(t) => Some(t),
                None => read(&other)?.map(|[a, b, c]| [c, b, a]),
            })
        };
        let (mean, std) = match (triple("mean")?, triple("std")?) {
            (Some(m), Some(s)) => (m, s),
            // raw pixel values (ENet): "x[c] = pixel[c]"
            _ if formula.split('(').next().is_some_and(|f| f == "x[c]=pixel[c]" || f == "x=pixel") => ([0.0; 3], [1.0; 3]),
            _ => {
                // "(pixel - A) / B" with scalar constants (the TFLite DeepLab file).
                let f = formula.split('=').nth(1).unwrap_or("");
                let rest = f.strip_prefix("(pixel-").ok_or_else(|| bad(format!("no mean/std arrays and formula `{formula}` is not `(pixel - a) / b`")))?;
                let (a, rest) = rest.split_once(")/").ok_or_else(|| bad(format!("cannot read formula `{formula}`")))?;
                let b: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                let a: f32 = a.parse().map_err(|_| bad(format!("mean `{a}` in formula")))?;
                let b: f32 = b.parse().map_err(|_| bad(format!("std `{b}` in formula")))?;
                ([a; 3], [b; 3])
            }
        };

        // Where does the /255 go? "pixel[c]/255 - mean" (before) or "... / std[c]) / 255" (after).
        let pre = formula.contains("pixel[c]/255") || formula.contains("pixel/255");
        let post = formula.contains(")/255");
        let (pre_scale, post_scale) = match (pre, post) {
            (true, false) => (1.0 / 255.0, 1.0),
            (false, true) => (1.0, 1.0 / 255.0),
            (false, false) => (1.0, 1.0),
            (true, true) => return Err(bad(format!("formula `{formula}` divides by 255 twice"))),
        };
        Normalize { order, pre_scale, mean, std, post_scale }.validated("input")
    }

    /// Every constant finite, every std and scale non-zero: a normalisation that cannot turn
    /// pixels into NaN, infinities or all-equal values is the only kind a model may declare.
    fn validated(self, key: &str) -> Result<Self> {
        let bad = |what: String| Err(Error::Metadata { key: key.into(), reason: what });
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return bad(format!("std {:?} has a zero or non-finite value", self.std));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad(format!("mean {:?} has a non-finite value", self.mean));
        }
        if [self.pre_scale, self.post_scale].iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return bad(format!("scales {} and {} must be finite and non-zero", self.pre_scale, self.post_scale));
        }
        Ok(self)
    }
}

/// One grey channel min-max normalised over the image, for single-channel models (the U-Net):
/// Pillow's luma `(19595 R + 38470 G + 7471 B + 32768) >> 16`, then `(g - min) / (max - min)` in
/// float32 (all zeros for a flat image).
pub fn grey_minmax(rgb: &[u8]) -> Vec<f32> {
    let g: Vec<f32> = rgb.chunks_exact(3).map(|p| ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 32768) >> 16) as f32).collect();
    let (lo, hi) = g.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if hi > lo {
        g.iter().map(|&v| (v - lo) / (hi - lo)).collect()
    } else {
        vec![0.0; g.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn meta(input: &str) -> HashMap<String, String> {
        HashMap::from([("input".to_string(), input.to_string())])
    }

    #[test]
    fn espnet_formula_divides_after() {
        let n = Normalize::from_metadata(&meta(r#"{"channel_order": "BGR", "formula": "x[c] = ((pixel[c] - mean[c]) / std[c]) / 255   (pixel in 0..255)", "mean_bgr": [1, 2, 3], "std_bgr": [4, 5, 6]}"#)).unwrap();
        assert_eq!(n.order, ChannelOrder::Bgr);
        assert_eq!((n.pre_scale, n.post_scale), (1.0, 1.0 / 255.0));
        assert_eq!(n.mean, [1.0, 2.0, 3.0]);
        // a pure-blue pixel: model channel 0 (B) reads 255
        let x = n.apply(&[0, 0, 255], 1, 1);
        assert!((x[0] - (255.0 - 1.0) / 4.0 / 255.0).abs() < 1e-7);
        assert!((x[2] - (0.0 - 3.0) / 6.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn torchvision_formula_divides_before() {
        let n = Normalize::from_metadata(&meta(r#"{"channel_order": "RGB", "formula": "x[c] = (pixel[c]/255 - mean[c]) / std[c]", "mean_rgb": [0.5, 0.5, 0.5], "std_rgb": [0.25, 0.25, 0.25]}"#)).unwrap();
        assert_eq!((n.pre_scale, n.post_scale), (1.0 / 255.0, 1.0));
    }

    #[test]
    fn tflite_scalar_formula() {
        let n = Normalize::from_metadata(&meta(r#"{"channel_order": "RGB", "formula": "x = (pixel - 127.5) / 127.5  (from the model's TFLite metadata)"}"#)).unwrap();
        assert_eq!(n.mean, [127.5; 3]);
        assert_eq!(n.std, [127.5; 3]);
        assert_eq!((n.pre_scale, n.post_scale), (1.0, 1.0));
    }

    #[test]
    fn atrous_normalize_is_validated() {
        let m = |json: &str| HashMap::from([("atrous_normalize".to_string(), json.to_string())]);
        let ok = r#"{"order": "Rgb", "pre_scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1], "post_scale": 1.0}"#;
        assert!(Normalize::from_metadata(&m(ok)).is_ok());
        for bad in [ok.replace("\"std\": [1, 1, 1]", "\"std\": [1, 0, 1]"), ok.replace("\"mean\": [0, 0, 0]", "\"mean\": [0, 1e39, 0]"), ok.replace("\"post_scale\": 1.0", "\"post_scale\": 0.0")] {
            assert_ne!(bad, ok);
            let e = Normalize::from_metadata(&m(&bad)).unwrap_err();
            assert!(e.to_string().contains("atrous_normalize"), "{e}");
        }
    }

    #[test]
    fn raw_pixels() {
        let n = Normalize::from_metadata(&meta(r#"{"channel_order": "RGB", "formula": "x[c] = pixel[c]   (raw 0..255 as float32: no mean/std, no /255)"}"#)).unwrap();
        assert_eq!(n.apply(&[7, 8, 255], 1, 1), vec![7.0, 8.0, 255.0]);
    }

    #[test]
    fn bad_metadata_is_an_error() {
        assert!(Normalize::from_metadata(&HashMap::new()).is_err());
        assert!(Normalize::from_metadata(&meta(r#"{"channel_order": "XYZ"}"#)).is_err());
        assert!(Normalize::from_metadata(&meta(r#"{"channel_order": "RGB", "formula": "magic"}"#)).is_err());
    }
}
