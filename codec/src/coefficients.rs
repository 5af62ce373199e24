//! Coefficient vectors from a seed, so a coded packet carries 8 bytes
//! instead of K.
//!
//! The generator is SplitMix64 (Steele, Lea, Flood 2014): state += 0x9E3779B97F4A7C15,
//! then z = (z ^ z>>30) * 0xBF58476D1CE4E5B9, z = (z ^ z>>27) * 0x94D049BB133111EB,
//! output z ^ z>>31. Coefficient i is byte i (little-endian) of the output
//! stream started from the seed; an all-zero vector gets coefficient 0 = 1.
//! SplitMix64's multiplications make it non-linear over GF(2): a GF(2)-linear
//! generator (xorshift, an LFSR) spans at most 64 dimensions from a 64-bit
//! state, so K = 128 would never decode.

/// One step of SplitMix64.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The K coefficients of the packet with this seed.
pub fn from_seed(seed: u64, k: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(k + 8);
    while out.len() < k {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(k);
    if out.iter().all(|&c| c == 0) {
        if let Some(first) = out.first_mut() {
            *first = 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_vectors() {
        // Published outputs of SplitMix64 started from state 0.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut s), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn coefficients_are_the_little_endian_stream() {
        assert_eq!(from_seed(0, 10), vec![0xAF, 0xCD, 0x1D, 0x7B, 0x39, 0xA8, 0x20, 0xE2, 0xF4, 0x65]);
        assert_eq!(from_seed(7, 3), from_seed(7, 100)[..3].to_vec());
    }
}
