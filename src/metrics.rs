//! Segmentation metrics from a confusion matrix, with the conventions of FCN's `score.py` (as the
//! reference figures in `../shared` use them): pixel accuracy, mean class accuracy, mean IoU and
//! frequency-weighted IoU.
//!
//! The matrix is `hist[gt][pred]` over the model's outputs. Some outputs are not ground-truth
//! classes ("extra": ESPNet's void/ignore output): they have columns but no rows, so predicting one
//! is always an error, and they take no part in the per-class figures. A class with an empty
//! denominator has accuracy/IoU NaN and is left out of the means; a class absent from the
//! ground truth but predicted somewhere has IoU 0 and counts in the mean IoU.

use serde::Serialize;

/// A confusion matrix over `n` model outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    pub n: usize,
    /// Row-major `hist[gt * n + pred]`.
    pub hist: Vec<u64>,
    /// Ground-truth pixels skipped (ignore value, or a label that is not a class).
    pub ignored: u64,
}

impl Confusion {
    pub fn new(n: usize) -> Self {
        Confusion { n, hist: vec![0; n * n], ignored: 0 }
    }

    /// Counts one image: `gt` and `pred` are class maps of the same size; a ground-truth value
    /// that `skip` accepts, or that is not a real class, is not counted.
    pub fn add(&mut self, gt: &[u8], pred: &[u8], skip: impl Fn(u8) -> bool, real: &[bool]) {
        assert_eq!(gt.len(), pred.len(), "label and prediction sizes differ");
        for (&g, &p) in gt.iter().zip(pred) {
            if skip(g) || (g as usize) >= self.n || !real[g as usize] || (p as usize) >= self.n {
                self.ignored += 1;
                continue;
            }
            self.hist[g as usize * self.n + p as usize] += 1;
        }
    }

    pub fn merge(&mut self, other: &Confusion) {
        assert_eq!(self.n, other.n);
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
        self.ignored += other.ignored;
    }

    /// The figures over the classes marked `real` (the others are extra outputs).
    pub fn metrics(&self, real: &[bool]) -> Metrics {
        let n = self.n;
        let rows: Vec<usize> = (0..n).filter(|&c| real[c]).collect();
        let total: u64 = rows.iter().map(|&g| (0..n).map(|p| self.hist[g * n + p]).sum::<u64>()).sum();
        let mut per_class = vec![];
        let (mut tp_sum, mut acc_sum, mut acc_cnt, mut iou_sum, mut iou_cnt, mut fw) = (0u64, 0f64, 0usize, 0f64, 0usize, 0f64);
        for &c in &rows {
            let tp = self.hist[c * n + c];
            let gt: u64 = (0..n).map(|p| self.hist[c * n + p]).sum();
            let pred: u64 = rows.iter().map(|&g| self.hist[g * n + c]).sum();
            let acc = if gt > 0 { Some(tp as f64 / gt as f64) } else { None };
            let union = gt + pred - tp;
            let iou = if union > 0 { Some(tp as f64 / union as f64) } else { None };
            tp_sum += tp;
            if let Some(a) = acc {
                acc_sum += a;
                acc_cnt += 1;
            }
            if let Some(i) = iou {
                iou_sum += i;
                iou_cnt += 1;
                if gt > 0 {
                    fw += gt as f64 / total as f64 * i;
                }
            }
            per_class.push(ClassMetrics { class: c, gt_pixels: gt, predicted_pixels: pred, accuracy: acc, iou });
        }
        let extra: u64 = rows.iter().map(|&g| (0..n).filter(|&p| !real[p]).map(|p| self.hist[g * n + p]).sum::<u64>()).sum();
        let div = |a: f64, b: usize| if b > 0 { a / b as f64 } else { f64::NAN };
        Metrics {
            pixels: total,
            pixel_acc: if total > 0 { tp_sum as f64 / total as f64 } else { f64::NAN },
            mean_class_acc: div(acc_sum, acc_cnt),
            mean_iou: div(iou_sum, iou_cnt),
            fw_iou: fw,
            predicted_as_extra: extra,
            ignored: self.ignored,
            per_class,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassMetrics {
    pub class: usize,
    pub gt_pixels: u64,
    pub predicted_pixels: u64,
    pub accuracy: Option<f64>,
    pub iou: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    /// Evaluated pixels (ground truth in a real class).
    pub pixels: u64,
    pub pixel_acc: f64,
    pub mean_class_acc: f64,
    pub mean_iou: f64,
    pub fw_iou: f64,
    /// Evaluated pixels predicted as an extra (non-ground-truth) output.
    pub predicted_as_extra: u64,
    pub ignored: u64,
    pub per_class: Vec<ClassMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// 3 classes, hand-computed:
    /// gt\pred   0  1  2
    ///    0      5  1  0
    ///    1      2  3  1
    ///    2      0  0  0     (class 2 never in the ground truth, predicted once)
    #[test]
    fn hand_computed_three_classes() {
        let mut c = Confusion::new(3);
        c.hist = vec![5, 1, 0, 2, 3, 1, 0, 0, 0];
        let m = c.metrics(&[true, true, true]);
        assert_eq!(m.pixels, 12);
        assert!(close(m.pixel_acc, 8.0 / 12.0));
        // class acc: 5/6, 3/6; class 2 has no gt -> excluded
        assert!(close(m.mean_class_acc, (5.0 / 6.0 + 0.5) / 2.0));
        // IoU: 0: 5/(6+7-5)=5/8; 1: 3/(6+4-3)=3/7; 2: 0/(0+1-0)=0 (predicted, absent: counts)
        assert!(close(m.mean_iou, (5.0 / 8.0 + 3.0 / 7.0 + 0.0) / 3.0));
        // fw IoU over classes present in the gt: 6/12*5/8 + 6/12*3/7
        assert!(close(m.fw_iou, 0.5 * 5.0 / 8.0 + 0.5 * 3.0 / 7.0));
        assert_eq!(m.per_class[2].accuracy, None);
        assert_eq!(m.per_class[2].iou, Some(0.0));
    }

    /// An extra output (index 2, e.g. "void") is a column with no row: always an error, and
    /// excluded from the per-class figures.
    #[test]
    fn extra_output_counts_as_error_only() {
        let mut c = Confusion::new(3);
        c.hist = vec![4, 0, 2, 1, 3, 0, 0, 0, 0];
        let m = c.metrics(&[true, true, false]);
        assert_eq!(m.pixels, 10);
        assert!(close(m.pixel_acc, 0.7));
        assert_eq!(m.predicted_as_extra, 2);
        assert_eq!(m.per_class.len(), 2);
        // class 0: tp 4, gt 6, pred (rows 0,1 col 0) 5 -> IoU 4/7; class 1: tp 3, gt 4, pred 3 -> 3/4
        assert!(close(m.mean_iou, (4.0 / 7.0 + 0.75) / 2.0));
        assert!(close(m.mean_class_acc, (4.0 / 6.0 + 0.75) / 2.0));
        assert!(close(m.fw_iou, 0.6 * 4.0 / 7.0 + 0.4 * 0.75));
    }

    #[test]
    fn class_with_empty_union_is_left_out() {
        let mut c = Confusion::new(2);
        c.hist = vec![3, 0, 0, 0];
        let m = c.metrics(&[true, true]);
        assert!(close(m.mean_iou, 1.0));
        assert!(close(m.mean_class_acc, 1.0));
        assert_eq!(m.per_class[1].iou, None);
    }

    #[test]
    fn add_skips_ignored_and_unknown_labels() {
        let mut c = Confusion::new(3);
        let gt = [0u8, 1, 2, 255, 11, 1];
        let pred = [0u8, 2, 2, 0, 0, 1];
        c.add(&gt, &pred, |g| g == 255, &[true, true, false]);
        // 255 skipped, 11 not a class, 2 is an extra output (no rows)
        assert_eq!(c.ignored, 3);
        assert_eq!(c.hist, vec![1, 0, 0, 0, 1, 1, 0, 0, 0]);
    }
}
