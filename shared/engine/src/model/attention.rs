//! Causal multi-head attention with grouped key/value heads, on the cache's plain vectors.
//!
//! For query row `i` (absolute position `p = p0 + i`) and head `h` (sharing kv head `h / (H/KV)`):
//! `a_j = softmax_j(q·k_j / sqrt(d))` for `j ≤ p`, output `Σ_j a_j v_j`. Optionally returns the
//! last row's `a` averaged over heads: the attention row the importance filter reads.
//!
//! The work is split over the kernels' threads (the same pool as the matrix products, so no
//! second pool competes with it for the cores) one task per sequence and head: a task takes all
//! its head's rows through the keys and values together, a few positions at a time.

use super::kv_cache::LayerKv;
use super::ops::{axpy, dot, exp};
use super::ModelConfig;
use std::sync::OnceLock;

/// One sequence's share of a layer's attention: its query rows (`m` rows of `heads * head_dim`)
/// at positions `p0 .. p0 + m`, against its cache's layer (already holding those positions).
pub struct Queries<'a> {
    pub q: &'a [f32],
    pub kv: &'a LayerKv,
    pub p0: usize,
    pub m: usize,
}

/// What one head of one sequence gives: its rows' outputs (`m × head_dim`) and, if asked, its
/// last row's probabilities over positions `0 ..= p0 + m - 1`.
type Attended = (Vec<f32>, Option<Vec<f32>>);

/// Attention for each sequence of `seqs`, on the threads of `par`: the output rows of all the
/// sequences stacked in order (each `heads * head_dim`), and per sequence, if `capture`, its
/// last row's probabilities averaged over heads. A sequence's result does not depend on the
/// others: each task reads one sequence and writes its own buffer.
pub fn causal_batch(
    cfg: &ModelConfig,
    seqs: &[Queries<'_>],
    capture: bool,
    par: &dyn hlm_kernels::Parallel,
) -> (Vec<f32>, Vec<Option<Vec<f32>>>) {
    let nh = cfg.heads;
    let heads: Vec<OnceLock<Attended>> = (0..seqs.len() * nh).map(|_| OnceLock::new()).collect();
    par.for_ranges(heads.len(), &|tasks| {
        for t in tasks {
            let (s, h) = (t / nh, t % nh);
            let _ = heads[t].set(head(cfg, &seqs[s], h, capture));
        }
    });
    let mut heads = heads
        .into_iter()
        .map(|c| c.into_inner().unwrap_or_default());
    let width = nh * cfg.head_dim;
    let mut rows = vec![0f32; seqs.iter().map(|sq| sq.m).sum::<usize>() * width];
    let mut at = 0;
    let probs = seqs
        .iter()
        .map(|sq| {
            let per_head: Vec<Attended> = heads.by_ref().take(nh).collect();
            let out = &mut rows[at..at + sq.m * width];
            at += sq.m * width;
            gather(cfg, sq, per_head, capture, out)
        })
        .collect();
    (rows, probs)
}

/// One head's rows of one sequence: `m × head_dim` outputs, and the last row's probabilities
/// when `capture`. Compiled a second time for AVX2 where the CPU has it, with the keys' dot
/// products in AVX intrinsics: the same operations in the same order on wider registers, so the
/// same bits (tested).
fn head(cfg: &ModelConfig, sq: &Queries<'_>, h: usize, capture: bool) -> Attended {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { head_avx2(cfg, sq, h, capture) };
    }
    head_any(cfg, sq, h, capture)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn head_avx2(cfg: &ModelConfig, sq: &Queries<'_>, h: usize, capture: bool) -> Attended {
    // SAFETY: the CPU has AVX2 (this function's contract).
    let dots = |a: &[f32], b: [&[f32]; 8]| unsafe { x86::dot8(a, b) };
    head_with(cfg, sq, h, capture, dots)
}

#[inline(always)]
fn head_any(cfg: &ModelConfig, sq: &Queries<'_>, h: usize, capture: bool) -> Attended {
    head_with(cfg, sq, h, capture, dot8)
}

/// [`head`] with `dots` for eight keys at a time (the same results as [`dot8`]).
///
/// The head's `m` query rows go through the keys and values together, a few keys at a time, so
/// that each key and value is fetched from memory once for all rows and then read from the L1
/// cache (one row at a time, a head's 256 positions of values were fetched from the L2 cache
/// again for every row). Each row's sums keep their order: its scores over keys `0, 1, …`, and
/// each output element summed in order of position, so the results are the same bits as row by
/// row.
#[inline(always)]
fn head_with(
    cfg: &ModelConfig,
    sq: &Queries<'_>,
    h: usize,
    capture: bool,
    dots: impl Fn(&[f32], [&[f32]; 8]) -> [f32; 8],
) -> Attended {
    let (hd, nh) = (cfg.head_dim, cfg.heads);
    let kvw = cfg.kv_heads * hd;
    let kvh = h / (nh / cfg.kv_heads);
    let scale = 1.0 / (hd as f32).sqrt();
    let (keys, values) = (&sq.kv.k[..], &sq.kv.v[..]);
    let key = |j: usize| &keys[j * kvw + kvh * hd..j * kvw + (kvh + 1) * hd];
    let value = |j: usize| &values[j * kvw + kvh * hd..j * kvw + (kvh + 1) * hd];
    let query = |i: usize| &sq.q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
    if sq.m == 0 {
        return (Vec::new(), capture.then(Vec::new));
    }
    // Row `i` (position `p0 + i`) sees keys `0 .. seen(i)`.
    let seen = |i: usize| sq.p0 + i + 1;
    let all = seen(sq.m - 1);
    let mut w: Vec<Vec<f32>> = (0..sq.m).map(|i| Vec::with_capacity(seen(i))).collect();
    // Scores: keys eight at a time against every row that sees all eight, then each row's last
    // keys one by one (a key's score is the same bits either way).
    for j in (0..all / 8 * 8).step_by(8) {
        let eight = std::array::from_fn(|t| key(j + t));
        for (i, wi) in w.iter_mut().enumerate().filter(|(i, _)| j + 8 <= seen(*i)) {
            wi.extend(dots(query(i), eight).map(|x| x * scale));
        }
    }
    for (i, wi) in w.iter_mut().enumerate() {
        let n = seen(i);
        wi.extend((n / 8 * 8..n).map(|j| dot(query(i), key(j)) * scale));
        softmax(wi);
    }
    // Outputs: the values `KEYS_AT_ONCE` positions at a time against every row.
    const KEYS_AT_ONCE: usize = 16;
    let mut out = vec![0f32; sq.m * hd];
    for j0 in (0..all).step_by(KEYS_AT_ONCE) {
        for (o, wi) in out.chunks_exact_mut(hd).zip(&w) {
            let end = (j0 + KEYS_AT_ONCE).min(wi.len());
            if j0 < end {
                weighted_sum(o, &wi[j0..end], |j| value(j0 + j));
            }
        }
    }
    (out, capture.then(|| w.pop().unwrap_or_default()))
}

/// `w_j ← exp(w_j − max w) / Σ exp(w_k − max w)`, in place. Every step runs eight lanes at a
/// time in a fixed order (so it vectorises, and gives the same bits on every target).
#[inline(always)]
fn softmax(w: &mut [f32]) {
    let max = lanes8(w, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    w.iter_mut().for_each(|x| *x = exp(*x - max));
    let sum = lanes8(w, 0.0, |a, b| a + b);
    let inv = 1.0 / sum;
    w.iter_mut().for_each(|x| *x *= inv);
}

/// `v` folded by `f` in eight lanes (lane `i` takes values `i, i + 8, …`), the lanes then
/// folded `((0, 4), (1, 5)), ((2, 6), (3, 7))`, then the last values in order.
#[inline(always)]
fn lanes8(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let whole = v.len() / 8 * 8;
    let mut acc = [init; 8];
    for c in v[..whole].chunks_exact(8) {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let a = &acc;
    let folded = f(
        f(f(a[0], a[4]), f(a[1], a[5])),
        f(f(a[2], a[6]), f(a[3], a[7])),
    );
    v[whole..].iter().fold(folded, |s, &x| f(s, x))
}

/// [`dot`] of `a` with four vectors at once (four independent chains of additions, where one
/// alone waits on its own latency), each summed in `dot`'s order: the same four results.
#[inline(always)]
fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let whole = a.len() / 8 * 8;
    let (mut s0, mut s1, mut s2, mut s3) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
    for c in (0..whole).step_by(8) {
        let x = eight(&a[c..]);
        mul_add8(&mut s0, x, eight(&b[0][c..]));
        mul_add8(&mut s1, x, eight(&b[1][c..]));
        mul_add8(&mut s2, x, eight(&b[2][c..]));
        mul_add8(&mut s3, x, eight(&b[3][c..]));
    }
    let sums = [s0, s1, s2, s3];
    std::array::from_fn(|k| {
        let a8 = &sums[k];
        let mut s = ((a8[0] + a8[4]) + (a8[1] + a8[5])) + ((a8[2] + a8[6]) + (a8[3] + a8[7]));
        for (x, y) in a[whole..].iter().zip(&b[k][whole..]) {
            s += x * y;
        }
        s
    })
}

/// [`dot`] of `a` with eight vectors: [`dot4`] of the first four and of the last four.
#[inline(always)]
fn dot8(a: &[f32], b: [&[f32]; 8]) -> [f32; 8] {
    let [b0, b1, b2, b3, b4, b5, b6, b7] = b;
    let (l, h) = (dot4(a, [b0, b1, b2, b3]), dot4(a, [b4, b5, b6, b7]));
    std::array::from_fn(|k| if k < 4 { l[k] } else { h[k - 4] })
}

/// The first eight values of `x`.
#[inline(always)]
fn eight(x: &[f32]) -> &[f32; 8] {
    x[..8].try_into().expect("eight values")
}

/// `acc[i] += x[i] * y[i]`, eight lanes (one AVX register).
#[inline(always)]
fn mul_add8(acc: &mut [f32; 8], x: &[f32; 8], y: &[f32; 8]) {
    for i in 0..8 {
        acc[i] += x[i] * y[i];
    }
}

/// `o += Σ_j w_j v_j`, each element summed in order of `j` (as repeated [`axpy`]), a chunk of
/// elements at a time held in registers across all `j` rather than loaded and stored for each:
/// 64 on x86-64 (eight AVX registers, eight independent sums in flight), else 32 (eight
/// WebAssembly SIMD registers of the sixteen there).
#[inline(always)]
fn weighted_sum<'v>(o: &mut [f32], w: &[f32], value: impl Fn(usize) -> &'v [f32]) {
    if cfg!(target_arch = "x86_64") && o.len().is_multiple_of(64) {
        weighted_sum_in::<64>(o, w, value)
    } else if o.len().is_multiple_of(32) {
        weighted_sum_in::<32>(o, w, value)
    } else {
        for (j, &wj) in w.iter().enumerate() {
            axpy(o, wj, value(j));
        }
    }
}

/// [`weighted_sum`] `CHUNK` elements at a time (`o`'s length a multiple of it).
#[inline(always)]
fn weighted_sum_in<'v, const CHUNK: usize>(
    o: &mut [f32],
    w: &[f32],
    value: impl Fn(usize) -> &'v [f32],
) {
    for (c, oc) in o.chunks_exact_mut(CHUNK).enumerate() {
        let mut acc = [0f32; CHUNK];
        acc.copy_from_slice(oc);
        for (j, &wj) in w.iter().enumerate() {
            let v = &value(j)[c * CHUNK..(c + 1) * CHUNK];
            for i in 0..CHUNK {
                acc[i] += wj * v[i];
            }
        }
        oc.copy_from_slice(&acc);
    }
}

/// A sequence's heads put together into `out` (its rows of `heads * head_dim`); returns the
/// heads' last-row probabilities averaged, if `capture`.
fn gather(
    cfg: &ModelConfig,
    sq: &Queries<'_>,
    per_head: Vec<Attended>,
    capture: bool,
    out: &mut [f32],
) -> Option<Vec<f32>> {
    let (hd, nh) = (cfg.head_dim, cfg.heads);
    for (h, (o, _)) in per_head.iter().enumerate() {
        for (i, row) in o.chunks_exact(hd).enumerate() {
            out[(i * nh + h) * hd..(i * nh + h + 1) * hd].copy_from_slice(row);
        }
    }
    capture.then(|| {
        let mut acc = vec![0f32; sq.p0 + sq.m];
        for (_, p) in per_head {
            axpy(&mut acc, 1.0 / nh as f32, &p.unwrap_or_default());
        }
        acc
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::dot8`] in AVX: each key's eight lanes are its eight partial sums there (eight
    /// independent chains of additions), and two rounds of horizontal additions add them in
    /// `dot`'s order, `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`.
    ///
    /// SAFETY: the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot8(a: &[f32], b: [&[f32]; 8]) -> [f32; 8] {
        let whole = a.len() / 8 * 8;
        assert!(b.iter().all(|b| b.len() >= a.len()));
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..whole).step_by(8) {
            // SAFETY: `c + 8 <= whole <= len` of `a` and of each `b` (asserted).
            unsafe {
                let x = _mm256_loadu_ps(a.as_ptr().add(c));
                for k in 0..8 {
                    let y = _mm256_loadu_ps(b[k].as_ptr().add(c));
                    acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(x, y));
                }
            }
        }
        let mut out = [0f32; 8];
        for half in 0..2 {
            let sums = fold4(std::array::from_fn(|k| acc[4 * half + k]));
            // SAFETY: four f32s into four.
            unsafe { _mm_storeu_ps(out.as_mut_ptr().add(4 * half), sums) };
        }
        for (k, o) in out.iter_mut().enumerate() {
            for (x, y) in a[whole..].iter().zip(&b[k][whole..]) {
                *o += x * y;
            }
        }
        out
    }

    /// Four keys' eight partial sums each into their four dots: `[a0 + a4, a1 + a5, a2 + a6,
    /// a3 + a7]` per key, then `(t0 + t1)`, `(t2 + t3)` and their sum, four keys at once.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn fold4(acc: [__m256; 4]) -> __m128 {
        let t = acc.map(|v| _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)));
        _mm_hadd_ps(_mm_hadd_ps(t[0], t[1]), _mm_hadd_ps(t[2], t[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Architecture, RopeStyle};

    fn config(heads: usize, kv_heads: usize, head_dim: usize) -> ModelConfig {
        ModelConfig {
            arch: Architecture::Llama,
            vocab_size: 16,
            hidden: heads * head_dim,
            layers: 1,
            heads,
            kv_heads,
            head_dim,
            ffn: 8,
            rms_eps: 1e-5,
            rope_theta: 1e4,
            rope_style: RopeStyle::Interleaved,
            max_context: 64,
            bos_id: None,
            eos_ids: vec![],
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// A layer's cache of `p0 + m` positions and `m` query rows, of seeded random values.
    fn random_inputs(cfg: &ModelConfig, p0: usize, m: usize, seed: u64) -> (LayerKv, Vec<f32>) {
        let kvw = cfg.kv_width();
        let kv = LayerKv {
            k: values((p0 + m) * kvw, seed),
            v: values((p0 + m) * kvw, seed + 1),
        };
        (kv, values(m * cfg.heads * cfg.head_dim, seed + 2))
    }

    /// Plain attention in f64 over one sequence: rows of `heads * head_dim`, and the last
    /// row's probabilities averaged over heads.
    fn reference(cfg: &ModelConfig, sq: &Queries<'_>) -> (Vec<f64>, Vec<f64>) {
        let (hd, nh, kvw) = (cfg.head_dim, cfg.heads, cfg.kv_width());
        let mut out = vec![0f64; sq.m * nh * hd];
        let mut last = vec![0f64; sq.p0 + sq.m];
        for i in 0..sq.m {
            for h in 0..nh {
                let kvh = h / (nh / cfg.kv_heads);
                let q = &sq.q[(i * nh + h) * hd..][..hd];
                let n = sq.p0 + i + 1;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        let k = &sq.kv.k[j * kvw + kvh * hd..][..hd];
                        let d: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        d / (hd as f64).sqrt()
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    let v = &sq.kv.v[j * kvw + kvh * hd..][..hd];
                    for (o, &vd) in out[(i * nh + h) * hd..][..hd].iter_mut().zip(v) {
                        *o += ej / sum * vd as f64;
                    }
                    if i == sq.m - 1 {
                        last[j] += ej / sum / nh as f64;
                    }
                }
            }
        }
        (out, last)
    }

    #[test]
    fn attention_matches_a_plain_f64_reference() {
        // Head sizes with and without a tail past the eight-value chunks; several query rows.
        for (nh, nkv, hd) in [(4, 2, 64), (6, 3, 12), (2, 1, 5)] {
            let cfg = config(nh, nkv, hd);
            let (p0, m) = (13, 4);
            let (kv, q) = random_inputs(&cfg, p0, m, 1);
            let sq = Queries {
                q: &q,
                kv: &kv,
                p0,
                m,
            };
            let got = causal_batch(&cfg, std::slice::from_ref(&sq), true, &hlm_kernels::Serial);
            let (want, want_last) = reference(&cfg, &sq);
            let (out, last) = (&got.0, &got.1[0]);
            for (g, w) in out.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{nh}/{nkv}/{hd}: {g} vs {w}");
            }
            for (g, w) in last.as_ref().unwrap().iter().zip(&want_last) {
                assert!((*g as f64 - w).abs() < 1e-6, "{nh}/{nkv}/{hd}: {g} vs {w}");
            }
        }
    }

    /// One head's rows one after another, each key's score by [`dot`] and each value added by
    /// [`axpy`] in order of position: the plain f32 arithmetic the blocked rows must equal bit
    /// for bit.
    fn row_by_row(cfg: &ModelConfig, sq: &Queries<'_>, h: usize) -> Attended {
        let (hd, nh, kvw) = (cfg.head_dim, cfg.heads, cfg.kv_width());
        let kvh = h / (nh / cfg.kv_heads);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; sq.m * hd];
        let mut w = Vec::new();
        for (i, o) in out.chunks_exact_mut(hd).enumerate() {
            let q = &sq.q[(i * nh + h) * hd..][..hd];
            w = (0..sq.p0 + i + 1)
                .map(|j| dot(q, &sq.kv.k[j * kvw + kvh * hd..][..hd]) * scale)
                .collect();
            softmax(&mut w);
            for (j, &wj) in w.iter().enumerate() {
                axpy(o, wj, &sq.kv.v[j * kvw + kvh * hd..][..hd]);
            }
        }
        (out, Some(w))
    }

    #[test]
    fn rows_taken_together_give_the_bits_of_one_row_at_a_time() {
        // Histories around the eight-key and sixteen-position steps; head sizes on the 64- and
        // 32-value paths and off them.
        for (nh, nkv, hd) in [(9, 3, 64), (4, 2, 32), (2, 1, 20)] {
            let cfg = config(nh, nkv, hd);
            for (p0, m) in [(0, 1), (5, 3), (16, 5), (37, 5), (63, 9)] {
                let (kv, q) = random_inputs(&cfg, p0, m, 7 + p0 as u64);
                let sq = Queries {
                    q: &q,
                    kv: &kv,
                    p0,
                    m,
                };
                for h in 0..nh {
                    let want = row_by_row(&cfg, &sq, h);
                    assert_eq!(
                        head(&cfg, &sq, h, true),
                        want,
                        "{nh}/{nkv}/{hd} at {p0}+{m}"
                    );
                    assert_eq!(
                        head_any(&cfg, &sq, h, true),
                        want,
                        "generic {nh}/{nkv}/{hd}"
                    );
                }
            }
        }
    }

    /// The AVX2 compilation is the generic code on wider registers: the same bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_attention_gives_the_generic_bits() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for (nh, nkv, hd) in [(9, 3, 64), (4, 2, 20)] {
            let cfg = config(nh, nkv, hd);
            let (p0, m) = (37, 5);
            let (kv, q) = random_inputs(&cfg, p0, m, 4);
            let sq = Queries {
                q: &q,
                kv: &kv,
                p0,
                m,
            };
            for h in 0..nh {
                // SAFETY: checked above.
                let fast = unsafe { head_avx2(&cfg, &sq, h, true) };
                assert_eq!(
                    fast,
                    head_any(&cfg, &sq, h, true),
                    "{nh}/{nkv}/{hd} head {h}"
                );
            }
        }
    }
}
