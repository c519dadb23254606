//! The optimizer's state in two formats — a compact checkpoint written into a caller's buffer
//! (`compact`, no allocation) and a safetensors file (`safetensors`) — over one schema of a
//! group's settings ([`GroupFields`]) and one checksum ([`crc32c`]).
//!
//! Both carry everything that changes the next step's bytes: the step and skipped-step counts,
//! the learning-rate scale, every group's settings, and per tensor its length, dtypes, group,
//! random stream, name and momentum. So a run resumed from either gives exactly the bytes of an
//! uninterrupted one. Both are checked whole before anything is written, and both carry a
//! CRC-32C of their bytes, so that a damaged file (a flipped byte, a partial copy) is an error
//! rather than a different valid state.

pub(super) mod compact;
#[cfg(feature = "safetensors")]
mod safetensors;

use super::Group;
use crate::error::CheckpointError;
use crate::{Cautious, Hyperparams, Rounding, StepOptions, WeightDecay};
use crate::{MomentumMut, MomentumRef};

/// A group's settings as both formats store them: every field of [`Group`] that a state file
/// keeps (a group's options' `step` and `offset` are the optimizer's, not the group's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct GroupFields {
    pub(super) lr: f64,
    pub(super) beta1: f64,
    pub(super) beta2: f64,
    pub(super) weight_decay: f64,
    pub(super) maximize: bool,
    pub(super) grad_unscale: Option<f64>,
    /// `Some(max_lr)`: fully decoupled weight decay; `None`: the paper's.
    pub(super) max_lr: Option<f64>,
    /// `Some(seed)`: stochastic rounding; `None`: to nearest.
    pub(super) seed: Option<u64>,
    /// [`Cautious::Whole`] (a group of a `Lion` is never a shard).
    pub(super) cautious: bool,
    pub(super) skip_non_finite: bool,
}

impl GroupFields {
    pub(super) fn of(g: &Group) -> Self {
        let (hp, o) = (&g.hp, &g.options);
        Self {
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            weight_decay: hp.weight_decay,
            maximize: o.maximize,
            grad_unscale: o.grad_unscale,
            max_lr: match o.weight_decay {
                WeightDecay::Paper => None,
                WeightDecay::FullyDecoupled { max_lr } => Some(max_lr),
            },
            seed: match o.rounding {
                Rounding::Nearest => None,
                Rounding::Stochastic { seed } => Some(seed),
            },
            cautious: o.cautious != Cautious::Off,
            skip_non_finite: o.skip_non_finite,
        }
    }

    pub(super) fn group(self) -> Group {
        let options = StepOptions {
            maximize: self.maximize,
            grad_unscale: self.grad_unscale,
            weight_decay: match self.max_lr {
                None => WeightDecay::Paper,
                Some(max_lr) => WeightDecay::FullyDecoupled { max_lr },
            },
            rounding: match self.seed {
                None => Rounding::Nearest,
                Some(seed) => Rounding::Stochastic { seed },
            },
            cautious: if self.cautious {
                Cautious::Whole
            } else {
                Cautious::Off
            },
            skip_non_finite: self.skip_non_finite,
            ..StepOptions::default()
        };
        Group {
            hp: Hyperparams {
                lr: self.lr,
                beta1: self.beta1,
                beta2: self.beta2,
                weight_decay: self.weight_decay,
            },
            options,
        }
    }
}

/// CRC-32C (Castagnoli, reflected, as in iSCSI, ext4 and the SSE4.2 `crc32` instruction) of
/// `bytes`, continuing from `crc` (0 to start). It detects every error confined to 32
/// consecutive bits, so every single-byte change of a file.
pub(super) fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC32C_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

/// The byte-at-a-time table of [`crc32c`] (polynomial 0x82F63B78, reflected).
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Fills `dst` from little-endian bytes (`src` holds at least `W` bytes per element).
pub(super) fn fill_le<T, const W: usize>(dst: &mut [T], src: &[u8], from: fn([u8; W]) -> T) {
    let (chunks, _) = src.as_chunks::<W>();
    for (d, c) in dst.iter_mut().zip(chunks) {
        *d = from(*c);
    }
}

/// Fills a momentum buffer from its little-endian bytes (8-bit momentum: the codes, then the
/// scales), as [`momentum_le_bytes`] writes them.
pub(super) fn fill_momentum(m: MomentumMut<'_>, bytes: &[u8]) {
    use half::{bf16, f16};
    match m {
        MomentumMut::F32(s) => fill_le(s, bytes, f32::from_le_bytes),
        MomentumMut::F16(s) => fill_le(s, bytes, f16::from_le_bytes),
        MomentumMut::Bf16(s) => fill_le(s, bytes, bf16::from_le_bytes),
        MomentumMut::Q8(mut q) => {
            let (codes, absmax) = q.parts();
            let (c, a) = bytes.split_at(codes.len().min(bytes.len()));
            codes.copy_from_slice(c);
            fill_le(absmax, a, f32::from_le_bytes);
        }
    }
}

/// Calls `put` with the momentum's little-endian bytes, in pieces (8-bit momentum: the codes,
/// then the scales).
pub(super) fn momentum_le_bytes(m: MomentumRef<'_>, mut put: impl FnMut(&[u8])) {
    match m {
        MomentumRef::F32(s) => s.iter().for_each(|x| put(&x.to_le_bytes())),
        MomentumRef::F16(s) => s.iter().for_each(|x| put(&x.to_le_bytes())),
        MomentumRef::Bf16(s) => s.iter().for_each(|x| put(&x.to_le_bytes())),
        MomentumRef::Q8(q) => {
            put(q.codes());
            q.absmax().iter().for_each(|x| put(&x.to_le_bytes()));
        }
    }
}

/// Checks the state's learning-rate scale.
pub(super) fn check_lr_scale(lr_scale: f64) -> Result<f64, CheckpointError> {
    if lr_scale.is_finite() && lr_scale >= 0.0 {
        Ok(lr_scale)
    } else {
        Err(CheckpointError::Hyperparams)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_values() {
        // The standard check value (RFC 3720, B.4) and an incremental computation.
        assert_eq!(super::crc32c(0, b"123456789"), 0xe306_9283);
        assert_eq!(
            super::crc32c(super::crc32c(0, b"12345"), b"6789"),
            0xe306_9283
        );
        assert_eq!(super::crc32c(0, &[0u8; 32]), 0x8a91_36aa);
    }
}
