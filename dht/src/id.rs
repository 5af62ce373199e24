//! 160-bit node ids and info-hashes, and the XOR metric (BEP 5).

use std::fmt;

/// A node id or an info-hash: both live in the same 160-bit space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 20]);

impl Id {
    /// A random id.
    pub fn random(rng: &mut impl rand::Rng) -> Id {
        Id(rng.random())
    }

    /// The XOR distance to `other`, comparable as a big-endian number.
    pub fn distance(&self, other: &Id) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Leading bits shared with `other` (160 for the same id): the index
    /// of the routing-table bucket `other` belongs in.
    pub fn shared_prefix(&self, other: &Id) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// A random id that shares exactly `bits` leading bits with this one
    /// (a target inside that bucket, for refreshing it).
    pub fn random_in_bucket(&self, bits: usize, rng: &mut impl rand::Rng) -> Id {
        let mut out = Id::random(rng);
        let bits = bits.min(159);
        for i in 0..=bits {
            let (byte, mask) = (i / 8, 0x80u8 >> (i % 8));
            let want = if i < bits { self.0[byte] & mask } else { !self.0[byte] & mask };
            out.0[byte] = (out.0[byte] & !mask) | want;
        }
        out
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        Some(Id(b.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Id(out))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn prefix_and_distance() {
        let a = Id([0; 20]);
        let mut b = Id([0; 20]);
        assert_eq!(a.shared_prefix(&b), 160);
        b.0[0] = 0x80;
        assert_eq!(a.shared_prefix(&b), 0);
        b.0[0] = 0x01;
        assert_eq!(a.shared_prefix(&b), 7);
        b.0 = [0; 20];
        b.0[19] = 1;
        assert_eq!(a.shared_prefix(&b), 159);
        assert_eq!(a.distance(&b)[19], 1);
        assert_eq!(Id::from_hex(&b.to_hex()), Some(b));
        assert_eq!(Id::from_hex("+f"), None);
    }

    #[test]
    fn random_ids_land_in_the_asked_bucket() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let me = Id::random(&mut rng);
        for bits in [0, 1, 7, 8, 9, 63, 150, 159] {
            for _ in 0..20 {
                assert_eq!(me.shared_prefix(&me.random_in_bucket(bits, &mut rng)), bits);
            }
        }
    }
}
