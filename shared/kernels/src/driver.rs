//! Splitting a product over threads, and choosing the kernel.

use crate::{portable, Activations, Backend, Format, KernelError, Weights};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Runs work over the weight rows on the caller's threads. `for_ranges(n, f)` must call `f` on
/// ranges that cover `0..n` exactly once between them, and return when all calls have.
pub trait Parallel: Sync {
    fn for_ranges(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync));
}

/// Everything on the calling thread.
pub struct Serial;

impl Parallel for Serial {
    fn for_ranges(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n > 0 {
            f(0..n)
        }
    }
}

/// `y = x Wᵀ`: `x` is `m × cols` (row-major), `y` is `m × rows`. The activations are quantised
/// first (see [`Activations`]).
pub fn matmul(
    backend: Backend,
    w: &Weights,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    let a = Activations::quantize_on(w.format(), x, m, w.dims().1, par)?;
    matmul_quantized(backend, w, &a, y, par)
}

/// [`matmul`] with activations quantised beforehand (several matrices that read the same
/// input, such as the query, key and value projections, share one quantisation).
pub fn matmul_quantized(
    backend: Backend,
    w: &Weights,
    a: &Activations,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    let (m, n) = (a.rows, w.dims().0);
    if y.len() != m * n {
        return Err(KernelError::OutputShape {
            expected: m * n,
            got: y.len(),
        });
    }
    // Every row's pointer from the one base (not from a fresh borrow of `y` per row).
    let base = y.as_mut_ptr();
    let out = Outputs((0..m).map(|r| base.wrapping_add(r * n)).collect(), n);
    run(backend, w, a, &out, true, par)
}

/// [`matmul_quantized`] into rows that need not be initialised: `ys[r]` (`n` values each, `n`
/// the rows of `w`) gets output row `r`. Every value of every row is written when this returns
/// `Ok`. The caller's rows may be apart (one vector per row: a batch's logits go to their
/// sequences without a copy) and need no zeroing first.
pub fn matmul_quantized_rows(
    backend: Backend,
    w: &Weights,
    a: &Activations,
    ys: &mut [&mut [MaybeUninit<f32>]],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    let n = w.dims().0;
    let got: usize = ys.iter().map(|y| y.len()).sum();
    if ys.len() != a.rows || ys.iter().any(|y| y.len() != n) {
        return Err(KernelError::OutputShape {
            expected: a.rows * n,
            got,
        });
    }
    let out = Outputs(ys.iter_mut().map(|y| y.as_mut_ptr().cast()).collect(), n);
    run(backend, w, a, &out, false, par)
}

/// The product into `out`. With `direct` (the outputs are initialised), one activation row's
/// outputs are written in place; otherwise every output goes through the thread's block.
fn run(
    backend: Backend,
    w: &Weights,
    a: &Activations,
    out: &Outputs,
    direct: bool,
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    let (n, k) = w.dims();
    let m = a.rows;
    if a.format != w.format() {
        return Err(KernelError::ActivationFormat {
            quantised: a.format,
            format: w.format(),
        });
    }
    if a.cols != k {
        return Err(KernelError::ActivationShape {
            rows: m,
            cols: k,
            got: m * a.cols,
        });
    }
    if !backend.is_supported() {
        return Err(KernelError::Unsupported(backend));
    }
    crate::packed::check_layout(backend, w.layout())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Rows of W are the unit of work. The kernels write a row's `m` outputs contiguously
    // (`rows × m`); each call then puts them into the output rows' columns itself, on its own
    // thread.
    let prepared = Prepared::new(backend, w, a, par);
    let unit = w.unit().0;
    par.for_ranges(n / unit, &|units: Range<usize>| {
        let rows = units.start * unit..units.end * unit;
        if m == 1 && direct {
            // SAFETY: the ranges are disjoint (the `Parallel` contract), so each call writes
            // its own part of the output row, which is initialised and outlives `for_ranges`.
            let dst = unsafe { out.part_of_row(0, rows.clone()) };
            return run_rows(backend, w, rows, a, &prepared, dst);
        }
        // A few tiles of rows at a time into this thread's block (not one buffer for all this
        // thread's rows: SmolLM2's logits for 160 rows are 16 MB a thread to fill and then to
        // read back from memory), whose outputs go into place while still in the cache. The
        // block is kept from one product to the next (not zeroed again for each).
        let chunk = (BLOCK_BYTES / (4 * m)).div_ceil(unit).max(1) * unit;
        BLOCK.with_borrow_mut(|block| {
            let need = chunk.min(rows.len()) * m;
            if block.len() < need {
                block.resize(need, 0.0);
            }
            for start in rows.clone().step_by(chunk) {
                let part = start..(start + chunk).min(rows.end);
                let block = &mut block[..part.len() * m];
                run_rows(backend, w, part.clone(), a, &prepared, block);
                // SAFETY: as above: this call alone writes columns `rows` of every output row.
                unsafe { out.put_columns(block, part) };
            }
        });
    });
    Ok(())
}

thread_local! {
    /// A thread's outputs of a multi-row product before they go into their columns.
    static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What a backend makes of the activations once per product, before its threads start.
enum Prepared {
    Nothing,
    #[cfg(target_arch = "x86_64")]
    X86(crate::avx2::Prepared),
}

impl Prepared {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // only x86-64 prepares
    fn new(backend: Backend, w: &Weights, a: &Activations, par: &dyn Parallel) -> Self {
        if w.layout() != crate::Layout::Rows {
            return Prepared::Nothing;
        }
        match backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 | Backend::Avx512Vnni => {
                Prepared::X86(crate::avx2::prepare(w.format(), a, par))
            }
            _ => Prepared::Nothing,
        }
    }
}

/// Rows `rows` of `w` against every activation row: `dst[(j − rows.start) · m + r]`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // only x86-64 prepares
fn run_rows(
    backend: Backend,
    w: &Weights,
    rows: Range<usize>,
    a: &Activations,
    prepared: &Prepared,
    dst: &mut [f32],
) {
    let data = w.rows_data(rows.clone());
    match backend {
        Backend::Portable => {
            let rb = w.row_bytes();
            for (row, outs) in data.chunks_exact(rb).zip(dst.chunks_exact_mut(a.rows)) {
                for (r, o) in outs.iter_mut().enumerate() {
                    *o = portable::dot(w.format(), row, a, r);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 | Backend::Avx512Vnni if w.layout() == crate::Layout::Interleaved8 => {
            let vnni = backend == Backend::Avx512Vnni;
            // SAFETY: `matmul_quantized` checked `backend.is_supported()` and the shapes.
            unsafe { crate::avx2::packed_rows(data, w.dims().1, a, vnni, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 | Backend::Avx512Vnni => match prepared {
            // SAFETY: `matmul_quantized` checked `backend.is_supported()`; `prepared` was made
            // from `a` for this format, which outlive this call.
            Prepared::X86(p) => unsafe {
                let vnni = backend == Backend::Avx512Vnni;
                crate::avx2::rows(w.format(), data, w.row_bytes(), p, a.rows, vnni, dst)
            },
            Prepared::Nothing => unreachable!("prepared for the x86-64 backends"),
        },
        #[cfg(not(target_arch = "x86_64"))]
        Backend::Avx2 | Backend::Avx512Vnni => unreachable!("checked by is_supported"),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Backend::Simd128 => crate::simd128::rows(w.format(), data, w.row_bytes(), a, dst),
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        Backend::Simd128 => unreachable!("checked by is_supported"),
    }
}

/// Bytes of weight rows taken against one group of activation rows at a time (they stay in the
/// L1 cache while every row of every group is multiplied with them).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "wasm32")),
    allow(dead_code)
)]
pub(crate) const TILE_BYTES: usize = 16 << 10;

/// The outputs a thread of a multi-row product holds before putting them into their columns:
/// about half a core's L2 cache.
const BLOCK_BYTES: usize = 256 << 10;

/// Weight rows read at once from this many places in a matrix of a 32-value format, for one
/// activation row.
pub(crate) const STREAMS: usize = 4;

/// The rows `0..n` of a `format` matrix in the order a product with one activation row (a decode
/// step, bound by reading the weights) takes them. For the 32-value formats, row `j` of each of
/// [`STREAMS`] equal parts in turn: the CPU's prefetcher follows each sequential stream on its
/// own, and one stream read at the pace of the products gets a fraction of the memory bandwidth
/// that several do (`speed_probe 1 151936 896 Q8_0`, the 0.5B's output matrix, one thread on the
/// AVX2 machine: 33 → 15 ms in WebAssembly, 13.8 → 9.4-11.2 ms natively; the AVX-512 machine
/// goes in order, see `avx2::rows`). The K formats' kernels do more work per byte and gain
/// nothing (`Q6_K` lost a little): their rows go in order.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "wasm32")),
    allow(dead_code)
)]
pub(crate) fn stream_order(format: Format, n: usize) -> impl Iterator<Item = usize> {
    let parts = if format.block_values() == 32 {
        STREAMS
    } else {
        1
    };
    let part = n.div_ceil(parts);
    (0..part).flat_map(move |j| {
        (0..parts)
            .map(move |s| s * part + j)
            .filter(move |&r| r < n)
    })
}

/// Visits weight rows (`data`, `row_bytes` each) tile by tile and, within a tile, the `m`
/// activation rows `group` at a time: `f(row, r0, outs)` for each weight row of the tile, with
/// `outs` its outputs for activation rows `r0 .. r0 + g` (`dst[j · m + r]` is row `j` times
/// activation row `r`). The weights are read from memory once whatever `m`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))] // the WebAssembly kernels
pub(crate) fn by_tiles_and_groups(
    data: &[u8],
    row_bytes: usize,
    m: usize,
    group: usize,
    dst: &mut [f32],
    mut f: impl FnMut(&[u8], usize, &mut [f32]),
) {
    let groups: Vec<Range<usize>> = (0..m)
        .step_by(group)
        .map(|r0| r0..(r0 + group).min(m))
        .collect();
    by_tiles(data, row_bytes, m, &groups, dst, |row, i, outs| {
        f(row, groups[i].start, outs)
    });
}

/// [`by_tiles_and_groups`] with groups of activation rows of any sizes (`groups` must cover
/// `0..m` in order): `f(row, i, outs)` with `outs` the outputs for the rows of `groups[i]`.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "wasm32")),
    allow(dead_code)
)]
pub(crate) fn by_tiles(
    data: &[u8],
    row_bytes: usize,
    m: usize,
    groups: &[Range<usize>],
    dst: &mut [f32],
    mut f: impl FnMut(&[u8], usize, &mut [f32]),
) {
    debug_assert_eq!(data.len() / row_bytes * m, dst.len());
    let tile_rows = (TILE_BYTES / row_bytes).max(1);
    for (tile, outs) in data
        .chunks(tile_rows * row_bytes)
        .zip(dst.chunks_mut(tile_rows * m))
    {
        for (i, rows) in groups.iter().enumerate() {
            for (row, outs) in tile.chunks_exact(row_bytes).zip(outs.chunks_exact_mut(m)) {
                f(row, i, &mut outs[rows.clone()]);
            }
        }
    }
}

/// The output rows (`n` values each, at the pointers), written from several threads at
/// disjoint columns.
struct Outputs(Vec<*mut f32>, usize);

// SAFETY: only disjoint columns are handed out (see `run`).
unsafe impl Sync for Outputs {}

impl Outputs {
    /// Columns `cols` of output row `r`.
    ///
    /// SAFETY: no two live slices may overlap, and the row must be initialised.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part_of_row(&self, r: usize, cols: Range<usize>) -> &mut [f32] {
        assert!(cols.start <= cols.end && cols.end <= self.1);
        unsafe { std::slice::from_raw_parts_mut(self.0[r].add(cols.start), cols.len()) }
    }

    /// `y_r[j] = block[(j − cols.start) · m + r]` for `j` in `cols` and each output row `r`: a
    /// block of weight rows' outputs (`cols.len() × m`) into their columns.
    ///
    /// SAFETY: no other thread may write columns `cols` meanwhile.
    unsafe fn put_columns(&self, block: &[f32], cols: Range<usize>) {
        let m = self.0.len();
        assert!(cols.end <= self.1 && block.len() == cols.len() * m);
        for (r, &row) in self.0.iter().enumerate() {
            for (c, j) in cols.clone().enumerate() {
                // SAFETY: in bounds (asserted); the caller owns these columns.
                unsafe { row.add(j).write(block[c * m + r]) };
            }
        }
    }
}
