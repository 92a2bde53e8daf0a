//! What the x86-64 kernels share: reading an f16 scale, `Q4_K`'s packed scales and mins, sums
//! in f64.

use std::arch::x86_64::*;

/// The f16 at `p`, as f32.
#[inline(always)]
pub(crate) unsafe fn f16(p: *const u8) -> f32 {
    unsafe {
        let bits = std::ptr::read_unaligned(p as *const u16);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// The sum of the four lanes ([`sum4`]).
#[inline(always)]
pub(crate) unsafe fn hsum256d(v: __m256d) -> f64 {
    let mut out = [0f64; 4];
    unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
    sum4(out)
}

/// `((l0 + l1) + l2) + l3`: every kernel that must agree to the last bit sums four lanes so.
#[inline(always)]
pub(crate) fn sum4(l: [f64; 4]) -> f64 {
    l.iter().sum()
}

/// `Q4_K`'s 6-bit scales and mins of the block at `bp` (bytes 4..16), as
/// [`crate::formats::q4k_scales_mins_words`].
///
/// # Safety
/// `bp` must point to a whole `Q4_K` block (144 bytes).
#[inline(always)]
pub(crate) unsafe fn q4k_scales_mins_words(bp: *const u8) -> [u32; 4] {
    // SAFETY: the caller's block holds bytes 4..16.
    crate::formats::q4k_scales_mins_words(unsafe { std::slice::from_raw_parts(bp.add(4), 12) })
}
