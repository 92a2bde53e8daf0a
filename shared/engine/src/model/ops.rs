//! Row-wise operations on `f32` slices (`m` rows of width `d`). Each row is computed on its own, so
//! a row's result does not depend on which other rows share the batch.

use std::sync::Mutex;

/// RMSNorm: `y = x / sqrt(mean(x²) + eps) * w`, row by row (`w.len()` is the row width).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss = dot(row, row);
        let scale = 1.0 / ((ss / d as f32) + eps).sqrt();
        for ((o, &xi), &wi) in o.iter_mut().zip(row).zip(w) {
            *o = xi * scale * wi;
        }
    }
    out
}

/// Adds `b` to every row of `x`.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    }
}

pub fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// SwiGLU's gate: `g = silu(g) * u` with `silu(z) = z / (1 + e^-z)`, computed as
/// `z / (1 + t)` for `z ≥ 0` and `z t / (1 + t)` for `z < 0`, `t = e^-|z|`: [`exp`] only ever
/// sees `x ≤ 0`, and the loop vectorises (the library's `expf` is a call per value).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    g.iter_mut().zip(u).for_each(|(g, u)| {
        let z = *g;
        let t = exp(-z.abs());
        let top = if z >= 0.0 { z } else { z * t };
        *g = top / (1.0 + t) * u;
    });
}

/// `e^x` for `x ≤ 0` (softmax's arguments, SwiGLU's `e^-|z|`) to within 2 ulp, from operations
/// that vectorise: `x = n ln 2 + r` with `n` an integer and `|r| ≤ ln 2 / 2`, `e^r` by a
/// degree-6 polynomial (Cephes' `expf`), times `2^n` built in the exponent bits. Below −87.3
/// (where `e^x` leaves the normal floats) it gives 0.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts: `n · LN2_HI` is exact for the `n` that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let low = x < -87.3;
    let x = if low { 0.0 } else { x };
    let n = (x * LOG2_E + 0.5).floor();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * (r * r) + r + 1.0;
    // `n` (an integer in −126 ..= 0) as an integer from the bits of `n + 1.5 · 2²³`, whose
    // last bits hold it exactly: where `n as i32` (saturating) keeps the loop scalar, this
    // vectorises.
    let n_int = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let two_n = f32::from_bits(n_int.wrapping_add(127) << 23);
    if low {
        0.0
    } else {
        e_r * two_n
    }
}

/// [`silu_mul`] on the threads of `par`, in parts of [`PART`] values (a batch's gate is a
/// few hundred thousand values, each with an `exp`): the same values.
pub fn silu_mul_on(g: &mut [f32], u: &[f32], par: &dyn hlm_kernels::Parallel) {
    const PART: usize = 16 << 10;
    if g.len() <= PART {
        return silu_mul(g, u);
    }
    let parts: Vec<Mutex<(&mut [f32], &[f32])>> = g
        .chunks_mut(PART)
        .zip(u.chunks(PART))
        .map(Mutex::new)
        .collect();
    par.for_ranges(parts.len(), &|range| {
        for part in &parts[range] {
            let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
            let (g, u) = &mut *part;
            silu_mul(g, u);
        }
    });
}

/// Dot product with eight independent accumulators (lets the compiler vectorise it; the summation
/// order is fixed, so results are reproducible).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, ra) = a.split_at(a.len() / 8 * 8);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += a * x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// Rotary position embedding (Su et al. 2021): each pair of dimensions `(x0, x1)` of a head at
/// position `p` is rotated by the angle `p * theta^(-2i/d)`:
/// `x0' = x0 cos - x1 sin`, `x1' = x0 sin + x1 cos`.
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
    style: super::RopeStyle,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, style: super::RopeStyle) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
            .collect();
        Self {
            inv_freq,
            head_dim,
            style,
        }
    }

    /// cos and sin tables for these positions, `[position][head_dim/2]`.
    pub fn tables(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let a = p as f64 * f as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// Rotates `x` (`m` rows of `n_heads * head_dim`) in place.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, cos: &[f32], sin: &[f32]) {
        let hd = self.head_dim;
        let half = hd / 2;
        for (r, row) in x.chunks_exact_mut(n_heads * hd).enumerate() {
            let (c, s) = (
                &cos[r * half..(r + 1) * half],
                &sin[r * half..(r + 1) * half],
            );
            for head in row.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (a, b) = match self.style {
                        super::RopeStyle::Halves => (i, i + half),
                        super::RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c[i] - x1 * s[i];
                    head[b] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rows() {
        let x = [3.0, 4.0, 0.0, 0.0];
        let y = rms_norm(&x, &[1.0, 1.0], 1e-6);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-5 && (y[1] - 4.0 / r).abs() < 1e-5);
        // A zero row stays zero (eps keeps it finite).
        assert_eq!(&y[2..], &[0.0, 0.0]);
    }

    #[test]
    fn rope_preserves_norm_and_position_zero_is_identity() {
        for style in [
            super::super::RopeStyle::Halves,
            super::super::RopeStyle::Interleaved,
        ] {
            let rope = Rope::new(8, 10000.0, style);
            let orig: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
            let (c, s) = rope.tables(&[0]);
            let mut x = orig.clone();
            rope.apply(&mut x, 1, &c, &s);
            assert_eq!(x, orig);
            let (c, s) = rope.tables(&[17]);
            rope.apply(&mut x, 1, &c, &s);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3);
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-5);
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_library() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), x.exp());
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).unsigned_abs();
            assert!(ulps <= 2, "exp({x}) = {got}, library {want}");
            x += 0.000_731;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn silu_is_within_a_few_ulp_of_f64() {
        let mut z = -100.0f32;
        while z <= 100.0 {
            let mut g = [z];
            silu_mul(&mut g, &[1.0]);
            let want = z as f64 / (1.0 + (-(z as f64)).exp());
            let err = (g[0] as f64 - want).abs();
            // Below e^-87.3 (a normal f32's least) `t` is 0: silu(z) is then 0 for z < 0.
            assert!(
                err <= 4.0 * f32::EPSILON as f64 * want.abs() + 1e-35,
                "silu({z}) = {} vs {want}",
                g[0]
            );
            z += 0.001_37;
        }
        let mut g = [0.0, f32::INFINITY, 200.0, -200.0];
        silu_mul(&mut g, &[2.0; 4]);
        assert_eq!(g, [0.0, f32::INFINITY, 400.0, -0.0]);
        let mut g = [f32::NAN];
        silu_mul(&mut g, &[1.0]);
        assert!(g[0].is_nan());
    }
}
