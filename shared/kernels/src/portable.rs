//! The reference kernels: one weight row against one activation row, one value at a time, in
//! the order of the formulas. Each block contributes `scale × integer sum`, added up in f64: every
//! SIMD kernel gives the same f32 as these, or one a rounding of an f64 sum away (they add the
//! same exact terms in another order).

use crate::activations::q4k_slot;
use crate::formats::{f16_at, q4k_scales_mins, q5_0_value, q6k_value};
use crate::{Activations, Format};

/// `Σ_i w_i x_i` over one row of `format` blocks and activation row `r`.
pub(crate) fn dot(format: Format, w: &[u8], a: &Activations, r: usize) -> f32 {
    dot64(format, w, a, r) as f32
}

fn dot64(format: Format, w: &[u8], a: &Activations, r: usize) -> f64 {
    let (qs, d, s32) = (a.row_qs(r), a.row_d(r), a.row_sums32(r));
    let bb = format.block_bytes();
    let blocks = w.chunks_exact(bb).enumerate();
    match format {
        // d_w d_x Σ q_w q_x
        Format::Q8_0 => blocks
            .map(|(b, blk)| {
                let x = &qs[32 * b..32 * b + 32];
                let s: i32 = blk[2..34]
                    .iter()
                    .zip(x)
                    .map(|(&w, &x)| (w as i8) as i32 * x as i32)
                    .sum();
                f16_at(blk, 0) as f64 * d[b] as f64 * s as f64
            })
            .sum(),
        // d_w d_x (Σ q_w q_x − 16 Σ q_x)
        Format::Q5_0 => blocks
            .map(|(b, blk)| {
                let x = &qs[32 * b..32 * b + 32];
                let s: i32 = (0..32).map(|i| q5_0_value(blk, i) * x[i] as i32).sum();
                f16_at(blk, 0) as f64 * d[b] as f64 * (s - 16 * s32[b] as i32) as f64
            })
            .sum(),
        // d_w d_x Σ q_w q_x + m_w d_x Σ q_x
        Format::Q4_1 => blocks
            .map(|(b, blk)| {
                let x = &qs[32 * b..32 * b + 32];
                let qw = &blk[4..20];
                let s: i32 = (0..16)
                    .map(|j| {
                        (qw[j] & 0xF) as i32 * x[j] as i32 + (qw[j] >> 4) as i32 * x[j + 16] as i32
                    })
                    .sum();
                let sum_x = s32[b] as f64;
                f16_at(blk, 0) as f64 * d[b] as f64 * s as f64
                    + f16_at(blk, 2) as f64 * d[b] as f64 * sum_x
            })
            .sum(),
        // d d_x Σ_sb s_sb Σ q_w q_x − dmin d_x Σ_sb n_sb Σ q_x
        Format::Q4K => blocks
            .map(|(b, blk)| {
                let x = &qs[256 * b..256 * b + 256];
                let (sc, mn) = q4k_scales_mins(&blk[4..16]);
                let (mut scaled, mut mins) = (0i32, 0i32);
                for sb in 0..8 {
                    let bytes = &blk[16 + 32 * (sb / 2)..16 + 32 * (sb / 2) + 32];
                    let shift = 4 * (sb % 2);
                    let xs = &x[32 * q4k_slot(sb)..32 * q4k_slot(sb) + 32];
                    let s: i32 = bytes
                        .iter()
                        .zip(xs)
                        .map(|(&q, &x)| ((q >> shift) & 0xF) as i32 * x as i32)
                        .sum();
                    scaled += sc[sb] as i32 * s;
                    mins += mn[sb] as i32 * s32[8 * b + sb] as i32;
                }
                f16_at(blk, 0) as f64 * d[b] as f64 * scaled as f64
                    - f16_at(blk, 2) as f64 * d[b] as f64 * mins as f64
            })
            .sum(),
        // d d_x Σ_g s_g Σ (q_w − 32) q_x
        Format::Q6K => blocks
            .map(|(b, blk)| {
                let x = &qs[256 * b..256 * b + 256];
                let s: i32 = (0..256)
                    .map(|i| {
                        (blk[192 + i / 16] as i8) as i32 * (q6k_value(blk, i) - 32) * x[i] as i32
                    })
                    .sum();
                f16_at(blk, 208) as f64 * d[b] as f64 * s as f64
            })
            .sum(),
    }
}
