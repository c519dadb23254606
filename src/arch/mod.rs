//! Instruction sets: one module each, implementing [`Simd`](crate::simd::Simd).

pub(crate) mod portable;
