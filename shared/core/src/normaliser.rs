//! Bounds on softmax normalisers at many temperatures from one pass over the logits.
//!
//! U-HLM's uncertainty asks, for each of K temperatures, whether a uniform `r` is at least
//! `e_x / Z(inv)`, with `Z(inv) = Σ_i e^{−d_i · inv}` and `d_i = m − l_i ≥ 0` each logit's
//! distance below the largest. Computing `Z` exactly costs a pass of exponentials over the
//! vocabulary (152k for Qwen) per temperature. Most answers are clear from bounds on `Z`:
//! - the logits within [`HEAD`] of the largest (usually a handful) are kept and summed exactly;
//! - the others are counted in bins of width [`BIN`] by distance, with the sum of their
//!   distances. In a bin, `e^{−d · inv}` is convex in `d`, so the bin's terms add up to at least
//!   `n · e^{−mean · inv}` (Jensen) and at most the chord through the bin's edges at its mean;
//! - those farther than [`FAR`] add between 0 and `n · e^{−FAR · inv}`.
//!
//! The bounds are on `Z` as the exact pass computes it ([`crate::sampling::sum_exp_shifted`]):
//! each of its terms is [`exp_neg`] of an f32 argument (relative error below 5·10⁻⁶, clamped at
//! `e^{−87}`, which keeps it convex), summed in f32 lanes of at most 64 terms (relative error
//! below 4·10⁻⁶). The bounds widen by [`MARGIN`], several times those errors together, so a
//! decision taken from them is the one the exact pass takes, to the bit.

use crate::sampling::{exp_neg, sum_exp_shifted};

/// Distances below this are summed exactly.
const HEAD: f32 = 2.0;
/// Width of a bin of distances (a power of two: the bin index is exact).
const BIN: f32 = 0.125;
/// Distances from this on go uncounted but for an upper bound.
const FAR: f32 = 48.0;
/// Bins between [`HEAD`] and [`FAR`].
const BINS: usize = ((FAR - HEAD) / BIN) as usize;
/// Relative widening of both bounds, against the exact pass's own rounding.
const MARGIN: f64 = 1e-4;

/// What one pass over the logits keeps to bound `Z(inv)` at any temperature.
pub(crate) struct NormaliserBounds {
    /// `l − m` for the logits within [`HEAD`] of the largest (summed by the exact pass's own
    /// function: the same terms, vectorised).
    head: Vec<f32>,
    /// Non-empty bins: (count, sum of distances, the bin's lower edge).
    bins: Vec<(u32, f64, f32)>,
    /// Logits at [`FAR`] or farther (or NaN, which the exact pass counts as `e^{−87}`).
    far: usize,
}

impl NormaliserBounds {
    /// One pass over `logits`, whose largest is `m`. None when `m` is not finite.
    pub(crate) fn new(logits: &[f32], m: f32) -> Option<Self> {
        if !m.is_finite() {
            return None;
        }
        let mut head = Vec::new();
        let mut counts = [0u32; BINS];
        let mut sums = [0f64; BINS];
        let mut far = 0usize;
        // Each logit's bin (or none) for a chunk in a loop that vectorises, then the counting.
        let mut bin_of = [0u32; 256];
        for chunk in logits.chunks(256) {
            for (b, &l) in bin_of.iter_mut().zip(chunk) {
                // Exact: `d − HEAD` and the scaling by a power of two do not round here.
                let x = ((m - l) - HEAD) * (1.0 / BIN);
                *b = if x >= 0.0 && x < BINS as f32 {
                    x as u32
                } else {
                    u32::MAX
                };
            }
            for (&b, &l) in bin_of.iter().zip(chunk) {
                let d = m - l;
                if let Some(count) = counts.get_mut(b as usize) {
                    *count += 1;
                    sums[b as usize] += d as f64;
                } else if d < HEAD {
                    head.push(l - m);
                } else {
                    // At FAR or farther, or NaN.
                    far += 1;
                }
            }
        }
        let bins = (0..BINS)
            .filter(|&b| counts[b] > 0)
            .map(|b| (counts[b], sums[b], HEAD + b as f32 * BIN))
            .collect();
        Some(Self { head, bins, far })
    }

    /// `(low, high)` with `low ≤ Z(inv) ≤ high` for `Z` as the exact pass computes it.
    pub(crate) fn bounds(&self, inv: f32) -> (f64, f64) {
        let e = |d: f32| exp_neg(-d * inv) as f64;
        let exact = sum_exp_shifted(&self.head, 0.0, inv);
        let (mut low, mut high) = (exact, exact);
        for &(n, sum, lo) in &self.bins {
            let n64 = n as f64;
            let mean = (sum / n64) as f32;
            low += n64 * e(mean);
            // The chord from (lo, e(lo)) to (lo + BIN, e(lo + BIN)), at the mean.
            let t = ((mean - lo) / BIN).clamp(0.0, 1.0) as f64;
            high += n64 * (e(lo) * (1.0 - t) + e(lo + BIN) * t);
        }
        high += self.far as f64 * e(FAR);
        (low * (1.0 - MARGIN), high * (1.0 + MARGIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{argmax, seeded_rng, sum_exp_shifted};
    use rand::Rng as _;

    /// Logits shaped like a language model's: a few near the top, a bulk far below.
    fn lm_like(n: usize, seed: u64, spread: f32) -> Vec<f32> {
        let mut g = seeded_rng(seed);
        (0..n)
            .map(|i| {
                let base = g.random::<f32>() * spread - spread / 2.0;
                if i % 997 == 3 {
                    base + 15.0
                } else {
                    base
                }
            })
            .collect()
    }

    #[test]
    fn bounds_hold_the_exact_pass_and_are_tight() {
        let mut cases: Vec<Vec<f32>> = (0..6)
            .map(|s| lm_like(30_000, s, 4.0 + 6.0 * s as f32))
            .collect();
        cases.push(vec![0.0; 5000]); // flat: all in the head
        let mut far_and_odd = lm_like(5000, 9, 200.0);
        far_and_odd[7] = f32::NEG_INFINITY;
        far_and_odd[8] = f32::NAN;
        cases.push(far_and_odd);
        for (c, logits) in cases.iter().enumerate() {
            let m = logits[argmax(logits) as usize];
            let b = NormaliserBounds::new(logits, m).expect("finite maximum");
            for k in 0..200 {
                let inv = 1.0 / (0.005 + k as f32 * 0.01);
                let z = sum_exp_shifted(logits, m, inv);
                let (low, high) = b.bounds(inv);
                assert!(
                    low <= z && z <= high,
                    "case {c}, inv {inv}: {low} ≤ {z} ≤ {high}"
                );
                assert!(
                    high / low < 1.01,
                    "case {c}, inv {inv}: {low}..{high} around {z}"
                );
            }
        }
    }

    #[test]
    fn no_bounds_without_a_finite_maximum() {
        assert!(NormaliserBounds::new(&[f32::NAN], f32::NAN).is_none());
        assert!(NormaliserBounds::new(&[f32::INFINITY], f32::INFINITY).is_none());
    }
}
