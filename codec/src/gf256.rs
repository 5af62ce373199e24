//! GF(2^8) with the reduction polynomial x^8 + x^4 + x^3 + x + 1 (0x11B),
//! the AES field, which GFNI-capable CPUs multiply in one instruction.
//!
//! `mul_slow` is the plain shift-and-add reference every faster path is
//! tested against; `mul` uses log/exp tables (generator 0x03: 0x02 does not
//! generate the multiplicative group of this field).

/// The reduction polynomial, without the x^8 term.
pub const POLY: u8 = 0x1B;

/// Reference multiplication: carry-less shift-and-add, reducing by 0x11B.
pub const fn mul_slow(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        let carry = a & 0x80;
        a <<= 1;
        if carry != 0 {
            a ^= POLY;
        }
        b >>= 1;
    }
    product
}

struct Tables {
    exp: [u8; 512],
    log: [u8; 256],
}

const fn tables() -> Tables {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x = 1u8;
    let mut i = 0;
    while i < 255 {
        exp[i] = x;
        exp[i + 255] = x;
        log[x as usize] = i as u8;
        x = mul_slow(x, 3);
        i += 1;
    }
    exp[510] = exp[0];
    Tables { exp, log }
}

static TABLES: Tables = tables();

/// a * b in GF(2^8).
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    TABLES.exp[TABLES.log[a as usize] as usize + TABLES.log[b as usize] as usize]
}

/// The multiplicative inverse; `None` for 0.
#[inline]
pub fn inv(a: u8) -> Option<u8> {
    (a != 0).then(|| TABLES.exp[255 - TABLES.log[a as usize] as usize])
}

/// For every constant c, the two 16-entry tables of "multiply by c" for the
/// low and high nibble: c * x = lo[x & 15] ^ hi[x >> 4], the basis of the
/// SIMD kernels. Built at compile time (8 KiB): decoding calls the kernels
/// K^2 times on short rows, so building tables per call would dominate.
static NIBBLES: [[[u8; 16]; 2]; 256] = {
    let mut t = [[[0u8; 16]; 2]; 256];
    let mut c = 0;
    while c < 256 {
        let mut i = 0;
        while i < 16 {
            t[c][0][i] = mul_slow(c as u8, i as u8);
            t[c][1][i] = mul_slow(c as u8, (i as u8) << 4);
            i += 1;
        }
        c += 1;
    }
    t
};

/// The low- and high-nibble product tables of `c`.
#[inline]
pub fn nibble_tables(c: u8) -> (&'static [u8; 16], &'static [u8; 16]) {
    let [lo, hi] = &NIBBLES[c as usize];
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_axioms_hold_for_every_pair() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            if let Some(ia) = inv(a) {
                assert_eq!(mul(a, ia), 1, "inverse of {a}");
            }
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_slow(a, b), "{a} * {b}");
            }
        }
        assert_eq!(inv(0), None);
        // The AES field's textbook example: {57} * {83} = {c1}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        for c in 0..=255u8 {
            let (lo, hi) = nibble_tables(c);
            for x in 0..=255u8 {
                assert_eq!(lo[usize::from(x & 15)] ^ hi[usize::from(x >> 4)], mul(c, x));
            }
        }
    }
}
