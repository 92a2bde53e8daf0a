//! Causal multi-head attention with grouped key/value heads, on the cache's plain vectors.
//!
//! For query row `i` (absolute position `p = p0 + i`) and head `h` (sharing kv head `h / (H/KV)`):
//! `a_j = softmax_j(q·k_j / sqrt(d))` for `j ≤ p`, output `Σ_j a_j v_j`. Optionally returns the
//! last row's `a` averaged over heads: the attention row the importance filter reads.

use super::kv_cache::LayerKv;
use super::ops::{axpy, dot};
use super::ModelConfig;
use rayon::prelude::*;

/// Returns the attention output (`m` rows of `heads * head_dim`) and, if `capture`, the last row's
/// head-averaged probabilities over positions `0 ..= p0 + m - 1`.
pub fn causal(
    cfg: &ModelConfig,
    q: &[f32],
    kv: &LayerKv,
    p0: usize,
    m: usize,
    capture: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (hd, nh, nkv) = (cfg.head_dim, cfg.heads, cfg.kv_heads);
    let group = nh / nkv;
    let kvw = nkv * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; m * nh * hd];
    let total = p0 + m;
    // One task per (row, head); each writes its own head_dim slice and returns its probabilities
    // when they are wanted (the last row only).
    let probs: Vec<Option<Vec<f32>>> = out
        .par_chunks_mut(hd)
        .enumerate()
        .map(|(idx, o)| {
            let (i, h) = (idx / nh, idx % nh);
            let kvh = h / group;
            let qh = &q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            let n = p0 + i + 1;
            let mut w: Vec<f32> = (0..n)
                .map(|j| dot(qh, &kv.k[j * kvw + kvh * hd..j * kvw + (kvh + 1) * hd]) * scale)
                .collect();
            let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            w.iter_mut().for_each(|x| {
                *x = (*x - max).exp();
                sum += *x;
            });
            let inv = 1.0 / sum;
            for (j, wj) in w.iter_mut().enumerate() {
                *wj *= inv;
                axpy(o, *wj, &kv.v[j * kvw + kvh * hd..j * kvw + (kvh + 1) * hd]);
            }
            (capture && i == m - 1).then_some(w)
        })
        .collect();
    let row = capture.then(|| {
        let mut acc = vec![0f32; total];
        for p in probs.into_iter().flatten() {
            axpy(&mut acc, 1.0 / nh as f32, &p);
        }
        acc
    });
    (out, row)
}
