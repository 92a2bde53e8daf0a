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

use crate::{Format, KernelError, Parallel};

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
        Self::quantize_on(format, x, rows, cols, &crate::Serial)
    }

    /// [`Activations::quantize`] with the rows split over the threads of `par` (when there are
    /// enough of them to pay for waking the threads). Each row is quantised on its own, so the
    /// result is the same whatever the threads.
    pub fn quantize_on(
        format: Format,
        x: &[f32],
        rows: usize,
        cols: usize,
        par: &dyn Parallel,
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
        let quad = blocks.next_multiple_of(4);
        let widen =
            crate::Backend::Simd128.is_supported() && !cfg!(target_feature = "relaxed-simd");
        let wide_scales = block == 32 && crate::Backend::Avx2.is_supported();
        let sized = |on: bool, n: usize| if on { n } else { 0 };
        let mut a = Activations {
            format,
            rows,
            cols,
            padded,
            qs: vec![0; rows * padded],
            d: vec![0.0; rows * blocks],
            sums16: vec![0; rows * padded / 16],
            sums32: vec![0; rows * padded / 32],
            qs16: vec![0; sized(widen, rows * padded)],
            d64: vec![0.0; sized(wide_scales, rows * quad)],
            dsum64: vec![0.0; sized(wide_scales, rows * quad)],
        };
        let outs: Vec<std::sync::Mutex<RowOut>> = a.row_outs().map(Into::into).collect();
        let one = |r: usize| {
            let mut out = outs[r].lock().unwrap_or_else(|e| e.into_inner());
            quantize_row(format, &x[r * cols..(r + 1) * cols], &mut out);
        };
        if rows * cols >= PARALLEL_VALUES {
            par.for_ranges(rows, &|range| range.for_each(one));
        } else {
            (0..rows).for_each(one);
        }
        drop(outs);
        Ok(a)
    }

    /// Each row's share of the buffers (the optional ones `None` where they are empty), to be
    /// written on its own.
    fn row_outs(&mut self) -> impl Iterator<Item = RowOut<'_>> {
        let (padded, blocks, quad) = (self.padded, self.blocks(), self.quad_blocks());
        fn rows_of<T>(v: &mut [T], n: usize) -> impl Iterator<Item = Option<&mut [T]>> {
            let some = v.chunks_exact_mut(n.max(1)).map(Some);
            some.chain(std::iter::repeat_with(|| None))
        }
        self.qs
            .chunks_exact_mut(padded)
            .zip(rows_of(&mut self.d, blocks))
            .zip(self.sums16.chunks_exact_mut(padded / 16))
            .zip(self.sums32.chunks_exact_mut(padded / 32))
            .zip(rows_of(&mut self.qs16, padded))
            .zip(rows_of(&mut self.d64, quad).zip(rows_of(&mut self.dsum64, quad)))
            .map(
                |(((((qs, d), sums16), sums32), qs16), (d64, dsum64))| RowOut {
                    qs,
                    d: d.unwrap_or_default(),
                    sums16,
                    sums32,
                    qs16,
                    d64,
                    dsum64,
                },
            )
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

/// Values in a product's activations from which their rows are quantised on several threads.
const PARALLEL_VALUES: usize = 1 << 14;

/// One row's share of an [`Activations`]' buffers.
struct RowOut<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    sums16: &'a mut [i16],
    sums32: &'a mut [i16],
    qs16: Option<&'a mut [i16]>,
    d64: Option<&'a mut [f64]>,
    dsum64: Option<&'a mut [f64]>,
}

/// Quantises one row `x` into `out`. Compiled a second time for AVX2 where the CPU has it: the
/// same operations on wider registers, so the same values.
fn quantize_row(format: Format, x: &[f32], out: &mut RowOut<'_>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { quantize_row_avx2(format, x, out) };
    }
    quantize_row_any(format, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(format: Format, x: &[f32], out: &mut RowOut<'_>) {
    quantize_row_any(format, x, out)
}

#[inline(always)]
fn quantize_row_any(format: Format, x: &[f32], out: &mut RowOut<'_>) {
    let block = format.block_values();
    for ((xb, qb), d) in x
        .chunks_exact(block)
        .zip(out.qs.chunks_exact_mut(block))
        .zip(out.d.iter_mut())
    {
        *d = if block == 32 {
            quantize_q8_0(xb, qb)
        } else {
            quantize_q8_k(xb, qb)
        };
    }
    for (s, q) in out.sums16.iter_mut().zip(out.qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| v as i16).sum();
    }
    for (s, q) in out.sums32.iter_mut().zip(out.sums16.chunks_exact(2)) {
        *s = q[0] + q[1];
    }
    if format == Format::Q4K {
        for block in out.qs.chunks_exact_mut(256) {
            // Slots 1 and 2 (and 5 and 6) trade places: sub-blocks 0 2 1 3 4 6 5 7.
            for base in [0, 128] {
                let (first, second) = block[base + 32..base + 96].split_at_mut(32);
                first.swap_with_slice(second);
            }
        }
    }
    if let Some(qs16) = out.qs16.as_deref_mut() {
        qs16.iter_mut()
            .zip(out.qs.iter())
            .for_each(|(w, &q)| *w = q as i16);
    }
    if let (Some(d64), Some(dsum64)) = (out.d64.as_deref_mut(), out.dsum64.as_deref_mut()) {
        for (b, (&d, &sum)) in out.d.iter().zip(out.sums32.iter()).enumerate() {
            d64[b] = d as f64;
            dsum64[b] = d as f64 * sum as f64;
        }
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
#[inline(always)]
fn quantize_q8_0(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_q8_0_f16(x, q).to_f32()
}

/// [`quantize_q8_0`] with `d` as the f16 a `Q8_0` block stores: the values of candle's (and
/// ggml's) `Q8_0` quantiser, to the bit, in loops that vectorise and call no library function.
#[inline(always)]
pub(crate) fn quantize_q8_0_f16(x: &[f32], q: &mut [i8]) -> half::f16 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if let (Ok(x), Ok(q)) = (x.try_into(), <&mut [i8; 32]>::try_from(&mut *q)) {
        return simd128::quantize_q8_0(x, q);
    }
    let amax = abs_max(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = to_i8(round_half_away(v * id));
    }
    half::f16::from_f32(d)
}

/// The largest `|v|` of `x` (0 for none), NaNs skipped. Eight running maxima (the order of a
/// maximum does not change it), so that it vectorises; a comparison, not `f32::max` (a
/// library call in WebAssembly).
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    let bigger = |m: f32, v: f32| if v.abs() > m { v.abs() } else { m };
    let mut lanes = [0f32; 8];
    let whole = x.len() / 8 * 8;
    for c in x[..whole].chunks_exact(8) {
        for i in 0..8 {
            lanes[i] = bigger(lanes[i], c[i]);
        }
    }
    let m = lanes.into_iter().fold(0f32, bigger);
    x[whole..].iter().fold(m, |m, &v| bigger(m, v))
}

/// `r as i8` (saturating, NaN to 0) for a whole number `r`, by a clamp and a conversion that
/// vectorise (`as` alone keeps the loop scalar).
#[inline(always)]
fn to_i8(r: f32) -> i8 {
    let r = if r.is_nan() {
        0.0
    } else {
        r.clamp(-128.0, 127.0)
    };
    // SAFETY: `r` is a finite whole number within the range of i8.
    unsafe { r.to_int_unchecked::<i32>() as i8 }
}

/// ggml's `Q8_K`: `d = −max / 127` with `max` the value of largest magnitude, `q = round(x / d)`
/// (so the largest-magnitude value becomes −127). Returns `d`.
#[inline(always)]
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

/// [`quantize_q8_0_f16`] four values at a time in WebAssembly, where the compiler leaves its
/// loops scalar (the conversion to an integer traps in scalar form): the same comparisons,
/// roundings and clamps, so the same values.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    #[inline(always)]
    pub(super) fn quantize_q8_0(x: &[f32; 32], q: &mut [i8; 32]) -> half::f16 {
        // SAFETY: eight loads of four f32 within the 32; unaligned loads are fine.
        let v: [v128; 8] =
            core::array::from_fn(|i| unsafe { v128_load(x.as_ptr().add(4 * i) as *const v128) });
        // `abs_max`: a lane keeps `|v|` where it is larger (a NaN never is).
        let mut m = f32x4_splat(0.0);
        for &v in &v {
            let a = f32x4_abs(v);
            m = v128_bitselect(a, m, f32x4_gt(a, m));
        }
        let lanes = [
            f32x4_extract_lane::<0>(m),
            f32x4_extract_lane::<1>(m),
            f32x4_extract_lane::<2>(m),
            f32x4_extract_lane::<3>(m),
        ];
        let amax = lanes
            .into_iter()
            .fold(0f32, |m, a| if a > m { a } else { m });
        let d = amax / 127.0;
        let id = f32x4_splat(if d != 0.0 { 1.0 / d } else { 0.0 });
        let ints = v.map(|v| {
            // `round_half_away`: `t + copysign(1, y)` where `|y − t| ≥ 0.5`, else `t`.
            let y = f32x4_mul(v, id);
            let t = f32x4_trunc(y);
            let away = f32x4_ge(f32x4_abs(f32x4_sub(y, t)), f32x4_splat(0.5));
            let step = v128_or(f32x4_splat(1.0), v128_and(y, f32x4_splat(-0.0)));
            let r = v128_bitselect(f32x4_add(t, step), t, away);
            // `to_i8`: a NaN to 0 first (with relaxed SIMD the clamp may become `maxps`, which
            // turns a NaN into its other operand), then clamped and converted.
            let r = v128_and(r, f32x4_eq(r, r));
            let r = f32x4_pmin(f32x4_pmax(r, f32x4_splat(-128.0)), f32x4_splat(127.0));
            i32x4_trunc_sat_f32x4(r)
        });
        for (i, out) in q.chunks_exact_mut(16).enumerate() {
            let [a, b, c, e] = [0, 1, 2, 3].map(|k| ints[4 * i + k]);
            let bytes = i8x16_narrow_i16x8(i16x8_narrow_i32x4(a, b), i16x8_narrow_i32x4(c, e));
            // SAFETY: 16 bytes into a 16-byte chunk; unaligned stores are fine.
            unsafe { v128_store(out.as_mut_ptr() as *mut v128, bytes) };
        }
        half::f16::from_f32(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every format's rows quantised with this CPU's best path (AVX2 on x86-64) and with the
    /// generic one: the same values.
    #[test]
    fn each_compilation_of_a_row_gives_the_same_values() {
        let mut state = 7u64;
        let x: Vec<f32> = (0..3 * 512)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if i % 61 == 3 {
                    40.0 * u
                } else {
                    u
                }
            })
            .collect();
        for format in Format::ALL {
            let mut a = Activations::quantize(format, &x, 3, 512).unwrap();
            let cols = a.cols;
            let want = (a.qs.clone(), a.d.clone(), a.sums16.clone(), a.d64.clone());
            for (r, mut out) in a.row_outs().enumerate() {
                quantize_row_any(format, &x[r * cols..(r + 1) * cols], &mut out);
            }
            assert_eq!(want, (a.qs, a.d, a.sums16, a.d64), "{format:?}");
        }
    }

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

    #[test]
    fn vectorised_helpers_give_the_scalar_results() {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            127.0,
            -128.0,
        ];
        for r in specials.into_iter().chain((-300..300).map(|i| i as f32)) {
            assert_eq!(to_i8(r), r as i8, "{r}");
        }
        let x: Vec<f32> = (0..37)
            .map(|i| {
                if i % 11 == 5 {
                    f32::NAN
                } else {
                    (i as f32 * 0.37).sin() * i as f32
                }
            })
            .collect();
        for n in [0, 1, 7, 8, 9, 16, 37] {
            let scalar = x[..n]
                .iter()
                .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
            assert_eq!(abs_max(&x[..n]).to_bits(), scalar.to_bits(), "{n} values");
        }
    }
}
