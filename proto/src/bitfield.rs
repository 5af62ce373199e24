//! A fixed-length set of piece indices, in the wire's bit order (BEP 3:
//! the high bit of the first byte is piece 0).

/// Which pieces a peer (or we) have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set of `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield { bytes: vec![0; (len as usize).div_ceil(8)], len, ones: 0 }
    }

    /// A full set of `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parses a wire bitfield; `None` if its length is wrong or spare bits are set.
    pub fn from_wire(bytes: &[u8], len: u32) -> Option<Bitfield> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (bytes.len() * 8) as u32 - len;
        if spare > 0 && bytes.last().is_some_and(|last| last & ((1u8 << spare) - 1) != 0) {
            return None;
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Some(Bitfield { bytes: bytes.to_vec(), len, ones })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces in the set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; returns whether it was new. Out-of-range indices are ignored.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Iterates over the pieces in the set.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

/// A piece set that only grows, read without a lock: the verified pieces,
/// for the tasks that serve them (uploaders, coded senders) while the
/// picker keeps the states behind its own lock.
#[derive(Debug)]
pub struct GrowingSet {
    words: Vec<std::sync::atomic::AtomicU64>,
    len: u32,
}

impl GrowingSet {
    /// A set holding the pieces of `from`.
    pub fn new(from: &Bitfield) -> GrowingSet {
        let words = (0..from.len().div_ceil(64)).map(|_| std::sync::atomic::AtomicU64::new(0)).collect();
        let set = GrowingSet { words, len: from.len() };
        for i in from.ones() {
            set.insert(i);
        }
        set
    }

    pub fn insert(&self, i: u32) {
        if i < self.len {
            self.words[(i / 64) as usize].fetch_or(1 << (i % 64), std::sync::atomic::Ordering::Release);
        }
    }

    pub fn contains(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize].load(std::sync::atomic::Ordering::Acquire) & (1 << (i % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_spare_bits() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(Bitfield::from_wire(&[0x80, 0x40], 10), Some(b.clone()));
        assert_eq!(Bitfield::from_wire(&[0x80, 0x41], 10), None, "spare bit set");
        assert_eq!(Bitfield::from_wire(&[0x80], 10), None, "too short");
        assert_eq!(b.count(), 2);
        assert!(!b.set(0) && !b.set(10));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 9]);
        assert!(Bitfield::full(10).is_full());
    }

    #[test]
    fn a_growing_set_holds_what_it_started_with_and_what_was_added() {
        let mut b = Bitfield::new(130);
        b.set(3);
        let set = GrowingSet::new(&b);
        assert!(set.contains(3) && !set.contains(129));
        set.insert(129);
        set.insert(500);
        assert!(set.contains(129) && !set.contains(500));
    }
}
