//! The draft distribution `p̂` as uploaded, and its reconstruction.
//!
//! **Compression (CU-HLM, arXiv 2505.11788).** Only the top-k entries of `p` are sent, each as
//! `(index, code)`: the index in `⌈log2 V⌉` bits and an 8-bit logarithmic code `c` meaning
//! probability `2^(-c/16)` (16 steps per octave, relative error ≤ 2.2 %, range down to 2⁻¹⁶).
//! Payload: `k · (8 + ⌈log2 V⌉)` bits (26 bits per entry for V = 151,936), bit-packed LSB-first.
//!
//! **Reconstruction** (identical on both sides, in `f64`): `p̂_i = c_i / Σ_j c_j` over the kept
//! entries (`c_i` the decoded probabilities) and `p̂ = 0` elsewhere. CU-HLM spreads the missing
//! mass uniformly over the other `V − k` tokens instead; we renormalise because the client *samples
//! its token from `p̂`* — a uniform rest would make it draw a uniformly random token from the whole
//! vocabulary about `1 − Σ c` of the time — and because then speculative sampling against `p̂` is
//! exactly lossless: the uploaded token really was drawn from the uploaded distribution.
//! The price is `TV(p, p̂) = ½ (Σ_kept |p_i − p̂_i| + Σ_dropped p_j)`, which the compressor keeps
//! under its bound by choosing `k`.

use crate::ProtocolError;
use serde::{Deserialize, Serialize};

/// A draft distribution as uploaded with a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DraftDist {
    /// CU-HLM: top-k `(index, 8-bit log-coded probability)`, bit-packed.
    Quantized(QuantizedDist),
    /// Exact sparse probabilities (no compression: ablations, U-HLM's full upload).
    Exact {
        vocab_size: u32,
        entries: Vec<(u32, f32)>,
    },
}

/// Bit-packed top-k entries; see the module documentation for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizedDist {
    pub vocab_size: u32,
    pub k: u32,
    pub packed: Vec<u8>,
}

/// `p̂` over the whole vocabulary: explicit entries summing to 1, zero elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseDist {
    pub vocab_size: u32,
    /// Sorted by id, unique, summing to 1.
    pub entries: Vec<(u32, f64)>,
}

impl SparseDist {
    pub fn prob(&self, id: u32) -> f64 {
        match self.entries.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0.0,
        }
    }

    /// Builds `p̂` from explicit `(id, p)` pairs (validated, any order) by the rule above.
    fn from_entries(vocab_size: u32, mut entries: Vec<(u32, f64)>) -> Result<Self, ProtocolError> {
        if vocab_size == 0 {
            return Err(ProtocolError::BadDistribution("empty vocabulary".into()));
        }
        if entries.len() > vocab_size as usize {
            return Err(ProtocolError::BadDistribution(format!(
                "{} entries for a vocabulary of {vocab_size}",
                entries.len()
            )));
        }
        entries.sort_by_key(|e| e.0);
        for w in entries.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(ProtocolError::BadDistribution(format!(
                    "token {} appears twice",
                    w[0].0
                )));
            }
        }
        if let Some(&(id, _)) = entries.iter().find(|e| e.0 >= vocab_size) {
            return Err(ProtocolError::TokenOutOfRange { id, vocab_size });
        }
        let s: f64 = entries.iter().map(|e| e.1).sum();
        if s.is_nan() || s <= 0.0 {
            return Err(ProtocolError::BadDistribution(
                "no probability mass (empty or all zero)".into(),
            ));
        }
        entries.iter_mut().for_each(|e| e.1 /= s);
        Ok(Self {
            vocab_size,
            entries,
        })
    }
}

impl QuantizedDist {
    /// Code steps per octave: code `c` stands for probability `2^(-c/16)`.
    pub const CODE_STEPS_PER_OCTAVE: f64 = 16.0;

    /// Bits of one index: `⌈log2 V⌉` (at least 1).
    pub fn index_bits(vocab_size: u32) -> u32 {
        (32 - vocab_size.saturating_sub(1).leading_zeros()).max(1)
    }

    /// Nearest code for `p`: `round(-16 · log2 p)` clamped to `0..=255`; `p ≤ 0` gives 255.
    pub fn code_for(p: f64) -> u8 {
        if p.is_nan() || p <= 0.0 {
            return 255;
        }
        (-Self::CODE_STEPS_PER_OCTAVE * p.log2())
            .round()
            .clamp(0.0, 255.0) as u8
    }

    pub fn prob_of_code(c: u8) -> f64 {
        (-(c as f64) / Self::CODE_STEPS_PER_OCTAVE).exp2()
    }

    /// Packs `(index, code)` entries.
    pub fn from_entries(vocab_size: u32, entries: &[(u32, u8)]) -> Self {
        let ib = Self::index_bits(vocab_size);
        let mut w = BitWriter::default();
        for &(i, c) in entries {
            w.put(i as u64, ib);
            w.put(c as u64, 8);
        }
        Self {
            vocab_size,
            k: entries.len() as u32,
            packed: w.finish(),
        }
    }

    /// Unpacks the entries; errors on a payload of the wrong length or an index out of range.
    pub fn entries(&self) -> Result<Vec<(u32, u8)>, ProtocolError> {
        if self.k > self.vocab_size {
            return Err(ProtocolError::BadDistribution(format!(
                "k = {} exceeds the vocabulary of {}",
                self.k, self.vocab_size
            )));
        }
        let expected = self.payload_bits().div_ceil(8) as usize;
        if self.packed.len() != expected {
            return Err(ProtocolError::BadDistribution(format!(
                "payload of {} bytes, {} entries need {expected}",
                self.packed.len(),
                self.k
            )));
        }
        let ib = Self::index_bits(self.vocab_size);
        let mut r = BitReader::new(&self.packed);
        let mut out = Vec::with_capacity(self.k as usize);
        for _ in 0..self.k {
            let i = r.get(ib) as u32;
            let c = r.get(8) as u8;
            if i >= self.vocab_size {
                return Err(ProtocolError::TokenOutOfRange {
                    id: i,
                    vocab_size: self.vocab_size,
                });
            }
            out.push((i, c));
        }
        Ok(out)
    }

    /// `k · (8 + ⌈log2 V⌉)`.
    pub fn payload_bits(&self) -> u64 {
        self.k as u64 * (8 + Self::index_bits(self.vocab_size) as u64)
    }
}

impl DraftDist {
    pub fn vocab_size(&self) -> u32 {
        match self {
            DraftDist::Quantized(q) => q.vocab_size,
            DraftDist::Exact { vocab_size, .. } => *vocab_size,
        }
    }

    /// Bits of the distribution's payload (excluding message framing).
    pub fn wire_bits(&self) -> u64 {
        match self {
            DraftDist::Quantized(q) => q.payload_bits(),
            DraftDist::Exact { entries, .. } => entries.len() as u64 * 64,
        }
    }

    /// Validates and reconstructs `p̂`. Exact entries must be finite, in `[0, 1]`, and sum to at
    /// most `1 + 1e-3`.
    pub fn reconstruct(&self) -> Result<SparseDist, ProtocolError> {
        match self {
            DraftDist::Quantized(q) => {
                let entries = q
                    .entries()?
                    .into_iter()
                    .map(|(i, c)| (i, QuantizedDist::prob_of_code(c)))
                    .collect();
                SparseDist::from_entries(q.vocab_size, entries)
            }
            DraftDist::Exact {
                vocab_size,
                entries,
            } => {
                let mut sum = 0f64;
                for &(id, p) in entries {
                    if !p.is_finite() || !(0.0..=1.0).contains(&p) {
                        return Err(ProtocolError::BadDistribution(format!(
                            "probability of token {id} is {p}"
                        )));
                    }
                    sum += p as f64;
                }
                if sum > 1.0 + 1e-3 {
                    return Err(ProtocolError::BadDistribution(format!(
                        "not normalised: probabilities sum to {sum}"
                    )));
                }
                SparseDist::from_entries(
                    *vocab_size,
                    entries.iter().map(|&(i, p)| (i, p as f64)).collect(),
                )
            }
        }
    }
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, v: u64, bits: u32) {
        let v = v & ((1u64 << bits) - 1);
        self.acc |= v << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }

    /// Reads `bits` (≤ 32); past the end, reads zeros (lengths are checked beforehand).
    fn get(&mut self, bits: u32) -> u64 {
        while self.n < bits {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            self.acc |= (b as u64) << self.n;
            self.n += 8;
        }
        let v = self.acc & ((1u64 << bits) - 1);
        self.acc >>= bits;
        self.n -= bits;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_for_various_vocabularies() {
        for v in [151_936u32, 49_152, 2, 1] {
            let entries: Vec<(u32, u8)> =
                (0..v.min(50)).map(|i| (v - 1 - i, (i * 5) as u8)).collect();
            let q = QuantizedDist::from_entries(v, &entries);
            assert_eq!(q.entries().unwrap(), entries, "V = {v}");
            assert_eq!(
                q.payload_bits(),
                entries.len() as u64 * (8 + QuantizedDist::index_bits(v) as u64)
            );
            assert_eq!(q.packed.len() as u64, q.payload_bits().div_ceil(8));
        }
        assert_eq!(QuantizedDist::index_bits(151_936), 18);
    }

    #[test]
    fn codes_are_within_the_stated_relative_error() {
        for &p in &[1.0, 0.9, 0.5, 0.123, 0.01, 1e-4] {
            let c = QuantizedDist::code_for(p);
            let back = QuantizedDist::prob_of_code(c);
            assert!((back / p - 1.0).abs() <= 0.0219, "p = {p}, back = {back}");
        }
        assert_eq!(QuantizedDist::code_for(0.0), 255);
        assert_eq!(QuantizedDist::code_for(f64::NAN), 255);
    }

    #[test]
    fn reconstruction_renormalises_the_kept_entries() {
        let d = DraftDist::Exact {
            vocab_size: 10,
            entries: vec![(3, 0.5), (1, 0.3)],
        };
        let s = d.reconstruct().unwrap();
        assert!((s.prob(3) - 0.625).abs() < 1e-6);
        assert_eq!(s.prob(7), 0.0);
        let total: f64 = (0..10).map(|i| s.prob(i)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // Codes that sum over one are normalised too.
        let q = DraftDist::Quantized(QuantizedDist::from_entries(4, &[(0, 0), (1, 0)]));
        let s = q.reconstruct().unwrap();
        assert!((s.prob(0) - 0.5).abs() < 1e-12);
        let empty = DraftDist::Exact {
            vocab_size: 4,
            entries: vec![(1, 0.0)],
        };
        assert!(matches!(
            empty.reconstruct(),
            Err(ProtocolError::BadDistribution(_))
        ));
    }

    #[test]
    fn invalid_distributions_are_rejected_by_name() {
        let bad = |entries: Vec<(u32, f32)>| {
            DraftDist::Exact {
                vocab_size: 10,
                entries,
            }
            .reconstruct()
            .unwrap_err()
        };
        assert!(matches!(
            bad(vec![(1, f32::NAN)]),
            ProtocolError::BadDistribution(_)
        ));
        assert!(matches!(
            bad(vec![(1, -0.1)]),
            ProtocolError::BadDistribution(_)
        ));
        assert!(
            matches!(bad(vec![(1, 0.7), (2, 0.7)]), ProtocolError::BadDistribution(m) if m.contains("normalised"))
        );
        assert!(
            matches!(bad(vec![(1, 0.2), (1, 0.2)]), ProtocolError::BadDistribution(m) if m.contains("twice"))
        );
        assert!(matches!(
            bad(vec![(10, 0.2)]),
            ProtocolError::TokenOutOfRange { id: 10, .. }
        ));
        let mut q = QuantizedDist::from_entries(100, &[(1, 3), (2, 4)]);
        q.packed.push(0);
        assert!(matches!(
            DraftDist::Quantized(q.clone()).reconstruct(),
            Err(ProtocolError::BadDistribution(_))
        ));
        q.packed.truncate(2);
        assert!(DraftDist::Quantized(q).reconstruct().is_err());
        let q = QuantizedDist::from_entries(100, &[(1, 3), (1, 4)]);
        assert!(DraftDist::Quantized(q).reconstruct().is_err());
    }
}
