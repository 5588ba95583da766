//! Split-and-merge segmentation (Horowitz & Pavlidis 1974) of an image's grey level: a quadtree
//! split into homogeneous blocks, then merging of adjacent regions whose union stays homogeneous.
//! [`split_merge_gpu`] runs both phases on the device (`shaders/regions.wgsl`);
//! [`split_merge_cpu`] is the same algorithm on the CPU, so the two give identical regions; the
//! checks of [`verify`] state what a result must satisfy.
//!
//! The algorithm, precisely:
//! - grey level: `(299 R + 587 G + 114 B + 500) / 1000` (BT.601 luma, 8 bits);
//! - predicates: `range`, max - min <= floor(T); `std`, the population standard deviation
//!   <= T, evaluated exactly in integers as `256 (n S2 - S1^2) <= round(256 T^2) n^2` (T^2 taken
//!   to 1/256);
//! - split: the quadtree over the image padded to a power of two (blocks clipped to the image);
//!   a pixel's leaf is the first homogeneous block on its path from the root; the split stops
//!   at `min_block`-sized blocks (a power of two), and one of those that is still not
//!   homogeneous becomes single pixels, which the merge regroups (every region stays homogeneous);
//! - merge, in rounds: each region proposes, among adjacent regions whose union is homogeneous,
//!   the one with the smallest union grey-level range (ties: the smaller representative pixel
//!   index). A region moves into the one it proposed when nothing proposed to it, or when it is
//!   the larger side of a mutual pair; a region that does not move takes every region moving
//!   into it when the union of all of them is homogeneous, else the smallest of them (whose
//!   union with it is homogeneous: it proposed so). A proposal to a region that moves waits for
//!   the next round. Whenever some region proposes, some region that does not move receives a
//!   proposal (a chain of moves ends at a mutual pair's smaller side), so a round without a
//!   merge means no adjacent pair can merge; a large region absorbs all its small neighbours in
//!   one round.
//!
//! Regions are numbered in the order of their first pixel (row-major).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::regions::{RegionsParams, WG};
use crate::kernels::{grid_1d, Shader, Slot};

/// The homogeneity predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// max - min <= T.
    Range,
    /// standard deviation <= T.
    Std,
}

/// What makes a region homogeneous, and the smallest quadtree block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionParams {
    pub predicate: Predicate,
    pub threshold: f32,
    /// Side of the smallest quadtree block (a power of two).
    pub min_block: u32,
}

/// The most pixels an image may have (the statistics' integer ranges).
pub const MAX_PIXELS: usize = 1 << 24;

impl RegionParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return Err(Error::Input(format!("threshold {} must be a finite number >= 0", self.threshold)));
        }
        if !self.min_block.is_power_of_two() || self.min_block > 1 << 15 {
            return Err(Error::Input(format!("min block {} must be a power of two up to 32768", self.min_block)));
        }
        Ok(())
    }

    /// `(t, a)`: the range threshold (`floor(T)`, at most 255) and `round(256 T^2)` for `std`.
    fn integers(&self) -> (u32, u32) {
        let t = self.threshold.floor().min(255.0) as u32;
        let a = (256.0 * self.threshold as f64 * self.threshold as f64).round().min(u32::MAX as f64) as u32;
        (t, a)
    }
}

/// The grey level of `[h][w][3]` RGB bytes.
pub fn grey(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).map(|p| ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8).collect()
}

/// A region's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub n: u64,
    pub s1: u64,
    pub s2: u64,
    pub mn: u8,
    pub mx: u8,
}

impl Stats {
    pub fn of(g: u8) -> Stats {
        Stats { n: 1, s1: g as u64, s2: (g as u64).pow(2), mn: g, mx: g }
    }
    pub fn union(self, o: Stats) -> Stats {
        Stats { n: self.n + o.n, s1: self.s1 + o.s1, s2: self.s2 + o.s2, mn: self.mn.min(o.mn), mx: self.mx.max(o.mx) }
    }
    /// The predicate, exactly.
    pub fn homogeneous(&self, p: &RegionParams) -> bool {
        let (t, a) = p.integers();
        match p.predicate {
            Predicate::Range => ((self.mx - self.mn) as u32) <= t,
            Predicate::Std => {
                let d = self.n as u128 * self.s2 as u128 - (self.s1 as u128).pow(2);
                256 * d <= a as u128 * (self.n as u128).pow(2)
            }
        }
    }
}

fn check(h: usize, w: usize, p: &RegionParams) -> Result<()> {
    p.validate()?;
    if h == 0 || w == 0 || h * w > MAX_PIXELS {
        return Err(Error::Input(format!("split-and-merge takes 1..={MAX_PIXELS} pixels; this image is {w}x{h}")));
    }
    Ok(())
}

/// Number of quadtree levels: 2^(levels-1) >= max(h, w).
fn levels(h: usize, w: usize) -> u32 {
    h.max(w).next_power_of_two().trailing_zeros() + 1
}

/// The CPU reference: each pixel's region representative (the index of a pixel of the region,
/// the same for every pixel of it) and the number of merge rounds.
pub fn split_merge_cpu(grey: &[u8], h: usize, w: usize, p: &RegionParams) -> Result<(Vec<u32>, usize)> {
    check(h, w, p)?;
    let n = h * w;
    let levels = levels(h, w);
    let kmin = p.min_block.trailing_zeros().min(levels - 1);
    // the pyramid
    let mut pyr: Vec<Vec<Stats>> = vec![grey.iter().map(|&g| Stats::of(g)).collect()];
    for k in 1..levels as usize {
        let (wc, hc) = (w.div_ceil(1 << (k - 1)), h.div_ceil(1 << (k - 1)));
        let (wk, hk) = (w.div_ceil(1 << k), h.div_ceil(1 << k));
        let c = &pyr[k - 1];
        let mut l = Vec::with_capacity(wk * hk);
        for by in 0..hk {
            for bx in 0..wk {
                let mut s = c[2 * by * wc + 2 * bx];
                if 2 * bx + 1 < wc {
                    s = s.union(c[2 * by * wc + 2 * bx + 1]);
                }
                if 2 * by + 1 < hc {
                    s = s.union(c[(2 * by + 1) * wc + 2 * bx]);
                    if 2 * bx + 1 < wc {
                        s = s.union(c[(2 * by + 1) * wc + 2 * bx + 1]);
                    }
                }
                l.push(s);
            }
        }
        pyr.push(l);
    }
    let mut label = vec![0u32; n];
    let mut stats = vec![Stats::of(0); n];
    for i in 0..n {
        let (x, y) = (i % w, i / w);
        let mut k = levels - 1;
        loop {
            let s = pyr[k as usize][(y >> k) * w.div_ceil(1 << k) + (x >> k)];
            if k <= kmin && !s.homogeneous(p) {
                label[i] = i as u32;
                stats[i] = Stats::of(grey[i]);
                break;
            }
            if s.homogeneous(p) {
                let r = ((y >> k) << k) * w + ((x >> k) << k);
                label[i] = r as u32;
                if r == i {
                    stats[i] = s;
                }
                break;
            }
            k -= 1;
        }
    }
    let mut rounds = 0;
    loop {
        const NONE: u32 = u32::MAX;
        let mut cost = vec![NONE; n];
        let mut partner = vec![NONE; n];
        let pairs = || {
            (0..n).flat_map(move |i| {
                let (x, y) = (i % w, i / w);
                [(x + 1 < w).then_some((i, i + 1)), (y + 1 < h).then_some((i, i + w))].into_iter().flatten()
            })
        };
        let union_cost = |a: usize, b: usize, stats: &[Stats]| {
            let u = stats[a].union(stats[b]);
            u.homogeneous(p).then_some((u.mx - u.mn) as u32)
        };
        for (i, j) in pairs() {
            let (a, b) = (label[i] as usize, label[j] as usize);
            if a != b {
                if let Some(c) = union_cost(a, b, &stats) {
                    cost[a] = cost[a].min(c);
                    cost[b] = cost[b].min(c);
                }
            }
        }
        for (i, j) in pairs() {
            let (a, b) = (label[i] as usize, label[j] as usize);
            if a != b {
                if let Some(c) = union_cost(a, b, &stats) {
                    if cost[a] == c {
                        partner[a] = partner[a].min(b as u32);
                    }
                    if cost[b] == c {
                        partner[b] = partner[b].min(a as u32);
                    }
                }
            }
        }
        // who moves: a region nothing proposed to, or the larger side of a mutual pair
        let mut incoming = vec![0u32; n];
        for r in 0..n {
            if label[r] as usize == r && partner[r] != NONE {
                incoming[partner[r] as usize] += 1;
            }
        }
        let moving = |r: usize| partner[r] != NONE && (incoming[r] == 0 || (partner[partner[r] as usize] as usize == r && r > partner[r] as usize));
        let roots: Vec<usize> = (0..n).filter(|&r| label[r] as usize == r).collect();
        // regions moving into one that stays: all of them when the union is homogeneous, else
        // the smallest
        let mut pending: Vec<Option<Stats>> = vec![None; n];
        let mut first = vec![NONE; n];
        for &r in &roots {
            if moving(r) {
                let t = partner[r] as usize;
                if !moving(t) {
                    pending[t] = Some(pending[t].map_or(stats[r], |s| s.union(stats[r])));
                    first[t] = first[t].min(r as u32);
                }
            }
        }
        let mut all = vec![false; n];
        let mut merged = 0;
        for &t in &roots {
            if moving(t) || first[t] == NONE {
                continue;
            }
            let u = stats[t].union(pending[t].expect("pending with a proposer"));
            all[t] = u.homogeneous(p);
            stats[t] = if all[t] { u } else { stats[t].union(stats[first[t] as usize]) };
            merged += 1;
        }
        let mut parent: Vec<u32> = (0..n as u32).collect();
        for &r in &roots {
            if moving(r) {
                let t = partner[r] as usize;
                if !moving(t) && first[t] != NONE && (all[t] || first[t] as usize == r) {
                    parent[r] = t as u32;
                }
            }
        }
        for l in label.iter_mut() {
            *l = parent[*l as usize];
        }
        rounds += 1;
        if merged == 0 {
            return Ok((label, rounds));
        }
    }
}

/// Regions numbered 0.. in the order of their first pixel; returns the ids and their count.
pub fn compact(label: &[u32]) -> (Vec<u32>, usize) {
    let mut id = std::collections::HashMap::new();
    let ids = label
        .iter()
        .map(|l| {
            let k = id.len() as u32;
            *id.entry(*l).or_insert(k)
        })
        .collect();
    (ids, id.len())
}

/// Each pixel painted with its region's mean colour (rounded).
pub fn mean_colour(rgb: &[u8], ids: &[u32], count: usize) -> Vec<u8> {
    let mut sum = vec![[0u64; 4]; count];
    for (i, &r) in ids.iter().enumerate() {
        let s = &mut sum[r as usize];
        for c in 0..3 {
            s[c] += rgb[3 * i + c] as u64;
        }
        s[3] += 1;
    }
    ids.iter()
        .flat_map(|&r| {
            let s = sum[r as usize];
            (0..3).map(move |c| ((s[c] + s[3] / 2) / s[3]) as u8)
        })
        .collect()
}

/// What a result must satisfy: `ids` covers every pixel with ids `0..count`, each id used; every
/// region satisfies the predicate and is 4-connected; no two adjacent regions have a homogeneous
/// union. Returns the first violation.
pub fn verify(grey: &[u8], h: usize, w: usize, ids: &[u32], count: usize, p: &RegionParams) -> std::result::Result<(), String> {
    let n = h * w;
    if ids.len() != n {
        return Err(format!("{} labels for {n} pixels", ids.len()));
    }
    let mut stats: Vec<Option<Stats>> = vec![None; count];
    let mut first = vec![usize::MAX; count];
    for (i, &r) in ids.iter().enumerate() {
        let r = r as usize;
        if r >= count {
            return Err(format!("pixel {i} has id {r}, not below the count {count}"));
        }
        stats[r] = Some(stats[r].map_or(Stats::of(grey[i]), |s| s.union(Stats::of(grey[i]))));
        first[r] = first[r].min(i);
    }
    for (r, s) in stats.iter().enumerate() {
        let s = s.ok_or_else(|| format!("id {r} has no pixel"))?;
        if !s.homogeneous(p) {
            return Err(format!("region {r} is not homogeneous: {s:?}"));
        }
    }
    // 4-connected: a flood fill from each region's first pixel reaches all of it
    let mut seen = vec![false; n];
    for (r, &f) in first.iter().enumerate() {
        let mut stack = vec![f];
        seen[f] = true;
        let mut reached = 0u64;
        while let Some(i) = stack.pop() {
            reached += 1;
            let (x, y) = (i % w, i / w);
            let nb = [(x > 0).then(|| i - 1), (x + 1 < w).then(|| i + 1), (y > 0).then(|| i - w), (y + 1 < h).then(|| i + w)];
            for j in nb.into_iter().flatten() {
                if !seen[j] && ids[j] as usize == r {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if reached != stats[r].map_or(0, |s| s.n) {
            return Err(format!("region {r} is not 4-connected: {reached} of its {} pixels reached from pixel {f}", stats[r].map_or(0, |s| s.n)));
        }
    }
    for i in 0..n {
        let (x, y) = (i % w, i / w);
        for j in [(x + 1 < w).then(|| i + 1), (y + 1 < h).then(|| i + w)].into_iter().flatten() {
            let (a, b) = (ids[i] as usize, ids[j] as usize);
            if a != b {
                let (sa, sb) = (stats[a].unwrap_or(Stats::of(0)), stats[b].unwrap_or(Stats::of(0)));
                if sa.union(sb).homogeneous(p) {
                    return Err(format!("adjacent regions {a} and {b} (at pixels {i}, {j}) could still merge"));
                }
            }
        }
    }
    Ok(())
}

/// Device buffers and dispatches of split-and-merge for one image size, built once.
pub struct RegionsGpu {
    gpu: Gpu,
    h: usize,
    w: usize,
    grey: wgpu::Buffer,
    label: wgpu::Buffer,
    ctl: wgpu::Buffer,
    readback: wgpu::Buffer,
    split: Vec<crate::kernels::Dispatch>,
    round: Vec<crate::kernels::Dispatch>,
    _keep: Vec<wgpu::Buffer>,
}

/// Rounds recorded per submission before the merge counter is read.
const ROUNDS_PER_SUBMIT: usize = 8;

impl RegionsGpu {
    pub fn new(gpu: &Gpu, h: usize, w: usize, params: RegionParams) -> Result<Self> {
        check(h, w, &params)?;
        gpu.check()?;
        let dev = &gpu.device;
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let n = h * w;
        let levels = levels(h, w);
        let pyr_entries: usize = (0..levels).map(|k| w.div_ceil(1 << k) * h.div_ceil(1 << k)).sum();
        let limit = dev.limits().max_storage_buffer_binding_size;
        if (pyr_entries * 24) as u64 > limit {
            return Err(Error::Input(format!("split-and-merge at {w}x{h} needs a {} MiB pyramid, above this device's {} MiB binding limit", (pyr_entries * 24) >> 20, limit >> 20)));
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let make = |label: &str, bytes: usize| dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: (bytes as u64).max(16).next_multiple_of(16), usage, mapped_at_creation: false });
        let grey = make("regions grey", n * 4);
        let pyr = make("regions pyramid", pyr_entries * 24);
        let label = make("regions labels", n * 4);
        let stats = make("regions stats", n * 24);
        let prop = make("regions proposals", n * 44);
        let parent = make("regions parents", n * 4);
        let ctl = make("regions counter", 16);
        let readback =
            dev.create_buffer(&wgpu::BufferDescriptor { label: Some("regions readback"), size: (n as u64 * 4).max(16), usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let kernels = crate::kernels::Kernels::new(dev);
        let (t, a) = params.integers();
        let base =
            RegionsParams { n: n as u32, w: w as u32, h: h as u32, levels, kmin: params.min_block.trailing_zeros().min(levels - 1), predicate: (params.predicate == Predicate::Std) as u32, t, a, ..Default::default() };
        let mut keep = vec![];
        let mut dispatch = |entry: &'static str, threads: usize, k: u32| {
            let (groups, row) = grid_1d(threads, WG);
            let u = crate::ops::uniform_buffer(dev, &RegionsParams { row, k, ..base });
            let slots = [Slot::whole(&grey), Slot::whole(&pyr), Slot::whole(&label), Slot::whole(&stats), Slot::whole(&prop), Slot::whole(&parent), Slot::whole(&ctl), Slot::whole(&u)];
            let d = kernels.dispatch(Shader::Regions, entry, &slots, groups, &format!("regions.{entry}{}", if k > 0 { format!(".{k}") } else { String::new() }), 0, 0);
            keep.push(u);
            d
        };
        let mut split = vec![dispatch("pyramid_base", n, 0)];
        for k in 1..levels {
            split.push(dispatch("pyramid_up", w.div_ceil(1 << k) * h.div_ceil(1 << k), k));
        }
        split.push(dispatch("split_label", n, 0));
        let round =
            ["merge_clear", "merge_propose", "merge_propose", "merge_incoming", "merge_gather", "merge_commit", "merge_link", "merge_relabel"].iter().enumerate().map(|(i, e)| dispatch(e, n, (i == 2) as u32)).collect();
        keep.extend([pyr, stats, prop, parent]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { during: "building split-and-merge".into(), reason: e.to_string() });
        }
        Ok(RegionsGpu { gpu: gpu.clone(), h, w, grey, label, ctl, readback, split, round, _keep: keep })
    }

    /// Regions of one grey image: each pixel's representative (as [`split_merge_cpu`]) and the
    /// number of merge rounds run (a multiple of the rounds per submission).
    pub fn run(&self, grey: &[u8]) -> Result<(Vec<u32>, usize)> {
        let n = self.h * self.w;
        if grey.len() != n {
            return Err(Error::Input(format!("{} grey values for {}x{}", grey.len(), self.w, self.h)));
        }
        let (dev, queue) = (&self.gpu.device, &self.gpu.queue);
        let words: Vec<u32> = grey.iter().map(|&g| g as u32).collect();
        queue.write_buffer(&self.grey, 0, bytemuck::cast_slice(&words));
        let mut rounds = 0;
        let mut first = true;
        loop {
            let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
            let mut enc = dev.create_command_encoder(&Default::default());
            enc.clear_buffer(&self.ctl, 0, None);
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if first {
                    self.split.iter().for_each(|d| d.record(&mut pass));
                }
                for _ in 0..ROUNDS_PER_SUBMIT {
                    self.round.iter().for_each(|d| d.record(&mut pass));
                }
            }
            enc.copy_buffer_to_buffer(&self.ctl, 0, &self.readback, 0, 16);
            queue.submit([enc.finish()]);
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Gpu { during: "running split-and-merge".into(), reason: e.to_string() });
            }
            first = false;
            rounds += ROUNDS_PER_SUBMIT;
            let merged = u32::from_le_bytes(crate::session::read_buffer(&self.gpu, &self.readback)?[..4].try_into().expect("4 bytes"));
            if merged == 0 {
                break;
            }
            if rounds > 4 * n + 64 {
                return Err(Error::Gpu { during: "split-and-merge".into(), reason: format!("no convergence after {rounds} rounds") });
            }
        }
        let mut enc = dev.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.label, 0, &self.readback, 0, n as u64 * 4);
        queue.submit([enc.finish()]);
        let bytes = crate::session::read_buffer(&self.gpu, &self.readback)?;
        self.gpu.check()?;
        Ok((bytemuck::pod_collect_to_vec(&bytes[..n * 4]), rounds))
    }
}

/// Split-and-merge of one grey image on the device.
pub fn split_merge_gpu(gpu: &Gpu, grey: &[u8], h: usize, w: usize, p: &RegionParams) -> Result<(Vec<u32>, usize)> {
    RegionsGpu::new(gpu, h, w, *p)?.run(grey)
}
