//! The 8-bit momentum: bitsandbytes' blockwise format.
//!
//! A momentum buffer of `n` elements is `n` one-byte codes and one f32 `absmax` per block of
//! [`Q8_BLOCK`] (256) elements: element `i` is `Q8_MAP[code[i]] * absmax[i / 256]`, where
//! [`Q8_MAP`] is bitsandbytes' signed dynamic map (`create_dynamic_map(signed=True)`: 256
//! ascending values, 0 at code 127 and 1 at code 255; -0.99296874 at code 0). Blocks are aligned
//! to the element index within the whole tensor, so a shard that starts at a multiple of 256
//! has blocks of its own. About 1.016 bytes per element instead of 4.
//!
//! This module holds the format's tables (the map, the decision thresholds of round-to-nearest,
//! the bucket tables the vector quantizer looks codes up in) and the views of a buffer
//! ([`Q8Mut`], [`Q8Ref`]). The arithmetic is `reference::step_q8` (the specification) and the
//! kernel's block loop.

use crate::Error;

/// Elements per block of the 8-bit momentum: one f32 `absmax` per 256 codes.
///
/// ```
/// assert_eq!(lion_optim::Q8_BLOCK, 256);
/// ```
pub const Q8_BLOCK: usize = 256;

/// The code table as f32 bit patterns: `create_dynamic_map(signed=True)` exactly as
/// bitsandbytes 0.50 computes it in f32 with torch's `linspace` evaluated with fused
/// multiply-adds (torch's AVX2 and AVX-512 CPU kernels; the usual case). `q8_map_is_bitsandbytes`
/// (the unit test below) re-derives it from that algorithm.
pub(crate) const MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// bitsandbytes' signed dynamic map: the value of each 8-bit code, before scaling by the block's
/// absmax. Strictly ascending; `Q8_MAP[127] == 0.0`, `Q8_MAP[255] == 1.0`,
/// `Q8_MAP[0] == -0.99296874` (there is no -1), and `Q8_MAP[254 - i] == -Q8_MAP[i]` for
/// `i <= 254`.
///
/// ```
/// use lion_optim::Q8_MAP;
///
/// assert_eq!((Q8_MAP[0], Q8_MAP[127], Q8_MAP[255]), (-0.99296874, 0.0, 1.0));
/// assert!(Q8_MAP.windows(2).all(|w| w[0] < w[1]));
/// ```
pub const Q8_MAP: [f32; 256] = {
    let mut map = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        map[i] = f32::from_bits(MAP_BITS[i]);
        i += 1;
    }
    map
};

/// The decision thresholds of round-to-nearest: `T[k] = f32(0.5 * f32(Q8_MAP[k] + Q8_MAP[k+1]))`
/// (the f32 midpoints, as bitsandbytes builds its quantizer from). A value `v` gets the code
/// `#{k : T[k] < v}`. Symmetric: `T[253 - k] == -T[k]`.
pub(crate) const THRESHOLDS: [f32; 255] = {
    let mut t = [0.0f32; 255];
    let mut k = 0;
    while k < 255 {
        t[k] = 0.5 * (Q8_MAP[k] + Q8_MAP[k + 1]);
        k += 1;
    }
    t
};

/// `f32(1 / f32(Q8_MAP[k+1] - Q8_MAP[k]))`: the reciprocal gaps of stochastic rounding.
pub(crate) const RECIP_GAPS: [f32; 255] = {
    let mut r = [0.0f32; 255];
    let mut k = 0;
    while k < 255 {
        r[k] = 1.0 / (Q8_MAP[k + 1] - Q8_MAP[k]);
        k += 1;
    }
    r
};

/// [`RECIP_GAPS`] as bits (for table lookups).
pub(crate) const RECIP_GAP_BITS: [u32; 255] = {
    let mut r = [0u32; 255];
    let mut k = 0;
    while k < 255 {
        r[k] = RECIP_GAPS[k].to_bits();
        k += 1;
    }
    r
};

/// The vector quantizer's buckets: a non-negative f32 `a` below 2 falls in bucket
/// `(bits(a) >> BUCKET_SHIFT) - BUCKET_FIRST` (clamped to the table): its exponent and top six
/// mantissa bits. Buckets start at 2^-22, below the smallest positive threshold and code.
pub(crate) const BUCKET_SHIFT: u32 = 17;
/// The bucket of `2^-22` (see [`BUCKET_SHIFT`]).
pub(crate) const BUCKET_FIRST: u32 = (127 - 22) << 6;
/// Buckets from `2^-22` up to `2` (exclusive).
pub(crate) const BUCKETS: usize = ((128 << 6) - BUCKET_FIRST) as usize;

/// Builds a bucket table over ascending positive thresholds `t` (each bucket holding at most
/// one): entry `b` is `n << 18 | low`, where `n` counts the thresholds below the bucket's start
/// and `low` is the low 18 bits of the bucket's threshold, or `1 << 17` (the next bucket's
/// start) if it has none. The threshold's other bits are the bucket's own: bucket `b` starts at
/// the bits `(b + BUCKET_FIRST) << BUCKET_SHIFT`.
const fn buckets(t: &[f32]) -> [u32; BUCKETS] {
    let mut table = [0u32; BUCKETS];
    let mut b = 0;
    let mut j = 0; // thresholds below the bucket's start
    while b < BUCKETS {
        let start = (b as u32 + BUCKET_FIRST) << BUCKET_SHIFT;
        let end = start + (1 << BUCKET_SHIFT);
        while j < t.len() && t[j].to_bits() < start {
            j += 1;
        }
        let mut low = 1 << BUCKET_SHIFT;
        if j < t.len() && t[j].to_bits() < end {
            low = t[j].to_bits() - start;
            // At most one threshold per bucket (checked by the unit test `buckets_hold_one`).
        }
        table[b] = ((j as u32) << 18) | low;
        b += 1;
    }
    table
}

/// The last 128 entries of `table`, its positive ones: the thresholds `T[127..]` (for rounding
/// to nearest), the codes `Q8_MAP[128..]` (for the floor index of stochastic rounding).
const fn last_128<const L: usize>(table: &[f32; L]) -> [f32; 128] {
    let mut t = [0.0f32; 128];
    let mut k = 0;
    while k < 128 {
        t[k] = table[L - 128 + k];
        k += 1;
    }
    t
}

/// Buckets of the positive thresholds: `n + (a > t)` counts the thresholds below `a`.
pub(crate) const NEAREST_BUCKETS: [u32; BUCKETS] = buckets(&last_128(&THRESHOLDS));

/// Buckets of the positive codes: `n + (a >= t)` counts the positive codes at most `a`.
pub(crate) const FLOOR_BUCKETS: [u32; BUCKETS] = buckets(&last_128(&Q8_MAP));

/// The high halves (bits 16..32) of [`MAP_BITS`]: a table of 16-bit words, for instruction
/// sets that look codes up by permuting words in registers (AVX-512 BW) instead of gathering.
#[cfg(target_arch = "x86_64")]
pub(crate) const MAP_HI: [u16; 256] = halves(&MAP_BITS, 16);
/// The low halves (bits 0..16) of [`MAP_BITS`] (see [`MAP_HI`]).
#[cfg(target_arch = "x86_64")]
pub(crate) const MAP_LO: [u16; 256] = halves(&MAP_BITS, 0);

// The map is odd around code 127 (`MAP[254 - i] == -MAP[i]`), code 127 is +0 and code 255 (1.0)
// has a zero low half: what the word-permuting decode (AVX-512) relies on.
const _: () = {
    let mut i = 0;
    while i < 127 {
        assert!(MAP_BITS[254 - i] == MAP_BITS[i] ^ 0x8000_0000);
        i += 1;
    }
    assert!(MAP_BITS[127] == 0 && MAP_BITS[255] & 0xffff == 0);
};

/// The positive thresholds of round-to-nearest (`T[127..]`) as bits.
#[cfg(target_arch = "x86_64")]
const NEAREST_BITS: [u32; 128] = {
    let t = last_128(&THRESHOLDS);
    let mut b = [0u32; 128];
    let mut k = 0;
    while k < 128 {
        b[k] = t[k].to_bits();
        k += 1;
    }
    b
};
/// The high halves of the positive thresholds. Strictly ascending (checked at compile time), so
/// a value's high half leaves at most one threshold undecided: the search of the word-permuting
/// quantizer (`Simd::q8_nearest` on AVX-512) runs on the high halves alone and then compares that
/// one threshold whole.
#[cfg(target_arch = "x86_64")]
pub(crate) const NEAREST_HI: [u16; 128] = {
    let h = halves(&NEAREST_BITS, 16);
    let mut k = 1;
    while k < 128 {
        assert!(h[k - 1] < h[k], "two thresholds share their high half");
        k += 1;
    }
    h
};
/// The low halves of the positive thresholds (see [`NEAREST_HI`]).
#[cfg(target_arch = "x86_64")]
pub(crate) const NEAREST_LO: [u16; 128] = halves(&NEAREST_BITS, 0);

/// The first binade of the word-permuting quantizer's buckets (`2^-22`, below the smallest
/// positive threshold): a value's high half `h` (its `|x|` bits 16..31: exponent and seven
/// mantissa bits) is in binade `e = (h >> 7) - NEAREST_E0` (0 below it).
#[cfg(target_arch = "x86_64")]
pub(crate) const NEAREST_E0: u16 = 127 - 22;

/// Binades of the word-permuting quantizer: `2^-22` up to 2 (exclusive).
#[cfg(target_arch = "x86_64")]
const BINADES: usize = 23;

/// The mantissa bits each binade's buckets use: the fewest such that no two positive thresholds'
/// high halves of the binade share them (so a bucket holds at most one).
#[cfg(target_arch = "x86_64")]
const BINADE_BITS: [u16; BINADES] = {
    let mut bits = [0u16; BINADES];
    let mut e = 0;
    while e < BINADES {
        let mut k = 0u16;
        'widen: loop {
            let mut j = 1;
            while j < 128 {
                let (a, b) = (NEAREST_HI[j - 1], NEAREST_HI[j]);
                let binade = e as u16 + NEAREST_E0;
                if a >> 7 == binade
                    && b >> 7 == binade
                    && (a & 0x7f) >> (7 - k) == (b & 0x7f) >> (7 - k)
                {
                    k += 1;
                    assert!(k <= 7, "two thresholds share their high half");
                    continue 'widen;
                }
                j += 1;
            }
            break;
        }
        bits[e] = k;
        e += 1;
    }
    bits
};

/// Per binade (32 words, the first [`BINADES`] used): the index of its first bucket. A value's
/// bucket is `NEAREST_BASE[e] + ((h & 0x7f) >> NEAREST_SHIFT[e])`.
#[cfg(target_arch = "x86_64")]
pub(crate) const NEAREST_BASE: [u16; 32] = BINADE_TABLES.0;

/// Per binade: how far its mantissa bits are shifted down (`7 - ` its bits).
#[cfg(target_arch = "x86_64")]
pub(crate) const NEAREST_SHIFT: [u16; 32] = BINADE_TABLES.1;

/// [`NEAREST_BASE`] and [`NEAREST_SHIFT`], from [`BINADE_BITS`].
#[cfg(target_arch = "x86_64")]
const BINADE_TABLES: ([u16; 32], [u16; 32]) = {
    let (mut base, mut shift) = ([0u16; 32], [7u16; 32]);
    let mut at = 0u16;
    let mut e = 0;
    while e < BINADES {
        base[e] = at;
        shift[e] = 7 - BINADE_BITS[e];
        at += 1 << BINADE_BITS[e];
        e += 1;
    }
    assert!(at as usize <= 256, "more than 256 buckets");
    (base, shift)
};

/// Per bucket (256 words): the count of positive thresholds whose high half is below the
/// bucket's first, at most 127. Then threshold `k = NEAREST_COUNT[bucket]` is the only one left
/// undecided by the high half (the bucket holds at most its high half; those before are below
/// the value, those after above), so `k + (T[k] < |x|)` is the count of thresholds below `|x|`
/// (a count of 128 is capped to 127, whose threshold is then below `|x|` too).
#[cfg(target_arch = "x86_64")]
pub(crate) const NEAREST_COUNT: [u16; 256] = {
    let mut count = [0u16; 256];
    let mut e = 0;
    while e < BINADES {
        let mut m = 0u16;
        while m < 1 << BINADE_BITS[e] {
            let first = ((e as u16 + NEAREST_E0) << 7) | (m << NEAREST_SHIFT[e]);
            let mut n = 0u16;
            while n < 128 && NEAREST_HI[n as usize] < first {
                n += 1;
            }
            count[(NEAREST_BASE[e] + m) as usize] = if n > 127 { 127 } else { n };
            m += 1;
        }
        e += 1;
    }
    count
};

/// The 16-bit halves of a table of bits, starting at bit `shift`.
#[cfg(target_arch = "x86_64")]
const fn halves<const L: usize>(bits: &[u32; L], shift: u32) -> [u16; L] {
    let mut h = [0u16; L];
    let mut k = 0;
    while k < L {
        h[k] = (bits[k] >> shift) as u16;
        k += 1;
    }
    h
}

/// The 8-bit momentum of a tensor (or of a shard of one), for updating: `codes[i]` is element
/// `i`'s code, `absmax[b]` block `b`'s scale. Made by [`Q8Mut::new`], which checks that there is
/// one `absmax` per started block of 256 codes.
///
/// ```
/// use lion_optim::Q8Mut;
///
/// let (mut codes, mut absmax) = (vec![127u8; 1000], vec![0.0f32; 4]);
/// let m = Q8Mut::new(&mut codes, &mut absmax)?;
/// assert_eq!(m.len(), 1000);
/// assert!(Q8Mut::new(&mut codes, &mut absmax[..3]).is_err());
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Debug)]
pub struct Q8Mut<'a> {
    pub(crate) codes: &'a mut [u8],
    pub(crate) absmax: &'a mut [f32],
}

/// The 8-bit momentum of a tensor, for reading (see [`Q8Mut`]).
///
/// ```
/// use lion_optim::Q8Ref;
///
/// let (codes, absmax) = ([127u8, 255], [2.0f32]);
/// let m = Q8Ref::new(&codes, &absmax)?;
/// assert_eq!(m.get(1), Some(2.0));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Q8Ref<'a> {
    pub(crate) codes: &'a [u8],
    pub(crate) absmax: &'a [f32],
}

/// Checks that `absmax` has one scale per started block of `codes`.
fn check_blocks(codes: usize, absmax: usize) -> Result<(), Error> {
    let expected = codes.div_ceil(Q8_BLOCK);
    if absmax != expected {
        return Err(Error::LengthMismatch {
            what: "absmax",
            expected,
            found: absmax,
        });
    }
    Ok(())
}

/// What [`Q8Mut`] and [`Q8Ref`] have alike: the view of codes and scales, the length.
macro_rules! q8_common {
    ($t:ident, $empty:literal, $($mut:tt)?) => {
        impl<'a> $t<'a> {
            /// Views `codes` and `absmax` as 8-bit momentum; `absmax` must have
            /// `codes.len().div_ceil(256)` elements ([`Error::LengthMismatch`] otherwise).
            pub fn new(codes: &'a $($mut)? [u8], absmax: &'a $($mut)? [f32]) -> Result<Self, Error> {
                check_blocks(codes.len(), absmax.len())?;
                Ok(Self { codes, absmax })
            }

            /// The number of elements.
            pub fn len(&self) -> usize {
                self.codes.len()
            }

            /// Whether there are no elements.
            ///
            /// ```
            #[doc = concat!("assert!(lion_optim::", stringify!($t), "::new(", $empty, ").unwrap().is_empty());")]
            /// ```
            pub fn is_empty(&self) -> bool {
                self.codes.is_empty()
            }
        }
    };
}
q8_common!(Q8Mut, "&mut [], &mut []", mut);
q8_common!(Q8Ref, "&[], &[]",);

impl<'a> Q8Mut<'a> {
    /// The codes and the block scales.
    pub fn parts(&mut self) -> (&mut [u8], &mut [f32]) {
        (self.codes, self.absmax)
    }

    /// A shorter-lived view of the same momentum.
    pub fn reborrow(&mut self) -> Q8Mut<'_> {
        Q8Mut {
            codes: self.codes,
            absmax: self.absmax,
        }
    }

    /// A read-only view of the same momentum.
    pub fn as_ref(&self) -> Q8Ref<'_> {
        Q8Ref {
            codes: self.codes,
            absmax: self.absmax,
        }
    }

    /// The elements `..mid` and `mid..`: `mid` clamped to the length, and below it rounded
    /// down to a multiple of [`Q8_BLOCK`] (blocks are never cut).
    pub(crate) fn split_blocks(self, mid: usize) -> (Q8Mut<'a>, Q8Mut<'a>) {
        let len = self.codes.len();
        let mid = if mid >= len {
            len
        } else {
            mid / Q8_BLOCK * Q8_BLOCK
        };
        let (c1, c2) = self.codes.split_at_mut(mid);
        let (a1, a2) = self
            .absmax
            .split_at_mut(mid.div_ceil(Q8_BLOCK).min(self.absmax.len()));
        (
            Q8Mut {
                codes: c1,
                absmax: a1,
            },
            Q8Mut {
                codes: c2,
                absmax: a2,
            },
        )
    }
}

impl<'a> Q8Ref<'a> {
    /// The codes.
    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }

    /// The block scales.
    pub fn absmax(&self) -> &'a [f32] {
        self.absmax
    }

    /// Element `i` as f32: `Q8_MAP[code] * absmax` (see the type's example).
    pub fn get(&self, i: usize) -> Option<f32> {
        let code = *self.codes.get(i)?;
        Some(Q8_MAP[usize::from(code)] * *self.absmax.get(i / Q8_BLOCK)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is `create_dynamic_map(signed=True)` as bitsandbytes computes it: for
    /// `i in 0..=6`, `b = torch.linspace(0.1, 1, 2^i + 1, float32)` (torch evaluates `start +
    /// step*k` for `k < n/2` and `end - step*(n-1-k)` above, each one fused multiply-add with
    /// `step = f32(f32(1 - 0.1) / (n - 1))`), the f32 means `f32(b[j] + b[j+1]) * 0.5` scaled
    /// by `f32(10^(i-6))` and its negation, plus 0 and 1, sorted. A fused multiply-add of f32
    /// values is one rounding of the exact result, which f64 holds here exactly.
    #[test]
    fn q8_map_is_bitsandbytes() {
        fn fma(a: f32, b: f32, c: f32) -> f32 {
            (f64::from(a) * f64::from(b) + f64::from(c)) as f32
        }
        let mut data = std::vec::Vec::new();
        for i in 0..7usize {
            let n = (1usize << i) + 1;
            let (start, end) = (0.1f32, 1.0f32);
            let step = (end - start) / (n - 1) as f32;
            let b: std::vec::Vec<f32> = (0..n)
                .map(|k| {
                    if k < n / 2 {
                        fma(step, k as f32, start)
                    } else {
                        fma(-step, (n - 1 - k) as f32, end)
                    }
                })
                .collect();
            let scale = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i] as f32;
            for j in 0..n - 1 {
                let mean = (b[j] + b[j + 1]) * 0.5;
                data.push(scale * mean);
                data.push(-scale * mean);
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        let bits: std::vec::Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, MAP_BITS);
    }

    #[test]
    fn buckets_hold_one() {
        for t in [&last_128(&THRESHOLDS)[..], &last_128(&Q8_MAP)[..]] {
            for w in t.windows(2) {
                assert!(w[0] < w[1]);
                // Two values in one bucket would share the bits above BUCKET_SHIFT.
                assert_ne!(
                    w[0].to_bits() >> BUCKET_SHIFT,
                    w[1].to_bits() >> BUCKET_SHIFT
                );
            }
            assert!(t[0].to_bits() >> BUCKET_SHIFT >= BUCKET_FIRST);
        }
        for k in 0..254 {
            assert_eq!(THRESHOLDS[253 - k], -THRESHOLDS[k]);
        }
    }
}
