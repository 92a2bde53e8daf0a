//! Quantised matrix products `y = x Wᵀ` over the weight blocks of a GGUF file, for the few
//! activation rows a decode step (one row) or a verification round (a handful) brings.
//!
//! Decoding is bound by reading the weights, so the kernels here do three things:
//! - they read each weight block once for all activation rows (`m` rows share every load);
//! - they multiply 8-bit integers (the activations quantised per block, as llama.cpp does) with
//!   AVX2 (`vpmaddubsw` then `vpmaddwd`), or the same kernels with AVX-512 VNNI's fused
//!   instructions where the CPU has them (`vpdpbusd`, `vpdpwssd`: the same integers, the same
//!   results to the bit), and in the browser WebAssembly SIMD128 (`i32x4.dot_i16x8_s`, or relaxed
//!   SIMD's `i32x4.relaxed_dot_i8x16_i7x16_add_s`);
//! - they split the weight rows across the caller's threads ([`Parallel`]).
//!
//! [`Backend::Portable`] is the plain reference every SIMD kernel is tested against, and runs
//! anywhere. [`Backend::best`] picks the fastest one this CPU supports.
//!
//! The formats (ggml's block layouts; `d`, `dmin`, `m` are f16 on disk):
//! - `Q8_0`: 32 values per 34-byte block, `w = d · q`, `q` in i8.
//! - `Q5_0`: 32 values per 22-byte block, `w = d · (q − 16)`, `q` in 0..31 (a nibble and a bit).
//! - `Q4_1`: 32 values per 20-byte block, `w = d · q + m`, `q` in 0..15.
//! - `Q4_K`: 256 values per 144-byte block, eight sub-blocks of 32 with 6-bit scale `s` and
//!   min `n`: `w = d · s · q − dmin · n`, `q` in 0..15.
//! - `Q6_K`: 256 values per 210-byte block, sixteen groups of 16 with an i8 scale `s`:
//!   `w = d · s · (q − 32)`, `q` in 0..63.

mod activations;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod driver;
mod formats;
mod packed;
mod portable;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use activations::Activations;
pub use driver::{matmul, matmul_quantized, matmul_quantized_rows, Parallel, Serial};
pub use formats::{dequantize_row, quantize_row_q8_0, Format};
pub use packed::{Layout, PackedWeights};

/// What a kernel cannot do with its arguments.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("{format:?} rows of {cols} values: not a whole number of {block}-value blocks")]
    RaggedRow {
        format: Format,
        cols: usize,
        block: usize,
    },
    #[error("{format:?} matrix of {rows}×{cols} needs {expected} bytes, got {got}")]
    WrongSize {
        format: Format,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("activations of {got} values are not {rows} rows of {cols}")]
    ActivationShape {
        rows: usize,
        cols: usize,
        got: usize,
    },
    #[error("output of {got} values, expected {expected}")]
    OutputShape { expected: usize, got: usize },
    #[error("activations quantised for {quantised:?} used with {format:?} weights")]
    ActivationFormat { quantised: Format, format: Format },
    #[error("the {0:?} kernels need CPU features this machine lacks")]
    Unsupported(Backend),
    #[error("weights laid out as {layout:?} cannot be multiplied by the {backend:?} kernels")]
    Layout { layout: Layout, backend: Backend },
}

/// Which implementation runs the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Plain Rust, one value at a time: the reference, and the fallback anywhere.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (Intel Haswell and later, AMD Zen and later).
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL and VNNI (Intel Ice Lake and later, AMD Zen 4 and later): the
    /// AVX2 kernels with VNNI's fused products, on 256-bit registers; the same results as
    /// [`Backend::Avx2`], bit for bit.
    Avx512Vnni,
    /// WebAssembly with SIMD128 (chosen when the crate is compiled with it: WebAssembly has no
    /// run-time feature detection).
    Simd128,
}

impl Backend {
    /// Every backend, the fastest last.
    pub const ALL: [Backend; 4] = [
        Backend::Portable,
        Backend::Simd128,
        Backend::Avx2,
        Backend::Avx512Vnni,
    ];

    /// The fastest backend this CPU supports (checked once, at run time).
    pub fn best() -> Backend {
        Backend::ALL
            .into_iter()
            .rev()
            .find(|b| b.is_supported())
            .unwrap_or(Backend::Portable)
    }

    /// The backend called `name` ([`Backend::name`]), if this CPU can run it: for comparing
    /// backends on one machine (`HLM_KERNELS=avx2` on an AVX-512 CPU, say).
    pub fn by_name(name: &str) -> Option<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == name && b.is_supported())
    }

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
            Backend::Avx2 => avx2_supported(),
            Backend::Avx512Vnni => avx512_supported(),
            Backend::Simd128 => cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
        }
    }

    /// A short name for reports: `portable`, `avx2`, `avx512-vnni`, `simd128` (`simd128-relaxed`
    /// in a module built with relaxed SIMD).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Avx2 => "avx2",
            Backend::Avx512Vnni => "avx512-vnni",
            Backend::Simd128 if cfg!(target_feature = "relaxed-simd") => "simd128-relaxed",
            Backend::Simd128 => "simd128",
        }
    }

    /// Whether the backend is faster than a compiler-vectorised fallback (the portable one is
    /// not: callers with a SIMD path of their own should keep it).
    pub fn is_accelerated(self) -> bool {
        self != Backend::Portable
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512_supported() -> bool {
    use std::sync::OnceLock;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_supported() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn avx2_supported() -> bool {
    use std::sync::OnceLock;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_supported() -> bool {
    false
}

/// A quantised weight matrix of `rows` output rows of `cols` values each, borrowed from its
/// blocks (row-major: row `j`'s blocks are contiguous).
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    format: Format,
    data: &'a [u8],
    rows: usize,
    cols: usize,
    layout: Layout,
}

impl<'a> Weights<'a> {
    /// Checks that `data` holds exactly `rows × cols` values of `format`.
    pub fn new(
        format: Format,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        format.check_cols(cols)?;
        let expected = rows * format.row_bytes(cols);
        if data.len() != expected {
            return Err(KernelError::WrongSize {
                format,
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            format,
            data,
            rows,
            cols,
            layout: Layout::Rows,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `(rows, cols)`: outputs, inputs.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    /// The rows a thread takes together (eight for the interleaved layout, whose groups are not
    /// split), and their bytes.
    fn unit(&self) -> (usize, usize) {
        match self.layout {
            Layout::Rows => (1, self.row_bytes()),
            Layout::Interleaved8 => (
                packed::GROUP_ROWS,
                self.cols / 256 * packed::GROUP_BLOCK_BYTES,
            ),
        }
    }

    /// The bytes of rows `range` (whole units, [`Weights::unit`]).
    fn rows_data(&self, range: std::ops::Range<usize>) -> &'a [u8] {
        let (rows, bytes) = self.unit();
        &self.data[range.start / rows * bytes..range.end / rows * bytes]
    }
}
