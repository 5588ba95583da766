//! Wrapper of `shaders/regions.wgsl` (split-and-merge): the parameter block.

crate::param_block! {
    pub struct RegionsParams {
        pub n: u32,
        pub w: u32,
        pub h: u32,
        pub row: u32,
        pub k: u32,
        pub levels: u32,
        pub kmin: u32,
        pub predicate: u32,
        pub t: u32,
        pub a: u32,
        pub _p0: u32,
        pub _p1: u32,
    }
}

pub const WG: u32 = 64;
