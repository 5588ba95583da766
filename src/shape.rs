//! The one place where output sizes of spatial operators are computed. The CPU reference, the
//! planner, the model builders and the kernel wrappers all call these functions.

use crate::error::{Error, Result};

/// Padding in pixels: top, bottom, left, right. Asymmetric padding (TensorFlow "SAME") is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    pub fn same(p: usize) -> Self {
        Pad { top: p, bottom: p, left: p, right: p }
    }
    pub fn hw(ph: usize, pw: usize) -> Self {
        Pad { top: ph, bottom: ph, left: pw, right: pw }
    }
}

/// Geometry of a 2-D convolution (batch 1, NCHW). Weights are `[out_c, in_c/groups, k_h, k_w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub pad: Pad,
    pub groups: usize,
}

impl Conv2dGeom {
    /// Square-kernel convenience constructor with PyTorch's symmetric padding.
    #[allow(clippy::too_many_arguments)]
    pub fn new(in_c: usize, in_h: usize, in_w: usize, out_c: usize, k: usize, stride: usize, pad: usize, dil: usize, groups: usize) -> Self {
        Conv2dGeom { in_c, in_h, in_w, out_c, k_h: k, k_w: k, stride_h: stride, stride_w: stride, dil_h: dil, dil_w: dil, pad: Pad::same(pad), groups }
    }

    pub fn icpg(&self) -> usize {
        self.in_c / self.groups
    }
    pub fn ocpg(&self) -> usize {
        self.out_c / self.groups
    }
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.out_c, self.icpg(), self.k_h, self.k_w]
    }

    /// Output (height, width); an error names what is inconsistent.
    pub fn out_hw(&self) -> Result<(usize, usize)> {
        self.check()?;
        let oh = conv_out(self.in_h, self.k_h, self.stride_h, self.dil_h, self.pad.top, self.pad.bottom)
            .ok_or_else(|| Error::op("conv2d", format!("kernel {}x{} dilation {} does not fit input height {} with padding", self.k_h, self.k_w, self.dil_h, self.in_h)))?;
        let ow = conv_out(self.in_w, self.k_w, self.stride_w, self.dil_w, self.pad.left, self.pad.right)
            .ok_or_else(|| Error::op("conv2d", format!("kernel {}x{} dilation {} does not fit input width {} with padding", self.k_h, self.k_w, self.dil_w, self.in_w)))?;
        Ok((oh, ow))
    }

    fn check(&self) -> Result<()> {
        let z = [self.in_c, self.in_h, self.in_w, self.out_c, self.k_h, self.k_w, self.stride_h, self.stride_w, self.dil_h, self.dil_w, self.groups];
        if z.contains(&0) {
            return Err(Error::op("conv2d", format!("zero in geometry {self:?}")));
        }
        if self.in_c % self.groups != 0 || self.out_c % self.groups != 0 {
            return Err(Error::op("conv2d", format!("channels {}->{} not divisible by groups {}", self.in_c, self.out_c, self.groups)));
        }
        Ok(())
    }

    /// Multiply-accumulate count.
    pub fn macs(&self) -> Result<u64> {
        let (oh, ow) = self.out_hw()?;
        Ok((self.out_c * oh * ow * self.icpg() * self.k_h * self.k_w) as u64)
    }
}

/// TensorFlow "SAME" padding (before, after) along one axis: the output is `ceil(n / s)` and any
/// odd pixel of padding goes after.
pub fn tf_same_pad(n: usize, k: usize, s: usize, dil: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + (k - 1) * dil + 1).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// `floor((n + p0 + p1 - dil*(k-1) - 1) / s) + 1`, or None when the kernel does not fit.
pub fn conv_out(n: usize, k: usize, s: usize, dil: usize, p0: usize, p1: usize) -> Option<usize> {
    let span = dil * (k - 1) + 1;
    let padded = n + p0 + p1;
    if padded < span {
        return None;
    }
    Some((padded - span) / s + 1)
}

/// Geometry of a transposed 2-D convolution. Weights are `[in_c, out_c/groups, k_h, k_w]` (PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvT2dGeom {
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    /// Padding removed from the full output: top, bottom, left, right (PyTorch's `padding`).
    pub pad: Pad,
    pub out_pad_h: usize,
    pub out_pad_w: usize,
    pub groups: usize,
}

impl ConvT2dGeom {
    pub fn icpg(&self) -> usize {
        self.in_c / self.groups
    }
    pub fn ocpg(&self) -> usize {
        self.out_c / self.groups
    }
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.in_c, self.ocpg(), self.k_h, self.k_w]
    }

    /// `(in-1)*s - p0 - p1 + dil*(k-1) + out_pad + 1`.
    pub fn out_hw(&self) -> Result<(usize, usize)> {
        let z = [self.in_c, self.in_h, self.in_w, self.out_c, self.k_h, self.k_w, self.stride_h, self.stride_w, self.dil_h, self.dil_w, self.groups];
        if z.contains(&0) {
            return Err(Error::op("conv_transpose2d", format!("zero in geometry {self:?}")));
        }
        if self.in_c % self.groups != 0 || self.out_c % self.groups != 0 {
            return Err(Error::op("conv_transpose2d", format!("channels {}->{} not divisible by groups {}", self.in_c, self.out_c, self.groups)));
        }
        if self.out_pad_h >= self.stride_h.max(self.dil_h) || self.out_pad_w >= self.stride_w.max(self.dil_w) {
            return Err(Error::op("conv_transpose2d", "output padding must be smaller than stride or dilation"));
        }
        let f = |n: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize, op: usize| -> Option<usize> { ((n - 1) * s + d * (k - 1) + op + 1).checked_sub(p0 + p1).filter(|&v| v > 0) };
        let oh = f(self.in_h, self.k_h, self.stride_h, self.dil_h, self.pad.top, self.pad.bottom, self.out_pad_h);
        let ow = f(self.in_w, self.k_w, self.stride_w, self.dil_w, self.pad.left, self.pad.right, self.out_pad_w);
        match (oh, ow) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(Error::op("conv_transpose2d", "padding removes the whole output")),
        }
    }

    pub fn macs(&self) -> Result<u64> {
        // Every input element meets every tap of its group's kernels once.
        self.out_hw()?;
        Ok((self.in_c * self.in_h * self.in_w * self.ocpg() * self.k_h * self.k_w) as u64)
    }
}

/// Pooling flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Average; `count_include_pad` as in PyTorch.
    Avg { count_include_pad: bool },
    /// Maximum; padding never wins.
    Max,
}

/// Geometry of a 2-D pooling window (PyTorch semantics, `ceil_mode` included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeom {
    pub c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Padding before the first row / column.
    pub pad_h: usize,
    pub pad_w: usize,
    pub ceil_mode: bool,
    /// Padding after the last row / column (ONNX's asymmetric `pads`; PyTorch's equal `pad_h`).
    pub pad_b: usize,
    pub pad_r: usize,
    /// Dilation of the window (ONNX's `dilations`; 1 in PyTorch's pools here).
    pub dil_h: usize,
    pub dil_w: usize,
}

impl Pool2dGeom {
    pub fn new(c: usize, in_h: usize, in_w: usize, k: usize, stride: usize, pad: usize, ceil_mode: bool) -> Self {
        Pool2dGeom { c, in_h, in_w, k_h: k, k_w: k, stride_h: stride, stride_w: stride, pad_h: pad, pad_w: pad, ceil_mode, pad_b: pad, pad_r: pad, dil_h: 1, dil_w: 1 }
    }

    pub fn out_hw(&self) -> Result<(usize, usize)> {
        if [self.c, self.in_h, self.in_w, self.k_h, self.k_w, self.stride_h, self.stride_w, self.dil_h, self.dil_w].contains(&0) {
            return Err(Error::op("pool2d", format!("zero in geometry {self:?}")));
        }
        let (eh, ew) = ((self.k_h - 1) * self.dil_h + 1, (self.k_w - 1) * self.dil_w + 1);
        if [self.pad_h, self.pad_b].iter().any(|&p| p >= eh) || [self.pad_w, self.pad_r].iter().any(|&p| p >= ew) {
            return Err(Error::op("pool2d", "padding must be smaller than the (dilated) window"));
        }
        let oh = pool_out_ext(self.in_h, eh, self.stride_h, self.pad_h, self.pad_b, self.ceil_mode);
        let ow = pool_out_ext(self.in_w, ew, self.stride_w, self.pad_w, self.pad_r, self.ceil_mode);
        match (oh, ow) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(Error::op("pool2d", format!("window {}x{} does not fit input {}x{}", self.k_h, self.k_w, self.in_h, self.in_w))),
        }
    }

    /// The taps of a (dilated) window inside the input: `(first row, taps, span)` — rows
    /// `first + t * d` for `t < taps`, and `span` the taps inside the padded input (`p0` before,
    /// `p1` after), the divisor when padding counts.
    #[allow(clippy::too_many_arguments)]
    pub fn taps(o: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize, n: usize) -> (usize, usize, usize) {
        let start = (o * s) as i64 - p0 as i64;
        let (k, d, n) = (k as i64, d as i64, n as i64);
        let t0 = if start < 0 { (-start + d - 1) / d } else { 0 };
        let t1 = k.min((n - start + d - 1).div_euclid(d)).max(t0);
        let span = k.min((n + p1 as i64 - start + d - 1).div_euclid(d)).max(0);
        ((start + t0 * d).max(0) as usize, (t1 - t0) as usize, span as usize)
    }
}

/// Pooling output size with an effective (dilated) window `k` and padding `p0` before, `p1`
/// after (ONNX); the last window must start inside the input or the leading padding.
pub fn pool_out_ext(n: usize, k: usize, s: usize, p0: usize, p1: usize, ceil_mode: bool) -> Option<usize> {
    let padded = n + p0 + p1;
    if padded < k {
        return None;
    }
    let num = padded - k;
    let mut out = if ceil_mode { num.div_ceil(s) + 1 } else { num / s + 1 };
    if ceil_mode && (out - 1) * s >= n + p0 {
        out -= 1;
    }
    Some(out)
}

/// PyTorch's pooling output size.
pub fn pool_out(n: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> Option<usize> {
    let padded = n + 2 * p;
    if padded < k {
        return None;
    }
    let num = padded - k;
    let mut out = if ceil_mode { num.div_ceil(s) + 1 } else { num / s + 1 };
    // The last window must start inside the input or the left padding.
    if ceil_mode && (out - 1) * s >= n + p {
        out -= 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_sizes_match_pytorch() {
        // 3x3 stride 2 pad 1 on 360 -> 180, on 45 -> 23.
        assert_eq!(conv_out(360, 3, 2, 1, 1, 1), Some(180));
        assert_eq!(conv_out(45, 3, 2, 1, 1, 1), Some(23));
        // dilation 16, padding 16 keeps the size.
        assert_eq!(conv_out(17, 3, 1, 16, 16, 16), Some(17));
        // kernel larger than the padded input.
        assert_eq!(conv_out(2, 5, 1, 1, 0, 0), None);
    }

    #[test]
    fn pool_sizes_match_pytorch() {
        // AvgPool2d(3, 2, 1): ceil(n/2).
        for n in 1..40 {
            assert_eq!(pool_out(n, 3, 2, 1, false), Some(n.div_ceil(2)), "n={n}");
        }
        // ceil_mode: MaxPool2d(3, 2, 0, ceil_mode=True) on 6 -> 3 (not 3.5 -> windows starting at 6 dropped).
        assert_eq!(pool_out(6, 3, 2, 0, true), Some(3));
        assert_eq!(pool_out(7, 2, 2, 0, true), Some(4));
        assert_eq!(pool_out(5, 2, 2, 1, true), Some(3));
    }

    #[test]
    fn tf_same_padding() {
        // 257 -> 129 with a 3x3 stride-2 kernel: 1 before, 1 after.
        assert_eq!(tf_same_pad(257, 3, 2, 1), (1, 1));
        // even input: the extra pixel goes after.
        assert_eq!(tf_same_pad(256, 3, 2, 1), (0, 1));
        // stride 1, dilation 4: 4 each side.
        assert_eq!(tf_same_pad(33, 3, 1, 4), (4, 4));
        let (a, b) = tf_same_pad(256, 3, 2, 1);
        assert_eq!(conv_out(256, 3, 2, 1, a, b), Some(128));
    }

    #[test]
    fn conv_transpose_sizes() {
        let g = ConvT2dGeom { in_c: 4, in_h: 45, in_w: 60, out_c: 4, k_h: 2, k_w: 2, stride_h: 2, stride_w: 2, dil_h: 1, dil_w: 1, pad: Pad::default(), out_pad_h: 0, out_pad_w: 0, groups: 1 };
        assert_eq!(g.out_hw().unwrap(), (90, 120));
        let g2 = ConvT2dGeom { k_h: 3, k_w: 3, pad: Pad::same(1), out_pad_h: 1, out_pad_w: 1, ..g };
        assert_eq!(g2.out_hw().unwrap(), (90, 120));
    }
}
