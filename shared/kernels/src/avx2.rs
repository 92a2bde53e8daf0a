//! The x86-64 kernels: AVX2 (with FMA and F16C: Intel Haswell and AMD Zen onwards), compiled a
//! second time with AVX-512 VNNI's fused products for the CPUs that have them ([`Products`]).
//!
//! The integer products are `vpmaddubsw` (u8 × i8 → i16 pairs), then `vpmaddwd` (i16 pairs → i32)
//! against ones, or against the sub-block scales for the K formats; with VNNI, one `vpdpbusd`
//! or `vpdpwssd` in place of each such pair (on 256-bit registers: AMD's Zen 4 runs 512-bit ones
//! as two halves, and the earlier 512-bit kernels here were no faster on it: 1.3-2 × slower for
//! the 32-value formats). `Q8_0`'s weights are signed:
//! the product takes `|q_w|` and the activations with `q_w`'s sign (`vpsignb`), as llama.cpp does.
//! Each block's integer sum is scaled by `d_w · d_x` in f64, exactly as the reference does (see
//! `portable`): one fused multiply-add per block and row, so the product is not rounded.
//!
//! Four shapes, by format and number of activation rows; the weights are walked tile by tile
//! (small enough to stay in the L1 cache) so they are read from memory once whatever the rows:
//! - **32-value formats, up to 4 rows at a time** ([`small_row`]): four blocks unpacked into
//!   registers, each row's four block sums folded into four f64 lanes and scaled together, with
//!   `d_x` and, for `Q4_1`'s minimum and `Q5_0`'s offset, `d_x Σ q_x` read in f64 from the
//!   activations (1.6-3.5 × faster than a block at a time).
//! - **32-value formats, 8 or 16 rows at a time** ([`small_rows8`], for batches): the rows
//!   interleaved four values at a time, four weights broadcast to eight rows, so one `vpmaddubsw`
//!   advances eight rows and the sums come out one row per lane with no horizontal folding.
//! - **`Q4_K` and `Q6_K`, up to 8 rows** ([`q4k_row`], [`q6k_row`]): 32 values (one sub-block) at a
//!   time against every row, so a block's unpacked values and scales never sit in registers all at
//!   once (holding a whole block for 4 rows spilled, and a forward over 8 tokens cost 4-4.8 × one
//!   token; this way 2.4-2.6 ×); the rows' block sums then folded four rows to a register.
//! - **`Q4_K` repacked at load, eight weight rows interleaved** ([`q4k_x8_rows`], layout in
//!   [`crate::packed`]): four values of each of eight weight rows in one register, four
//!   activation values broadcast against them, so the sums come out one weight row per lane; up
//!   to eight activation rows per pass. 1.6-1.9 × faster than [`q4k_row`] from the caches.
//!
//! Every row goes through the same f64 arithmetic whatever the shape and the group: a row gets
//! the same f32 alone or with others (the kernel tests check it to the bit).

// Loops index several parallel arrays (accumulators, pointers, registers) by row or sub-block.
#![allow(clippy::needless_range_loop)]

use crate::activations::q4k_slot;
use crate::driver::{by_tiles, stream_order, Parallel};
use crate::packed::{DMIN_AT, D_AT, GROUP_BLOCK_BYTES, GROUP_ROWS, MINS_AT, SCALES_AT};
use crate::x86::{f16, hsum256d, q4k_scales_mins_words};
use crate::{Activations, Format};
use std::arch::x86_64::*;
use std::ops::Range;
use std::sync::OnceLock;

/// Activation rows multiplied with one unpacked weight block on the row path: [`MAX_GROUP`] for
/// `Q4_K` and `Q6_K`, whose kernels hold 32 values at a time, else 4 (more rows of the 32-value
/// formats go interleaved, [`small_rows8`]).
const fn group(format: Format) -> usize {
    match format {
        Format::Q4K | Format::Q6K => MAX_GROUP,
        _ => 4,
    }
}

const MAX_GROUP: usize = 8;

/// What a product's activation rows need before the kernels run (each group's pointers, or its
/// rows interleaved): made once per product and shared by its threads ([`prepare`]).
pub(crate) struct Prepared {
    /// The rows of each unit, in order.
    ranges: Vec<Range<usize>>,
    units: Vec<Unit>,
}

// SAFETY: the pointers in `RowPtrs` point into the `Activations` the product borrows for its
// whole duration, which nothing writes while the threads read.
unsafe impl Sync for Prepared {}
unsafe impl Send for Prepared {}

/// The groups of `a`'s rows for `format` weights, ready for [`rows`]; the interleaving runs on
/// the threads of `par`.
pub(crate) fn prepare(format: Format, a: &Activations, par: &dyn Parallel) -> Prepared {
    let (ranges, units) = units(format, a, par).into_iter().unzip();
    Prepared { ranges, units }
}

/// Rows of `format` weights (`data`, `row_bytes` each) against all `m` activation rows prepared
/// in `p`; `dst[j · m + r]` gets row `j` times activation row `r`.
///
/// SAFETY: the CPU must have AVX2, FMA and F16C, and with `vnni` AVX-512 F/BW/VL/VNNI; `p`
/// must come from [`prepare`] with the same format and activations, which must still be alive;
/// `data` must be whole rows of their columns and `dst` hold `rows · m` values.
pub(crate) unsafe fn rows(
    format: Format,
    data: &[u8],
    row_bytes: usize,
    p: &Prepared,
    m: usize,
    vnni: bool,
    dst: &mut [f32],
) {
    let run = if vnni { vnni::run } else { two_step::run };
    if m == 1 {
        // Four streams (`driver::stream_order`) took the 0.5B's output matrix from 13.8 to
        // 9.4-11.2 ms on the AVX2 machine (Zen 3), but made the 0.5B's decode step 15 % slower
        // on the AVX-512 one (Zen 4: `decode_probe`, six alternating rounds), whose prefetcher
        // follows one stream well. What decides is the CPU's prefetcher, not the instruction
        // set; with one machine of each here, the backend stands for it.
        let n = data.len() / row_bytes;
        let mut one = |r: usize| {
            let row = &data[r * row_bytes..(r + 1) * row_bytes];
            // SAFETY: the caller's contract.
            unsafe { run(&p.units[0], format, row, &mut dst[r..r + 1]) }
        };
        if vnni {
            (0..n).for_each(&mut one);
        } else {
            stream_order(format, n).for_each(one);
        }
        return;
    }
    by_tiles(data, row_bytes, m, &p.ranges, dst, |row, i, outs| {
        // SAFETY: the caller's contract.
        unsafe { run(&p.units[i], format, row, outs) }
    });
}

/// How a group of activation rows goes through the kernels.
enum Unit {
    /// Up to [`group`]`(format)` rows, each a block at a time.
    Rows(Box<RowPtrs>),
    /// Eight or sixteen rows of a 32-value format, interleaved eight at a time
    /// ([`small_rows8`]).
    Interleaved(Vec<Interleaved8>),
}

/// The groups of `a`'s rows: for the 32-value formats, sixteen (or eight) at a time interleaved
/// and the rest up to four at a time; for the others [`group`] at a time.
fn units(format: Format, a: &Activations, par: &dyn Parallel) -> Vec<(Range<usize>, Unit)> {
    let mut units = Vec::new();
    let mut r0 = 0;
    if format.block_values() == 32 {
        // Each group of eight rows interleaved on its own (on any thread), then two to a unit.
        let eights = a.rows / 8;
        let slots: Vec<OnceLock<Interleaved8>> = (0..eights).map(|_| OnceLock::new()).collect();
        par.for_ranges(eights, &|groups| {
            for g in groups {
                let _ = slots[g].set(Interleaved8::new(format, a, 8 * g));
            }
        });
        let mut ils = slots
            .into_iter()
            .map(|s| s.into_inner().expect("every group interleaved"));
        while a.rows - r0 >= 8 {
            let n = if a.rows - r0 >= 16 { 2 } else { 1 };
            units.push((
                r0..r0 + 8 * n,
                Unit::Interleaved(ils.by_ref().take(n).collect()),
            ));
            r0 += 8 * n;
        }
    }
    let group = group(format);
    while r0 < a.rows {
        let g = (a.rows - r0).min(group);
        units.push((
            r0..r0 + g,
            Unit::Rows(Box::new(RowPtrs::new(format, a, r0, g))),
        ));
        r0 += g;
    }
    units
}

/// The integer products the kernels are made of, in two instruction sets. AVX2 sums u8 × i8
/// products in two steps, `vpmaddubsw` (pairs → i16) then `vpmaddwd` (i16 pairs → i32); AVX-512
/// VNNI fuses each pair of steps into one instruction (`vpdpbusd`, `vpdpwssd`), used here on
/// 256-bit registers (AVX512-VL). Both give the same exact integers, and the f64 arithmetic
/// around them is shared: the two backends give the same f32s, bit for bit.
trait Products {
    /// Whether [`Products::dot_add`] is one instruction (the batch kernel then keeps no i16
    /// partial sums).
    const FUSED: bool;
    /// `acc + Σ w x` over each 4 bytes (u8 `w` × i8 `x`), as eight i32 lanes.
    unsafe fn dot_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;
    /// `acc + Σ pairs · scale` over each 2 i16 lanes, as eight i32 lanes.
    unsafe fn madd_add(acc: __m256i, pairs: __m256i, scale: __m256i) -> __m256i;
    /// Eight i32 lanes of i16 scales, in the form [`Products::scaled_sum`] takes.
    unsafe fn scales(s: __m256i) -> __m256i;
    /// `scale · Σ_i w_i x_i` in each i32 lane, over eight registers of u8 weights (at most 15)
    /// against 4 activation bytes each (at `x + 4 i`), broadcast to every lane.
    unsafe fn scaled_sum(w: &[__m256i; 8], x: *const i8, scale: __m256i) -> __m256i;
}

/// The 4 bytes at `x`, in every 32-bit lane.
#[inline(always)]
unsafe fn broadcast4(x: *const i8) -> __m256i {
    unsafe { _mm256_set1_epi32(std::ptr::read_unaligned(x as *const i32)) }
}

/// AVX2's two-step products.
struct TwoStep;

impl Products for TwoStep {
    const FUSED: bool = false;
    #[inline(always)]
    unsafe fn dot_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(w, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn madd_add(acc: __m256i, pairs: __m256i, scale: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scale))
    }
    /// The scale in both i16 halves of its lane.
    #[inline(always)]
    unsafe fn scales(s: __m256i) -> __m256i {
        _mm256_blend_epi16::<0b1010_1010>(s, _mm256_slli_epi32::<16>(s))
    }
    /// The eight `vpmaddubsw` results added as i16 (each pair at most `2 · 15 · 128`, eight of
    /// them 30720: no overflow), then one `vpmaddwd` with the scale.
    #[inline(always)]
    unsafe fn scaled_sum(w: &[__m256i; 8], x: *const i8, scale: __m256i) -> __m256i {
        unsafe {
            let mut s = _mm256_maddubs_epi16(w[0], broadcast4(x));
            for i in 1..8 {
                let p = _mm256_maddubs_epi16(w[i], broadcast4(x.add(4 * i)));
                s = _mm256_add_epi16(s, p);
            }
            _mm256_madd_epi16(s, scale)
        }
    }
}

/// AVX-512 VNNI's fused products.
struct Fused;

impl Products for Fused {
    const FUSED: bool = true;
    #[inline(always)]
    unsafe fn dot_add(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, w, x)
    }
    #[inline(always)]
    unsafe fn madd_add(acc: __m256i, pairs: __m256i, scale: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, pairs, scale)
    }
    #[inline(always)]
    unsafe fn scales(s: __m256i) -> __m256i {
        s
    }
    /// Two chains of `vpdpbusd`, then one `vpmulld` with the scale.
    #[inline(always)]
    unsafe fn scaled_sum(w: &[__m256i; 8], x: *const i8, scale: __m256i) -> __m256i {
        unsafe {
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for i in (0..8).step_by(2) {
                even = _mm256_dpbusd_epi32(even, w[i], broadcast4(x.add(4 * i)));
                odd = _mm256_dpbusd_epi32(odd, w[i + 1], broadcast4(x.add(4 * i + 4)));
            }
            _mm256_mullo_epi32(_mm256_add_epi32(even, odd), scale)
        }
    }
}

/// The kernels compiled for one instruction set: `$products` ([`Products`]) with the CPU
/// features `$features`, and `run`, one weight row against a [`Unit`]'s rows.
macro_rules! instruction_set {
    ($name:ident, $products:ty, $features:literal) => {
        mod $name {
            use super::*;

            /// One weight row against the unit's rows.
            ///
            /// SAFETY: as [`rows`](super::rows), for this instruction set.
            pub(super) unsafe fn run(unit: &Unit, format: Format, row: &[u8], outs: &mut [f32]) {
                unsafe {
                    match unit {
                        Unit::Interleaved(ils) => match (format, &ils[..]) {
                            (Format::Q8_0, [a]) => rows8::<Q8_0, 1>(row, [a], outs),
                            (Format::Q8_0, [a, b]) => rows8::<Q8_0, 2>(row, [a, b], outs),
                            (Format::Q5_0, [a]) => rows8::<Q5_0, 1>(row, [a], outs),
                            (Format::Q5_0, [a, b]) => rows8::<Q5_0, 2>(row, [a, b], outs),
                            (Format::Q4_1, [a]) => rows8::<Q4_1, 1>(row, [a], outs),
                            (Format::Q4_1, [a, b]) => rows8::<Q4_1, 2>(row, [a, b], outs),
                            _ => unreachable!("one or two groups of a 32-value format"),
                        },
                        Unit::Rows(p) => match outs.len() {
                            1 => row_kernel::<1>(format, row, p, outs),
                            2 => row_kernel::<2>(format, row, p, outs),
                            3 => row_kernel::<3>(format, row, p, outs),
                            4 => row_kernel::<4>(format, row, p, outs),
                            5 => k_row::<5>(format, row, p, outs),
                            6 => k_row::<6>(format, row, p, outs),
                            7 => k_row::<7>(format, row, p, outs),
                            _ => k_row::<8>(format, row, p, outs),
                        },
                    }
                }
            }

            /// One weight row against the `G` activation rows of `p`.
            #[inline(always)]
            unsafe fn row_kernel<const G: usize>(
                format: Format,
                row: &[u8],
                p: &RowPtrs,
                outs: &mut [f32],
            ) {
                unsafe {
                    match format {
                        Format::Q8_0 => small::<Q8_0, G>(row, p, outs),
                        Format::Q5_0 => small::<Q5_0, G>(row, p, outs),
                        Format::Q4_1 => small::<Q4_1, G>(row, p, outs),
                        Format::Q4K => q4k::<G>(row, p, outs),
                        Format::Q6K => q6k::<G>(row, p, outs),
                    }
                }
            }

            /// One weight row of a 256-value format against the `G` (up to 8) rows of `p`.
            #[inline(always)]
            unsafe fn k_row<const G: usize>(
                format: Format,
                row: &[u8],
                p: &RowPtrs,
                outs: &mut [f32],
            ) {
                unsafe {
                    match format {
                        Format::Q4K => q4k::<G>(row, p, outs),
                        Format::Q6K => q6k::<G>(row, p, outs),
                        _ => {
                            unreachable!("groups of more than 4 rows are for the 256-value formats")
                        }
                    }
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn small<F: SmallFormat, const G: usize>(
                row: &[u8],
                p: &RowPtrs,
                outs: &mut [f32],
            ) {
                unsafe { small_row::<F, $products, G>(row, p, outs) }
            }

            #[target_feature(enable = $features)]
            unsafe fn rows8<F: SmallFormat, const N: usize>(
                row: &[u8],
                ils: [&Interleaved8; N],
                outs: &mut [f32],
            ) {
                unsafe { small_rows8::<F, $products, N>(row, ils, outs) }
            }

            /// A group of eight interleaved `Q4_K` rows against activation rows `t0 ..` (up
            /// to eight of them).
            ///
            /// SAFETY: as [`packed_rows`](super::packed_rows), for this instruction set.
            pub(super) unsafe fn q4k_x8(grp: &[u8], a: &Activations, t0: usize, outs: &mut [f32]) {
                unsafe {
                    match a.rows - t0 {
                        1 => q4k_x8_g::<1>(grp, a, t0, outs),
                        2 => q4k_x8_g::<2>(grp, a, t0, outs),
                        3 => q4k_x8_g::<3>(grp, a, t0, outs),
                        4 => q4k_x8_g::<4>(grp, a, t0, outs),
                        5 => q4k_x8_g::<5>(grp, a, t0, outs),
                        6 => q4k_x8_g::<6>(grp, a, t0, outs),
                        7 => q4k_x8_g::<7>(grp, a, t0, outs),
                        _ => q4k_x8_g::<8>(grp, a, t0, outs),
                    }
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn q4k_x8_g<const G: usize>(
                grp: &[u8],
                a: &Activations,
                t0: usize,
                outs: &mut [f32],
            ) {
                unsafe { q4k_x8_rows::<$products, G>(grp, a, t0, outs) }
            }

            #[target_feature(enable = $features)]
            unsafe fn q4k<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
                unsafe { q4k_row::<$products, G>(row, p, outs) }
            }

            #[target_feature(enable = $features)]
            unsafe fn q6k<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
                unsafe { q6k_row::<$products, G>(row, p, outs) }
            }
        }
    };
}

instruction_set!(two_step, TwoStep, "avx2,fma,f16c");
instruction_set!(
    vnni,
    Fused,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);

/// Pointers to activation rows `r0 .. r0 + g`, and what the 256-value formats read of all of
/// them per block, side by side.
struct RowPtrs {
    qs: [*const i8; MAX_GROUP],
    /// The 32-value formats: `d_x` and `d_x Σ q_x` per block, in f64.
    d64: [*const f64; MAX_GROUP],
    dsum64: [*const f64; MAX_GROUP],
    /// `Q4_K` and `Q6_K`, per block: every row's `d_x` in f64 (`MAX_GROUP` lanes, zero from `g`
    /// on), read as one register per four rows.
    lanes: Vec<f64>,
    /// Alongside: every row's sums `Σ q_x` over the block's sub-blocks of 32 values (`Q4_K`'s
    /// mins, 8 per row) or groups of 16 (`Q6_K`'s offset, 16 per row). Two places for a block
    /// instead of `2 g` pointers, which no longer fit in the general registers.
    lane_sums: Vec<i16>,
}

impl RowPtrs {
    fn new(format: Format, a: &Activations, r0: usize, g: usize) -> Self {
        let mut p = RowPtrs {
            qs: [std::ptr::null(); MAX_GROUP],
            d64: [std::ptr::null(); MAX_GROUP],
            dsum64: [std::ptr::null(); MAX_GROUP],
            lanes: Vec::new(),
            lane_sums: Vec::new(),
        };
        if matches!(format, Format::Q4K | Format::Q6K) {
            // Σ q per sub-block of 32 values (`Q4_K`'s mins) or group of 16 (`Q6_K`'s offset).
            let q4k = format == Format::Q4K;
            let span = if q4k { 8 } else { 16 };
            let sums = |r| {
                if q4k {
                    a.row_sums32(r)
                } else {
                    a.row_sums16(r)
                }
            };
            let blocks = a.cols / 256;
            p.lanes = vec![0.0; blocks * MAX_GROUP];
            p.lane_sums = vec![0; blocks * MAX_GROUP * span];
            for t in 0..g {
                let (d, sums) = (a.row_d(r0 + t), sums(r0 + t));
                for b in 0..blocks {
                    p.lanes[b * MAX_GROUP + t] = d[b] as f64;
                    let at = (b * MAX_GROUP + t) * span;
                    p.lane_sums[at..at + span].copy_from_slice(&sums[span * b..span * (b + 1)]);
                }
            }
        }
        for t in 0..g {
            p.qs[t] = a.row_qs(r0 + t).as_ptr();
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
    unsafe fn dot<P: Products>(w: &Self::Unpacked, x: __m256i) -> __m256i;
    /// `c_w` of the four blocks from `bp`, as f64 lanes (with `HAS_TERM`).
    unsafe fn terms(bp: *const u8) -> __m256d;
    /// `c_w` of the block at `bp` (with `HAS_TERM`), the value [`SmallFormat::terms`] gives it.
    unsafe fn term(bp: *const u8) -> f64;
    /// Whether the weights are signed (`Q8_0`): the product then takes `|q_w|`, and the
    /// activations with the sign of `q_w`.
    const SIGNED: bool;
    /// The block's 32 weights as the unsigned bytes `vpmaddubsw` takes (`|q_w|` when signed).
    unsafe fn magnitudes(w: &Self::Unpacked) -> __m256i;
    /// Signed formats: the weights whose signs go on the activations.
    unsafe fn signs(w: &Self::Unpacked) -> __m256i;
    /// How many `vpmaddubsw` results (pairs of products, each at most `2 · 127 · max u_w`) can be
    /// added as i16 before they are widened: `32767 / (254 · max u_w)`.
    const I16_STEPS: usize;
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
    unsafe fn dot<P: Products>(w: &Self::Unpacked, x: __m256i) -> __m256i {
        unsafe { P::dot_add(_mm256_setzero_si256(), w.1, _mm256_sign_epi8(x, w.0)) }
    }
    #[inline(always)]
    unsafe fn terms(_: *const u8) -> __m256d {
        _mm256_setzero_pd()
    }
    #[inline(always)]
    unsafe fn term(_: *const u8) -> f64 {
        0.0
    }
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn magnitudes(w: &Self::Unpacked) -> __m256i {
        w.1
    }
    #[inline(always)]
    unsafe fn signs(w: &Self::Unpacked) -> __m256i {
        w.0
    }
    /// `2 · 127 · 127` already fills an i16.
    const I16_STEPS: usize = 1;
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
    unsafe fn dot<P: Products>(w: &__m256i, x: __m256i) -> __m256i {
        unsafe { P::dot_add(_mm256_setzero_si256(), *w, x) }
    }
    #[inline(always)]
    unsafe fn terms(bp: *const u8) -> __m256d {
        unsafe { _mm256_mul_pd(scales4(bp, 22), _mm256_set1_pd(-16.0)) }
    }
    #[inline(always)]
    unsafe fn term(bp: *const u8) -> f64 {
        unsafe { f16(bp) as f64 * -16.0 }
    }
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn magnitudes(w: &__m256i) -> __m256i {
        *w
    }
    #[inline(always)]
    unsafe fn signs(w: &__m256i) -> __m256i {
        *w
    }
    /// `u_w ≤ 31`: `4 · 254 · 31 = 31496`.
    const I16_STEPS: usize = 4;
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
    unsafe fn dot<P: Products>(w: &__m256i, x: __m256i) -> __m256i {
        unsafe { P::dot_add(_mm256_setzero_si256(), *w, x) }
    }
    #[inline(always)]
    unsafe fn terms(bp: *const u8) -> __m256d {
        unsafe { scales4(bp.add(2), 20) }
    }
    #[inline(always)]
    unsafe fn term(bp: *const u8) -> f64 {
        unsafe { f16(bp.add(2)) as f64 }
    }
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn magnitudes(w: &__m256i) -> __m256i {
        *w
    }
    #[inline(always)]
    unsafe fn signs(w: &__m256i) -> __m256i {
        *w
    }
    /// `q_w ≤ 15`: `8 · 254 · 15 = 30480`.
    const I16_STEPS: usize = 8;
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
    // Per 128-bit half: [s0 02, s1 02, s0 13, s1 13] and the same of s2, s3, then
    // [s0 0123, s1 0123, s2 0123, s3 0123]. (Unpacks and adds: `vphaddd` costs several
    // operations on AMD's cores.)
    let a = _mm256_add_epi32(_mm256_unpacklo_epi32(s0, s1), _mm256_unpackhi_epi32(s0, s1));
    let b = _mm256_add_epi32(_mm256_unpacklo_epi32(s2, s3), _mm256_unpackhi_epi32(s2, s3));
    let c = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// [`fold4`] of 128-bit vectors: `[Σ s0, Σ s1, Σ s2, Σ s3]` of four lanes each.
#[inline(always)]
unsafe fn fold4_128(s0: __m128i, s1: __m128i, s2: __m128i, s3: __m128i) -> __m128i {
    let a = _mm_add_epi32(_mm_unpacklo_epi32(s0, s1), _mm_unpackhi_epi32(s0, s1));
    let b = _mm_add_epi32(_mm_unpacklo_epi32(s2, s3), _mm_unpackhi_epi32(s2, s3));
    _mm_add_epi32(_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b))
}

/// Rows `4h .. 4h + 4`'s sums of `s` in lanes 0-3 ([`fold4`]); with one row, its sum in lane 0
/// by a cheaper route (the other lanes are not read), the same integer.
#[inline(always)]
unsafe fn fold_rows<const G: usize>(s: [__m256i; MAX_GROUP], h: usize) -> __m128i {
    if G == 1 {
        let v = _mm_add_epi32(
            _mm256_castsi256_si128(s[0]),
            _mm256_extracti128_si256::<1>(s[0]),
        );
        let v = _mm_add_epi32(v, _mm_shuffle_epi32::<0b1110>(v));
        _mm_add_epi32(v, _mm_shuffle_epi32::<0b0001>(v))
    } else {
        fold4(s[4 * h], s[4 * h + 1], s[4 * h + 2], s[4 * h + 3])
    }
}

/// A 32-value format's weight row against the `G` rows of `p`, four blocks at a time
/// ([`small_quad`]); the last one to three blocks go through the same path from a copy followed by
/// zero blocks.
#[inline(always)]
unsafe fn small_row<F: SmallFormat, P: Products, const G: usize>(
    row: &[u8],
    p: &RowPtrs,
    outs: &mut [f32],
) {
    let blocks = row.len() / F::BYTES;
    let full = blocks / 4 * 4;
    // The products and the `c_w` terms in two sums, so that one row has two chains of f64
    // additions side by side (one alone bounds a row by its latency).
    let mut acc = [[_mm256_setzero_pd(); G]; 2];
    for b0 in (0..full).step_by(4) {
        let bp = unsafe { row.as_ptr().add(b0 * F::BYTES) };
        if G == 1 {
            unsafe { prefetch_ahead(bp, 4 * F::BYTES) };
        }
        unsafe { small_quad::<F, P, G>(bp, b0, 4, p, &mut acc) };
    }
    if full < blocks {
        let mut tail = [0u8; 4 * 34];
        tail[..(blocks - full) * F::BYTES].copy_from_slice(&row[full * F::BYTES..]);
        unsafe { small_quad::<F, P, G>(tail.as_ptr(), full, blocks - full, p, &mut acc) };
    }
    for t in 0..G {
        outs[t] = unsafe { (hsum256d(acc[0][t]) + hsum256d(acc[1][t])) as f32 };
    }
}

/// Blocks `b0 .. b0 + 4` (at `bp`; the first `n` real, the rest zero) against each row: the
/// four blocks' integer sums go into four f64 lanes at once, times `d_w · d_x` per lane, plus
/// `c_w · d_x Σ q_x`. The products are exact; only the additions round, in f64.
#[inline(always)]
unsafe fn small_quad<F: SmallFormat, P: Products, const G: usize>(
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
                F::dot::<P>(&w[0], x(0)),
                F::dot::<P>(&w[1], x(1)),
                F::dot::<P>(&w[2], x(2)),
                F::dot::<P>(&w[3], x(3)),
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

/// Eight activation rows interleaved for [`small_rows8`]: per block, eight 32-byte chunks, chunk
/// `c` holding values `4c .. 4c + 4` of each row in turn (so one register holds the same four
/// positions of the eight rows); and per block the rows' `d_x` and `d_x Σ q_x`, 8 f64 lanes.
struct Interleaved8 {
    qs: Vec<i8>,
    d: Vec<f64>,
    dsum: Vec<f64>,
    /// Per block, the rows' `128 Σ q_x` (8 i32 lanes): what the `Q8_0` weights' offset of 128
    /// adds to the fused products ([`rows8_block_sums`]). Empty for the other formats.
    sums128: Vec<i32>,
}

impl Interleaved8 {
    /// Rows `r0 .. r0 + 8` of `a` (a 32-value format's activations, with `d64` built).
    fn new(format: Format, a: &Activations, r0: usize) -> Self {
        let blocks = a.cols / 32;
        let rows: [&[i8]; 8] = std::array::from_fn(|t| &a.row_qs(r0 + t)[..a.cols]);
        let mut qs = vec![0i8; a.cols * 8];
        for (c, out) in qs.chunks_exact_mut(32).enumerate() {
            for (t, row) in rows.iter().enumerate() {
                out[4 * t..4 * t + 4].copy_from_slice(&row[4 * c..4 * c + 4]);
            }
        }
        let per_block = |f: fn(&Activations, usize) -> &[f64]| -> Vec<f64> {
            let rows: [&[f64]; 8] = std::array::from_fn(|t| f(a, r0 + t));
            (0..blocks).flat_map(|b| rows.map(|row| row[b])).collect()
        };
        let sums: [&[i16]; 8] = std::array::from_fn(|t| a.row_sums32(r0 + t));
        let sums128 = match format {
            Format::Q8_0 => (0..blocks)
                .flat_map(|b| sums.map(|row| 128 * row[b] as i32))
                .collect(),
            _ => Vec::new(),
        };
        Interleaved8 {
            qs,
            d: per_block(Activations::row_d64),
            dsum: per_block(Activations::row_dsum64),
            sums128,
        }
    }
}

/// A 32-value format's weight row against `N` groups of eight interleaved rows, for batches:
/// each step broadcasts four weights to all eight rows of a group (`vpbroadcastd`), so one
/// `vpmaddubsw` advances every row and the integer sums come out one row per lane, with no
/// horizontal folding; `I16_STEPS` steps add up as i16 before one `vpmaddwd`. Two groups share
/// each block's unpacking, broadcasts and scales.
///
/// The f64 arithmetic is the row path's ([`small_row`]), lane for lane: block `b` of a row goes
/// into accumulator lane `b % 4` by the same fused multiply-add, and the lanes are summed in the
/// same order, so a row gets the same f32 here as alone.
#[inline(always)]
unsafe fn small_rows8<F: SmallFormat, P: Products, const N: usize>(
    row: &[u8],
    ils: [&Interleaved8; N],
    outs: &mut [f32],
) {
    let blocks = row.len() / F::BYTES;
    // [products, terms][block % 4][group][rows 0-3 / 4-7].
    let mut acc = [[[[_mm256_setzero_pd(); 2]; N]; 4]; 2];
    // The groups' pointers, read once (not again from the groups after each block's stores).
    let x_at: [*const i8; N] = std::array::from_fn(|g| ils[g].qs.as_ptr());
    let d_at: [*const f64; N] = std::array::from_fn(|g| ils[g].d.as_ptr());
    let dsum_at: [*const f64; N] = std::array::from_fn(|g| ils[g].dsum.as_ptr());
    let sums_at: [*const i32; N] = std::array::from_fn(|g| ils[g].sums128.as_ptr());
    for b in 0..blocks {
        unsafe {
            let bp = row.as_ptr().add(b * F::BYTES);
            let x: [*const i8; N] = std::array::from_fn(|g| x_at[g].add(256 * b));
            // `wrapping_add`: the sums are empty (and not read) for the formats other than `Q8_0`.
            let sums128: [*const i32; N] = std::array::from_fn(|g| sums_at[g].wrapping_add(8 * b));
            let s = rows8_block_sums::<F, P, N>(bp, x, sums128);
            let (i, dw) = (b % 4, _mm256_set1_pd(f16(bp) as f64));
            let cw = _mm256_set1_pd(if F::HAS_TERM { F::term(bp) } else { 0.0 });
            for g in 0..N {
                let halves = [
                    _mm256_castsi256_si128(s[g]),
                    _mm256_extracti128_si256::<1>(s[g]),
                ];
                for h in 0..2 {
                    let dx = _mm256_loadu_pd(d_at[g].add(8 * b + 4 * h));
                    let sums = _mm256_cvtepi32_pd(halves[h]);
                    acc[0][i][g][h] = _mm256_fmadd_pd(sums, _mm256_mul_pd(dw, dx), acc[0][i][g][h]);
                    if F::HAS_TERM {
                        let dsum = _mm256_loadu_pd(dsum_at[g].add(8 * b + 4 * h));
                        acc[1][i][g][h] = _mm256_fmadd_pd(cw, dsum, acc[1][i][g][h]);
                    }
                }
            }
        }
    }
    // Row `t`'s lanes summed as `sum4` sums them (`((l0 + l1) + l2) + l3`), four rows at once.
    let sum4_lanes =
        |a: [__m256d; 4]| _mm256_add_pd(_mm256_add_pd(_mm256_add_pd(a[0], a[1]), a[2]), a[3]);
    for g in 0..N {
        for h in 0..2 {
            let sum = |k: usize| sum4_lanes(std::array::from_fn(|i| acc[k][i][g][h]));
            let out = _mm256_cvtpd_ps(_mm256_add_pd(sum(0), sum(1)));
            unsafe { _mm_storeu_ps(outs[8 * g + 4 * h..8 * g + 4 * h + 4].as_mut_ptr(), out) };
        }
    }
}

/// One block of a 32-value format (at `bp`) against `N` groups of eight interleaved rows (their
/// values for this block at `x`, their `128 Σ q_x` at `sums128`): each row's integer sum, one
/// row per i32 lane.
///
/// Signed weights (`Q8_0`) with fused products take `u_w = q_w + 128` (0..255, unsigned as
/// `vpdpbusd` wants it) and subtract `128 Σ q_x` at the end: `Σ u_w q_x − 128 Σ q_x = Σ q_w q_x`,
/// the same integer as `Σ |q_w| · (q_x with q_w's sign)` without a sign operation per
/// activation register. (Two-step products cannot: `u_w q_x` pairs overflow i16.)
#[inline(always)]
unsafe fn rows8_block_sums<F: SmallFormat, P: Products, const N: usize>(
    bp: *const u8,
    x: [*const i8; N],
    sums128: [*const i32; N],
) -> [__m256i; N] {
    // Fused products go straight to i32, in `CHAINS` sums per group added at the end (so that
    // eight `vpdpbusd` do not wait on each other's latency); two-step ones add up `I16_STEPS`
    // pairs as i16.
    const CHAINS: usize = 4;
    let offset = F::SIGNED && P::FUSED;
    let mut mag = [0u8; 32];
    let mut sgn = [0u8; 32];
    unsafe {
        let w = F::unpack(bp);
        let weights = if offset {
            _mm256_xor_si256(F::signs(&w), _mm256_set1_epi8(i8::MIN))
        } else {
            F::magnitudes(&w)
        };
        _mm256_storeu_si256(mag.as_mut_ptr() as *mut __m256i, weights);
        if F::SIGNED && !offset {
            _mm256_storeu_si256(sgn.as_mut_ptr() as *mut __m256i, F::signs(&w));
        }
        let four = |bytes: &[u8; 32], c: usize| {
            _mm256_set1_epi32(std::ptr::read_unaligned(
                bytes.as_ptr().add(4 * c) as *const i32
            ))
        };
        let mut s = [[_mm256_setzero_si256(); CHAINS]; N];
        let steps = if P::FUSED { 1 } else { F::I16_STEPS };
        for c0 in (0..8).step_by(steps) {
            let mut pairs = [_mm256_setzero_si256(); N];
            for c in c0..c0 + steps {
                let wc = four(&mag, c);
                for g in 0..N {
                    let mut xc = _mm256_loadu_si256(x[g].add(32 * c) as *const __m256i);
                    if F::SIGNED && !offset {
                        xc = _mm256_sign_epi8(xc, four(&sgn, c));
                    }
                    if P::FUSED {
                        s[g][c % CHAINS] = P::dot_add(s[g][c % CHAINS], wc, xc);
                    } else {
                        pairs[g] = _mm256_add_epi16(pairs[g], _mm256_maddubs_epi16(wc, xc));
                    }
                }
            }
            if !P::FUSED {
                for g in 0..N {
                    s[g][0] = P::madd_add(s[g][0], pairs[g], _mm256_set1_epi16(1));
                }
            }
        }
        std::array::from_fn(|g| {
            let [a, b, c, d] = s[g];
            let sum = _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d));
            if offset {
                let minus = _mm256_loadu_si256(sums128[g] as *const __m256i);
                _mm256_sub_epi32(sum, minus)
            } else {
                sum
            }
        })
    }
}

/// `Q4_K`: `Σ_b d d_x Σ_sb s_sb (q · x) − dmin d_x Σ_sb n_sb Σx`.
///
/// One sub-block (32 values) at a time against every row of the group (up to 8), so that a
/// block's unpacked values and scales never sit in registers all at once; the rows' block sums
/// are then folded four rows to a register, row `t` in lane `t % 4` ([`fold4`]), and scaled
/// together.
#[inline(always)]
unsafe fn q4k_row<P: Products, const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let low4 = _mm256_set1_epi8(0x0F);
    // Register h, lane i: row 4h + i's sums (lanes from G on stay zero).
    let mut acc = [_mm256_setzero_pd(); 2];
    let mut acc_min = [_mm256_setzero_pd(); 2];
    let halves = G.div_ceil(4);
    for (b, blk) in row.chunks_exact(144).enumerate() {
        unsafe {
            let bp = blk.as_ptr();
            if G == 1 {
                prefetch_ahead(bp, 144);
            }
            let sm: [u8; 16] = std::mem::transmute(q4k_scales_mins_words(bp));
            let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(
                sm.as_ptr() as *const __m128i,
            )));
            let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
            let mut s = [_mm256_setzero_si256(); MAX_GROUP];
            // Sub-blocks 2j and 2j + 1: the low and high nibbles of the 32 bytes of run j.
            for j in 0..4 {
                let raw = _mm256_loadu_si256(bp.add(16 + 32 * j) as *const __m256i);
                for h in 0..2 {
                    let sb = 2 * j + h;
                    let q = if h == 0 {
                        _mm256_and_si256(raw, low4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4)
                    };
                    let scale = _mm256_shuffle_epi8(scales, word_broadcast(sb));
                    for t in 0..G {
                        let pairs = _mm256_maddubs_epi16(q, p.x(t, 256 * b + 32 * q4k_slot(sb)));
                        s[t] = P::madd_add(s[t], pairs, scale);
                    }
                }
            }
            let mut m = [_mm_setzero_si128(); MAX_GROUP];
            let lane_sums = p.lane_sums.as_ptr().add(b * MAX_GROUP * 8);
            for t in 0..G {
                let sums = _mm_loadu_si128(lane_sums.add(8 * t) as *const __m128i);
                m[t] = _mm_madd_epi16(mins, sums);
            }
            let (d, dmin) = (
                _mm256_set1_pd(f16(bp) as f64),
                _mm256_set1_pd(f16(bp.add(2)) as f64),
            );
            for h in 0..halves {
                let dx = _mm256_loadu_pd(p.lanes.as_ptr().add(b * MAX_GROUP + 4 * h));
                let [m0, m1, m2, m3] = [m[4 * h], m[4 * h + 1], m[4 * h + 2], m[4 * h + 3]];
                let mins = fold4_128(m0, m1, m2, m3);
                let sums = fold_rows::<G>(s, h);
                // `d · d_x` and `dmin · d_x` are exact in f64; one rounding per fma.
                let scaled = _mm256_cvtepi32_pd(sums);
                acc[h] = _mm256_fmadd_pd(scaled, _mm256_mul_pd(d, dx), acc[h]);
                let mins = _mm256_cvtepi32_pd(mins);
                acc_min[h] = _mm256_fmadd_pd(mins, _mm256_mul_pd(dmin, dx), acc_min[h]);
            }
        }
    }
    unsafe { store_lanes::<G>(acc, acc_min, outs) }
}

/// Asks for the cache lines of the weights [`PREFETCH_AHEAD`] bytes past the `bytes` at `bp`
/// (a hint: an address past the matrix is not read, and does not fault).
#[inline(always)]
unsafe fn prefetch_ahead(bp: *const u8, bytes: usize) {
    for line in 0..bytes.div_ceil(64) {
        let at = bp.wrapping_add(PREFETCH_AHEAD + 64 * line);
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at as *const i8) };
    }
}

/// How far ahead of the block being multiplied the K formats' kernels ask for weights. The
/// hardware's own prefetching left them short of the memory's pace: with this, the 1.5B's
/// decode step took 6-8 % less time on the Zen 4 machine (`decode_probe`, four alternating
/// rounds; 4096 bytes ahead was no better). The repacked `Q4_K` kernel needs it for any number
/// of rows (`speed_probe 8 65536 1536 Q4K`, from memory: 12 ms without, 7 ms with), and `Q6_K`'s
/// forward over 8 tokens gained 5-7 % (three alternating rounds).
const PREFETCH_AHEAD: usize = 2048;

/// The `vpshufb` pattern that copies 16-bit word `i` (of each 128-bit half) to all eight.
#[inline(always)]
unsafe fn word_broadcast(i: usize) -> __m256i {
    let lo = (2 * i) as i8;
    let pair = i16::from_le_bytes([lo as u8, lo as u8 + 1]);
    _mm256_set1_epi16(pair)
}

/// `Q6_K`: `Σ_b d d_x (Σ_g s_g (q · x) − 32 Σ_g s_g Σx)`, groups `g` of 16 values.
///
/// As [`q4k_row`]: 32 values at a time against every row of the group, then the rows' block
/// sums folded four rows to a register and scaled together.
#[inline(always)]
unsafe fn q6k_row<P: Products, const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let mut acc = [_mm256_setzero_pd(); 2];
    let halves = G.div_ceil(4);
    for (b, blk) in row.chunks_exact(210).enumerate() {
        unsafe {
            let bp = blk.as_ptr();
            prefetch_ahead(bp, 210);
            let sc8 = _mm_loadu_si128(bp.add(192) as *const __m128i);
            let mut s = [_mm256_setzero_si256(); MAX_GROUP];
            q6k_step::<P, 0, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 1, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 2, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 3, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 4, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 5, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 6, G>(bp, b, sc8, p, &mut s);
            q6k_step::<P, 7, G>(bp, b, sc8, p, &mut s);
            // The offset: 32 Σ_g s_g Σx_g per row.
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            let lane_sums = p.lane_sums.as_ptr().add(b * MAX_GROUP * 16);
            for t in 0..G {
                let sums = _mm256_loadu_si256(lane_sums.add(16 * t) as *const __m256i);
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sums, sc16));
                s[t] = _mm256_sub_epi32(s[t], offset);
            }
            let d = _mm256_set1_pd(f16(bp.add(208)) as f64);
            for h in 0..halves {
                let dx = _mm256_loadu_pd(p.lanes.as_ptr().add(b * MAX_GROUP + 4 * h));
                let sums = fold_rows::<G>(s, h);
                // `d · d_x` is exact in f64; one rounding per fma.
                acc[h] = _mm256_fmadd_pd(_mm256_cvtepi32_pd(sums), _mm256_mul_pd(d, dx), acc[h]);
            }
        }
    }
    store_lanes::<G>(acc, [_mm256_setzero_pd(); 2], outs);
}

/// Values `32 K .. 32 K + 32` of the `Q6_K` block at `bp` (groups `2 K` and `2 K + 1`, with
/// the scales in `sc8`) against each row of the group, added to `s`.
#[inline(always)]
unsafe fn q6k_step<P: Products, const K: usize, const G: usize>(
    bp: *const u8,
    b: usize,
    sc8: __m128i,
    p: &RowPtrs,
    s: &mut [__m256i; MAX_GROUP],
) {
    unsafe {
        // ggml's order: each 128 values from 64 bytes of low nibbles and 32 bytes of high bits
        // (2 per value), register K of four from nibble K / 2 of bytes 32 (K % 2) on and bit
        // pair K of the high bytes.
        let ql = _mm256_loadu_si256(bp.add(64 * (K / 4) + 32 * (K % 2)) as *const __m256i);
        let qh = _mm256_loadu_si256(bp.add(128 + 32 * (K / 4)) as *const __m256i);
        let low = match (K % 4) / 2 {
            0 => ql,
            _ => _mm256_srli_epi16::<4>(ql),
        };
        // Bit pair K % 4 moved to bits 4-5 of each byte (16-bit shifts: the bits that cross
        // into the next byte are masked off).
        let high = match K % 4 {
            0 => _mm256_slli_epi16::<4>(qh),
            1 => _mm256_slli_epi16::<2>(qh),
            2 => qh,
            _ => _mm256_srli_epi16::<2>(qh),
        };
        let v = _mm256_or_si256(
            _mm256_and_si256(low, _mm256_set1_epi8(0x0F)),
            _mm256_and_si256(high, _mm256_set1_epi8(0x30)),
        );
        let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pair_broadcast(K % 8)));
        for t in 0..G {
            let pairs = _mm256_maddubs_epi16(v, p.x(t, 256 * b + 32 * K));
            s[t] = P::madd_add(s[t], pairs, scale);
        }
    }
}

/// `outs[t] = acc − sub` in lane `t % 4` of register `t / 4`, as f32.
#[inline(always)]
unsafe fn store_lanes<const G: usize>(acc: [__m256d; 2], sub: [__m256d; 2], outs: &mut [f32]) {
    let (mut a, mut m) = ([0f64; MAX_GROUP], [0f64; MAX_GROUP]);
    for h in 0..G.div_ceil(4) {
        unsafe {
            _mm256_storeu_pd(a.as_mut_ptr().add(4 * h), acc[h]);
            _mm256_storeu_pd(m.as_mut_ptr().add(4 * h), sub[h]);
        }
    }
    for t in 0..G {
        outs[t] = (a[t] - m[t]) as f32;
    }
}

/// The `vpshufb` pattern that copies byte `2k` to bytes 0-7 and byte `2k + 1` to bytes 8-15.
#[inline(always)]
unsafe fn pair_broadcast(k: usize) -> __m128i {
    let ones = 0x0101_0101_0101_0101_i64;
    _mm_set_epi64x((2 * k as i64 + 1) * ones, 2 * k as i64 * ones)
}

/// Groups of eight interleaved `Q4_K` rows ([`crate::packed`]; `cols` values each) against every
/// row of `a`: `dst[j · m + r]` gets row `j` times activation row `r`. Each group's bytes (at most
/// 41 KB for the 1.5B's widest rows) are read from memory once, and again from the caches for
/// each eight activation rows past the first eight.
///
/// SAFETY: the CPU must have AVX2, FMA and F16C, and with `vnni` AVX-512 F/BW/VL/VNNI; `data`
/// must be whole groups of `a.cols == cols` values and `dst` hold `8 · groups · m` values.
pub(crate) unsafe fn packed_rows(
    data: &[u8],
    cols: usize,
    a: &Activations,
    vnni: bool,
    dst: &mut [f32],
) {
    let run = if vnni { vnni::q4k_x8 } else { two_step::q4k_x8 };
    let (m, group_bytes) = (a.rows, cols / 256 * GROUP_BLOCK_BYTES);
    for (grp, outs) in data
        .chunks_exact(group_bytes)
        .zip(dst.chunks_exact_mut(GROUP_ROWS * m))
    {
        for t0 in (0..m).step_by(MAX_GROUP) {
            // SAFETY: the caller's contract.
            unsafe { run(grp, a, t0, outs) };
        }
    }
}

/// `Q4_K`, eight interleaved weight rows (one per 32-bit lane) against activation rows
/// `t0 .. t0 + G`: per block, `Σ_sb s_sb (q · x)_sb` and `Σ_sb n_sb Σx_sb` for all eight rows
/// at once ([`Products::scaled_sum`]), then scaled in f64 as [`q4k_row`] does, so the results
/// are its own to the bit. `outs[j · m + t0 + t]` gets weight row `j` of the group times
/// activation row `t0 + t`.
#[inline(always)]
unsafe fn q4k_x8_rows<P: Products, const G: usize>(
    grp: &[u8],
    a: &Activations,
    t0: usize,
    outs: &mut [f32],
) {
    let m = a.rows;
    let qs: [*const i8; G] = std::array::from_fn(|t| a.row_qs(t0 + t).as_ptr());
    let dx: [&[f32]; G] = std::array::from_fn(|t| a.row_d(t0 + t));
    let sums: [*const i16; G] = std::array::from_fn(|t| a.row_sums32(t0 + t).as_ptr());
    let low4 = _mm256_set1_epi8(0x0F);
    // Per activation row, two registers of four weight rows each.
    let mut acc = [[_mm256_setzero_pd(); 2]; G];
    let mut acc_min = [[_mm256_setzero_pd(); 2]; G];
    for (b, blk) in grp.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        unsafe {
            let bp = blk.as_ptr();
            prefetch_ahead(bp, GROUP_BLOCK_BYTES);
            let mut s = [_mm256_setzero_si256(); G];
            for sb in 0..8 {
                // Sub-block sb: the low (even sb) or high nibbles of run sb / 2.
                let run = bp.add(256 * (sb / 2));
                let w: [__m256i; 8] = std::array::from_fn(|i| {
                    let raw = _mm256_loadu_si256(run.add(32 * i) as *const __m256i);
                    if sb % 2 == 0 {
                        _mm256_and_si256(raw, low4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low4)
                    }
                });
                let scale = _mm_loadl_epi64(bp.add(SCALES_AT + 8 * sb) as *const __m128i);
                let scale = P::scales(_mm256_cvtepu8_epi32(scale));
                for t in 0..G {
                    let x = qs[t].add(256 * b + 32 * q4k_slot(sb));
                    s[t] = _mm256_add_epi32(s[t], P::scaled_sum(&w, x, scale));
                }
            }
            let mins: [__m256i; 4] = std::array::from_fn(|k| {
                _mm256_cvtepu8_epi16(_mm_loadu_si128(bp.add(MINS_AT + 16 * k) as *const __m128i))
            });
            let f64x8 = |at: usize| {
                let v = _mm256_cvtph_ps(_mm_loadu_si128(bp.add(at) as *const __m128i));
                let hi = _mm256_extractf128_ps::<1>(v);
                [
                    _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                    _mm256_cvtps_pd(hi),
                ]
            };
            let (d, dmin) = (f64x8(D_AT), f64x8(DMIN_AT));
            for t in 0..G {
                // Σ_sb n_sb Σx_sb: the mins in pairs against the sums of two sub-blocks.
                let sp = sums[t].add(8 * b);
                let mut n = _mm256_setzero_si256();
                for k in 0..4 {
                    let pair =
                        _mm256_set1_epi32(std::ptr::read_unaligned(sp.add(2 * k) as *const i32));
                    n = _mm256_add_epi32(n, _mm256_madd_epi16(mins[k], pair));
                }
                let dxv = _mm256_set1_pd(dx[t][b] as f64);
                let halves = |v: __m256i| {
                    let hi = _mm256_extracti128_si256::<1>(v);
                    [
                        _mm256_cvtepi32_pd(_mm256_castsi256_si128(v)),
                        _mm256_cvtepi32_pd(hi),
                    ]
                };
                let (sv, nv) = (halves(s[t]), halves(n));
                for h in 0..2 {
                    // `d · d_x` and `dmin · d_x` are exact in f64; one rounding per fma.
                    acc[t][h] = _mm256_fmadd_pd(sv[h], _mm256_mul_pd(d[h], dxv), acc[t][h]);
                    acc_min[t][h] =
                        _mm256_fmadd_pd(nv[h], _mm256_mul_pd(dmin[h], dxv), acc_min[t][h]);
                }
            }
        }
    }
    for t in 0..G {
        let (mut total, mut mins) = ([0f64; 8], [0f64; 8]);
        for h in 0..2 {
            unsafe {
                _mm256_storeu_pd(total.as_mut_ptr().add(4 * h), acc[t][h]);
                _mm256_storeu_pd(mins.as_mut_ptr().add(4 * h), acc_min[t][h]);
            }
        }
        for j in 0..GROUP_ROWS {
            outs[j * m + t0 + t] = (total[j] - mins[j]) as f32;
        }
    }
}
