//! WebAssembly SIMD128 kernels (the browser's draft model), compiled in when the crate is built
//! with `target-feature=+simd128` (the workspace's wasm32 setting): WebAssembly has no run-time
//! feature detection, and every browser that runs WebGPU-era pages has SIMD128.
//!
//! The same scheme as the AVX2 kernels, on 128-bit vectors: one weight row against up to
//! [`GROUP`] activation rows, each block unpacked once ([`Weights`]) and multiplied with every
//! row of the group. Two ways to multiply, chosen when the module is built:
//! - SIMD128 alone has no 8-bit multiply-add: the weights are widened to 16 bits and multiplied
//!   by `i32x4.dot_i16x8_s` against the activations widened once per product
//!   ([`Activations`]' `qs16`);
//! - with relaxed SIMD (`+relaxed-simd`, a build option: on x86 without AVX-VNNI it is no
//!   faster, so the browser builds leave it out, see `docs/benchmarks.md`),
//!   `i32x4.relaxed_dot_i8x16_i7x16_add_s` multiplies 16 activation bytes (i8) with 16 weight
//!   bytes and adds each four products into an i32 lane. Its result is the same on every engine
//!   when the weight bytes are in 0..127 (no top bit) and exact (no 16-bit saturation: two
//!   products are at most 2 · 128 · 127 < 2^15 in size), so every kernel passes bytes in 0..127:
//!   unsigned formats as they unpack, `Q8_0`'s signed values as `|q|` with the sign moved onto
//!   the activation ([`SignedWeights`]).
//!
//! The K formats scale each sub-block's 32-bit sums by its integer scale; each block then adds
//! `d_w · d_x · Σ` in f64, as the reference does, so a row gets the same f32 alone or with others,
//! and the same with or without relaxed SIMD.

// Loops index several parallel arrays (accumulators, pointers, vectors) by row or sub-block.
#![allow(clippy::needless_range_loop)]

use crate::activations::q4k_slot;
use crate::driver::{by_tiles_and_groups, stream_order};
use crate::formats::q4k_scales_mins_words;
use crate::{Activations, Format};
use core::arch::wasm32::*;

/// Activation rows multiplied with one unpacked weight block.
const GROUP: usize = 4;

/// Rows of `format` weights (`data`, `row_bytes` each) against all activation rows of `a`;
/// `dst[j · m + r]` gets row `j` times activation row `r`.
pub(crate) fn rows(
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
    if a.rows == 1 {
        one_row(format, data, row_bytes, &groups[0], dst);
        return;
    }
    by_tiles_and_groups(data, row_bytes, a.rows, GROUP, dst, |row, r0, outs| {
        let p = &groups[r0 / GROUP];
        match outs.len() {
            1 => row_kernel::<1>(format, row, p, outs),
            2 => row_kernel::<2>(format, row, p, outs),
            3 => row_kernel::<3>(format, row, p, outs),
            _ => row_kernel::<4>(format, row, p, outs),
        }
    });
}

/// All weight rows against one activation row (a decode step), in [`stream_order`]; `Q8_0`'s
/// rows go two at a time (from two parts), sharing the activation loads.
fn one_row(format: Format, data: &[u8], row_bytes: usize, p: &RowPtrs, dst: &mut [f32]) {
    let row = |j: usize| &data[j * row_bytes..(j + 1) * row_bytes];
    let mut order = stream_order(format, data.len() / row_bytes);
    while let Some(r0) = order.next() {
        if format != Format::Q8_0 {
            row_kernel::<1>(format, row(r0), p, &mut dst[r0..r0 + 1]);
        } else if let Some(r1) = order.next() {
            let mut two = [0f32; 2];
            q8_0_together([row(r0), row(r1)], p, &mut two);
            (dst[r0], dst[r1]) = (two[0], two[1]);
        } else {
            q8_0_row::<1>(row(r0), p, &mut dst[r0..r0 + 1]);
        }
    }
}

/// One weight row against the `G` activation rows of `p`.
#[inline(always)]
fn row_kernel<const G: usize>(format: Format, row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    match format {
        Format::Q8_0 => q8_0_row::<G>(row, p, outs),
        Format::Q5_0 => q5_0_row::<G>(row, p, outs),
        Format::Q4_1 => q4_1_row::<G>(row, p, outs),
        Format::Q4K => q4k_row::<G>(row, p, outs),
        Format::Q6K => q6k_row::<G>(row, p, outs),
    }
}

/// Activation rows `r0 .. r0 + g`: values (i8, or widened to i16 without relaxed SIMD), block
/// scales, sums per 16 and per 32 values.
struct RowPtrs<'a> {
    #[cfg(target_feature = "relaxed-simd")]
    x: [&'a [i8]; GROUP],
    #[cfg(not(target_feature = "relaxed-simd"))]
    x: [&'a [i16]; GROUP],
    d: [&'a [f32]; GROUP],
    /// With relaxed SIMD, for `Q6_K`'s offset (its values go unshifted into the product).
    #[cfg(target_feature = "relaxed-simd")]
    sums16: [&'a [i16]; GROUP],
    sums32: [&'a [i16]; GROUP],
    /// f16 → f32 for the weights' block scales.
    f16: &'static [f32; 1 << 16],
}

impl<'a> RowPtrs<'a> {
    fn new(a: &'a Activations, r0: usize, g: usize) -> Self {
        let mut p = RowPtrs {
            x: [&[]; GROUP],
            d: [&[]; GROUP],
            #[cfg(target_feature = "relaxed-simd")]
            sums16: [&[]; GROUP],
            sums32: [&[]; GROUP],
            f16: f16_table(),
        };
        for t in 0..g {
            #[cfg(target_feature = "relaxed-simd")]
            {
                p.x[t] = a.row_qs(r0 + t);
                p.sums16[t] = a.row_sums16(r0 + t);
            }
            #[cfg(not(target_feature = "relaxed-simd"))]
            {
                p.x[t] = a.row_qs16(r0 + t);
            }
            p.d[t] = a.row_d(r0 + t);
            p.sums32[t] = a.row_sums32(r0 + t);
        }
        p
    }

    /// The f16 at byte `i` of a weight block, as f32.
    #[inline(always)]
    fn f16_at(&self, blk: &[u8], i: usize) -> f32 {
        self.f16[u16::from_le_bytes([blk[i], blk[i + 1]]) as usize]
    }

    /// `Σ_sb n_sb Σx_sb` over the eight sub-blocks of `Q4_K` block `b` of row `t`, with the
    /// mins `n_sb` as i16.
    #[inline(always)]
    fn mins_dot(&self, t: usize, b: usize, mins: v128) -> i32 {
        let sums = &self.sums32[t][8 * b..8 * b + 8];
        // SAFETY: eight i16 are 16 bytes; unaligned loads are fine.
        let sums = unsafe { v128_load(sums.as_ptr() as *const v128) };
        let v = i32x4_dot_i16x8(mins, sums);
        let v = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
        i32x4_extract_lane::<0>(v) + i32x4_extract_lane::<1>(v)
    }

    /// Row `t`'s activation values of `V`-value block `b` (one bounds check per block, where
    /// each load's offset in it is then known).
    #[inline(always)]
    fn block<const V: usize>(&self, t: usize, b: usize) -> &[XValue; V] {
        self.x[t][V * b..V * (b + 1)]
            .try_into()
            .expect("a whole block")
    }
}

/// `Σ w x` over the `16 N` values of `w` and the activation values `x[at ..]` of a block.
#[inline(always)]
fn dot_in<const N: usize, const V: usize>(x: &[XValue; V], at: usize, w: &Weights<N>) -> v128 {
    assert!(at + 16 * N <= V);
    let mut s = i32x4_splat(0);
    for i in 0..N {
        // SAFETY: checked above; unaligned loads are fine.
        let x16 = core::array::from_fn(|h| unsafe {
            v128_load(x.as_ptr().add(at + 16 * i + h * 16 / PER16) as *const v128)
        });
        s = multiply_add(x16, &w.0[i], s);
    }
    s
}

/// Vectors per 16 weight values: one of bytes with relaxed SIMD, else two of i16.
#[cfg(target_feature = "relaxed-simd")]
const PER16: usize = 1;
#[cfg(not(target_feature = "relaxed-simd"))]
const PER16: usize = 2;

/// `s` plus the products of 16 activation values with 16 weight values, four per i32 lane.
#[inline(always)]
fn multiply_add(x: [v128; PER16], w: &[v128; PER16], s: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    {
        i32x4_relaxed_dot_i8x16_i7x16_add(x[0], w[0], s)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        i32x4_add(
            s,
            i32x4_add(i32x4_dot_i16x8(w[0], x[0]), i32x4_dot_i16x8(w[1], x[1])),
        )
    }
}

/// `16 N` weight values in 0..127, unpacked once for the products with every row of a group:
/// as they are with relaxed SIMD, else widened to i16.
struct Weights<const N: usize>([[v128; PER16]; N]);

impl<const N: usize> Weights<N> {
    /// From `N` vectors of 16 bytes, each in 0..127.
    #[inline(always)]
    fn small(bytes: [v128; N]) -> Self {
        Weights(bytes.map(|v| {
            #[cfg(target_feature = "relaxed-simd")]
            {
                [v]
            }
            #[cfg(not(target_feature = "relaxed-simd"))]
            {
                widen_u8(v)
            }
        }))
    }
}

/// `Q8_0`'s 32 signed weight values (i8). Relaxed SIMD's product needs its second operand in
/// 0..127, so there `w · x = |w| · (sign(w) x)`: the weights are kept as `|w|` and the sign masks
/// that flip the activations (exact: the activations are in −127..127). A block holding −128
/// (whose size does not fit) is multiplied in scalar code instead; ggml's quantiser never writes
/// one (`round(x / (amax / 127))`).
struct SignedWeights {
    #[cfg(target_feature = "relaxed-simd")]
    raw: [v128; 2],
    #[cfg(target_feature = "relaxed-simd")]
    size: Weights<2>,
    #[cfg(target_feature = "relaxed-simd")]
    negative: [v128; 2],
    #[cfg(target_feature = "relaxed-simd")]
    fits: bool,
    #[cfg(not(target_feature = "relaxed-simd"))]
    wide: Weights<2>,
}

impl SignedWeights {
    /// The 32 values at `q`. Without relaxed SIMD each 8 go straight to i16 as they load
    /// (`i16x8.load8x8_s`: one `pmovsxbw` from memory on x86, where widening the high half of a
    /// loaded vector takes two instructions).
    ///
    /// SAFETY: `q` must point to 32 readable bytes.
    #[inline(always)]
    unsafe fn load(q: *const u8) -> Self {
        #[cfg(target_feature = "relaxed-simd")]
        {
            // SAFETY: the caller's; unaligned loads are fine.
            let load = |at: usize| unsafe { v128_load(q.add(at) as *const v128) };
            SignedWeights::new([load(0), load(16)])
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            // SAFETY: the caller's; unaligned loads are fine.
            let load = |at: usize| unsafe { i16x8_load_extend_i8x8(q.add(at) as *const i8) };
            SignedWeights {
                wide: Weights([[load(0), load(8)], [load(16), load(24)]]),
            }
        }
    }

    /// With relaxed SIMD: `|w|`, the sign masks, and whether the block holds −128.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    fn new(raw: [v128; 2]) -> Self {
        let min = i8x16_splat(i8::MIN);
        SignedWeights {
            raw,
            size: Weights::small(raw.map(|v| i8x16_abs(v))),
            negative: raw.map(|v| i8x16_lt(v, i8x16_splat(0))),
            fits: !v128_any_true(v128_or(i8x16_eq(raw[0], min), i8x16_eq(raw[1], min))),
        }
    }
}

impl RowPtrs<'_> {
    /// `Σ w x` over the 32 values of `w` and the activations `x`, as four i32 lanes.
    #[inline(always)]
    fn dot_signed(&self, x: &X32, w: &SignedWeights) -> v128 {
        #[cfg(target_feature = "relaxed-simd")]
        {
            if !w.fits {
                return self.dot_signed_scalar(x.t, x.at, &w.raw);
            }
            let mut s = i32x4_splat(0);
            for i in 0..2 {
                // (x ^ m) − m: x where m = 0, −x where m = −1.
                let [x] = x.x[i];
                let x = i8x16_sub(v128_xor(x, w.negative[i]), w.negative[i]);
                s = multiply_add([x], &w.size.0[i], s);
            }
            s
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            let s = multiply_add(x.x[0], &w.wide.0[0], i32x4_splat(0));
            multiply_add(x.x[1], &w.wide.0[1], s)
        }
    }

    /// [`RowPtrs::dot_signed`] one value at a time (a block holding −128), in lane 0.
    #[cfg(target_feature = "relaxed-simd")]
    #[cold]
    fn dot_signed_scalar(&self, t: usize, at: usize, raw: &[v128; 2]) -> v128 {
        let x = &self.x[t][at..at + 32];
        let mut sum = 0i32;
        for (i, v) in raw.iter().enumerate() {
            let mut w = [0i8; 16];
            // SAFETY: 16 bytes into a 16-byte array.
            unsafe { v128_store(w.as_mut_ptr() as *mut v128, *v) };
            sum += (0..16)
                .map(|k| w[k] as i32 * x[16 * i + k] as i32)
                .sum::<i32>();
        }
        i32x4(sum, 0, 0, 0)
    }
}

/// 32 activation values of row `t` from value `at`, loaded once for several weight rows.
struct X32 {
    x: [[v128; PER16]; 2],
    #[cfg_attr(not(target_feature = "relaxed-simd"), allow(dead_code))]
    t: usize,
    #[cfg_attr(not(target_feature = "relaxed-simd"), allow(dead_code))]
    at: usize,
}

/// An activation value as the kernels read it: i8 with relaxed SIMD, else widened to i16.
#[cfg(target_feature = "relaxed-simd")]
type XValue = i8;
#[cfg(not(target_feature = "relaxed-simd"))]
type XValue = i16;

impl X32 {
    /// The 32 values of `x`, which start at value `at` of row `t`.
    #[inline(always)]
    fn of(x: &[XValue; 32], t: usize, at: usize) -> X32 {
        // SAFETY: 32 values.
        unsafe { X32::load(x.as_ptr(), t, at) }
    }

    /// The 32 values from `from`, which is value `at` of row `t`.
    ///
    /// SAFETY: `from` must point to 32 readable values.
    #[inline(always)]
    unsafe fn load(from: *const XValue, t: usize, at: usize) -> X32 {
        // Each vector holds 16 / PER16 values.
        let vector = |k: usize| unsafe { v128_load(from.add(k * 16 / PER16) as *const v128) };
        X32 {
            x: core::array::from_fn(|half| core::array::from_fn(|h| vector(half * PER16 + h))),
            t,
            at,
        }
    }
}

/// One `Q6_K` group's 16 values `q` (0..63), prepared for `Σ (q − 32) x`: with relaxed SIMD as
/// they are (bytes in 0..127; the 32 comes off afterwards with the activations' sum), else minus 32
/// and widened (one subtraction for every row of the group).
struct Q6Group(Weights<1>);

impl Q6Group {
    #[inline(always)]
    fn new(q: v128) -> Self {
        #[cfg(target_feature = "relaxed-simd")]
        {
            Q6Group(Weights::small([q]))
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            Q6Group(Weights([widen_i8(i8x16_sub(q, i8x16_splat(32)))]))
        }
    }
}

impl RowPtrs<'_> {
    /// `Σ (q − 32) x` over a group and row `t` from value `at`, as four i32 lanes.
    #[inline(always)]
    fn dot_q6(&self, x: &[XValue; 256], t: usize, b: usize, at: usize, w: &Q6Group) -> v128 {
        let s = dot_in(x, at, &w.0);
        #[cfg(target_feature = "relaxed-simd")]
        {
            i32x4_sub(
                s,
                i32x4(32 * self.sums16[t][16 * b + at / 16] as i32, 0, 0, 0),
            )
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            let _ = (t, b);
            s
        }
    }
}

/// A row's sum in f64, two lanes: each block adds its integer sum (four i32 lanes, folded to
/// two as integers) times its scale `d_w · d_x`, exact in f64.
#[derive(Clone, Copy)]
struct Acc(v128);

impl Acc {
    fn zero() -> Self {
        Acc(f64x2_splat(0.0))
    }

    #[inline(always)]
    fn add(&mut self, s: v128, scale: f64) {
        let folded = i32x4_add(s, i32x4_shuffle::<2, 3, 0, 1>(s, s));
        let v = f64x2_convert_low_i32x4(folded);
        self.0 = f64x2_add(self.0, f64x2_mul(v, f64x2_splat(scale)));
    }

    fn sum(self) -> f64 {
        f64x2_extract_lane::<0>(self.0) + f64x2_extract_lane::<1>(self.0)
    }
}

/// f16 → f32 for every bit pattern, 256 KB built on first use: WebAssembly has no conversion
/// instruction, and the software one costs about as much as a `Q8_0` block's products.
fn f16_table() -> &'static [f32; 1 << 16] {
    static TABLE: std::sync::OnceLock<Box<[f32; 1 << 16]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let all: Vec<f32> = (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect();
        all.into_boxed_slice().try_into().expect("65536 values")
    })
}

/// `a · b` in f64 (exact for an f16 times an f32).
#[inline(always)]
fn scale(a: f32, b: f32) -> f64 {
    a as f64 * b as f64
}

/// 16 bytes at `p`.
#[inline(always)]
fn load16(b: &[u8], at: usize) -> v128 {
    assert!(at + 16 <= b.len());
    // SAFETY: checked above; unaligned loads are fine.
    unsafe { v128_load(b.as_ptr().add(at) as *const v128) }
}

/// 16 unsigned bytes as two vectors of 8 i16.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
fn widen_u8(v: v128) -> [v128; 2] {
    [u16x8_extend_low_u8x16(v), u16x8_extend_high_u8x16(v)]
}

/// 16 signed bytes as two vectors of 8 i16.
#[cfg(not(target_feature = "relaxed-simd"))]
#[inline(always)]
fn widen_i8(v: v128) -> [v128; 2] {
    [i16x8_extend_low_i8x16(v), i16x8_extend_high_i8x16(v)]
}

/// The high nibble of each byte of `v`, with `m4` the mask `0x0F` in every byte: a 16-bit
/// shift and the mask (a byte shift is two more instructions on x86).
#[inline(always)]
fn high_nibbles(v: v128, m4: v128) -> v128 {
    v128_and(u16x8_shr(v, 4), m4)
}

/// 16 bytes of nibbles as 32 values: the low nibbles first, then the high ones.
#[inline(always)]
fn nibbles(b: &[u8], at: usize) -> Weights<2> {
    let raw = load16(b, at);
    Weights::small([v128_and(raw, u8x16_splat(0x0F)), u8x16_shr(raw, 4)])
}

/// `Q8_0`: `Σ_b d_w d_x Σ q_w q_x`.
fn q8_0_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let mut acc = [Acc::zero(); G];
    for (b, blk) in row.chunks_exact(34).enumerate() {
        assert_eq!(blk.len(), 34);
        // SAFETY: the block's 32 values from byte 2.
        let w = unsafe { SignedWeights::load(blk.as_ptr().add(2)) };
        let d = p.f16_at(blk, 0);
        for t in 0..G {
            acc[t].add(
                p.dot_signed(&X32::of(p.block(t, b), t, 32 * b), &w),
                scale(d, p.d[t][b]),
            );
        }
    }
    for t in 0..G {
        outs[t] = acc[t].sum() as f32;
    }
}

/// `R` `Q8_0` weight rows against the one activation row of `p` (a decode step): each block of
/// activation values is loaded once for all of them. The rows' blocks are found from one
/// offset: pointers kept in an array that moves had the compiler pack two of them into one
/// 64-bit integer and unpack them again in every iteration.
fn q8_0_together<const R: usize>(rows: [&[u8]; R], p: &RowPtrs, outs: &mut [f32]) {
    let blocks = rows[0].len() / 34;
    let (x, d) = (p.x[0], p.d[0]);
    assert!(rows.iter().all(|r| r.len() == 34 * blocks));
    assert!(x.len() >= 32 * blocks && d.len() >= blocks && outs.len() == R);
    let base = rows.map(<[u8]>::as_ptr);
    let mut acc = [Acc::zero(); R];
    for b in 0..blocks {
        // SAFETY: block `b` of every row (34 bytes from `34 b`) and the activations' values
        // `32 b .. 32 b + 32` and scale `b` are in the slices, checked above.
        unsafe {
            let x = X32::load(x.as_ptr().add(32 * b), 0, 32 * b);
            let dx = *d.get_unchecked(b);
            for (acc, &row) in acc.iter_mut().zip(&base) {
                let w = row.add(34 * b);
                let weights = SignedWeights::load(w.add(2));
                // The block's scale: an f16, little-endian as WebAssembly is.
                let dw = p.f16[std::ptr::read_unaligned(w as *const u16) as usize];
                acc.add(p.dot_signed(&x, &weights), scale(dw, dx));
            }
        }
    }
    for (o, acc) in outs.iter_mut().zip(acc) {
        *o = acc.sum() as f32;
    }
}

/// `Q5_0`: `Σ_b d_w d_x (Σ u_w q_x − 16 Σ q_x)`, `u_w = q_w + 16` in 0..31.
fn q5_0_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    // Byte i of a half takes byte i / 8 of its 16 bits, then keeps bit i % 8.
    let spread = u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let bit = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    let mut acc = [Acc::zero(); G];
    for (b, blk) in row.chunks_exact(22).enumerate() {
        let high = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let fifth = |half: u32| {
            let bytes = i8x16_swizzle(u32x4_splat(half), spread);
            v128_and(
                u8x16_ne(v128_and(bytes, bit), u8x16_splat(0)),
                u8x16_splat(0x10),
            )
        };
        let raw = load16(blk, 6);
        let lo = v128_or(v128_and(raw, u8x16_splat(0x0F)), fifth(high & 0xFFFF));
        let hi = v128_or(u8x16_shr(raw, 4), fifth(high >> 16));
        let w = Weights::small([lo, hi]);
        let d = p.f16_at(blk, 0);
        for t in 0..G {
            let offset = 16 * p.sums32[t][b] as i32;
            let s = i32x4_sub(dot_in(p.block::<32>(t, b), 0, &w), i32x4(offset, 0, 0, 0));
            acc[t].add(s, scale(d, p.d[t][b]));
        }
    }
    for t in 0..G {
        outs[t] = acc[t].sum() as f32;
    }
}

/// `Q4_1`: `Σ_b d_w d_x Σ q_w q_x + m_w d_x Σ q_x`.
fn q4_1_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    let mut acc = [Acc::zero(); G];
    let mut acc_min = [0f64; G];
    for (b, blk) in row.chunks_exact(20).enumerate() {
        let w = nibbles(blk, 4);
        let (d, m) = (p.f16_at(blk, 0), p.f16_at(blk, 2));
        for t in 0..G {
            let dx = p.d[t][b];
            acc[t].add(dot_in(p.block::<32>(t, b), 0, &w), scale(d, dx));
            acc_min[t] += scale(m, dx) * p.sums32[t][b] as f64;
        }
    }
    for t in 0..G {
        outs[t] = (acc[t].sum() + acc_min[t]) as f32;
    }
}

/// `Q4_K`: `Σ_b d d_x Σ_sb s_sb (q · x) − dmin d_x Σ_sb n_sb Σx`.
fn q4k_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    // Where run j's low and high nibbles' sub-blocks (2j, 2j + 1) sit in a block's activations,
    // from a table: worked out in the loop, they took a dozen instructions a run.
    const AT: [[usize; 2]; 4] = {
        let mut at = [[0; 2]; 4];
        let mut j = 0;
        while j < 4 {
            at[j] = [32 * q4k_slot(2 * j), 32 * q4k_slot(2 * j + 1)];
            j += 1;
        }
        at
    };
    // The mask as a value the compiler cannot see through: as a constant, V8 built it anew at
    // each use (three instructions), and the byte shift became a 16-bit shift and a second mask.
    let m4 = core::hint::black_box(u8x16_splat(0x0F));
    let mut acc = [Acc::zero(); G];
    let mut acc_min = [0f64; G];
    for (b, blk) in row.chunks_exact(144).enumerate() {
        let x: [&[XValue; 256]; G] = core::array::from_fn(|t| p.block(t, b));
        let (d, dmin) = (p.f16_at(blk, 0), p.f16_at(blk, 2));
        let sm = q4k_scales_mins_words(&blk[4..16]);
        let scales: [i32; 8] =
            core::array::from_fn(|sb| ((sm[sb / 4] >> (8 * (sb % 4))) & 0xFF) as i32);
        // The eight mins as i16.
        let mins = u16x8_extend_low_u8x16(u32x4(sm[2], sm[3], 0, 0));
        let mut s = [i32x4_splat(0); G];
        // Run j's 32 bytes: sub-block 2j in the low nibbles, 2j + 1 in the high ones.
        for (j, &[at_lo, at_hi]) in AT.iter().enumerate() {
            let (r0, r1) = (load16(blk, 16 + 32 * j), load16(blk, 32 + 32 * j));
            let lo = Weights::small([v128_and(r0, m4), v128_and(r1, m4)]);
            let hi = Weights::small([high_nibbles(r0, m4), high_nibbles(r1, m4)]);
            let (sc_lo, sc_hi) = (i32x4_splat(scales[2 * j]), i32x4_splat(scales[2 * j + 1]));
            for t in 0..G {
                let dot_lo = dot_in(x[t], at_lo, &lo);
                let dot_hi = dot_in(x[t], at_hi, &hi);
                s[t] = i32x4_add(s[t], i32x4_mul(dot_lo, sc_lo));
                s[t] = i32x4_add(s[t], i32x4_mul(dot_hi, sc_hi));
            }
        }
        for t in 0..G {
            let dx = p.d[t][b];
            acc[t].add(s[t], scale(d, dx));
            acc_min[t] += scale(dmin, dx) * p.mins_dot(t, b, mins) as f64;
        }
    }
    for t in 0..G {
        outs[t] = (acc[t].sum() - acc_min[t]) as f32;
    }
}

/// `Q6_K`: `Σ_b d d_x Σ_g s_g Σ (q − 32) x`, groups `g` of 16 values.
fn q6k_row<const G: usize>(row: &[u8], p: &RowPtrs, outs: &mut [f32]) {
    // Masks as values the compiler cannot see through (see `q4k_row`).
    let (m4, bits45) = core::hint::black_box((u8x16_splat(0x0F), u8x16_splat(0x30)));
    let mut acc = [Acc::zero(); G];
    for (b, blk) in row.chunks_exact(210).enumerate() {
        let x: [&[XValue; 256]; G] = core::array::from_fn(|t| p.block(t, b));
        let mut s = [i32x4_splat(0); G];
        // ggml's order: each 128 values (`h`) from 64 low-nibble bytes and 32 bytes of high
        // bits; 16 of them at a time (one group), as q in 0..63. One loop over the four
        // quarters: nested, the inner one was unrolled and a dozen vectors went to the stack.
        for quarter in 0..4 {
            let (h, half) = (quarter / 2, quarter % 2);
            let ql_a = load16(blk, 64 * h + 16 * half);
            let ql_b = load16(blk, 64 * h + 32 + 16 * half);
            let qh = load16(blk, 128 + 32 * h + 16 * half);
            // Bits `shift, shift + 1` of each byte of `qh` moved to bits 4 and 5: shifted as
            // 16-bit lanes (one instruction on x86, where byte shifts take two), the bits that
            // cross into the next byte masked off.
            let top = |shift: u32| {
                let moved = match shift {
                    0 => i16x8_shl(qh, 4),
                    2 => i16x8_shl(qh, 2),
                    4 => qh,
                    _ => u16x8_shr(qh, 2),
                };
                v128_and(moved, bits45)
            };
            let values = [
                v128_or(v128_and(ql_a, m4), top(0)),
                v128_or(v128_and(ql_b, m4), top(2)),
                v128_or(high_nibbles(ql_a, m4), top(4)),
                v128_or(high_nibbles(ql_b, m4), top(6)),
            ];
            for (k, v) in values.into_iter().enumerate() {
                let at = 128 * h + 32 * k + 16 * half;
                let w = Q6Group::new(v);
                let sc = i32x4_splat(blk[192 + at / 16] as i8 as i32);
                for t in 0..G {
                    let part = p.dot_q6(x[t], t, b, at, &w);
                    s[t] = i32x4_add(s[t], i32x4_mul(part, sc));
                }
            }
        }
        let d = p.f16_at(blk, 208);
        for t in 0..G {
            acc[t].add(s[t], scale(d, p.d[t][b]));
        }
    }
    for t in 0..G {
        outs[t] = acc[t].sum() as f32;
    }
}
