//! The memory plan: execution order, each tensor's lifetime, and its place (arena, offset) in
//! device memory.
//!
//! A tensor larger than one storage binding is split into channel chunks, each of which fits a
//! binding (NCHW: a channel range is contiguous, and every channel keeps its whole plane, so global
//! operations still see whole maps); the session splits each operator at the chunk boundaries.
//! Chunks are placed greedy-by-size: largest first, at the lowest offset that does not overlap any
//! already-placed chunk whose lifetime intersects. Arenas are capped (by the device's largest
//! buffer), and a chunk that does not fit an arena opens another. Only a single channel plane
//! larger than a binding is refused.

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Where a tensor (or one channel chunk of it) lives and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// First channel and channel count of this chunk.
    pub c0: usize,
    pub c: usize,
    pub arena: usize,
    pub offset: u64,
    /// Size in bytes, rounded up to the alignment.
    pub bytes: u64,
    /// First step that writes it and last step that reads it. Step 0 is the upload of the input,
    /// step `i + 1` is node `i`, and step `nodes + 1` is the argmax that reads the logits.
    pub first: usize,
    pub last: usize,
}

/// Device limits the planner respects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Offset alignment of storage bindings.
    pub align: u64,
    /// Largest arena buffer.
    pub max_arena: u64,
    /// Largest storage binding (one tensor, or one channel chunk of it).
    pub max_binding: u64,
    /// Total arena bytes allowed (`ATROUS_MEMORY_BUDGET`), checked before anything is created.
    pub budget: Option<u64>,
}

impl PlanLimits {
    pub fn from_device(l: &wgpu::Limits) -> Self {
        PlanLimits { align: l.min_storage_buffer_offset_alignment as u64, max_arena: l.max_buffer_size, max_binding: l.max_storage_buffer_binding_size, budget: budget_from_env() }
    }

    /// No limits at all (for reporting plans).
    pub fn unlimited() -> Self {
        PlanLimits { align: 256, max_arena: u64::MAX, max_binding: u64::MAX, budget: None }
    }
}

/// `ATROUS_MEMORY_BUDGET`: bytes, with an optional K/M/G (decimal) or KiB/MiB/GiB suffix.
pub fn budget_from_env() -> Option<u64> {
    let v = std::env::var("ATROUS_MEMORY_BUDGET").ok()?;
    parse_bytes(&v).or_else(|| {
        log::warn!("ATROUS_MEMORY_BUDGET={v} is not a size; ignored");
        None
    })
}

pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mul) as u64)
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Node indices in execution order.
    pub order: Vec<usize>,
    /// One entry per graph tensor: its chunks in channel order (one chunk when it fits a binding;
    /// empty for a tensor that no step touches).
    pub placements: Vec<Vec<Placement>>,
    /// Size of each arena in bytes.
    pub arenas: Vec<u64>,
    /// Sum of all tensor sizes (input and logits included): the memory with no reuse at all.
    pub sum_tensors: u64,
    /// The largest total size of tensors alive at one step: no placement can use less.
    pub live_lower_bound: u64,
    pub limits: PlanLimits,
}

impl Plan {
    pub fn new(g: &Graph, limits: PlanLimits) -> Result<Plan> {
        g.validate()?;
        let order: Vec<usize> = (0..g.nodes.len()).collect();
        let nsteps = g.nodes.len() + 2;
        let mut life: Vec<Option<(usize, usize)>> = vec![None; g.tensors.len()];
        let mut touch = |t: usize, step: usize| {
            life[t] = Some(match life[t] {
                None => (step, step),
                Some((a, b)) => (a.min(step), b.max(step)),
            })
        };
        for &i in &g.inputs {
            touch(i, 0);
        }
        for (pos, &ni) in order.iter().enumerate() {
            let n = &g.nodes[ni];
            for r in n.op.reads() {
                touch(r.tensor, pos + 1);
            }
            for w in n.op.outputs() {
                touch(w.tensor, pos + 1);
            }
        }
        let logits = g.logits.ok_or_else(|| Error::op("graph", "no logits tensor"))?;
        touch(logits, nsteps - 1);
        for &o in &g.outputs {
            touch(o, nsteps - 1);
        }

        let align = limits.align.max(4);
        // chunks: (tensor, c0, c, bytes)
        let mut chunks: Vec<(usize, usize, usize, u64)> = vec![];
        for (t, d) in g.tensors.iter().enumerate() {
            if life[t].is_none() {
                continue;
            }
            let plane = d.plane_bytes();
            if plane > limits.max_binding {
                return Err(Error::TensorTooLarge { name: format!("{} (one {}x{} channel plane)", d.name, d.h, d.w), bytes: plane, limit: limits.max_binding });
            }
            let per = ((limits.max_binding / plane) as usize).min(d.c).max(1);
            let mut c0 = 0;
            while c0 < d.c {
                let c = per.min(d.c - c0);
                chunks.push((t, c0, c, (c as u64 * plane).next_multiple_of(align)));
                c0 += c;
            }
        }
        let mut order_idx: Vec<usize> = (0..chunks.len()).collect();
        order_idx.sort_by_key(|&i| (std::cmp::Reverse(chunks[i].3), life[chunks[i].0].unwrap().0, i));
        let mut placed: Vec<Placement> = vec![];
        let mut arenas: Vec<u64> = vec![];
        let mut by_chunk: Vec<Option<Placement>> = vec![None; chunks.len()];
        for &i in &order_idx {
            let (t, c0, c, size) = chunks[i];
            let (first, last) = life[t].unwrap();
            let mut done = None;
            for a in 0..=arenas.len() {
                // intervals in arena `a` that are alive at the same time, sorted by offset
                let mut busy: Vec<(u64, u64)> = placed.iter().filter(|p| p.arena == a && p.first <= last && first <= p.last).map(|p| (p.offset, p.offset + p.bytes)).collect();
                busy.sort();
                let mut off = 0u64;
                for (s, e) in busy {
                    if off + size <= s {
                        break;
                    }
                    off = off.max(e);
                }
                if off + size <= limits.max_arena {
                    done = Some((a, off));
                    break;
                }
            }
            let (a, off) = done.ok_or(Error::OutOfDeviceMemory { bytes: size, limit: limits.max_arena })?;
            if a == arenas.len() {
                arenas.push(0);
            }
            arenas[a] = arenas[a].max(off + size);
            let p = Placement { c0, c, arena: a, offset: off, bytes: size, first, last };
            placed.push(p);
            by_chunk[i] = Some(p);
        }
        let total: u64 = arenas.iter().sum();
        if let Some(budget) = limits.budget {
            if total > budget {
                return Err(Error::OutOfDeviceMemory { bytes: total, limit: budget });
            }
        }
        let mut placements: Vec<Vec<Placement>> = vec![vec![]; g.tensors.len()];
        for (i, p) in by_chunk.into_iter().enumerate() {
            placements[chunks[i].0].push(p.expect("every chunk placed"));
        }
        for v in &mut placements {
            v.sort_by_key(|p| p.c0);
        }

        let mut live = vec![0u64; nsteps];
        for p in placements.iter().flatten() {
            for l in &mut live[p.first..=p.last] {
                *l += p.bytes;
            }
        }

        Ok(Plan { order, arenas, sum_tensors: placements.iter().flatten().map(|p| p.bytes).sum(), live_lower_bound: live.into_iter().max().unwrap_or(0), placements, limits })
    }

    /// The chunk of tensor `t` that holds channels `c0 .. c0 + c`, if one does.
    pub fn chunk_of(&self, t: usize, c0: usize, c: usize) -> Option<&Placement> {
        self.placements[t].iter().find(|p| p.c0 <= c0 && c0 + c <= p.c0 + p.c)
    }

    /// Channel indices where tensor `t` is cut into chunks (excluding 0 and the end).
    pub fn cuts(&self, t: usize) -> Vec<usize> {
        self.placements[t].iter().skip(1).map(|p| p.c0).collect()
    }

    /// Total device memory of the arenas.
    pub fn peak_bytes(&self) -> u64 {
        self.arenas.iter().sum()
    }

    /// Checks that no two tensors alive at the same step overlap in memory (a self-test of the
    /// planner, used by the tests).
    pub fn verify(&self) -> Result<()> {
        let ps: Vec<(usize, Placement)> = self.placements.iter().enumerate().flat_map(|(i, v)| v.iter().map(move |p| (i, *p))).collect();
        for (i, (ta, a)) in ps.iter().enumerate() {
            if a.offset % self.limits.align.max(4) != 0 || a.offset + a.bytes > self.arenas[a.arena] {
                return Err(Error::op("plan", format!("tensor {ta} misplaced: {a:?}")));
            }
            for (tb, b) in &ps[i + 1..] {
                let time = a.first <= b.last && b.first <= a.last;
                let space = a.arena == b.arena && a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
                if time && space {
                    return Err(Error::op("plan", format!("tensors {ta} and {tb} overlap: {a:?} {b:?}")));
                }
            }
        }
        Ok(())
    }
}
