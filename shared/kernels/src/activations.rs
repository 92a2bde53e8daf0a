//! Activations quantised to 8 bits per block, the way llama.cpp (and candle) quantise the
//! left-hand side of a quantised product: a block of `B` values becomes `q = round(x / d)` in i8
//! with one f32 scale `d`, so a block's contribution is `d_w · d_x · Σ q_w q_x`, all integers
//! inside the sum.
//!
//! - For `Q8_0`/`Q4_1` weights, `B = 32` and `d = amax / 127` rounded to f16 (ggml's `Q8_0`).
//! - For `Q4_K`/`Q6_K` weights, `B = 256` and `d = −max / 127` with `max` the value of largest
//!   magnitude (ggml's `Q8_K`).
//!
//! Besides `q` and `d`, the sums the kernels need are kept: `Σ q` per 16 values (the offset 32 of
//! `Q6_K`) and per 32 (the mins of `Q4_K` and `Q4_1`).
//!
//! For `Q4_K`, each block's 32-value sub-blocks are stored in the order its nibbles unpack from
//! 64 weight bytes (sub-blocks 0, 2, 1, 3, 4, 6, 5, 7: low nibbles, then high, of two 32-byte
//! runs), so that a SIMD kernel reads both operands contiguously; [`q4k_slot`] maps them.

use crate::{Format, KernelError};

/// `rows` activation rows of `cols` values, quantised for products with `format` weights.
pub struct Activations {
    pub(crate) format: Format,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// `cols` rounded up to 64 values; the padding is zero.
    pub(crate) padded: usize,
    /// `rows × padded` quantised values.
    pub(crate) qs: Vec<i8>,
    /// `rows × blocks`: the scale of each block.
    pub(crate) d: Vec<f32>,
    /// `rows × padded / 16`: `Σ q` over each 16 values (in the values' own order).
    pub(crate) sums16: Vec<i16>,
    /// `rows × padded / 32`: `Σ q` over each 32 values (in the values' own order).
    pub(crate) sums32: Vec<i16>,
    /// `qs` widened to i16, for the WebAssembly kernels without relaxed SIMD (which have no
    /// 8-bit multiply-add): built only where they run.
    pub(crate) qs16: Vec<i16>,
    /// The 32-value formats, for the x86-64 kernels (built only where they can run), per row
    /// [`Activations::quad_blocks`] lanes (zero past the last block): the block scales `d_x`.
    pub(crate) d64: Vec<f64>,
    /// Alongside `d64`: `d_x · Σ q_x` over each block (exact in f64: a 24-bit mantissa times a
    /// 12-bit integer), for the terms of `Q4_1`'s minimum and `Q5_0`'s offset.
    pub(crate) dsum64: Vec<f64>,
}

impl Activations {
    /// Quantises `x` (`rows × cols`, row-major) for a product with `format` weights.
    pub fn quantize(
        format: Format,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        format.check_cols(cols)?;
        let block = format.block_values();
        if x.len() != rows * cols {
            return Err(KernelError::ActivationShape {
                rows,
                cols,
                got: x.len(),
            });
        }
        let padded = cols.next_multiple_of(64);
        let blocks = cols / block;
        let mut a = Activations {
            format,
            rows,
            cols,
            padded,
            qs: vec![0; rows * padded],
            d: vec![0.0; rows * blocks],
            sums16: vec![0; rows * padded / 16],
            sums32: vec![0; rows * padded / 32],
            qs16: Vec::new(),
            d64: Vec::new(),
            dsum64: Vec::new(),
        };
        for r in 0..rows {
            let xr = &x[r * cols..(r + 1) * cols];
            let qr = &mut a.qs[r * padded..r * padded + cols];
            let dr = &mut a.d[r * blocks..(r + 1) * blocks];
            for ((xb, qb), d) in xr
                .chunks_exact(block)
                .zip(qr.chunks_exact_mut(block))
                .zip(dr)
            {
                *d = if block == 32 {
                    quantize_q8_0(xb, qb)
                } else {
                    quantize_q8_k(xb, qb)
                };
            }
        }
        for (s, q) in a.sums16.iter_mut().zip(a.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        for (s, q) in a.sums32.iter_mut().zip(a.sums16.chunks_exact(2)) {
            *s = q[0] + q[1];
        }
        if format == Format::Q4K {
            for block in a.qs.chunks_exact_mut(256) {
                // Slots 1 and 2 (and 5 and 6) trade places: sub-blocks 0 2 1 3 4 6 5 7.
                for base in [0, 128] {
                    let (first, second) = block[base + 32..base + 96].split_at_mut(32);
                    first.swap_with_slice(second);
                }
            }
        }
        if crate::Backend::Simd128.is_supported() && !cfg!(target_feature = "relaxed-simd") {
            a.qs16 = a.qs.iter().map(|&q| q as i16).collect();
        }
        if block == 32 && crate::Backend::Avx2.is_supported() {
            a.build_d64();
        }
        Ok(a)
    }

    /// `d64` and `dsum64`, from `qs` and `d`.
    fn build_d64(&mut self) {
        let (blocks, quad) = (self.blocks(), self.quad_blocks());
        self.d64 = vec![0.0; self.rows * quad];
        self.dsum64 = vec![0.0; self.rows * quad];
        for r in 0..self.rows {
            let sums = &self.sums32[r * self.padded / 32..][..blocks];
            let d = &self.d[r * blocks..(r + 1) * blocks];
            for (b, (&d, &sum)) in d.iter().zip(sums).enumerate() {
                self.d64[r * quad + b] = d as f64;
                self.dsum64[r * quad + b] = d as f64 * sum as f64;
            }
        }
    }

    /// Blocks per row rounded up to 4: the stride of `d64` and `dsum64`.
    pub(crate) fn quad_blocks(&self) -> usize {
        self.blocks().next_multiple_of(4)
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the AVX2 kernels
    pub(crate) fn row_d64(&self, r: usize) -> &[f64] {
        let n = self.quad_blocks();
        &self.d64[r * n..(r + 1) * n]
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the AVX2 kernels
    pub(crate) fn row_dsum64(&self, r: usize) -> &[f64] {
        let n = self.quad_blocks();
        &self.dsum64[r * n..(r + 1) * n]
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub(crate) fn blocks(&self) -> usize {
        self.cols / self.format.block_values()
    }

    /// Row `r`'s quantised values (padded).
    pub(crate) fn row_qs(&self, r: usize) -> &[i8] {
        &self.qs[r * self.padded..(r + 1) * self.padded]
    }

    pub(crate) fn row_d(&self, r: usize) -> &[f32] {
        let b = self.blocks();
        &self.d[r * b..(r + 1) * b]
    }

    /// Row `r`'s quantised values widened to i16 (padded; built for the WebAssembly kernels
    /// without relaxed SIMD).
    #[cfg_attr(
        any(not(target_arch = "wasm32"), target_feature = "relaxed-simd"),
        allow(dead_code)
    )]
    pub(crate) fn row_qs16(&self, r: usize) -> &[i16] {
        &self.qs16[r * self.padded..(r + 1) * self.padded]
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the SIMD kernels
    pub(crate) fn row_sums16(&self, r: usize) -> &[i16] {
        let n = self.padded / 16;
        &self.sums16[r * n..(r + 1) * n]
    }

    pub(crate) fn row_sums32(&self, r: usize) -> &[i16] {
        let n = self.padded / 32;
        &self.sums32[r * n..(r + 1) * n]
    }
}

/// Where `Q4_K` sub-block `sb` (0..8) of a block sits in [`Activations`]: 32-value slot
/// `q4k_slot(sb)` (the map is its own inverse).
/// (`[0, 2, 1, 3, 4, 6, 5, 7]`, as arithmetic: a table lookup in a kernel's loop is a memory
/// access).
#[inline(always)]
pub(crate) const fn q4k_slot(sb: usize) -> usize {
    4 * (sb / 4) + 2 * (sb % 2) + (sb / 2) % 2
}

/// ggml's `Q8_0`: `d = amax / 127`, `q = round(x / d)`, `d` kept as f16. Returns `d`.
fn quantize_q8_0(x: &[f32], q: &mut [i8]) -> f32 {
    // A comparison, not `f32::max` (a library call in WebAssembly); a NaN is skipped either way.
    let amax = x
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_half_away(v * id) as i8;
    }
    half::f16::from_f32(d).to_f32()
}

/// ggml's `Q8_K`: `d = −max / 127` with `max` the value of largest magnitude, `q = round(x / d)`
/// (so the largest-magnitude value becomes −127). Returns `d`.
fn quantize_q8_k(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_half_away(iscale * v).clamp(-128.0, 127.0) as i8;
    }
    1.0 / iscale
}

/// `v.round()` (halves away from zero), exactly, from instructions every target has:
/// WebAssembly's own rounding instruction takes halves to even, so `f32::round` is a library
/// call there. `v − trunc(v)` is exact.
#[inline(always)]
fn round_half_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::round_half_away;

    #[test]
    fn round_half_away_is_f32_round() {
        let mut values = vec![
            0.5,
            -0.5,
            1.5,
            -2.5,
            0.499_999_97,
            -0.499_999_97,
            8388607.5,
            1e30,
        ];
        values.extend([f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE]);
        values.extend((-3000..3000).map(|i| i as f32 * 0.0625 + 0.001 * (i % 7) as f32));
        for v in values {
            assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v}");
        }
        assert!(round_half_away(f32::NAN).is_nan());
    }
}
