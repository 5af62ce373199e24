//! Slice kernels over GF(2^8): the inner loops of encoding, decoding and
//! recoding. AVX2 (32 bytes) or AVX-512BW (64 bytes) "split nibble" shuffles
//! where the CPU has them, with the scalar loops as the reference they are
//! property-tested against.

use super::gf256::{mul, nibble_tables};

/// dst[i] ^= c * src[i], over the common length.
pub fn mul_add(dst: &mut [u8], src: &[u8], c: u8) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    match c {
        0 => {}
        1 => xor(dst, src),
        _ => {
            #[cfg(target_arch = "x86_64")]
            if n >= 32 {
                let (lo, hi) = nibble_tables(c);
                if simd::avx512() {
                    // SAFETY: AVX-512BW detected at run time.
                    return unsafe { simd::mul_add_avx512(dst, src, lo, hi) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 detected at run time.
                    return unsafe { simd::mul_add_avx2(dst, src, lo, hi) };
                }
            }
            mul_add_scalar(dst, src, c)
        }
    }
}

/// dst[i] = c * dst[i].
pub fn scale(dst: &mut [u8], c: u8) {
    match c {
        1 => {}
        0 => dst.fill(0),
        _ => {
            #[cfg(target_arch = "x86_64")]
            if dst.len() >= 32 && std::arch::is_x86_feature_detected!("avx2") {
                let (lo, hi) = nibble_tables(c);
                // SAFETY: AVX2 detected at run time.
                return unsafe { simd::scale_avx2(dst, lo, hi) };
            }
            scale_scalar(dst, c)
        }
    }
}

/// dst[i] ^= src[i].
pub fn xor(dst: &mut [u8], src: &[u8]) {
    // The compiler vectorizes this plain loop.
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// Sum of a[i] * b[i]: one coefficient of a product of coefficient vectors.
pub fn dot(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).fold(0, |acc, (&x, &y)| acc ^ mul(x, y))
}

/// The scalar reference of `mul_add`.
pub fn mul_add_scalar(dst: &mut [u8], src: &[u8], c: u8) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d ^= mul(c, s);
    }
}

/// The scalar reference of `scale`.
pub fn scale_scalar(dst: &mut [u8], c: u8) {
    for d in dst.iter_mut() {
        *d = mul(c, *d);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::mul_add_scalar;

    pub fn avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512f")
    }

    #[inline(always)]
    unsafe fn mul32(x: __m256i, lo: __m256i, hi: __m256i, mask: __m256i) -> __m256i {
        let l = _mm256_shuffle_epi8(lo, _mm256_and_si256(x, mask));
        let h = _mm256_shuffle_epi8(hi, _mm256_and_si256(_mm256_srli_epi64::<4>(x), mask));
        _mm256_xor_si256(l, h)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn mul_add_avx2(dst: &mut [u8], src: &[u8], lo: &[u8; 16], hi: &[u8; 16]) {
        let c = lo[1];
        let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr() as *const __m128i));
        let hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr() as *const __m128i));
        let mask = _mm256_set1_epi8(0x0f);
        let n = dst.len() / 32 * 32;
        let mut i = 0;
        while i < n {
            let s = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            let d = _mm256_loadu_si256(dst.as_ptr().add(i) as *const __m256i);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, _mm256_xor_si256(d, mul32(s, lo, hi, mask)));
            i += 32;
        }
        mul_add_scalar(&mut dst[n..], &src[n..], c);
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn scale_avx2(dst: &mut [u8], lo: &[u8; 16], hi: &[u8; 16]) {
        let c = lo[1];
        let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(lo.as_ptr() as *const __m128i));
        let hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(hi.as_ptr() as *const __m128i));
        let mask = _mm256_set1_epi8(0x0f);
        let n = dst.len() / 32 * 32;
        let mut i = 0;
        while i < n {
            let d = _mm256_loadu_si256(dst.as_ptr().add(i) as *const __m256i);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, mul32(d, lo, hi, mask));
            i += 32;
        }
        super::scale_scalar(&mut dst[n..], c);
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn mul_add_avx512(dst: &mut [u8], src: &[u8], lo: &[u8; 16], hi: &[u8; 16]) {
        let c = lo[1];
        let lo512 = _mm512_broadcast_i32x4(_mm_loadu_si128(lo.as_ptr() as *const __m128i));
        let hi512 = _mm512_broadcast_i32x4(_mm_loadu_si128(hi.as_ptr() as *const __m128i));
        let mask = _mm512_set1_epi8(0x0f);
        let n = dst.len() / 64 * 64;
        let mut i = 0;
        while i < n {
            let s = _mm512_loadu_si512(src.as_ptr().add(i) as *const _);
            let d = _mm512_loadu_si512(dst.as_ptr().add(i) as *const _);
            let l = _mm512_shuffle_epi8(lo512, _mm512_and_si512(s, mask));
            let h = _mm512_shuffle_epi8(hi512, _mm512_and_si512(_mm512_srli_epi64::<4>(s), mask));
            _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut _, _mm512_xor_si512(d, _mm512_xor_si512(l, h)));
            i += 64;
        }
        mul_add_scalar(&mut dst[n..], &src[n..], c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn simd_mul_add_equals_scalar(src in proptest::collection::vec(any::<u8>(), 0..300), seed in any::<u8>(), c in any::<u8>()) {
            let dst0: Vec<u8> = src.iter().map(|b| b.wrapping_mul(31) ^ seed).collect();
            let mut fast = dst0.clone();
            let mut slow = dst0.clone();
            mul_add(&mut fast, &src, c);
            mul_add_scalar(&mut slow, &src, c);
            prop_assert_eq!(&fast, &slow);
            let mut fast = dst0.clone();
            let mut slow = dst0;
            scale(&mut fast, c);
            scale_scalar(&mut slow, c);
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn avx2_path_is_checked_even_where_avx512_exists() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let src: Vec<u8> = (0..=255).cycle().take(1000).collect();
            for c in [2u8, 0x53, 0xff] {
                let mut fast = vec![7u8; 1000];
                let mut slow = fast.clone();
                let (lo, hi) = crate::gf256::nibble_tables(c);
                // SAFETY: AVX2 detected just above.
                unsafe { simd::mul_add_avx2(&mut fast, &src, lo, hi) };
                mul_add_scalar(&mut slow, &src, c);
                assert_eq!(fast, slow, "c = {c}");
            }
        }
    }
}
