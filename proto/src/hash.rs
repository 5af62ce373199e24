//! SHA-1 of pieces, several at a time.
//!
//! Without SHA-NI (this project's machines have none), one SHA-1 stream runs
//! at about 500 MB/s: hashing alone would cost 2 CPU-seconds per GB. Pieces
//! are independent, so `sha1_batch` hashes up to eight at once in the eight
//! 32-bit lanes of AVX2 ("multi-buffer" SHA-1), several times the throughput
//! per core. Lone pieces, odd tails and CPUs without AVX2 use the `sha1`
//! crate. The results are identical either way (property-tested).

use sha1::digest::generic_array::GenericArray;
use sha1::{Digest, Sha1};

const INIT: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];

/// SHA-1 of one buffer.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

/// SHA-1 of each input, in order; uses SIMD lanes when it pays.
pub fn sha1_batch(inputs: &[&[u8]]) -> Vec<[u8; 20]> {
    #[cfg(target_arch = "x86_64")]
    if inputs.len() >= 2 && std::arch::is_x86_feature_detected!("avx2") {
        return inputs.chunks(8).flat_map(sha1_group_x86).collect();
    }
    inputs.iter().map(|d| sha1(d)).collect()
}

/// Hashes up to 8 inputs: the full 64-byte blocks they all have run in the
/// SIMD lanes, each input's remaining blocks and padding run scalar.
#[cfg(target_arch = "x86_64")]
fn sha1_group_x86(group: &[&[u8]]) -> Vec<[u8; 20]> {
    let common_blocks = group.iter().map(|d| d.len() / 64).min().unwrap_or(0);
    let mut states = [INIT; 8];
    if common_blocks > 0 {
        let mut lanes: [&[u8]; 8] = [group[0]; 8];
        for (lane, data) in lanes.iter_mut().zip(group) {
            *lane = data;
        }
        // SAFETY: the features were detected at run time (AVX2 by the caller);
        // every lane has at least `common_blocks` full blocks.
        unsafe {
            if std::arch::is_x86_feature_detected!("avx512vl") && std::arch::is_x86_feature_detected!("avx512f") && !force_avx2() {
                lanes::compress8_avx512(&mut states, &lanes, common_blocks)
            } else {
                lanes::compress8_avx2(&mut states, &lanes, common_blocks)
            }
        }
    }
    group.iter().zip(states).map(|(data, state)| finish(state, &data[common_blocks * 64..], data.len())).collect()
}

/// Tests pin the AVX2 path with this, so both kernels are checked on an AVX-512 machine.
#[cfg(target_arch = "x86_64")]
fn force_avx2() -> bool {
    #[cfg(test)]
    return tests::FORCE_AVX2.with(|f| f.get());
    #[cfg(not(test))]
    false
}

/// Compresses the rest of `tail` (a suffix of a message of `total_len` bytes) and the padding.
fn finish(mut state: [u32; 5], tail: &[u8], total_len: usize) -> [u8; 20] {
    let full = tail.len() / 64 * 64;
    let blocks: Vec<GenericArray<u8, _>> = tail[..full].chunks_exact(64).map(GenericArray::clone_from_slice).collect();
    sha1::compress(&mut state, &blocks);
    let rest = &tail[full..];
    let mut pad = [0u8; 128];
    pad[..rest.len()].copy_from_slice(rest);
    pad[rest.len()] = 0x80;
    let pad_len = if rest.len() < 56 { 64 } else { 128 };
    pad[pad_len - 8..pad_len].copy_from_slice(&((total_len as u64) * 8).to_be_bytes());
    let blocks: Vec<GenericArray<u8, _>> = pad[..pad_len].chunks_exact(64).map(GenericArray::clone_from_slice).collect();
    sha1::compress(&mut state, &blocks);
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    //! The 8-lane compression, generic over the few operations that differ
    //! between AVX2 and AVX-512VL (one-instruction rotates and three-input
    //! logic), each instantiated inside its own `target_feature` function.
    use std::arch::x86_64::*;

    /// SHA-1's per-round operations on 8 lanes of u32.
    pub trait Ops {
        unsafe fn rotl<const L: u32>(x: __m256i) -> __m256i;
        /// Ch(b, c, d) = (b & c) | (!b & d)
        unsafe fn choose(b: __m256i, c: __m256i, d: __m256i) -> __m256i;
        /// b ^ c ^ d
        unsafe fn parity(b: __m256i, c: __m256i, d: __m256i) -> __m256i;
        /// Maj(b, c, d)
        unsafe fn majority(b: __m256i, c: __m256i, d: __m256i) -> __m256i;
    }

    pub struct Avx2;

    impl Ops for Avx2 {
        #[inline(always)]
        unsafe fn rotl<const L: u32>(x: __m256i) -> __m256i {
            _mm256_or_si256(_mm256_sll_epi32(x, _mm_cvtsi32_si128(L as i32)), _mm256_srl_epi32(x, _mm_cvtsi32_si128(32 - L as i32)))
        }
        #[inline(always)]
        unsafe fn choose(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
            _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
        }
        #[inline(always)]
        unsafe fn parity(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
            _mm256_xor_si256(_mm256_xor_si256(b, c), d)
        }
        #[inline(always)]
        unsafe fn majority(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
            _mm256_or_si256(_mm256_and_si256(b, c), _mm256_and_si256(d, _mm256_or_si256(b, c)))
        }
    }

    pub struct Avx512;

    impl Ops for Avx512 {
        #[inline(always)]
        unsafe fn rotl<const L: u32>(x: __m256i) -> __m256i {
            _mm256_rolv_epi32(x, _mm256_set1_epi32(L as i32))
        }
        #[inline(always)]
        unsafe fn choose(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
            _mm256_ternarylogic_epi32::<0xCA>(b, c, d)
        }
        #[inline(always)]
        unsafe fn parity(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
            _mm256_ternarylogic_epi32::<0x96>(b, c, d)
        }
        #[inline(always)]
        unsafe fn majority(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
            _mm256_ternarylogic_epi32::<0xE8>(b, c, d)
        }
    }

    /// Transposes 8 rows of 8 u32 (row i = lane i's words) into 8 columns (word j of every lane).
    #[inline(always)]
    unsafe fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    /// Runs `blocks` SHA-1 compressions on 8 independent messages at once.
    #[inline(always)]
    unsafe fn compress8<O: Ops>(states: &mut [[u32; 5]; 8], lanes: &[&[u8]; 8], blocks: usize) {
        let bswap =
            _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        let word = |i: usize| {
            _mm256_setr_epi32(
                states[0][i] as i32,
                states[1][i] as i32,
                states[2][i] as i32,
                states[3][i] as i32,
                states[4][i] as i32,
                states[5][i] as i32,
                states[6][i] as i32,
                states[7][i] as i32,
            )
        };
        let mut h = [word(0), word(1), word(2), word(3), word(4)];
        let k = [
            _mm256_set1_epi32(0x5A82_7999),
            _mm256_set1_epi32(0x6ED9_EBA1),
            _mm256_set1_epi32(0x8F1B_BCDCu32 as i32),
            _mm256_set1_epi32(0xCA62_C1D6u32 as i32),
        ];
        for block in 0..blocks {
            let off = block * 64;
            let mut w = [_mm256_setzero_si256(); 16];
            for half in 0..2 {
                let mut rows = [_mm256_setzero_si256(); 8];
                for (lane, row) in rows.iter_mut().enumerate() {
                    *row = _mm256_loadu_si256(lanes[lane].as_ptr().add(off + half * 32) as *const __m256i);
                }
                for (j, col) in transpose8(rows).into_iter().enumerate() {
                    w[half * 8 + j] = _mm256_shuffle_epi8(col, bswap);
                }
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            // Fully unrolled: every schedule index is a constant, so `w` stays in registers.
            macro_rules! rounds {
                ($f:ident, $k:expr, $($t:literal)*) => {$(
                    if $t >= 16 {
                        let x = _mm256_xor_si256(O::parity(w[($t + 13) % 16], w[($t + 8) % 16], w[($t + 2) % 16]), w[$t % 16]);
                        w[$t % 16] = O::rotl::<1>(x);
                    }
                    let temp = _mm256_add_epi32(
                        _mm256_add_epi32(O::rotl::<5>(a), O::$f(b, c, d)),
                        _mm256_add_epi32(_mm256_add_epi32(e, $k), w[$t % 16]),
                    );
                    e = d;
                    d = c;
                    c = O::rotl::<30>(b);
                    b = a;
                    a = temp;
                )*};
            }
            rounds!(choose, k[0], 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
            rounds!(parity, k[1], 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
            rounds!(majority, k[2], 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59);
            rounds!(parity, k[3], 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79);
            h = [
                _mm256_add_epi32(h[0], a),
                _mm256_add_epi32(h[1], b),
                _mm256_add_epi32(h[2], c),
                _mm256_add_epi32(h[3], d),
                _mm256_add_epi32(h[4], e),
            ];
        }
        let mut words = [[0u32; 8]; 5];
        for (i, v) in h.iter().enumerate() {
            _mm256_storeu_si256(words[i].as_mut_ptr() as *mut __m256i, *v);
        }
        for (lane, state) in states.iter_mut().enumerate() {
            for (i, word) in state.iter_mut().enumerate() {
                *word = words[i][lane];
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2; every lane must hold at least `blocks * 64` bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn compress8_avx2(states: &mut [[u32; 5]; 8], lanes: &[&[u8]; 8], blocks: usize) {
        compress8::<Avx2>(states, lanes, blocks)
    }

    /// # Safety
    /// The CPU must support AVX2, AVX-512F and AVX-512VL; every lane must hold at least `blocks * 64` bytes.
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    pub unsafe fn compress8_avx512(states: &mut [[u32; 5]; 8], lanes: &[&[u8]; 8], blocks: usize) {
        compress8::<Avx512>(states, lanes, blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors() {
        assert_eq!(sha1(b"abc")[..4], [0xa9, 0x99, 0x3e, 0x36]);
        let empty: &[u8] = b"";
        let out = sha1_batch(&[b"abc", empty, &[0u8; 1000]]);
        assert_eq!(out, vec![sha1(b"abc"), sha1(b""), sha1(&[0u8; 1000])]);
    }

    thread_local! {
        pub static FORCE_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn both_simd_kernels_match_scalar() {
        let data: Vec<Vec<u8>> =
            (0..8u8).map(|i| (0..4096 + 64 * usize::from(i)).map(|j| (j as u8).wrapping_mul(i | 1)).collect()).collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let expect: Vec<[u8; 20]> = refs.iter().map(|d| sha1(d)).collect();
        for force in [false, true] {
            FORCE_AVX2.with(|f| f.set(force));
            assert_eq!(sha1_batch(&refs), expect, "force_avx2 = {force}");
        }
        FORCE_AVX2.with(|f| f.set(false));
    }

    #[test]
    fn a_batch_of_pieces_matches_one_at_a_time() {
        let data: Vec<Vec<u8>> = (0..11u8).map(|i| (0..65536 + 55 * usize::from(i)).map(|j| (j as u8) ^ i).collect()).collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
        let expect: Vec<[u8; 20]> = refs.iter().map(|d| sha1(d)).collect();
        assert_eq!(sha1_batch(&refs), expect);
    }

    proptest! {
        #[test]
        fn batch_equals_scalar(inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..12)) {
            let refs: Vec<&[u8]> = inputs.iter().map(|d| d.as_slice()).collect();
            let expect: Vec<[u8; 20]> = refs.iter().map(|d| sha1(d)).collect();
            prop_assert_eq!(sha1_batch(&refs), expect);
        }
    }
}
