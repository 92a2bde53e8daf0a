//! Softmax, argmax and seeded sampling. One deterministic random stream type everywhere
//! (ChaCha8, seeded), so runs repeat exactly on every platform, wasm included.

use hlm_protocol::SparseDist;
use rand::{Rng as _, SeedableRng};

pub type Rng = rand_chacha::ChaCha8Rng;

pub fn seeded_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Index of the largest value (the first one on ties); NaN never wins. 0 for an empty slice.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in xs.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// `e^x` for `x ≤ 0` (clamped at −87), branch-free so that loops over it vectorise: `2^(x·log2 e)`
/// split into an integer power (exponent bits) and the degree-6 Taylor polynomial of `2^f`,
/// `f ∈ [−½, ½)`; relative error below 5·10⁻⁶ (mostly the f32 rounding of `x·log2 e`).
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    // Plain comparisons (not f32::max/min, which carry NaN rules) keep this a few SIMD ops.
    let x = if x >= -87.0 { x } else { -87.0 }; // NaN goes to -87 too
    let x = if x > 0.0 { 0.0 } else { x };
    let t = x * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = t - n;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355 + f * 0.000_154_035_3)))));
    // SAFETY: n is an integer in [-126, 0] here, so the conversion is exact.
    let e = unsafe { n.to_int_unchecked::<i32>() } + 127;
    f32::from_bits((e as u32) << 23) * p
}

/// `Σ_i e^{(l_i − m)·inv}` over `logits`: exponentials of a block into a small buffer, then a
/// lane-wise sum (two simple loops the compiler vectorises well).
pub fn sum_exp_shifted(logits: &[f32], m: f32, inv: f32) -> f64 {
    let mut buf = [0f32; 512];
    let mut total = 0f64;
    for block in logits.chunks(512) {
        let b = &mut buf[..block.len()];
        exp_shifted_into(block, m, inv, b);
        total += sum_f32(b);
    }
    total
}

/// `out[i] = exp_neg((l[i] − m) · inv)` for each logit `l[i]`.
#[inline(always)]
fn exp_shifted_into(logits: &[f32], m: f32, inv: f32, out: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let (logits, out) = {
        let whole = logits.len() / 4 * 4;
        simd128::exp_shifted_into(&logits[..whole], m, inv, &mut out[..whole]);
        (&logits[whole..], &mut out[whole..])
    };
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = exp_neg((l - m) * inv);
    }
}

/// [`exp_neg`] four lanes at a time in WebAssembly, where the compiler leaves the scalar loop
/// unvectorised (its float-to-int conversion traps in scalar form): the same operations in the
/// same order, so the same f32 for every value (tested against the scalar function).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    /// `logits.len()` must be a multiple of 4 and equal `out.len()`.
    #[inline(always)]
    pub(super) fn exp_shifted_into(logits: &[f32], m: f32, inv: f32, out: &mut [f32]) {
        assert!(logits.len().is_multiple_of(4) && logits.len() == out.len());
        for (o, l) in out.chunks_exact_mut(4).zip(logits.chunks_exact(4)) {
            // SAFETY: four f32 each; unaligned loads and stores are fine.
            unsafe {
                let l = v128_load(l.as_ptr() as *const v128);
                let x = f32x4_mul(f32x4_sub(l, f32x4_splat(m)), f32x4_splat(inv));
                v128_store(o.as_mut_ptr() as *mut v128, exp_neg4(x));
            }
        }
    }

    /// [`super::exp_neg`] of each lane.
    #[inline(always)]
    fn exp_neg4(x: v128) -> v128 {
        let floor = f32x4_splat(-87.0);
        let zero = f32x4_splat(0.0);
        // x ≥ −87 ? x : −87 (NaN too), then x > 0 ? 0 : x.
        let x = v128_bitselect(x, floor, f32x4_ge(x, floor));
        let x = v128_bitselect(zero, x, f32x4_gt(x, zero));
        let t = f32x4_mul(x, f32x4_splat(std::f32::consts::LOG2_E));
        let n = f32x4_floor(f32x4_add(t, f32x4_splat(0.5)));
        let f = f32x4_sub(t, n);
        // Horner's rule, innermost first: c + f · (…).
        let step = |c: f32, inner: v128| f32x4_add(f32x4_splat(c), f32x4_mul(f, inner));
        let p = step(0.001_333_355, f32x4_splat(0.000_154_035_3));
        let p = step(0.009_618_129, p);
        let p = step(0.055_504_11, p);
        let p = step(0.240_226_5, p);
        let p = step(std::f32::consts::LN_2, p);
        let p = step(1.0, p);
        let e = i32x4_add(i32x4_trunc_sat_f32x4(n), i32x4_splat(127));
        f32x4_mul(i32x4_shl(e, 23), p)
    }
}

/// `softmax(logits / temperature)`; `temperature ≤ 0` (or not finite) gives the one-hot argmax.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    if logits.is_empty() {
        return out;
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        out[argmax(logits) as usize] = 1.0;
        return out;
    }
    let m = logits[argmax(logits) as usize];
    exp_shifted_into(logits, m, 1.0 / temperature, &mut out);
    let sum: f64 = sum_f32(&out);
    let inv = (1.0 / sum) as f32;
    out.iter_mut().for_each(|p| *p *= inv);
    out
}

/// Sum in eight lanes, accumulated in f64 at the end.
fn sum_f32(xs: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64
}

/// Draws an index from `probs` (need not sum exactly to 1) by inverse CDF.
pub fn sample_index(probs: &[f32], rng: &mut Rng) -> u32 {
    let total: f64 = probs.iter().map(|&p| p.max(0.0) as f64).sum();
    if total.is_nan() || total <= 0.0 {
        return argmax(probs);
    }
    let mut r = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last = i;
            r -= p as f64;
            if r < 0.0 {
                return i as u32;
            }
        }
    }
    last as u32
}

/// Draws a token from a reconstructed `p̂`.
pub fn sample_sparse(p: &SparseDist, rng: &mut Rng) -> u32 {
    let mut r = rng.random::<f64>();
    for &(id, pi) in &p.entries {
        r -= pi;
        if r < 0.0 {
            return id;
        }
    }
    p.entries.last().map(|e| e.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_is_accurate() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.04;
            let (a, b) = (exp_neg(x), x.exp());
            assert!(((a - b) / b).abs() < 5e-6, "x = {x}: {a} vs {b}");
        }
    }

    #[test]
    fn exp_of_a_block_is_exp_neg_of_each_value() {
        // Every lane path (SIMD in WebAssembly) against the scalar function, to the bit; with
        // values past both clamps, a NaN and a length that leaves a remainder.
        let mut logits: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 60.0).collect();
        logits[5] = f32::NAN;
        logits[6] = f32::NEG_INFINITY;
        logits[7] = 500.0;
        let (m, inv) = (20.0, 1.7);
        let mut out = vec![0f32; logits.len()];
        exp_shifted_into(&logits, m, inv, &mut out);
        for (i, (&l, &o)) in logits.iter().zip(&out).enumerate() {
            assert_eq!(
                o.to_bits(),
                exp_neg((l - m) * inv).to_bits(),
                "value {i}: {l}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let p = softmax(&[1.0, 2.0, 3.0, f32::NEG_INFINITY], 1.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0] && p[3] < 1e-30);
        assert_eq!(softmax(&[1.0, 5.0, 2.0], 0.0), vec![0.0, 1.0, 0.0]);
        assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, 3.0]), 2);
    }
}
