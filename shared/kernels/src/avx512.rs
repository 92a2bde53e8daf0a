//! AVX-512 kernels (F, BW, VL, VNNI; plus AVX2, FMA, F16C).
//!
//! Each weight block is unpacked into 512-bit registers of 64 values once, then multiplied with
//! up to [`GROUP`] activation rows; the integer products use
//! - `vpmaddubsw` (u8 × i8 → i16 pairs) then VNNI `vpdpwssd` with the sub-block scales (i16 pairs
//!   → i32, accumulated) for the K formats, whose unsigned 4- or 6-bit values keep the pair sums far from i16's limit;
//! - VNNI `vpdpbusd` (u8 × i8 → i32 quads) for the 32-value formats: `Q4_1`'s 4-bit values are
//!   unsigned already, `Q8_0`'s signed values are offset by 128 and the offset is taken out
//!   again by starting the sum at `−128 Σ q_x` (precomputed with the activations).
//!
//! Two 32-value blocks share one register (lanes 0-7 and 8-15 of the i32 sums), and their scales
//! are spread the same way.

// Loops index several parallel arrays (accumulators, pointers, scales) by row or sub-block.
#![allow(clippy::needless_range_loop)]

use crate::activations::{q4k_slot, GROUP_ROWS, PER_ROW_UP_TO};
use crate::driver::TILE_BYTES;
use crate::x86::{f16, hsum256d, q4k_add_mins, q4k_scales_mins_words, scale};
use crate::{Activations, Format};
use std::arch::x86_64::*;

/// Rows `RowPtrs` can point at.
const GROUP: usize = PER_ROW_UP_TO;

/// Rows of `format` weights (`data`, `row_bytes` each) against all activation rows of `a`;
/// `dst[j · m + r]` gets row `j` times activation row `r`.
///
/// SAFETY: the CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `data` must be whole
/// rows of `a.cols` values and `dst` hold `rows · a.rows` values.
pub(crate) unsafe fn rows(
    format: Format,
    data: &[u8],
    row_bytes: usize,
    a: &Activations,
    dst: &mut [f32],
) {
    debug_assert_eq!(row_bytes, format.row_bytes(a.cols));
    debug_assert_eq!(data.len() / row_bytes * a.rows, dst.len());
    if !a.interleaved() {
        for (row, outs) in data
            .chunks_exact(row_bytes)
            .zip(dst.chunks_exact_mut(a.rows))
        {
            unsafe {
                match a.rows {
                    1 => group::<1>(format, row, a, 0, outs),
                    2 => group::<2>(format, row, a, 0, outs),
                    3 => group::<3>(format, row, a, 0, outs),
                    _ => group::<4>(format, row, a, 0, outs),
                }
            }
        }
        return;
    }
    // A tile of weight rows against one group of 8 activation rows at a time: the tile
    // (about 16 KB) and the group stay in the L1 cache while every pair is computed.
    let tile_rows = (TILE_BYTES / row_bytes).max(1);
    for (tile, outs) in data
        .chunks(tile_rows * row_bytes)
        .zip(dst.chunks_mut(tile_rows * a.rows))
    {
        for g in 0..a.groups() {
            for (row, outs) in tile
                .chunks_exact(row_bytes)
                .zip(outs.chunks_exact_mut(a.rows))
            {
                // SAFETY: the caller's contract; `a` has its interleaved layout.
                let lanes = unsafe {
                    match format {
                        Format::Q8_0 => offset_rows8(row, 34, q8_0_unpack, 128, a, g),
                        Format::Q5_0 => offset_rows8(row, 22, q5_0_unpack, 16, a, g),
                        Format::Q4_1 => q4_1_rows8(row, a, g),
                        Format::Q4K => q4k_rows8(row, a, g),
                        Format::Q6K => q6k_rows8(row, a, g),
                    }
                };
                let r0 = g * GROUP_ROWS;
                for (o, v) in outs[r0..].iter_mut().zip(lanes) {
                    *o = v;
                }
            }
        }
    }
}

/// One weight row against activation rows `r0 .. r0 + G`.
#[inline(always)]
unsafe fn group<const G: usize>(
    format: Format,
    row: &[u8],
    a: &Activations,
    r0: usize,
    outs: &mut [f32],
) {
    debug_assert_eq!(outs.len(), G);
    let p = RowPtrs::new(a, r0, G);
    unsafe {
        match format {
            Format::Q8_0 => offset_pairs_row::<G>(row, 34, q8_0_unpack, &p, outs),
            Format::Q5_0 => offset_pairs_row::<G>(row, 22, q5_0_unpack, &p, outs),
            Format::Q4_1 => q4_1_row::<G>(row, &p, outs),
            Format::Q4K => q4k_row::<G>(row, &p, outs),
            Format::Q6K => q6k_row::<G>(row, &p, outs),
        }
    }
}

/// Sums of `scale × integer` in f64, 16 lanes. A block's scale (`d_w · d_x`, an f16 times an
/// f32) is exact in f64, and so is the product with an integer sum up to rounding at 2⁻⁵³: the
/// f32 a row ends with is therefore the same (barring a tie at 2⁻⁵³ of a rounding boundary)
/// whichever kernel summed its blocks, in whichever order of lanes — one row alone or among many.
#[derive(Clone, Copy)]
struct Acc64 {
    lo: __m512d,
    hi: __m512d,
}

impl Acc64 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Acc64 {
            lo: _mm512_setzero_pd(),
            hi: _mm512_setzero_pd(),
        }
    }

    /// Adds lanes 0-7 of `s` times `scale_lo` and lanes 8-15 times `scale_hi` (per lane).
    #[inline(always)]
    unsafe fn add(&mut self, s: __m512i, scale_lo: __m512d, scale_hi: __m512d) {
        let lo = _mm512_cvtepi32_pd(_mm512_castsi512_si256(s));
        let hi = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(s));
        self.lo = _mm512_fmadd_pd(lo, scale_lo, self.lo);
        self.hi = _mm512_fmadd_pd(hi, scale_hi, self.hi);
    }

    /// Adds `s` times `scale` (every lane); the two halves of `s` are added first, as integers.
    #[inline(always)]
    unsafe fn add_scaled(&mut self, s: __m512i, scale: f64) {
        let folded = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
        self.lo = _mm512_fmadd_pd(_mm512_cvtepi32_pd(folded), _mm512_set1_pd(scale), self.lo);
    }

    /// Adds `s` times `factor · lanes` (16 f32 lane scales).
    #[inline(always)]
    unsafe fn add_lanes(&mut self, s: __m512i, factor: f64, lanes: __m512) {
        let f = _mm512_set1_pd(factor);
        let lo = _mm512_mul_pd(f, _mm512_cvtps_pd(_mm512_castps512_ps256(lanes)));
        let hi = _mm512_mul_pd(
            f,
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(lanes),
            ))),
        );
        unsafe { self.add(s, lo, hi) }
    }

    #[inline(always)]
    unsafe fn sum(self) -> f64 {
        _mm512_reduce_add_pd(_mm512_add_pd(self.lo, self.hi))
    }

    #[inline(always)]
    unsafe fn lanes(self) -> [f64; 16] {
        let mut out = [0f64; 16];
        unsafe {
            _mm512_storeu_pd(out.as_mut_ptr(), self.lo);
            _mm512_storeu_pd(out.as_mut_ptr().add(8), self.hi);
        }
        out
    }
}

/// A pair of 32-value blocks' scales `d_w · d_x`, lanes 0-7 and 8-15 (f64), for activation row
/// `t` at pair `pair`: `dw` holds the weights' two scales the same way.
#[inline(always)]
unsafe fn pair_scales(
    dw: (__m512d, __m512d),
    p: &RowPtrs,
    t: usize,
    pair: usize,
) -> (__m512d, __m512d) {
    unsafe {
        let dx = p.pair_d[t].add(16 * pair);
        (
            _mm512_mul_pd(dw.0, _mm512_loadu_pd(dx)),
            _mm512_mul_pd(dw.1, _mm512_loadu_pd(dx.add(8))),
        )
    }
}

/// The weights' scales of a pair of blocks, for [`pair_scales`] (the second zero when absent).
#[inline(always)]
unsafe fn weight_pair(d0: f32, d1: f32) -> (__m512d, __m512d) {
    (_mm512_set1_pd(d0 as f64), _mm512_set1_pd(d1 as f64))
}

/// Pointers to activation rows `r0 .. r0 + g`.
struct RowPtrs {
    qs: [*const i8; GROUP],
    d: [*const f32; GROUP],
    sums16: [*const i16; GROUP],
    sums32: [*const i16; GROUP],
    offset4: [*const i32; GROUP],
    pair_d: [*const f64; GROUP],
}

impl RowPtrs {
    fn new(a: &Activations, r0: usize, g: usize) -> Self {
        let mut p = RowPtrs {
            qs: [std::ptr::null(); GROUP],
            d: [std::ptr::null(); GROUP],
            sums16: [std::ptr::null(); GROUP],
            sums32: [std::ptr::null(); GROUP],
            offset4: [std::ptr::null(); GROUP],
            pair_d: [std::ptr::null(); GROUP],
        };
        let quarter = a.padded / 4;
        for t in 0..g {
            let r = r0 + t;
            p.qs[t] = a.row_qs(r).as_ptr();
            p.d[t] = a.row_d(r).as_ptr();
            p.sums16[t] = a.row_sums16(r).as_ptr();
            p.sums32[t] = a.row_sums32(r).as_ptr();
            if !a.offset4.is_empty() {
                p.offset4[t] = a.offset4[r * quarter..].as_ptr();
            }
            if !a.pair_d.is_empty() {
                p.pair_d[t] = a.pair_d[r * quarter..].as_ptr();
            }
        }
        p
    }
}

/// `Q4_K`: `Σ_b d d_x Σ_sb s_sb (q · x) − dmin d_x Σ_sb n_sb Σx`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    // Register j holds two sub-blocks (i16 lanes 0-15 and 16-31 after vpmaddubsw): the low
    // nibbles of 64 bytes (sub-blocks 0 and 2, or 4 and 6), or their high nibbles (1 and 3, or 5
    // and 7); the activations are stored in that order (see `q4k_slot`).
    const SUB_BLOCKS: [[i16; 2]; 4] = [[0, 2], [1, 3], [4, 6], [5, 7]];
    let idx: [__m512i; 4] = std::array::from_fn(|j| {
        let lanes: [i16; 32] = std::array::from_fn(|l| SUB_BLOCKS[j][l / 16]);
        unsafe { _mm512_loadu_si512(lanes.as_ptr() as *const _) }
    });
    let low4 = _mm512_set1_epi8(0x0F);
    let mut acc = [unsafe { Acc64::zero() }; G];
    let mut acc_min = [_mm256_setzero_pd(); G];
    for (b, blk) in row.chunks_exact(144).enumerate() {
        let bp = blk.as_ptr();
        let (d, dmin) = unsafe { (f16(bp), f16(bp.add(2))) };
        let u = unsafe { q4k_scales_mins_words(bp) };
        let scales_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let sc = _mm512_castsi256_si512(scales_mins);
        let scales: [__m512i; 4] = std::array::from_fn(|j| _mm512_permutexvar_epi16(idx[j], sc));
        let mins = _mm256_extracti128_si256::<1>(scales_mins);
        let (q01, q23) = unsafe {
            (
                _mm512_loadu_si512(bp.add(16) as *const _),
                _mm512_loadu_si512(bp.add(80) as *const _),
            )
        };
        let q = [
            _mm512_and_si512(q01, low4),
            _mm512_and_si512(_mm512_srli_epi16::<4>(q01), low4),
            _mm512_and_si512(q23, low4),
            _mm512_and_si512(_mm512_srli_epi16::<4>(q23), low4),
        ];
        for t in 0..G {
            unsafe {
                let x = p.qs[t].add(256 * b);
                let mut s = _mm512_setzero_si512();
                for j in 0..4 {
                    let xv = _mm512_loadu_si512(x.add(64 * j) as *const _);
                    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q[j], xv), scales[j]);
                }
                let dx = *p.d[t].add(b);
                acc[t].add_scaled(s, scale(d, dx));
                acc_min[t] =
                    q4k_add_mins(acc_min[t], mins, p.sums32[t].add(8 * b), scale(dmin, dx));
            }
        }
    }
    for t in 0..G {
        outs[t] = unsafe { (acc[t].sum() - hsum256d(acc_min[t])) as f32 };
    }
}

/// `Q6_K`: `Σ_b d d_x (Σ_g s_g (q · x) − 32 Σ_g s_g Σx)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    // Register z holds groups 4z..4z+4 of 16 values (8 i16 lanes each after vpmaddubsw).
    let idx: [__m512i; 4] = std::array::from_fn(|z| {
        let lanes: [i16; 32] = std::array::from_fn(|l| (4 * z + l / 8) as i16);
        unsafe { _mm512_loadu_si512(lanes.as_ptr() as *const _) }
    });
    let m4 = _mm512_set1_epi8(0x0F);
    let m2 = _mm512_set1_epi8(0x03);
    let mut acc = [unsafe { Acc64::zero() }; G];
    for (b, blk) in row.chunks_exact(210).enumerate() {
        let bp = blk.as_ptr();
        let d = unsafe { f16(bp.add(208)) };
        let sc16 = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(192) as *const __m128i)) };
        let sc = _mm512_castsi256_si512(sc16);
        let scales: [__m512i; 4] = std::array::from_fn(|z| _mm512_permutexvar_epi16(idx[z], sc));
        let mut v = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            unsafe {
                let ql = _mm512_loadu_si512(bp.add(64 * h) as *const _);
                let qh = _mm256_loadu_si256(bp.add(128 + 32 * h) as *const __m256i);
                // Bytes 0-31: bits 0-1 of qh (values l), bytes 32-63: bits 2-3 (values l + 32).
                let qh =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                let top = |bits: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(bits, m2));
                v[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), top(qh));
                v[2 * h + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    top(_mm512_srli_epi16::<4>(qh)),
                );
            }
        }
        for t in 0..G {
            unsafe {
                let x = p.qs[t].add(256 * b);
                let mut s = _mm512_setzero_si512();
                for z in 0..4 {
                    let xv = _mm512_loadu_si512(x.add(64 * z) as *const _);
                    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(v[z], xv), scales[z]);
                }
                let bs = _mm256_loadu_si256(p.sums16[t].add(16 * b) as *const __m256i);
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, sc16));
                s = _mm512_sub_epi32(s, _mm512_zextsi256_si512(offset));
                let dx = *p.d[t].add(b);
                acc[t].add_scaled(s, scale(d, dx));
            }
        }
    }
    for t in 0..G {
        outs[t] = unsafe { acc[t].sum() as f32 };
    }
}

/// `Q8_0`'s 32 values as unsigned bytes `q + 128` (the sum starts at `−128 Σ q_x`).
#[inline(always)]
unsafe fn q8_0_unpack(blk: *const u8) -> __m256i {
    unsafe {
        let q = _mm256_loadu_si256(blk.add(2) as *const __m256i);
        _mm256_xor_si256(q, _mm256_set1_epi8(-128))
    }
}

/// A `Q5_0` block's 32 values in 0..31: the nibbles of bytes 6..22 (values 0-15 low, 16-31
/// high), bit `i` of the word at bytes 2..6 adding 16 to value `i` (the sum starts at
/// `−16 Σ q_x`).
#[inline(always)]
unsafe fn q5_0_unpack(blk: *const u8) -> __m256i {
    unsafe {
        let low4 = _mm_set1_epi8(0x0F);
        let raw = _mm_loadu_si128(blk.add(6) as *const __m128i);
        let lo = _mm_and_si128(raw, low4);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
        let qh = std::ptr::read_unaligned(blk.add(2) as *const u32);
        _mm256_or_si256(_mm256_set_m128i(hi, lo), _mm256_maskz_set1_epi8(qh, 0x10))
    }
}

/// `Q8_0` and `Q5_0`, two blocks per register: `Σ_b d_w d_x Σ (u_w − o) q_x`, where `unpack`
/// gives a block's values as unsigned bytes `u_w` (VNNI's unsigned operand; `d_w` is the f16 at
/// the block's start) and the sum starts at the activations' `−o Σ q_x` (`offset4`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn offset_pairs_row<const G: usize>(
    row: &[u8],
    block_bytes: usize,
    unpack: unsafe fn(*const u8) -> __m256i,
    p: &RowPtrs,
    outs: &mut [f32],
) {
    let mut acc = [unsafe { Acc64::zero() }; G];
    let blocks = row.len() / block_bytes;
    for pair in 0..blocks.div_ceil(2) {
        let (w, dw) = unsafe {
            let b0 = row.as_ptr().add(2 * block_bytes * pair);
            let lo = unpack(b0);
            if 2 * pair + 1 < blocks {
                let b1 = b0.add(block_bytes);
                let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), unpack(b1));
                (w, weight_pair(f16(b0), f16(b1)))
            } else {
                // An odd last block: the upper half meets zero-padded activations.
                (_mm512_zextsi256_si512(lo), weight_pair(f16(b0), 0.0))
            }
        };
        for t in 0..G {
            unsafe {
                let xv = _mm512_loadu_si512(p.qs[t].add(64 * pair) as *const _);
                let start = _mm512_loadu_si512(p.offset4[t].add(16 * pair) as *const _);
                let s = _mm512_dpbusd_epi32(start, w, xv);
                let (lo, hi) = pair_scales(dw, p, t, pair);
                acc[t].add(s, lo, hi);
            }
        }
    }
    for t in 0..G {
        outs[t] = unsafe { acc[t].sum() as f32 };
    }
}

/// `Q4_1`, two blocks per register: `Σ_b d_w d_x Σ q_w q_x + m_w d_x Σ q_x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let low4 = _mm_set1_epi8(0x0F);
    let unpack = |blk: *const u8| unsafe {
        let raw = _mm_loadu_si128(blk.add(4) as *const __m128i);
        let lo = _mm_and_si128(raw, low4);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
        _mm256_set_m128i(hi, lo)
    };
    let mut acc = [unsafe { Acc64::zero() }; G];
    let mut acc_min = [0f64; G];
    let blocks = row.len() / 20;
    for pair in 0..blocks.div_ceil(2) {
        let b0 = unsafe { row.as_ptr().add(40 * pair) };
        let second = 2 * pair + 1 < blocks;
        let (w, dw, m0, m1) = unsafe {
            if second {
                let b1 = b0.add(20);
                let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(unpack(b0)), unpack(b1));
                (
                    w,
                    weight_pair(f16(b0), f16(b1)),
                    f16(b0.add(2)),
                    f16(b1.add(2)),
                )
            } else {
                (
                    _mm512_zextsi256_si512(unpack(b0)),
                    weight_pair(f16(b0), 0.0),
                    f16(b0.add(2)),
                    0.0,
                )
            }
        };
        for t in 0..G {
            unsafe {
                let xv = _mm512_loadu_si512(p.qs[t].add(64 * pair) as *const _);
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv);
                let (lo, hi) = pair_scales(dw, p, t, pair);
                acc[t].add(s, lo, hi);
                let (b, s32) = (2 * pair, p.sums32[t].add(2 * pair));
                acc_min[t] += scale(m0, *p.d[t].add(b)) * *s32 as f64;
                if second {
                    acc_min[t] += scale(m1, *p.d[t].add(b + 1)) * *s32.add(1) as f64;
                }
            }
        }
    }
    for t in 0..G {
        outs[t] = unsafe { (acc[t].sum() + acc_min[t]) as f32 };
    }
}

// ---- Several activation rows: the interleaved layout -------------------------------------------
//
// With `m ≥ 2` rows, a weight block is unpacked once into 8-bit values in a small buffer, and
// every 8 of its values are broadcast to all 8 64-bit lanes of a register, against a register
// holding the same 8 positions of 8 activation rows (`Activations::il_qs`). One `vpdpbusd` then
// advances 8 rows at once; lane pair (2t, 2t + 1) accumulates row t. Scales are applied once per
// sub-block for all 8 rows (`vpmulld` by a broadcast scale).

/// The 8 rows' results.
type Lanes = [f32; GROUP_ROWS];

/// Row t's sum, in f64, from lanes 2t and 2t + 1.
#[inline(always)]
unsafe fn pairs(acc: Acc64) -> [f64; GROUP_ROWS] {
    let all = unsafe { acc.lanes() };
    std::array::from_fn(|t| all[2 * t] + all[2 * t + 1])
}

/// 8 weight bytes at `p`, repeated in every 64-bit lane.
#[inline(always)]
unsafe fn broadcast8(p: *const u8) -> __m512i {
    unsafe { _mm512_set1_epi64(std::ptr::read_unaligned(p as *const i64)) }
}

/// `Σ_{i<n} w[8i..8i+8] · x[i]` for 8 rows at once: `n` chunks of 8 values. Even and odd
/// chunks go to two accumulators, so that two `vpdpbusd` chains run side by side.
#[inline(always)]
unsafe fn dot_chunks(s: __m512i, w: *const u8, x: *const i8, n: usize) -> __m512i {
    let (mut even, mut odd) = (s, _mm512_setzero_si512());
    for i in (0..n).step_by(2) {
        unsafe {
            let xv = _mm512_loadu_si512(x.add(64 * i) as *const _);
            even = _mm512_dpbusd_epi32(even, broadcast8(w.add(8 * i)), xv);
            if i + 1 < n {
                let xv = _mm512_loadu_si512(x.add(64 * (i + 1)) as *const _);
                odd = _mm512_dpbusd_epi32(odd, broadcast8(w.add(8 * (i + 1))), xv);
            }
        }
    }
    _mm512_add_epi32(even, odd)
}

/// Pointers into group `g` of `a`'s interleaved layout.
struct Group {
    qs: *const i8,
    d: *const f32,
    sums: *const i32,
}

impl Group {
    fn new(a: &Activations, g: usize) -> Self {
        let (chunks, spans) = (a.cols / 8, a.cols / a.il_span());
        Group {
            qs: a.il_qs[g * chunks * 64..].as_ptr(),
            // Built for the 256-value formats only (the 32-value ones read `il_d64`).
            d: a.il_d
                .get(g * a.blocks() * 16..)
                .map_or(std::ptr::null(), <[f32]>::as_ptr),
            // Built for `Q6_K` only (`Q4_K` reads `il_sub_sums`), never read otherwise.
            sums: a
                .il_sums
                .get(g * spans * 16..)
                .map_or(std::ptr::null(), <[i32]>::as_ptr),
        }
    }

    /// The 8 rows' values `8c ..` (chunk `c`).
    unsafe fn qs(&self, c: usize) -> *const i8 {
        unsafe { self.qs.add(64 * c) }
    }

    unsafe fn d(&self, b: usize) -> __m512 {
        unsafe { _mm512_loadu_ps(self.d.add(16 * b)) }
    }

    unsafe fn sums(&self, span: usize) -> __m512i {
        unsafe { _mm512_loadu_si512(self.sums.add(16 * span) as *const _) }
    }
}

/// `Q4_K` against 8 interleaved rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_rows8(row: &[u8], a: &Activations, g: usize) -> Lanes {
    let x = Group::new(a, g);
    let low4 = _mm512_set1_epi8(0x0F);
    let mut buf = [0u8; 256];
    let mut acc = unsafe { Acc64::zero() };
    // Per row (4 lanes each; rows 0-3, then 4-7): dmin d_x Σ_sb n_sb Σ q_x.
    let mut min_acc = [unsafe { Acc64::zero() }; 2];
    let blocks = a.blocks();
    let sub_sums = a.il_sub_sums[g * blocks * 64..].as_ptr();
    let d4 = a.il_d4[g * blocks * 32..].as_ptr();
    for (b, blk) in row.chunks_exact(144).enumerate() {
        let bp = blk.as_ptr();
        unsafe {
            let u = q4k_scales_mins_words(bp);
            let sm: [u8; 16] = std::mem::transmute(u);
            // Slots 0-7 of 32 values: sub-blocks 0 2 1 3 4 6 5 7 (see `q4k_slot`).
            let q01 = _mm512_loadu_si512(bp.add(16) as *const _);
            let q23 = _mm512_loadu_si512(bp.add(80) as *const _);
            let bq = buf.as_mut_ptr();
            _mm512_storeu_si512(bq as *mut _, _mm512_and_si512(q01, low4));
            _mm512_storeu_si512(
                bq.add(64) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<4>(q01), low4),
            );
            _mm512_storeu_si512(bq.add(128) as *mut _, _mm512_and_si512(q23, low4));
            _mm512_storeu_si512(
                bq.add(192) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<4>(q23), low4),
            );

            let mut sum = _mm512_setzero_si512();
            for sb in 0..8 {
                let s = dot_chunks(
                    _mm512_setzero_si512(),
                    bq.add(32 * q4k_slot(sb)),
                    x.qs(32 * b + 4 * sb),
                    4,
                );
                sum =
                    _mm512_add_epi32(sum, _mm512_mullo_epi32(s, _mm512_set1_epi32(sm[sb] as i32)));
            }
            // The mins: each 128-bit lane holds one row's 8 sub-block sums, against the 8 mins.
            let mn = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
            let mn = _mm512_broadcast_i32x4(mn);
            for (h, m) in min_acc.iter_mut().enumerate() {
                let sums = _mm512_loadu_si512(sub_sums.add(b * 64 + 32 * h) as *const _);
                let p = _mm512_dpwssd_epi32(_mm512_setzero_si512(), sums, mn);
                m.add_lanes(
                    p,
                    f16(bp.add(2)) as f64,
                    _mm512_loadu_ps(d4.add(b * 32 + 16 * h)),
                );
            }
            let dx = x.d(b);
            acc.add_lanes(sum, f16(bp) as f64, dx);
        }
    }
    let main = unsafe { pairs(acc) };
    let mins = unsafe { [min_acc[0].lanes(), min_acc[1].lanes()] };
    std::array::from_fn(|t| {
        let m: f64 = mins[t / 4][4 * (t % 4)..4 * (t % 4) + 4].iter().sum();
        (main[t] - m) as f32
    })
}

/// `Q6_K` against 8 interleaved rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_rows8(row: &[u8], a: &Activations, g: usize) -> Lanes {
    let x = Group::new(a, g);
    let m4 = _mm512_set1_epi8(0x0F);
    let m2 = _mm512_set1_epi8(0x03);
    let mut buf = [0u8; 256];
    let mut acc = unsafe { Acc64::zero() };
    for (b, blk) in row.chunks_exact(210).enumerate() {
        let bp = blk.as_ptr();
        unsafe {
            let bq = buf.as_mut_ptr();
            for h in 0..2 {
                let ql = _mm512_loadu_si512(bp.add(64 * h) as *const _);
                let qh = _mm256_loadu_si256(bp.add(128 + 32 * h) as *const __m256i);
                let qh =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                let top = |bits: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(bits, m2));
                let lo = _mm512_or_si512(_mm512_and_si512(ql, m4), top(qh));
                let hi = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    top(_mm512_srli_epi16::<4>(qh)),
                );
                _mm512_storeu_si512(bq.add(128 * h) as *mut _, lo);
                _mm512_storeu_si512(bq.add(128 * h + 64) as *mut _, hi);
            }

            let (mut sum, mut offset) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for grp in 0..16 {
                let scale = _mm512_set1_epi32(blk[192 + grp] as i8 as i32);
                let s = dot_chunks(
                    _mm512_setzero_si512(),
                    bq.add(16 * grp),
                    x.qs(32 * b + 2 * grp),
                    2,
                );
                sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(s, scale));
                offset = _mm512_add_epi32(offset, _mm512_mullo_epi32(x.sums(16 * b + grp), scale));
            }
            sum = _mm512_sub_epi32(sum, _mm512_slli_epi32::<5>(offset));
            acc.add_lanes(sum, f16(bp.add(208)) as f64, x.d(b));
        }
    }
    let main = unsafe { pairs(acc) };
    std::array::from_fn(|t| main[t] as f32)
}

/// Per-row sums in f64 for a group of 8 rows, lane `t` for row `8g + t`: the 32-value formats'
/// accumulator. Each block adds `d_w · d_x · Σ q_w q_x` (the two lanes of a row's integer sum
/// added first, as integers) and a term per row that the activations hold ready, `d_x · Σ q_x`
/// times a weight constant; every product is exact in f64.
struct RowAcc(__m512d);

impl RowAcc {
    #[inline(always)]
    unsafe fn zero() -> Self {
        RowAcc(_mm512_setzero_pd())
    }

    /// Adds `s` (16 i32 lanes, row `t` in lanes `2t` and `2t + 1`) times `d_w · d_x[t]`.
    #[inline(always)]
    unsafe fn add_pairs(&mut self, s: __m512i, d_w: f64, d_x: *const f64) {
        unsafe {
            let pair = _mm512_add_epi32(s, _mm512_srli_epi64::<32>(s));
            let sums = _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(pair));
            let scale = _mm512_mul_pd(_mm512_set1_pd(d_w), _mm512_loadu_pd(d_x));
            self.0 = _mm512_fmadd_pd(sums, scale, self.0);
        }
    }

    /// Adds `c · v[t]` to every row `t`.
    #[inline(always)]
    unsafe fn add_scaled(&mut self, c: f64, v: *const f64) {
        unsafe { self.0 = _mm512_fmadd_pd(_mm512_set1_pd(c), _mm512_loadu_pd(v), self.0) }
    }

    #[inline(always)]
    unsafe fn lanes_f64(self) -> [f64; GROUP_ROWS] {
        let mut out = [0f64; GROUP_ROWS];
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), self.0) };
        out
    }
}

/// The 32-value formats' per-block extras of group `g`: `(d_x, d_x · Σ q_x)`, 8 lanes per block.
fn small_block_extras(a: &Activations, g: usize) -> (*const f64, *const f64) {
    let at = g * a.blocks() * GROUP_ROWS;
    (a.il_d64[at..].as_ptr(), a.il_dsum64[at..].as_ptr())
}

/// `Q8_0` and `Q5_0` against 8 interleaved rows: `unpack` gives a block's values as unsigned
/// bytes `u_w = q_w + offset`, and `offset · d_w · d_x Σ q_x` is taken out again per block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn offset_rows8(
    row: &[u8],
    block_bytes: usize,
    unpack: unsafe fn(*const u8) -> __m256i,
    offset: i32,
    a: &Activations,
    g: usize,
) -> Lanes {
    let x = Group::new(a, g);
    let (d_x, dsum) = small_block_extras(a, g);
    let mut buf = [0u8; 32];
    let (mut acc, mut off) = unsafe { (RowAcc::zero(), RowAcc::zero()) };
    for (b, blk) in row.chunks_exact(block_bytes).enumerate() {
        let bp = blk.as_ptr();
        unsafe {
            _mm256_storeu_si256(buf.as_mut_ptr() as *mut __m256i, unpack(bp));
            let s = dot_chunks(_mm512_setzero_si512(), buf.as_ptr(), x.qs(4 * b), 4);
            let d_w = f16(bp) as f64;
            acc.add_pairs(s, d_w, d_x.add(8 * b));
            off.add_scaled(-(offset as f64) * d_w, dsum.add(8 * b));
        }
    }
    let (main, off) = unsafe { (acc.lanes_f64(), off.lanes_f64()) };
    std::array::from_fn(|t| (main[t] + off[t]) as f32)
}

/// `Q4_1` against 8 interleaved rows: `d_w Σ q_w q_x d_x + m_w d_x Σ q_x` per block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_rows8(row: &[u8], a: &Activations, g: usize) -> Lanes {
    let x = Group::new(a, g);
    let (d_x, dsum) = small_block_extras(a, g);
    let low4 = _mm_set1_epi8(0x0F);
    let mut buf = [0u8; 32];
    let (mut acc, mut min_acc) = unsafe { (RowAcc::zero(), RowAcc::zero()) };
    for (b, blk) in row.chunks_exact(20).enumerate() {
        let bp = blk.as_ptr();
        unsafe {
            let raw = _mm_loadu_si128(bp.add(4) as *const __m128i);
            _mm_storeu_si128(buf.as_mut_ptr() as *mut __m128i, _mm_and_si128(raw, low4));
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
            _mm_storeu_si128(buf.as_mut_ptr().add(16) as *mut __m128i, hi);
            let s = dot_chunks(_mm512_setzero_si512(), buf.as_ptr(), x.qs(4 * b), 4);
            acc.add_pairs(s, f16(bp) as f64, d_x.add(8 * b));
            min_acc.add_scaled(f16(bp.add(2)) as f64, dsum.add(8 * b));
        }
    }
    let (main, mins) = unsafe { (acc.lanes_f64(), min_acc.lanes_f64()) };
    std::array::from_fn(|t| (main[t] + mins[t]) as f32)
}
