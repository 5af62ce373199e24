//! ccfd-codec: random linear network coding over GF(2^8).
//!
//! A piece is cut into generations of K source symbols of S bytes (never
//! across pieces; the last generation is zero-padded and carries its real
//! length). A sender emits systematic symbols and coded combinations whose
//! coefficients come from a seed. A receiver's `Decoder` keeps its rows in
//! reduced row echelon form as packets arrive (progressive Gauss-Jordan),
//! rejects a non-innovative packet from its coefficients alone before
//! touching the payload, and hands back the generation at full rank. A peer
//! still receiving can `recode` fresh combinations of what it has.

pub mod coefficients;
pub mod gf256;
pub mod kernels;
pub mod packet;

use rand::Rng;

use kernels::{mul_add, scale};

/// Why a coded packet could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodingError {
    #[error("coefficient vector of {got} entries for generation size {want}")]
    Coefficients { got: usize, want: usize },
    #[error("payload of {got} bytes for symbol size {want}")]
    Payload { got: usize, want: usize },
    #[error("generation size must be 1..=256 and symbol size at least 1")]
    Parameters,
}

/// K source symbols of S bytes, as one padded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    k: usize,
    s: usize,
    /// Real bytes (the rest of the K*S buffer is padding).
    len: usize,
    symbols: Vec<u8>,
}

impl Generation {
    /// Cuts `piece` into generations of `k` symbols of `s` bytes.
    pub fn split(piece: &[u8], k: usize, s: usize) -> Result<Vec<Generation>, CodingError> {
        if !(1..=packet::MAX_K).contains(&k) || s == 0 {
            return Err(CodingError::Parameters);
        }
        Ok(piece
            .chunks(k * s)
            .map(|chunk| {
                let mut symbols = vec![0u8; k * s];
                symbols[..chunk.len()].copy_from_slice(chunk);
                Generation { k, s, len: chunk.len(), symbols }
            })
            .collect())
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn symbol_size(&self) -> usize {
        self.s
    }

    /// Real bytes in this generation.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Source symbol `i` (systematic packet payload).
    pub fn symbol(&self, i: usize) -> &[u8] {
        &self.symbols[i * self.s..(i + 1) * self.s]
    }

    /// Writes into `out` (S bytes) the combination of source symbols given by `coeffs` (K entries).
    pub fn combine_into(&self, coeffs: &[u8], out: &mut [u8]) {
        out.fill(0);
        for (i, &c) in coeffs.iter().enumerate().take(self.k) {
            mul_add(out, self.symbol(i), c);
        }
    }

    /// A coded symbol with seeded coefficients.
    pub fn coded(&self, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; self.s];
        self.combine_into(&coefficients::from_seed(seed, self.k), &mut out);
        out
    }

    /// The real bytes, without padding.
    pub fn data(&self) -> &[u8] {
        &self.symbols[..self.len]
    }
}

/// One received row: coefficients over the source symbols, and the payload they give.
#[derive(Debug, Clone)]
struct Row {
    coeffs: Vec<u8>,
    payload: Vec<u8>,
}

/// Progressive Gauss-Jordan decoder of one generation.
#[derive(Debug, Clone)]
pub struct Decoder {
    k: usize,
    s: usize,
    len: usize,
    rows: Vec<Row>,
    /// For each column, the row whose pivot it is.
    pivot_row: Vec<Option<usize>>,
    received: u64,
    non_innovative: u64,
}

impl Decoder {
    /// A decoder for a generation of `k` symbols of `s` bytes holding `len` real bytes.
    pub fn new(k: usize, s: usize, len: usize) -> Result<Decoder, CodingError> {
        if !(1..=packet::MAX_K).contains(&k) || s == 0 || len > k * s {
            return Err(CodingError::Parameters);
        }
        Ok(Decoder { k, s, len, rows: Vec::with_capacity(k), pivot_row: vec![None; k], received: 0, non_innovative: 0 })
    }

    pub fn rank(&self) -> usize {
        self.rows.len()
    }

    pub fn is_complete(&self) -> bool {
        self.rows.len() == self.k
    }

    /// Packets received, and how many of them added nothing.
    pub fn counts(&self) -> (u64, u64) {
        (self.received, self.non_innovative)
    }

    /// Takes a packet; returns whether it was innovative (raised the rank).
    /// The coefficient row is reduced first: a non-innovative packet is
    /// rejected before its payload is touched.
    pub fn receive(&mut self, coeffs: &[u8], payload: &[u8]) -> Result<bool, CodingError> {
        if coeffs.len() != self.k {
            return Err(CodingError::Coefficients { got: coeffs.len(), want: self.k });
        }
        if payload.len() != self.s {
            return Err(CodingError::Payload { got: payload.len(), want: self.s });
        }
        self.received += 1;
        // Rows are in reduced echelon form: subtracting one pivot row never
        // disturbs another pivot column, so one pass in any order reduces.
        let mut c = coeffs.to_vec();
        let mut steps = Vec::new();
        for (col, row) in self.pivot_row.iter().enumerate() {
            if let Some(r) = *row {
                let f = c[col];
                if f != 0 {
                    mul_add(&mut c, &self.rows[r].coeffs, f);
                    steps.push((r, f));
                }
            }
        }
        let Some(pivot) = c.iter().position(|&x| x != 0) else {
            self.non_innovative += 1;
            return Ok(false);
        };
        let mut p = payload.to_vec();
        for (r, f) in steps {
            mul_add(&mut p, &self.rows[r].payload, f);
        }
        let inv = gf256::inv(c[pivot]).unwrap_or(1);
        scale(&mut c, inv);
        scale(&mut p, inv);
        for row in &mut self.rows {
            let f = row.coeffs[pivot];
            if f != 0 {
                mul_add(&mut row.coeffs, &c, f);
                mul_add(&mut row.payload, &p, f);
            }
        }
        self.pivot_row[pivot] = Some(self.rows.len());
        self.rows.push(Row { coeffs: c, payload: p });
        Ok(true)
    }

    /// The decoded generation's real bytes, once at full rank.
    pub fn data(&self) -> Option<Vec<u8>> {
        if !self.is_complete() {
            return None;
        }
        let mut out = Vec::with_capacity(self.k * self.s);
        for row in &self.pivot_row {
            out.extend_from_slice(&self.rows[(*row)?].payload);
        }
        out.truncate(self.len);
        Some(out)
    }

    /// A fresh random combination of the rows received so far, with its
    /// explicit coefficients over the source symbols; `None` at rank 0. It is
    /// innovative to a neighbour whenever the neighbour's subspace does not
    /// contain ours (with probability 1 - 1/256 per missing dimension).
    pub fn recode(&self, rng: &mut impl Rng) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.rows.is_empty() {
            return None;
        }
        let mut coeffs = vec![0u8; self.k];
        let mut payload = vec![0u8; self.s];
        let mut any = false;
        for row in &self.rows {
            let r: u8 = rng.random();
            any |= r != 0;
            mul_add(&mut coeffs, &row.coeffs, r);
            mul_add(&mut payload, &row.payload, r);
        }
        if !any {
            coeffs.copy_from_slice(&self.rows[0].coeffs);
            payload.copy_from_slice(&self.rows[0].payload);
        }
        Some((coeffs, payload))
    }
}

#[cfg(test)]
mod tests;
