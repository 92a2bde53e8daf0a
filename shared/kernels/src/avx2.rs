//! AVX2 kernels (with FMA and F16C: Intel Haswell and AMD Zen onwards), for CPUs without
//! AVX-512.
//!
//! One weight row at a time against up to [`GROUP`] activation rows: each block is unpacked into
//! 256-bit registers of 32 values once and multiplied with every row of the group. More rows
//! come four at a time over a tile of weight rows small enough to stay in the L1 cache, so the
//! weights are read from memory once whatever the number of rows.
//!
//! The integer products are `vpmaddubsw` (u8 × i8 → i16 pairs), then `vpmaddwd` (i16 pairs → i32)
//! against ones, or against the sub-block scales for the K formats. `Q8_0`'s weights are signed:
//! the product takes `|q_w|` and the activations with `q_w`'s sign (`vpsignb`), as llama.cpp does.
//! Each block's integer sum is scaled by `d_w · d_x` in f64, exactly as the reference does (see
//! `portable`). The 32-value formats take four blocks at a time: their sums folded into four f64
//! lanes and scaled together (one fused multiply-add, so the product is not rounded), with `d_x`
//! read in f64 from the activations, and for `Q4_1` and `Q5_0` the term `c_w · d_x Σ q_x` from
//! the activations' `d_x Σ q_x`: a few operations per four blocks where a block at a time cost a
//! dozen per block (they ran 1.6-3.5 × faster). The K formats, with 256 values to a block, gained
//! nothing from it (measured) and add a block at a time. Every row goes through
//! the same instructions whatever the group: a row gets the same f32 alone or with others.

// Loops index several parallel arrays (accumulators, pointers, registers) by row or sub-block.
#![allow(clippy::needless_range_loop)]

use crate::activations::q4k_slot;
use crate::driver::by_tiles_and_groups;
use crate::x86::{f16, hsum256d, q4k_add_mins, q4k_scales_mins_words, scale};
use crate::{Activations, Format};
use std::arch::x86_64::*;

/// Activation rows multiplied with one unpacked weight block.
const GROUP: usize = 4;

/// Rows of `format` weights (`data`, `row_bytes` each) against all activation rows of `a`;
/// `dst[j · m + r]` gets row `j` times activation row `r`.
///
/// SAFETY: the CPU must have AVX2, FMA and F16C; `data` must be whole rows of `a.cols` values
/// and `dst` hold `rows · a.rows` values.
pub(crate) unsafe fn rows(
    format: Format,
    data: &[u8],
    row_bytes: usize,
    a: &Activations,
    dst: &mut [f32],
) {
    debug_assert_eq!(row_bytes, format.row_bytes(a.cols));
    // Each group's pointers once, not once per weight row (a few percent of a batched pass).
    let groups: Vec<RowPtrs> = (0..a.rows)
        .step_by(GROUP)
        .map(|r0| RowPtrs::new(a, r0, (a.rows - r0).min(GROUP)))
        .collect();
    by_tiles_and_groups(data, row_bytes, a.rows, GROUP, dst, |row, r0, outs| {
        let p = &groups[r0 / GROUP];
        // SAFETY: the caller's contract.
        unsafe {
            match outs.len() {
                1 => row_kernel::<1>(format, row, p, outs),
                2 => row_kernel::<2>(format, row, p, outs),
                3 => row_kernel::<3>(format, row, p, outs),
                _ => row_kernel::<4>(format, row, p, outs),
            }
        }
    });
}

/// One weight row against the `G` activation rows of `p`.
#[inline(always)]
unsafe fn row_kernel<const G: usize>(format: Format, row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    unsafe {
        match format {
            Format::Q8_0 => q8_0_row::<G>(row, p, outs),
            Format::Q5_0 => q5_0_row::<G>(row, p, outs),
            Format::Q4_1 => q4_1_row::<G>(row, p, outs),
            Format::Q4K => q4k_row::<G>(row, p, outs),
            Format::Q6K => q6k_row::<G>(row, p, outs),
        }
    }
}

/// Pointers to activation rows `r0 .. r0 + g`.
struct RowPtrs {
    qs: [*const i8; GROUP],
    d: [*const f32; GROUP],
    sums16: [*const i16; GROUP],
    sums32: [*const i16; GROUP],
    /// The 32-value formats: `d_x` and `d_x Σ q_x` per block, in f64.
    d64: [*const f64; GROUP],
    dsum64: [*const f64; GROUP],
}

impl RowPtrs {
    fn new(a: &Activations, r0: usize, g: usize) -> Self {
        let mut p = RowPtrs {
            qs: [std::ptr::null(); GROUP],
            d: [std::ptr::null(); GROUP],
            sums16: [std::ptr::null(); GROUP],
            sums32: [std::ptr::null(); GROUP],
            d64: [std::ptr::null(); GROUP],
            dsum64: [std::ptr::null(); GROUP],
        };
        for t in 0..g {
            p.qs[t] = a.row_qs(r0 + t).as_ptr();
            p.d[t] = a.row_d(r0 + t).as_ptr();
            p.sums16[t] = a.row_sums16(r0 + t).as_ptr();
            p.sums32[t] = a.row_sums32(r0 + t).as_ptr();
            if !a.d64.is_empty() {
                p.d64[t] = a.row_d64(r0 + t).as_ptr();
                p.dsum64[t] = a.row_dsum64(r0 + t).as_ptr();
            }
        }
        p
    }

    /// Row `t`'s 32 quantised values from value `at`.
    #[inline(always)]
    unsafe fn x(&self, t: usize, at: usize) -> __m256i {
        unsafe { _mm256_loadu_si256(self.qs[t].add(at) as *const __m256i) }
    }

    /// Row `t`'s scale of block `b`.
    #[inline(always)]
    unsafe fn d(&self, t: usize, b: usize) -> f32 {
        unsafe { *self.d[t].add(b) }
    }
}

/// A row's sum in f64, four lanes: each block adds its integer sum (eight i32 lanes, added as
/// integers first) times its scale `d_w · d_x`, exact in f64.
#[derive(Clone, Copy)]
struct Acc(__m256d);

impl Acc {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Acc(_mm256_setzero_pd())
    }

    #[inline(always)]
    unsafe fn add(&mut self, s: __m256i, scale: f64) {
        let folded = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        self.0 = _mm256_fmadd_pd(_mm256_cvtepi32_pd(folded), _mm256_set1_pd(scale), self.0);
    }

    #[inline(always)]
    unsafe fn sum(self) -> f64 {
        unsafe { hsum256d(self.0) }
    }
}

/// `Σ w x` over 32 values as eight i32 lanes: `w` unsigned bytes, `x` signed.
#[inline(always)]
unsafe fn dot32(w: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
}

/// 16 bytes of nibbles as 32 values: the low nibbles first, then the high ones.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    unsafe {
        let low4 = _mm_set1_epi8(0x0F);
        let raw = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(raw, low4);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
        _mm256_set_m128i(hi, lo)
    }
}

/// Byte `i` is `0xFF` where bit `i` of `bits` is set, else 0 (llama.cpp's `bytes_from_bits_32`).
#[inline(always)]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    // Byte i of the result gets byte i / 8 of `bits`, then every bit but i % 8 is set.
    let spread = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

/// A 32-value format (`Q8_0`, `Q5_0`, `Q4_1`): each block is `d_w · d_x · Σ w x` plus, for some,
/// a term `c_w · d_x Σ q_x` (the minimum of `Q4_1`, the offset of `Q5_0`).
trait SmallFormat {
    /// Bytes per block.
    const BYTES: usize;
    /// Whether blocks have the `c_w · d_x Σ q_x` term.
    const HAS_TERM: bool;
    /// A block's weights, unpacked once for every row of a group.
    type Unpacked: Copy;
    unsafe fn unpack(bp: *const u8) -> Self::Unpacked;
    /// `Σ w x` over the block against 32 activation values, as eight i32 lanes.
    unsafe fn dot(w: &Self::Unpacked, x: __m256i) -> __m256i;
    /// `c_w` of the four blocks from `bp`, as f64 lanes (with `HAS_TERM`).
    unsafe fn terms(bp: *const u8) -> __m256d;
}

/// `Q8_0`: `Σ |q_w| · (q_x with the sign of q_w)`.
struct Q8_0;

impl SmallFormat for Q8_0 {
    const BYTES: usize = 34;
    const HAS_TERM: bool = false;
    /// The weights and their sizes (`|−128|` wraps to 0x80, which `vpmaddubsw` reads as 128).
    type Unpacked = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn unpack(bp: *const u8) -> Self::Unpacked {
        let q = unsafe { _mm256_loadu_si256(bp.add(2) as *const __m256i) };
        (q, _mm256_abs_epi8(q))
    }
    #[inline(always)]
    unsafe fn dot(w: &Self::Unpacked, x: __m256i) -> __m256i {
        unsafe { dot32(w.1, _mm256_sign_epi8(x, w.0)) }
    }
    #[inline(always)]
    unsafe fn terms(_: *const u8) -> __m256d {
        _mm256_setzero_pd()
    }
}

/// `Q5_0`: `Σ u_w q_x − 16 Σ q_x` with `u_w = q_w + 16` in 0..31, so `c_w = −16 d_w`.
struct Q5_0;

impl SmallFormat for Q5_0 {
    const BYTES: usize = 22;
    const HAS_TERM: bool = true;
    type Unpacked = __m256i;
    #[inline(always)]
    unsafe fn unpack(bp: *const u8) -> __m256i {
        unsafe {
            let high = std::ptr::read_unaligned(bp.add(2) as *const u32);
            let fifth = _mm256_and_si256(bytes_from_bits(high), _mm256_set1_epi8(0x10));
            _mm256_or_si256(nibbles(bp.add(6)), fifth)
        }
    }
    #[inline(always)]
    unsafe fn dot(w: &__m256i, x: __m256i) -> __m256i {
        unsafe { dot32(*w, x) }
    }
    #[inline(always)]
    unsafe fn terms(bp: *const u8) -> __m256d {
        unsafe { _mm256_mul_pd(scales4(bp, 22), _mm256_set1_pd(-16.0)) }
    }
}

/// `Q4_1`: `Σ q_w q_x` plus the minimum `m_w · d_x Σ q_x`.
struct Q4_1;

impl SmallFormat for Q4_1 {
    const BYTES: usize = 20;
    const HAS_TERM: bool = true;
    type Unpacked = __m256i;
    #[inline(always)]
    unsafe fn unpack(bp: *const u8) -> __m256i {
        unsafe { nibbles(bp.add(4)) }
    }
    #[inline(always)]
    unsafe fn dot(w: &__m256i, x: __m256i) -> __m256i {
        unsafe { dot32(*w, x) }
    }
    #[inline(always)]
    unsafe fn terms(bp: *const u8) -> __m256d {
        unsafe { scales4(bp.add(2), 20) }
    }
}

/// The f16s at `bp` and `stride`, 2 · `stride` and 3 · `stride` bytes on (one per block of four),
/// as f64 lanes.
#[inline(always)]
unsafe fn scales4(bp: *const u8, stride: usize) -> __m256d {
    unsafe {
        let at = |i: usize| std::ptr::read_unaligned(bp.add(stride * i) as *const u16) as i16;
        let h = _mm_set_epi16(0, 0, 0, 0, at(3), at(2), at(1), at(0));
        _mm256_cvtps_pd(_mm_cvtph_ps(h))
    }
}

/// The sums of the eight i32 lanes of each of four vectors: `[Σ s0, Σ s1, Σ s2, Σ s3]`.
#[inline(always)]
unsafe fn fold4(s0: __m256i, s1: __m256i, s2: __m256i, s3: __m256i) -> __m128i {
    // Per 128-bit half: [s0 01, s0 23, s1 01, s1 23], then [s0 0123, s1 0123, s2 0123, s3 0123].
    let c = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// A 32-value format's weight row against the `G` rows of `p`, four blocks at a time
/// ([`small_quad`]); the last one to three blocks go through the same path from a copy followed by
/// zero blocks.
#[inline(always)]
unsafe fn small_row<F: SmallFormat, const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let blocks = row.len() / F::BYTES;
    let full = blocks / 4 * 4;
    // The products and the `c_w` terms in two sums, so that one row has two chains of f64
    // additions side by side (one alone bounds a row by its latency).
    let mut acc = [[_mm256_setzero_pd(); G]; 2];
    for b0 in (0..full).step_by(4) {
        unsafe { small_quad::<F, G>(row.as_ptr().add(b0 * F::BYTES), b0, 4, p, &mut acc) };
    }
    if full < blocks {
        let mut tail = [0u8; 4 * 34];
        tail[..(blocks - full) * F::BYTES].copy_from_slice(&row[full * F::BYTES..]);
        unsafe { small_quad::<F, G>(tail.as_ptr(), full, blocks - full, p, &mut acc) };
    }
    for t in 0..G {
        outs[t] = unsafe { (hsum256d(acc[0][t]) + hsum256d(acc[1][t])) as f32 };
    }
}

/// Blocks `b0 .. b0 + 4` (at `bp`; the first `n` real, the rest zero) against each row: the
/// four blocks' integer sums go into four f64 lanes at once, times `d_w · d_x` per lane, plus
/// `c_w · d_x Σ q_x`. The products are exact; only the additions round, in f64.
#[inline(always)]
unsafe fn small_quad<F: SmallFormat, const G: usize>(
    bp: *const u8,
    b0: usize,
    n: usize,
    p: &RowPtrs,
    acc: &mut [[__m256d; G]; 2],
) {
    unsafe {
        let w: [F::Unpacked; 4] = std::array::from_fn(|i| F::unpack(bp.add(i * F::BYTES)));
        // Each block starts with its `d_w`.
        let dw = scales4(bp, F::BYTES);
        let cw = F::terms(bp);
        for t in 0..G {
            // A zero block is multiplied with the last real one's activations (in bounds).
            let x = |i: usize| p.x(t, 32 * (b0 + i.min(n - 1)));
            let sums = fold4(
                F::dot(&w[0], x(0)),
                F::dot(&w[1], x(1)),
                F::dot(&w[2], x(2)),
                F::dot(&w[3], x(3)),
            );
            let dx = _mm256_loadu_pd(p.d64[t].add(b0));
            // One rounding per fma: the product of the sum and `d_w d_x` is not rounded.
            let dw_dx = _mm256_mul_pd(dw, dx);
            acc[0][t] = _mm256_fmadd_pd(_mm256_cvtepi32_pd(sums), dw_dx, acc[0][t]);
            if F::HAS_TERM {
                let dsum = _mm256_loadu_pd(p.dsum64[t].add(b0));
                acc[1][t] = _mm256_fmadd_pd(cw, dsum, acc[1][t]);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    unsafe { small_row::<Q8_0, G>(row, p, outs) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    unsafe { small_row::<Q5_0, G>(row, p, outs) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    unsafe { small_row::<Q4_1, G>(row, p, outs) }
}

/// `Q4_K`: `Σ_b d d_x Σ_sb s_sb (q · x) − dmin d_x Σ_sb n_sb Σx`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = [unsafe { Acc::zero() }; G];
    let mut acc_min = [_mm256_setzero_pd(); G];
    for (b, blk) in row.chunks_exact(144).enumerate() {
        unsafe {
            let bp = blk.as_ptr();
            let (d, dmin) = (f16(bp), f16(bp.add(2)));
            let sm: [u8; 16] = std::mem::transmute(q4k_scales_mins_words(bp));
            let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
            // Sub-blocks 2j and 2j + 1: the low and high nibbles of the 32 bytes of run j.
            let mut q = [_mm256_setzero_si256(); 8];
            for j in 0..4 {
                let raw = _mm256_loadu_si256(bp.add(16 + 32 * j) as *const __m256i);
                q[2 * j] = _mm256_and_si256(raw, low4);
                q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4);
            }
            let scales: [__m256i; 8] = std::array::from_fn(|sb| _mm256_set1_epi16(sm[sb] as i16));
            for t in 0..G {
                let x = 256 * b;
                let mut s = _mm256_setzero_si256();
                for sb in 0..8 {
                    let pairs = _mm256_maddubs_epi16(q[sb], p.x(t, x + 32 * q4k_slot(sb)));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(pairs, scales[sb]));
                }
                let dx = p.d(t, b);
                acc[t].add(s, scale(d, dx));
                acc_min[t] =
                    q4k_add_mins(acc_min[t], mins, p.sums32[t].add(8 * b), scale(dmin, dx));
            }
        }
    }
    for t in 0..G {
        outs[t] = unsafe { (acc[t].sum() - hsum256d(acc_min[t])) as f32 };
    }
}

/// `Q6_K`: `Σ_b d d_x (Σ_g s_g (q · x) − 32 Σ_g s_g Σx)`, groups `g` of 16 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    // Register k holds values 32k .. 32k + 32: groups 2k (bytes 0-15) and 2k + 1 (16-31).
    let pick: [__m128i; 8] = std::array::from_fn(|k| {
        let bytes: [u8; 16] = std::array::from_fn(|i| (2 * k + i / 8) as u8);
        unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) }
    });
    let mut acc = [unsafe { Acc::zero() }; G];
    for (b, blk) in row.chunks_exact(210).enumerate() {
        unsafe {
            let bp = blk.as_ptr();
            let sc8 = _mm_loadu_si128(bp.add(192) as *const __m128i);
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            let scales: [__m256i; 8] =
                std::array::from_fn(|k| _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick[k])));
            let top = |bits: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(bits, m2));
            let mut v = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                // ggml's order: 128 values from 64 low-nibble bytes and 32 bytes of high bits.
                let ql0 = _mm256_loadu_si256(bp.add(64 * h) as *const __m256i);
                let ql1 = _mm256_loadu_si256(bp.add(64 * h + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(bp.add(128 + 32 * h) as *const __m256i);
                let hi4 = |q: __m256i| _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                v[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, m4), top(qh));
                v[4 * h + 1] =
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), top(_mm256_srli_epi16::<2>(qh)));
                v[4 * h + 2] = _mm256_or_si256(hi4(ql0), top(_mm256_srli_epi16::<4>(qh)));
                v[4 * h + 3] = _mm256_or_si256(hi4(ql1), top(_mm256_srli_epi16::<6>(qh)));
            }
            let d = f16(bp.add(208));
            for t in 0..G {
                let x = 256 * b;
                let mut s = _mm256_setzero_si256();
                for k in 0..8 {
                    let pairs = _mm256_maddubs_epi16(v[k], p.x(t, x + 32 * k));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(pairs, scales[k]));
                }
                let sums = _mm256_loadu_si256(p.sums16[t].add(16 * b) as *const __m256i);
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sums, sc16));
                acc[t].add(_mm256_sub_epi32(s, offset), scale(d, p.d(t, b)));
            }
        }
    }
    for t in 0..G {
        outs[t] = unsafe { acc[t].sum() as f32 };
    }
}
