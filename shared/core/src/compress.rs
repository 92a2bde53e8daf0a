//! Upload compression (CU-HLM, arXiv 2505.11788): keep the top-k entries of the draft
//! distribution with 8-bit logarithmic probability codes, `k` chosen per token as the smallest
//! whose total-variation error stays under a bound.
//!
//! With `S` the kept set, `c_i` the decoded codes and `p̂_i = c_i / Σ_S c` (zero outside `S`, see
//! `hlm_protocol::dist`), the error is exactly
//! `TV(p, p̂) = ½ (Σ_{i∈S} |p_i − p̂_i| + Σ_{j∉S} p_j)`,
//! computed in `O(k)` for each candidate `k` from the sorted top entries.

use hlm_protocol::{DraftDist, QuantizedDist, SparseDist};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompressConfig {
    /// Largest total-variation distance allowed between `p` and the uploaded `p̂`.
    pub tv_bound: f32,
    /// Most entries ever kept.
    pub max_k: usize,
    /// Send exact `f32` probabilities (no quantisation) for the same top-k.
    pub exact: bool,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            tv_bound: 0.05,
            max_k: 256,
            exact: false,
        }
    }
}

/// Compresses `probs` (a distribution over the vocabulary) into the smallest upload within the bound.
pub fn compress(probs: &[f32], cfg: &CompressConfig) -> DraftDist {
    let v = probs.len() as u32;
    let m = cfg.max_k.clamp(1, probs.len().max(1));
    // Top-m candidates by partial selection, then sorted (O(V + m log m)).
    let mut idx: Vec<u32> = (0..v).collect();
    if m < idx.len() {
        idx.select_nth_unstable_by(m - 1, |&a, &b| {
            probs[b as usize].total_cmp(&probs[a as usize])
        });
        idx.truncate(m);
    }
    idx.sort_by(|&a, &b| {
        probs[b as usize]
            .total_cmp(&probs[a as usize])
            .then(a.cmp(&b))
    });
    let p: Vec<f64> = idx
        .iter()
        .map(|&i| probs[i as usize].max(0.0) as f64)
        .collect();
    let c: Vec<f64> = if cfg.exact {
        p.iter().map(|&x| x as f32 as f64).collect()
    } else {
        p.iter()
            .map(|&x| QuantizedDist::prob_of_code(QuantizedDist::code_for(x)))
            .collect()
    };
    let total: f64 = probs.iter().map(|&x| x.max(0.0) as f64).sum();
    let mut kept = 0f64;
    let mut chosen = m;
    for k in 1..=m {
        kept += p[k - 1];
        let s: f64 = c[..k].iter().sum();
        if s <= 0.0 {
            continue;
        }
        let err: f64 =
            (0..k).map(|i| (p[i] - c[i] / s).abs()).sum::<f64>() + (total - kept).max(0.0);
        if 0.5 * err <= cfg.tv_bound as f64 {
            chosen = k;
            break;
        }
    }
    let ids = &idx[..chosen];
    if cfg.exact {
        DraftDist::Exact {
            vocab_size: v,
            entries: ids.iter().map(|&i| (i, probs[i as usize])).collect(),
        }
    } else {
        let entries: Vec<(u32, u8)> = ids
            .iter()
            .map(|&i| (i, QuantizedDist::code_for(probs[i as usize] as f64)))
            .collect();
        DraftDist::Quantized(QuantizedDist::from_entries(v, &entries))
    }
}

/// Exact `TV(p, p̂) = ½ Σ_i |p_i − p̂_i|` over the whole vocabulary.
pub fn total_variation(probs: &[f32], p_hat: &SparseDist) -> f64 {
    let mut tv = 0f64;
    let mut e = p_hat.entries.iter().peekable();
    for (i, &p) in probs.iter().enumerate() {
        let q = match e.peek() {
            Some(&&(id, q)) if id as usize == i => {
                e.next();
                q
            }
            _ => 0.0,
        };
        tv += (p as f64 - q).abs();
    }
    0.5 * tv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{seeded_rng, softmax};
    use rand::Rng;

    fn random_dist(v: usize, sharpness: f32, seed: u64) -> Vec<f32> {
        let mut rng = seeded_rng(seed);
        let logits: Vec<f32> = (0..v).map(|_| rng.random::<f32>() * sharpness).collect();
        softmax(&logits, 1.0)
    }

    #[test]
    fn bound_is_honoured_and_round_trips() {
        for (v, sharp, seed) in [
            (151_936, 30.0, 1),
            (151_936, 18.0, 2),
            (1000, 6.0, 3),
            (1000, 40.0, 4),
        ] {
            let p = random_dist(v, sharp, seed);
            for exact in [false, true] {
                let cfg = CompressConfig {
                    exact,
                    ..Default::default()
                };
                let d = compress(&p, &cfg);
                let back = hlm_protocol::decode_client(&hlm_protocol::encode_client(
                    &hlm_protocol::ClientMsg::Round(hlm_protocol::Round {
                        round: 0,
                        base: 0,
                        tokens: vec![hlm_protocol::BlockToken {
                            id: 0,
                            verify: true,
                            dist: Some(d.clone()),
                        }],
                    }),
                ))
                .unwrap();
                let hlm_protocol::ClientMsg::Round(r) = back else {
                    panic!()
                };
                assert_eq!(r.tokens[0].dist.as_ref(), Some(&d));
                let p_hat = d.reconstruct().unwrap();
                let tv = total_variation(&p, &p_hat);
                let k = p_hat.entries.len();
                if k < cfg.max_k {
                    assert!(
                        tv <= cfg.tv_bound as f64 + 1e-6,
                        "V={v} sharp={sharp} exact={exact}: tv {tv} k {k}"
                    );
                }
                // Minimal-ish: one entry fewer would not have met the bound (when k > 1).
                if k > 1 && k < cfg.max_k {
                    let fewer = compress(
                        &p,
                        &CompressConfig {
                            max_k: k - 1,
                            ..cfg
                        },
                    );
                    let tv_fewer = total_variation(&p, &fewer.reconstruct().unwrap());
                    assert!(tv_fewer > cfg.tv_bound as f64 - 1e-6);
                }
            }
        }
    }

    #[test]
    fn bytes_are_counted_exactly() {
        let p = random_dist(151_936, 30.0, 5);
        let DraftDist::Quantized(q) = compress(&p, &CompressConfig::default()) else {
            panic!()
        };
        assert_eq!(q.payload_bits(), q.k as u64 * (8 + 18));
        assert_eq!(q.packed.len() as u64, (q.k as u64 * 26).div_ceil(8));
    }

    #[test]
    fn peaked_distribution_needs_one_entry() {
        let mut p = vec![0.0f32; 1000];
        p[7] = 0.99;
        p[8] = 0.01;
        let d = compress(&p, &CompressConfig::default());
        let s = d.reconstruct().unwrap();
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.entries[0].0, 7);
    }
}
