//! The block layouts (ggml's, byte for byte) and their plain dequantisation.

use crate::KernelError;

/// A GGUF block format these kernels multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Q8_0,
    Q5_0,
    Q4_1,
    Q4K,
    Q6K,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Q8_0,
        Format::Q5_0,
        Format::Q4_1,
        Format::Q4K,
        Format::Q6K,
    ];

    /// Values per block.
    pub const fn block_values(self) -> usize {
        match self {
            Format::Q8_0 | Format::Q5_0 | Format::Q4_1 => 32,
            Format::Q4K | Format::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => 34,
            Format::Q5_0 => 22,
            Format::Q4_1 => 20,
            Format::Q4K => 144,
            Format::Q6K => 210,
        }
    }

    /// Rows of `cols` values must be a whole, non-zero number of blocks.
    pub fn check_cols(self, cols: usize) -> Result<(), KernelError> {
        let block = self.block_values();
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(KernelError::RaggedRow {
                format: self,
                cols,
                block,
            });
        }
        Ok(())
    }

    /// Bytes of one row of `cols` values (a whole number of blocks).
    pub const fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_values() * self.block_bytes()
    }
}

/// The f16 at `b[i..i + 2]` (little-endian), as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// `Q4_K`'s eight 6-bit scales and eight 6-bit mins, packed in 12 bytes (ggml's
/// `get_scale_min_k4`): sub-blocks 0-3 keep the low 6 bits of bytes 0-3 (scales) and 4-7 (mins);
/// sub-blocks 4-7 take a nibble of bytes 8-11 and the top 2 bits of bytes 0-7.
pub(crate) fn q4k_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let w = q4k_scales_mins_words(s);
    let pair = |a: u32, b: u32| (a as u64 | (b as u64) << 32).to_le_bytes();
    (pair(w[0], w[1]), pair(w[2], w[3]))
}

/// [`q4k_scales_mins`] unpacked the way ggml does it, on whole words: bytes 0-7 of the four
/// little-endian words are the eight scales, bytes 8-15 the eight mins.
#[inline(always)]
pub(crate) fn q4k_scales_mins_words(s: &[u8]) -> [u32; 4] {
    const LOW6: u32 = 0x3f3f3f3f;
    const LOW4: u32 = 0x0f0f0f0f;
    const LOW2: u32 = 0x03030303;
    let s: &[u8; 12] = s[..12].try_into().expect("12 bytes");
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    [
        w0 & LOW6,
        (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4),
        w1 & LOW6,
        ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4),
    ]
}

/// `Q6_K`'s 6-bit value `i` (0..256) of a block, before the `− 32`: the low nibble from `ql`, the
/// top two bits from `qh`.
#[inline(always)]
pub(crate) fn q6k_value(blk: &[u8], i: usize) -> i32 {
    let (half, r) = (i / 128, i % 128);
    let (quarter, l) = (r / 32, r % 32);
    let ql = &blk[64 * half..64 * half + 64];
    let qh = blk[128 + 32 * half + l];
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    (low | (((qh >> (2 * quarter)) & 3) << 4)) as i32
}

/// `Q5_0`'s 5-bit value `i` (0..32) of a block, before the `− 16`: a nibble of `qs` (values
/// 0-15 low, 16-31 high) and bit `i` of `qh` on top.
#[inline(always)]
pub(crate) fn q5_0_value(blk: &[u8], i: usize) -> i32 {
    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
    let nibble = if i < 16 {
        blk[6 + i] & 0xF
    } else {
        blk[6 + i - 16] >> 4
    };
    (nibble as i32) | ((((qh >> i) & 1) as i32) << 4)
}

/// `x` as `Q8_0` blocks in `blocks` (34 bytes per 32 values: the scale `d` as a little-endian
/// f16, then 32 values in i8): `d = amax / 127`, `q = round(x / d)`, the blocks candle's and
/// ggml's quantiser write, to the bit (the loader re-quantises `Q5_0` matrices with it; candle's
/// own quantiser calls a library function per value in WebAssembly).
pub fn quantize_row_q8_0(x: &[f32], blocks: &mut [u8]) -> Result<(), KernelError> {
    let format = Format::Q8_0;
    let (bv, bb) = (format.block_values(), format.block_bytes());
    if !x.len().is_multiple_of(bv) {
        return Err(KernelError::RaggedRow {
            format,
            cols: x.len(),
            block: bv,
        });
    }
    if blocks.len() != x.len() / bv * bb {
        return Err(KernelError::WrongSize {
            format,
            rows: 1,
            cols: x.len(),
            expected: x.len() / bv * bb,
            got: blocks.len(),
        });
    }
    for (x, blk) in x.chunks_exact(bv).zip(blocks.chunks_exact_mut(bb)) {
        let mut q = [0i8; 32];
        let d = crate::activations::quantize_q8_0_f16(x, &mut q);
        blk[..2].copy_from_slice(&d.to_le_bytes());
        for (b, q) in blk[2..].iter_mut().zip(q) {
            *b = q as u8;
        }
    }
    Ok(())
}

/// One row of `format` blocks as f32 (the reference the tests compare against).
pub fn dequantize_row(format: Format, row: &[u8]) -> Result<Vec<f32>, KernelError> {
    let (bv, bb) = (format.block_values(), format.block_bytes());
    if !row.len().is_multiple_of(bb) {
        return Err(KernelError::WrongSize {
            format,
            rows: 1,
            cols: row.len() / bb * bv,
            expected: row.len() / bb * bb,
            got: row.len(),
        });
    }
    let mut out = Vec::with_capacity(row.len() / bb * bv);
    for blk in row.chunks_exact(bb) {
        match format {
            Format::Q8_0 => {
                let d = f16_at(blk, 0);
                out.extend(blk[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
            Format::Q5_0 => {
                let d = f16_at(blk, 0);
                out.extend((0..32).map(|i| d * (q5_0_value(blk, i) - 16) as f32));
            }
            Format::Q4_1 => {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                let qs = &blk[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 0xF) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
            Format::Q4K => {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let (sc, mn) = q4k_scales_mins(&blk[4..16]);
                let qs = &blk[16..144];
                for sb in 0..8 {
                    let bytes = &qs[32 * (sb / 2)..32 * (sb / 2) + 32];
                    let shift = 4 * (sb % 2);
                    let (s, n) = (d * sc[sb] as f32, dmin * mn[sb] as f32);
                    out.extend(bytes.iter().map(|&q| s * ((q >> shift) & 0xF) as f32 - n));
                }
            }
            Format::Q6K => {
                let d = f16_at(blk, 208);
                for i in 0..256 {
                    let s = blk[192 + i / 16] as i8 as f32;
                    out.push(d * s * (q6k_value(blk, i) - 32) as f32);
                }
            }
        }
    }
    Ok(out)
}
