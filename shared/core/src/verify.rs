//! Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): the verifier accepts the draft
//! token `x ~ p̂` with probability `min(1, q(x) / p̂(x))`, and otherwise samples from the residual
//! `norm(max(0, q − p̂))`. The emitted token is then distributed exactly as `q`. Under greedy
//! decoding this reduces to: accept iff `argmax q = x`, else emit `argmax q`.

use crate::sampling::{argmax, Rng};
use hlm_protocol::SparseDist;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Accepted,
    Resampled(u32),
}

/// Verifies `x` against the verifier's probabilities `q` (already at the session temperature).
pub fn verify_sampled(q: &[f32], x: u32, p_hat: &SparseDist, rng: &mut Rng) -> Outcome {
    let px = p_hat.prob(x);
    let qx = q.get(x as usize).copied().unwrap_or(0.0).max(0.0) as f64;
    if px > 0.0 && rng.random::<f64>() < (qx / px).min(1.0) {
        return Outcome::Accepted;
    }
    Outcome::Resampled(sample_residual(q, p_hat, rng))
}

/// Draws from `norm(max(0, q − p̂))`; from `q` itself if the residual is empty (`q = p̂`).
fn sample_residual(q: &[f32], p_hat: &SparseDist, rng: &mut Rng) -> u32 {
    let residual =
        |i: usize, entries: &mut std::iter::Peekable<std::slice::Iter<'_, (u32, f64)>>| {
            let p = match entries.peek() {
                Some(&&(id, p)) if id as usize == i => {
                    entries.next();
                    p
                }
                _ => 0.0,
            };
            (q[i].max(0.0) as f64 - p).max(0.0)
        };
    let mut entries = p_hat.entries.iter().peekable();
    let total: f64 = (0..q.len()).map(|i| residual(i, &mut entries)).sum();
    if total <= 0.0 {
        let p: Vec<f32> = q.to_vec();
        return crate::sampling::sample_index(&p, rng);
    }
    let mut r = rng.random::<f64>() * total;
    let mut entries = p_hat.entries.iter().peekable();
    let mut last = argmax(q);
    for i in 0..q.len() {
        let w = residual(i, &mut entries);
        if w > 0.0 {
            last = i as u32;
            r -= w;
            if r < 0.0 {
                return i as u32;
            }
        }
    }
    last
}

/// Greedy verification: accept iff the verifier's argmax is `x`.
pub fn verify_greedy(q_logits: &[f32], x: u32) -> Outcome {
    let best = argmax(q_logits);
    if best == x {
        Outcome::Accepted
    } else {
        Outcome::Resampled(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{sample_sparse, seeded_rng};

    const P: [f64; 6] = [0.35, 0.25, 0.2, 0.1, 0.06, 0.04];
    const Q: [f32; 6] = [0.1, 0.3, 0.05, 0.25, 0.2, 0.1];
    /// χ² critical value for 5 degrees of freedom at p = 0.999.
    const CHI2_5_999: f64 = 20.52;

    fn p_hat() -> SparseDist {
        hlm_protocol::DraftDist::Exact {
            vocab_size: 6,
            entries: P
                .iter()
                .enumerate()
                .map(|(i, &p)| (i as u32, p as f32))
                .collect(),
        }
        .reconstruct()
        .unwrap()
    }

    fn chi2(counts: &[u64], expected: &[f64], n: u64) -> f64 {
        counts
            .iter()
            .zip(expected)
            .map(|(&c, &e)| {
                let e = e * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn speculative_sampling_preserves_the_verifier_distribution() {
        let p = p_hat();
        let mut rng = seeded_rng(42);
        let n = 100_000u64;
        let mut counts = [0u64; 6];
        for _ in 0..n {
            let x = sample_sparse(&p, &mut rng);
            let y = match verify_sampled(&Q, x, &p, &mut rng) {
                Outcome::Accepted => x,
                Outcome::Resampled(y) => y,
            };
            counts[y as usize] += 1;
        }
        let q: Vec<f64> = Q.iter().map(|&x| x as f64).collect();
        let stat = chi2(&counts, &q, n);
        assert!(stat < CHI2_5_999, "chi2 = {stat}, counts {counts:?}");
        // And it is far from the draft distribution (the test can fail).
        assert!(chi2(&counts, &P, n) > 1000.0);
    }

    #[test]
    fn residual_distribution_is_norm_max_q_minus_p() {
        let p = p_hat();
        let mut rng = seeded_rng(7);
        let n = 100_000u64;
        let mut counts = [0u64; 6];
        for _ in 0..n {
            counts[sample_residual(&Q, &p, &mut rng) as usize] += 1;
        }
        let r: Vec<f64> = Q
            .iter()
            .zip(P)
            .map(|(&q, p)| (q as f64 - p).max(0.0))
            .collect();
        let z: f64 = r.iter().sum();
        // Zero-residual tokens (0 and 2) are never drawn.
        assert_eq!(counts[0], 0);
        assert_eq!(counts[2], 0);
        let expected: Vec<f64> = r.iter().map(|x| x / z).collect();
        let (c, e): (Vec<u64>, Vec<f64>) = counts
            .iter()
            .zip(&expected)
            .filter(|(_, &e)| e > 0.0)
            .map(|(&c, &e)| (c, e))
            .unzip();
        assert!(chi2(&c, &e, n) < 16.27, "counts {counts:?}"); // 3 dof, p = 0.999
    }

    #[test]
    fn greedy_accepts_iff_argmax_matches() {
        let q = [0.1, 2.0, 0.5];
        assert_eq!(verify_greedy(&q, 1), Outcome::Accepted);
        assert_eq!(verify_greedy(&q, 2), Outcome::Resampled(1));
    }

    #[test]
    fn identical_distributions_always_accept() {
        let p = p_hat();
        let q: Vec<f32> = P.iter().map(|&x| x as f32).collect();
        let mut rng = seeded_rng(1);
        for _ in 0..10_000 {
            let x = sample_sparse(&p, &mut rng);
            assert_eq!(verify_sampled(&q, x, &p, &mut rng), Outcome::Accepted);
        }
    }
}
