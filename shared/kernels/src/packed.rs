//! `Q4_K` weights repacked at load, eight rows interleaved, for the x86-64 kernels
//! ([`Weights::pack`]).
//!
//! In the file's layout a row's 4-bit values sit together, so a SIMD product over one row ends
//! in a horizontal sum, and each row's scales are unpacked on their own: about 80 instructions
//! per row and 256 values. Interleaved, one 32-byte register holds four values of each of eight
//! rows (one 32-bit lane per row); four activation values broadcast to all lanes, and one
//! `vpdpbusd` (VNNI) adds four products to each of the eight rows. The sums come out one row per
//! lane, and the scales are read one row per lane: no horizontal sums, no shuffles. llama.cpp
//! does the same (`block_q4_Kx8`, its "repacked" `Q4_K`).
//!
//! A group of eight rows, for each 256-value block `b` of the columns, holds
//! [`GROUP_BLOCK_BYTES`] bytes:
//! - `0..1024`, the values: for each of the block's four runs `j` of 32 bytes (the low nibbles
//!   are sub-block `2j`, the high ones `2j + 1`), for each 4 bytes `i` of the run, the 4 bytes of
//!   each row in turn (`256 j + 32 i + 4 r`);
//! - `1024..1088`, the 6-bit scales as bytes, sub-block by sub-block, a byte per row;
//! - `1088..1152`, the 6-bit mins as bytes, for each pair of sub-blocks `2k, 2k + 1`, two bytes
//!   per row;
//! - `1152..1168` and `1168..1184`: each row's `d` and `dmin`, f16 as in the file.
//!
//! That is 148 bytes per row and block against the file's 144 (the scales and mins unpacked
//! from 12 bytes to 16).
//!
//! The values are the file's, so the products are the same integers and the kernels' results
//! the same f32s, bit for bit, as from the file's layout. The whole starts on a cache line
//! ([`CacheLines`]), and a group's block is 37 × 32 bytes, so no 32-byte load straddles two.
//!
//! `Q6_K` was repacked the same way too (commit 9ca9cd2): 1.2-1.7 × faster from the caches,
//! but from memory half as fast as the file's layout (one thread, `speed_probe 1 65536 1536`:
//! 13 against 23 GB/s), and the 1.5B's decode step 20 % longer. It stays in the file's layout.

use crate::formats::q4k_scales_mins;
use crate::{Backend, Format, KernelError, Weights};

/// Rows per group.
pub(crate) const GROUP_ROWS: usize = 8;

/// Bytes of one group (eight rows) for one 256-value block of the columns, and where each part
/// starts.
pub(crate) const GROUP_BLOCK_BYTES: usize = 1184;
pub(crate) const SCALES_AT: usize = 1024;
pub(crate) const MINS_AT: usize = 1088;
pub(crate) const D_AT: usize = 1152;
pub(crate) const DMIN_AT: usize = 1168;

/// How a matrix's rows are laid out in its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The file's: row after row, each a run of blocks.
    Rows,
    /// `Q4_K`, eight rows interleaved (this module), for the x86-64 backends.
    Interleaved8,
}

/// A weight matrix repacked for one backend's kernels, owning its bytes.
pub struct PackedWeights {
    data: CacheLines,
    rows: usize,
    cols: usize,
}

/// Bytes that start on a cache line (64 bytes), so that no 32-byte load of a group's block
/// straddles two lines (bytes from the allocator start 16 bytes into one).
struct CacheLines {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl CacheLines {
    fn zeroed(len: usize) -> Self {
        let lines = vec![Line([0; 64]); len.div_ceil(64)];
        Self { lines, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes with no padding; `len` is within the lines.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, self.len) }
    }
}

impl PackedWeights {
    /// The matrix, to multiply ([`crate::matmul`]) with the backend it was packed for.
    pub fn weights(&self) -> Weights<'_> {
        Weights {
            format: Format::Q4K,
            data: self.data.bytes(),
            rows: self.rows,
            cols: self.cols,
            layout: Layout::Interleaved8,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len
    }

    /// The matrix in the file's layout again, byte for byte (for a backend that reads the
    /// file's blocks, such as a GPU's).
    pub fn unpack(&self) -> Vec<u8> {
        unpack(self.data.bytes(), self.rows, self.cols)
    }
}

impl Weights<'_> {
    /// The matrix repacked for `backend`'s kernels, where they have a faster layout for it: the
    /// x86-64 backends for `Q4_K` with a multiple of eight rows. `None` means: use the file's.
    pub fn pack(&self, backend: Backend) -> Option<PackedWeights> {
        let x86 = matches!(backend, Backend::Avx2 | Backend::Avx512Vnni);
        let fits = self.format == Format::Q4K && self.rows.is_multiple_of(GROUP_ROWS);
        if !(x86 && fits && self.layout == Layout::Rows) {
            return None;
        }
        Some(PackedWeights {
            data: pack(self.data, self.rows, self.cols),
            rows: self.rows,
            cols: self.cols,
        })
    }

    /// The layout of the bytes.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}

/// Checks that `backend` can multiply a matrix of `layout`.
pub(crate) fn check_layout(backend: Backend, layout: Layout) -> Result<(), KernelError> {
    match (layout, backend) {
        (Layout::Rows, _) | (Layout::Interleaved8, Backend::Avx2 | Backend::Avx512Vnni) => Ok(()),
        (Layout::Interleaved8, _) => Err(KernelError::Layout { layout, backend }),
    }
}

/// The `Q4_K` matrix `data` (`rows × cols`, the file's layout) interleaved eight rows at a
/// time; `rows` must be a multiple of eight.
fn pack(data: &[u8], rows: usize, cols: usize) -> CacheLines {
    let (blocks, block_bytes, group_bytes) = (cols / 256, 144, GROUP_BLOCK_BYTES);
    let mut out = CacheLines::zeroed(rows / GROUP_ROWS * blocks * group_bytes);
    for (group, dst) in out
        .bytes_mut()
        .chunks_exact_mut(blocks * group_bytes)
        .enumerate()
    {
        for (b, dst) in dst.chunks_exact_mut(group_bytes).enumerate() {
            for r in 0..GROUP_ROWS {
                let at = ((group * GROUP_ROWS + r) * blocks + b) * block_bytes;
                pack_block(&data[at..at + block_bytes], r, dst);
            }
        }
    }
    out
}

/// Where the values and `d`, `dmin` of row `r`'s `Q4_K` block go in the group's block: `(in
/// the file's block, in the group's, length)` (the 6-bit scales and mins, 12 bytes in the
/// file, are unpacked apart: [`q4k_scale_min_at`]).
/// (An array, not a chain of iterators: packing a 1.5B model walks it eight million times.)
fn q4k_places(r: usize) -> [(usize, usize, usize); 34] {
    let mut places = [(0, D_AT + 2 * r, 2); 34];
    for j in 0..4 {
        for i in 0..8 {
            places[8 * j + i] = (16 + 32 * j + 4 * i, 256 * j + 32 * i + 4 * r, 4);
        }
    }
    places[33] = (2, DMIN_AT + 2 * r, 2);
    places
}

/// Where row `r`'s scale and min of sub-block `sb` go in the group's block.
fn q4k_scale_min_at(r: usize, sb: usize) -> (usize, usize) {
    (
        SCALES_AT + 8 * sb + r,
        MINS_AT + 16 * (sb / 2) + 2 * r + sb % 2,
    )
}

/// Row `r`'s `Q4_K` block `blk` into its places in the group's block `dst`.
fn pack_block(blk: &[u8], r: usize, dst: &mut [u8]) {
    for (from, to, len) in q4k_places(r) {
        dst[to..to + len].copy_from_slice(&blk[from..from + len]);
    }
    let (scales, mins) = q4k_scales_mins(&blk[4..16]);
    for sb in 0..8 {
        let (s, m) = q4k_scale_min_at(r, sb);
        dst[s] = scales[sb];
        dst[m] = mins[sb];
    }
}

/// [`pack_block`] undone: row `r`'s block from the group's block `src`, its scales and
/// mins packed back into 12 bytes (ggml's `get_scale_min_k4` read backwards: every one of the
/// 96 bits is a scale's or a min's, so the bytes are the file's).
fn unpack_block(src: &[u8], r: usize, blk: &mut [u8]) {
    for (from, to, len) in q4k_places(r) {
        blk[from..from + len].copy_from_slice(&src[to..to + len]);
    }
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for sb in 0..8 {
        let (s, m) = q4k_scale_min_at(r, sb);
        (sc[sb], mn[sb]) = (src[s], src[m]);
    }
    for j in 0..4 {
        blk[4 + j] = sc[j] | (sc[j + 4] >> 4) << 6;
        blk[8 + j] = mn[j] | (mn[j + 4] >> 4) << 6;
        blk[12 + j] = (sc[j + 4] & 0x0F) | (mn[j + 4] & 0x0F) << 4;
    }
}

/// [`pack`] undone: the matrix in the file's layout.
fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let (blocks, block_bytes, group_bytes) = (cols / 256, 144, GROUP_BLOCK_BYTES);
    let mut out = vec![0u8; rows * blocks * block_bytes];
    for (group, src) in data.chunks_exact(blocks * group_bytes).enumerate() {
        for (b, src) in src.chunks_exact(group_bytes).enumerate() {
            for r in 0..GROUP_ROWS {
                let at = ((group * GROUP_ROWS + r) * blocks + b) * block_bytes;
                unpack_block(src, r, &mut out[at..at + block_bytes]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing then unpacking gives the file's bytes back, for any bytes.
    #[test]
    fn unpacking_gives_the_file_back() {
        let (rows, cols) = (16, 768);
        let n = rows * Format::Q4K.row_bytes(cols);
        let data: Vec<u8> = (0..n).map(|i| (i * 131 % 257) as u8).collect();
        let w = Weights::new(Format::Q4K, &data, rows, cols).unwrap();
        assert!(w.pack(Backend::Avx2).unwrap().unpack() == data);
    }

    /// Every byte of the file's blocks lands somewhere, and the scales and mins where the
    /// kernels read them.
    #[test]
    fn a_block_lands_where_the_layout_says() {
        let (rows, cols) = (8, 512);
        let data: Vec<u8> = (0..rows * 2 * 144).map(|i| (i * 7 % 251) as u8).collect();
        let packed = pack(&data, rows, cols);
        let packed = packed.bytes();
        assert_eq!(packed.len(), 2 * GROUP_BLOCK_BYTES);
        assert_eq!(packed.as_ptr() as usize % 64, 0);
        let (r, b) = (5, 1);
        let blk = &data[r * 288 + b * 144..][..144];
        let g = &packed[b * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
        // Value byte 32 j + 4 i + c of the row.
        assert_eq!(
            g[256 * 3 + 32 * 6 + 4 * r + 2],
            blk[16 + 32 * 3 + 4 * 6 + 2]
        );
        let (scales, mins) = q4k_scales_mins(&blk[4..16]);
        assert_eq!(g[SCALES_AT + 8 * 6 + r], scales[6]);
        assert_eq!(g[MINS_AT + 16 * 3 + 2 * r + 1], mins[7]);
        assert_eq!(g[D_AT + 2 * r..D_AT + 2 * r + 2], blk[0..2]);
        assert_eq!(g[DMIN_AT + 2 * r..DMIN_AT + 2 * r + 2], blk[2..4]);
    }
}
