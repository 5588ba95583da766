//! Wrapper of `shaders/crf.wgsl` (dense CRF on the permutohedral lattice): the parameter block
//! and the layout of one lattice's buffers.

crate::param_block! {
    pub struct CrfBlock {
        pub n: u32,
        pub d: u32,
        pub c: u32,
        pub c4: u32,
        pub w: u32,
        pub row: u32,
        pub cap: u32,
        pub _p0: u32,
        pub j: u32,
        pub flags: u32,
        pub x_off: u32,
        pub y_off: u32,
        pub o_rem0: u32,
        pub o_rank: u32,
        pub o_bary: u32,
        pub o_vert: u32,
        pub o_offsets: u32,
        pub o_dense: u32,
        pub o_sod: u32,
        pub o_meta: u32,
        pub o_nbr: u32,
        pub o_entries: u32,
        pub f_in: u32,
        pub f_out: u32,
        pub f_u: u32,
        pub f_qg: u32,
        pub f_mg: u32,
        pub f_mb: u32,
        pub f_norm: u32,
        pub img_off: u32,
        pub f_norm2: u32,
        pub f_qb: u32,
        pub sxy: f32,
        pub srgb: f32,
        pub alpha: f32,
        pub wg: f32,
        pub wb: f32,
        pub sf0: f32,
        pub sf1: f32,
        pub sf2: f32,
        pub sf3: f32,
        pub sf4: f32,
        pub _f0: f32,
        pub _f1: f32,
        pub o_seg: u32,
        pub o_segv: u32,
        pub _q0: u32,
        pub _q1: u32,
    }
}

pub const ONES: u32 = 1;
pub const NORMALISER: u32 = 4;
pub const LAST: u32 = 8;
pub const UPDATE: u32 = 16;
pub const WG: u32 = 64;
/// Indirect dispatch grids at the end of a lattice's `atom` buffer.
pub const GRIDS: usize = 4;

/// Word offsets of one lattice's arrays in its `lat` buffer, and the sizes of its buffers.
#[derive(Clone, Copy, Debug)]
pub struct LatticeLayout {
    pub d: usize,
    /// (pixel, vertex) pairs: n (d + 1); also the vertex capacity.
    pub pairs: usize,
    /// Hash-table slots (a power of two, at least twice the pairs).
    pub cap: usize,
    pub o_rem0: usize,
    pub o_rank: usize,
    pub o_bary: usize,
    pub o_vert: usize,
    pub o_offsets: usize,
    pub o_dense: usize,
    pub o_sod: usize,
    pub o_meta: usize,
    pub o_nbr: usize,
    pub o_entries: usize,
    pub o_seg: usize,
    pub o_segv: usize,
    /// Words of `lat`.
    pub words: usize,
}

impl LatticeLayout {
    pub fn new(n: usize, d: usize) -> Self {
        let pairs = n * (d + 1);
        let cap = (2 * pairs).next_power_of_two().max(2);
        let mut at = 0;
        let mut take = |k: usize| {
            let o = at;
            at += k;
            o
        };
        let (o_rem0, o_rank, o_bary, o_vert) = (take(pairs), take(pairs), take(pairs), take(pairs));
        let (o_offsets, o_dense, o_sod, o_meta) = (take(pairs + 1), take(cap), take(pairs), take(4));
        let (o_nbr, o_entries) = (take(pairs * (d + 1) * 2), take(pairs));
        let (o_seg, o_segv) = (take(pairs + 1), take(pairs));
        LatticeLayout { d, pairs, cap, o_rem0, o_rank, o_bary, o_vert, o_offsets, o_dense, o_sod, o_meta, o_nbr, o_entries, o_seg, o_segv, words: at }
    }

    /// Bytes of the `lat` buffer.
    pub fn lat_bytes(&self) -> u64 {
        self.words as u64 * 4
    }

    /// Bytes of the `atom` buffer: the hash table, per-slot counts and first pairs (`cap` words
    /// each), then the four indirect grids (3 words each) at word [`Self::grid_word`].
    pub fn atom_bytes(&self) -> u64 {
        (self.grid_word(GRIDS) * 4) as u64
    }

    /// The word where indirect grid `k` starts (0: vertices x 1 value, 1: vertices x chunks,
    /// 2: segments x 1, 3: segments x chunks; written by `lattice_number` and `lattice_offsets`).
    pub fn grid_word(&self, k: usize) -> usize {
        3 * self.cap + 3 * k
    }

    /// Fills the block's lattice fields.
    pub fn apply(&self, b: &mut CrfBlock) {
        let u = |v: usize| v as u32;
        b.d = u(self.d);
        b.cap = u(self.cap);
        (b.o_rem0, b.o_rank, b.o_bary, b.o_vert) = (u(self.o_rem0), u(self.o_rank), u(self.o_bary), u(self.o_vert));
        (b.o_offsets, b.o_dense, b.o_sod, b.o_meta) = (u(self.o_offsets), u(self.o_dense), u(self.o_sod), u(self.o_meta));
        (b.o_nbr, b.o_entries, b.o_seg, b.o_segv) = (u(self.o_nbr), u(self.o_entries), u(self.o_seg), u(self.o_segv));
        let sf = crate::crf::scale_factors(self.d);
        let s = |i: usize| sf.get(i).copied().unwrap_or(0.0);
        (b.sf0, b.sf1, b.sf2, b.sf3, b.sf4) = (s(0), s(1), s(2), s(3), s(4));
        b.alpha = crate::crf::alpha(self.d);
    }
}
