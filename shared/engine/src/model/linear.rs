//! Weight matrices (quantised or dense) behind one type, and the token embedding.

use crate::Result;
use candle_core::quantized::{k_quants, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use std::sync::Arc;

/// `y = x Wᵀ` for `x` of `m` rows: candle's `QMatMul` over a GGUF block format, or a dense `f32`
/// matrix (safetensors).
///
/// Which kernel runs a product, on the CPU:
/// - our own kernels (`hlm-kernels`) when the CPU has a SIMD backend for them (AVX2, AVX-512 VNNI, WebAssembly SIMD128) and
///   the format is one they cover (`Q8_0`, `Q5_0`, `Q4_1`, `Q4_K`, `Q6_K`), for any number of rows: they
///   read the file's blocks as stored (`Q4_K` on x86-64: repacked at load, eight rows
///   interleaved), once for all rows, and give a row the same integer sums whether it comes
///   alone or with others;
/// - otherwise one row (a decode step) goes to candle's `k_quants::matmul` on the file's blocks,
///   and several rows to `QMatMul`, which on x86 repacks the weights into 16-row tiles (each weight
///   read once for all rows, but with scales widened to f32 a third more bytes than the blocks:
///   a loss for one row, which is bound by memory reads).
///
/// `cargo run --release -p hlm-engine --example qmm_probe -- FILE.gguf ffn_gate 1` compares the
/// three on one kind of matrix.
///
/// On another device (CUDA, feature `cuda`) every product goes through `QMatMul` there; the
/// activations travel to the device and back per product.
pub struct Linear {
    /// candle's product; `None` where the blocks are held repacked ([`Linear::packed`]).
    mm: Option<QMatMul>,
    device: Device,
    blocks: Option<Arc<QTensor>>,
    /// The blocks' format, when our kernels cover it and this CPU accelerates them.
    kernel: Option<hlm_kernels::Format>,
    /// The blocks repacked for our kernels, where they have a faster layout for them (`Q4_K`
    /// on x86-64: eight rows interleaved, [`hlm_kernels::Weights::pack`]), in place of the
    /// file's: 3 % more bytes than they.
    packed: Option<hlm_kernels::PackedWeights>,
    /// The file's blocks, rebuilt from `packed` the first time something reads them (a GPU
    /// backend's upload, [`Linear::weights`]; a move to another device).
    unpacked: std::sync::OnceLock<Arc<QTensor>>,
    in_dim: usize,
    out_dim: usize,
    bytes: usize,
}

impl Linear {
    pub fn quantized(qt: Arc<QTensor>) -> Result<Self> {
        let (out_dim, in_dim) = qt.shape().dims2()?;
        let bytes = qt.storage_size_in_bytes();
        let blocks = single_row_kernel(qt.dtype()).then(|| qt.clone());
        let kernel = kernel_format(qt.dtype()).filter(|_| kernel_backend().is_accelerated());
        let packed = match kernel {
            Some(format) => pack(format, &qt, in_dim, out_dim)?,
            None => None,
        };
        let (mm, blocks) = match packed {
            Some(_) => (None, None),
            None => (Some(QMatMul::from_arc(qt)?), blocks),
        };
        Ok(Self {
            mm,
            device: Device::Cpu,
            blocks,
            kernel,
            packed,
            unpacked: Default::default(),
            in_dim,
            out_dim,
            bytes,
        })
    }

    pub fn dense(w: Tensor) -> Result<Self> {
        let (out_dim, in_dim) = w.dims2()?;
        Ok(Self {
            bytes: w.elem_count() * w.dtype().size_in_bytes(),
            mm: Some(QMatMul::Tensor(w)),
            device: Device::Cpu,
            blocks: None,
            kernel: None,
            packed: None,
            unpacked: Default::default(),
            in_dim,
            out_dim,
        })
    }

    /// The same weights on `device` (a no-op for the CPU).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let quantized = |qt: &QTensor| -> Result<QMatMul> {
            let storage = QStorage::from_data(qt.data()?, device, qt.dtype())?;
            Ok(QMatMul::from_qtensor(QTensor::new(
                storage,
                qt.shape().clone(),
            )?)?)
        };
        let mm = match (&self.mm, self.weights()) {
            (Some(QMatMul::Tensor(w)), _) => QMatMul::Tensor(w.to_device(device)?),
            (Some(QMatMul::TensorF16(w)), _) => QMatMul::TensorF16(w.to_device(device)?),
            (_, super::WeightMatrix::Quantized(qt)) => quantized(qt)?,
            (_, super::WeightMatrix::Dense(w)) => QMatMul::Tensor(w.to_device(device)?),
        };
        Ok(Self {
            mm: Some(mm),
            device: device.clone(),
            blocks: None,
            kernel: None,
            packed: None,
            unpacked: Default::default(),
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            bytes: self.bytes,
        })
    }

    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if let Some(format) = self.kernel_format() {
            return self.kernel_run(&self.quantize_input(format, x, m)?);
        }
        if let (1, Some(qt)) = (m, &self.blocks) {
            return matvec(qt, x, self.in_dim, self.out_dim);
        }
        let mm = self.mm.as_ref().ok_or_else(|| {
            crate::EngineError::model("repacked weights without the kernels that read them")
        })?;
        let t = Tensor::from_slice(x, (m, self.in_dim), &self.device)?;
        let y = mm.forward(&t)?;
        debug_assert_eq!(y.elem_count(), m * self.out_dim);
        Ok(y.flatten_all()?.to_vec1()?)
    }

    /// `x Wᵀ` for several matrices that read the same input `x` (the query, key and value
    /// projections; the gate and the up ones): through our kernels, `x` is quantised once for
    /// all the matrices of one format. Each result is [`Linear::forward`]'s.
    pub fn forward_shared<const N: usize>(
        ws: [&Linear; N],
        x: &[f32],
        m: usize,
    ) -> Result<[Vec<f32>; N]> {
        let mut quantised: Vec<hlm_kernels::Activations> = Vec::new();
        let mut out = Vec::with_capacity(N);
        for w in ws {
            let Some(format) = w.kernel_format() else {
                out.push(w.forward(x, m)?);
                continue;
            };
            let a = match quantised.iter().position(|a| a.format() == format) {
                Some(i) => &quantised[i],
                None => {
                    quantised.push(w.quantize_input(format, x, m)?);
                    &quantised[quantised.len() - 1]
                }
            };
            out.push(w.kernel_run(a)?);
        }
        Ok(out
            .try_into()
            .unwrap_or_else(|_| unreachable!("one result per matrix")))
    }

    /// The format our kernels read this matrix in, when they run its products.
    fn kernel_format(&self) -> Option<hlm_kernels::Format> {
        match (&self.packed, self.kernel, &self.blocks) {
            (Some(p), _, _) => Some(p.weights().format()),
            (None, Some(format), Some(_)) => Some(format),
            _ => None,
        }
    }

    /// `x` (`m` rows) quantised for this matrix's products through our kernels.
    fn quantize_input(
        &self,
        format: hlm_kernels::Format,
        x: &[f32],
        m: usize,
    ) -> Result<hlm_kernels::Activations> {
        hlm_kernels::Activations::quantize_on(format, x, m, self.in_dim, kernel_parallel())
            .map_err(kernel_error)
    }

    /// `a Wᵀ` through our kernels, `a` quantised for [`Linear::kernel_format`].
    fn kernel_run(&self, a: &hlm_kernels::Activations) -> Result<Vec<f32>> {
        let (m, n) = (a.dims().0, self.out_dim);
        if m == 1 || n == 0 {
            // One row is written in place, into a vector this small to zero.
            let mut y = vec![0f32; m * n];
            self.with_kernel_weights(|w| {
                hlm_kernels::matmul_quantized(kernel_backend(), w, a, &mut y, kernel_parallel())
            })?;
            return Ok(y);
        }
        let mut y = Vec::with_capacity(m * n);
        let mut rows: Vec<_> = y.spare_capacity_mut()[..m * n]
            .chunks_exact_mut(n)
            .collect();
        self.kernel_into(a, &mut rows)?;
        // SAFETY: `kernel_into` returned `Ok`: every value of every row was written.
        unsafe { y.set_len(m * n) };
        Ok(y)
    }

    /// `x Wᵀ` (`x` of `m` rows) as one vector per output row: [`Linear::forward`]'s values, with
    /// no copy out of one buffer when our kernels run the product (a batch's logits).
    pub fn forward_rows(&self, x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        let n = self.out_dim;
        let Some(format) = self.kernel_format().filter(|_| n > 0) else {
            let all = self.forward(x, m)?;
            return Ok(all.chunks(n.max(1)).map(<[f32]>::to_vec).collect());
        };
        let a = self.quantize_input(format, x, m)?;
        let mut ys: Vec<Vec<f32>> = (0..m).map(|_| Vec::with_capacity(n)).collect();
        let mut rows: Vec<_> = ys
            .iter_mut()
            .map(|y| &mut y.spare_capacity_mut()[..n])
            .collect();
        self.kernel_into(&a, &mut rows)?;
        for y in &mut ys {
            // SAFETY: `kernel_into` returned `Ok`: every value of every row was written.
            unsafe { y.set_len(n) };
        }
        Ok(ys)
    }

    /// `a Wᵀ` through our kernels into `rows` (one per row of `a`, `out_dim` values each), which
    /// need not be initialised: all written when this returns `Ok`.
    fn kernel_into(
        &self,
        a: &hlm_kernels::Activations,
        rows: &mut [&mut [std::mem::MaybeUninit<f32>]],
    ) -> Result<()> {
        self.with_kernel_weights(|w| {
            hlm_kernels::matmul_quantized_rows(kernel_backend(), w, a, rows, kernel_parallel())
        })
    }

    /// `f` on the blocks our kernels read (repacked, or the file's).
    fn with_kernel_weights(
        &self,
        f: impl FnOnce(&hlm_kernels::Weights) -> std::result::Result<(), hlm_kernels::KernelError>,
    ) -> Result<()> {
        let data;
        let w = match (&self.packed, self.kernel, &self.blocks) {
            (Some(packed), _, _) => packed.weights(),
            (None, Some(format), Some(qt)) => {
                data = qt.data()?;
                hlm_kernels::Weights::new(format, &data, self.out_dim, self.in_dim)
                    .map_err(kernel_error)?
            }
            _ => {
                return Err(crate::EngineError::model(
                    "no blocks for our kernels to read",
                ))
            }
        };
        f(&w).map_err(kernel_error)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes held more than the file's blocks: those of their repacked layout, if any.
    pub fn packed_bytes(&self) -> usize {
        self.packed
            .as_ref()
            .map_or(0, |p| p.bytes().saturating_sub(self.bytes))
    }

    /// The weights in the file's layout (for other backends). Repacked weights are unpacked
    /// into a copy the first time, which then stays.
    pub fn weights(&self) -> super::WeightMatrix<'_> {
        match (&self.mm, &self.packed) {
            (Some(QMatMul::QTensor(qt)), _) => super::WeightMatrix::Quantized(qt),
            (Some(QMatMul::Tensor(w) | QMatMul::TensorF16(w)), _) => super::WeightMatrix::Dense(w),
            (None, Some(packed)) => super::WeightMatrix::Quantized(
                self.unpacked
                    .get_or_init(|| Arc::new(file_blocks(packed, self.out_dim, self.in_dim))),
            ),
            (None, None) => unreachable!("a Linear holds its weights one way or the other"),
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out_dim, self.in_dim)
    }
}

/// Token embedding table; quantised tables are dequantised row by row on lookup, never whole
/// (151,936 × 896 in f32 would be 545 MB).
pub enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let ids_t = Tensor::new(ids, &Device::Cpu)?;
        let t = match self {
            Embedding::Quantized(q) => q.embedding(&ids_t)?,
            Embedding::Dense(w) => w.index_select(&ids_t, 0)?,
        };
        Ok(t.flatten_all()?.to_vec1()?)
    }

    /// The table as held (for other backends).
    pub fn weights(&self) -> super::WeightMatrix<'_> {
        match self {
            Embedding::Quantized(q) => super::WeightMatrix::Quantized(q),
            Embedding::Dense(w) => super::WeightMatrix::Dense(w),
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Embedding::Quantized(q) => q.storage_size_in_bytes(),
            Embedding::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
        }
    }

    /// `(vocabulary, hidden)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Embedding::Quantized(q) => q.shape().dims2()?,
            Embedding::Dense(w) => w.dims2()?,
        })
    }
}

/// The backend our kernels run on here (`Portable` means: not faster than candle's own, which
/// then runs). `HLM_KERNELS=candle` in the environment turns our kernels off, to compare;
/// `HLM_KERNELS=avx2` (any [`hlm_kernels::Backend::name`] this CPU supports) picks a backend.
pub fn kernel_backend() -> hlm_kernels::Backend {
    static CHOICE: std::sync::OnceLock<hlm_kernels::Backend> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("HLM_KERNELS").as_deref() {
        Ok("candle") => hlm_kernels::Backend::Portable,
        Ok(name) => hlm_kernels::Backend::by_name(name).unwrap_or_else(hlm_kernels::Backend::best),
        _ => hlm_kernels::Backend::best(),
    })
}

/// Our kernels' name for a GGUF block format, when they cover it.
pub fn kernel_format(dtype: GgmlDType) -> Option<hlm_kernels::Format> {
    use hlm_kernels::Format;
    match dtype {
        GgmlDType::Q8_0 => Some(Format::Q8_0),
        GgmlDType::Q5_0 => Some(Format::Q5_0),
        GgmlDType::Q4_1 => Some(Format::Q4_1),
        GgmlDType::Q4K => Some(Format::Q4K),
        GgmlDType::Q6K => Some(Format::Q6K),
        _ => None,
    }
}

/// candle's CPU worker pool (the threads its own kernels use) as our kernels' [`Parallel`].
///
/// [`Parallel`]: hlm_kernels::Parallel
pub struct CandlePool;

impl hlm_kernels::Parallel for CandlePool {
    fn for_ranges(&self, n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        candle_core::utils::barrier_pool().execute_chunked(n, f)
    }
}

/// The threads our kernels' products run on when the embedder has not chosen others.
static KERNEL_PARALLEL: std::sync::OnceLock<&'static dyn hlm_kernels::Parallel> =
    std::sync::OnceLock::new();

/// Runs our kernels' products on `par` from now on instead of candle's worker pool (the
/// browser's pool of Web Workers). Once per process; returns false if it was already set.
pub fn set_kernel_parallel(par: &'static dyn hlm_kernels::Parallel) -> bool {
    KERNEL_PARALLEL.set(par).is_ok()
}

/// The threads our kernels' products run on ([`set_kernel_parallel`], else candle's pool).
pub fn kernel_parallel() -> &'static dyn hlm_kernels::Parallel {
    KERNEL_PARALLEL.get().copied().unwrap_or(&CandlePool)
}

/// The blocks of `qt` repacked for our kernels' backend, if it has a faster layout for them.
/// `HLM_REPACK=0` in the environment keeps the file's layout, to compare.
fn pack(
    format: hlm_kernels::Format,
    qt: &QTensor,
    in_dim: usize,
    out_dim: usize,
) -> Result<Option<hlm_kernels::PackedWeights>> {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("HLM_REPACK").as_deref() == Ok("0")) {
        return Ok(None);
    }
    let data = qt.data()?;
    let w = hlm_kernels::Weights::new(format, &data, out_dim, in_dim).map_err(kernel_error)?;
    Ok(w.pack(kernel_backend()))
}

/// Repacked weights back in the file's blocks, as candle holds them.
fn file_blocks(packed: &hlm_kernels::PackedWeights, rows: usize, cols: usize) -> QTensor {
    use candle_core::quantized::k_quants::BlockQ4K;
    debug_assert_eq!(packed.weights().format(), hlm_kernels::Format::Q4K);
    let mut bytes = std::io::Cursor::new(packed.unpack());
    let (elems, dims) = (rows * cols, vec![rows, cols]);
    super::loader::read_blocks::<BlockQ4K, _>(&mut bytes, 0, elems, dims)
        .expect("the unpacked blocks are the matrix's")
}

fn kernel_error(e: hlm_kernels::KernelError) -> crate::EngineError {
    crate::EngineError::model(format!("quantised product: {e}"))
}

fn single_row_kernel(dtype: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(
        dtype,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K
    )
}

/// `y = W x` for one row `x`, on the quantised blocks as stored.
fn matvec(qt: &QTensor, x: &[f32], k: usize, n: usize) -> Result<Vec<f32>> {
    fn run<T: k_quants::GgmlType>(data: &[u8], x: &[f32], k: usize, n: usize) -> Result<Vec<f32>> {
        let size = std::mem::size_of::<T>();
        if data.len() != n * k / T::BLCK_SIZE * size
            || !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        {
            return Err(crate::EngineError::model(
                "quantised weight of unexpected size",
            ));
        }
        // SAFETY: `data` is the storage of a `Vec<T>` (candle's CPU QStorage), checked above for
        // size and alignment; the block types are plain `repr(C)` data.
        let blocks =
            unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) };
        let mut y = vec![0f32; n];
        k_quants::matmul((1, k, n), x, blocks, &mut y)?;
        Ok(y)
    }
    let data = qt.data()?;
    use GgmlDType::*;
    match qt.dtype() {
        Q4_0 => run::<k_quants::BlockQ4_0>(&data, x, k, n),
        Q4_1 => run::<k_quants::BlockQ4_1>(&data, x, k, n),
        Q5_0 => run::<k_quants::BlockQ5_0>(&data, x, k, n),
        Q5_1 => run::<k_quants::BlockQ5_1>(&data, x, k, n),
        Q8_0 => run::<k_quants::BlockQ8_0>(&data, x, k, n),
        Q2K => run::<k_quants::BlockQ2K>(&data, x, k, n),
        Q3K => run::<k_quants::BlockQ3K>(&data, x, k, n),
        Q4K => run::<k_quants::BlockQ4K>(&data, x, k, n),
        Q5K => run::<k_quants::BlockQ5K>(&data, x, k, n),
        Q6K => run::<k_quants::BlockQ6K>(&data, x, k, n),
        other => Err(crate::EngineError::model(format!(
            "no single-row kernel for {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device path (every row through `QMatMul` on the target device) computes what the CPU
    /// path does; on this machine the "device" is the CPU, which is what CI can run.
    #[test]
    fn device_path_matches_the_cpu_kernels() {
        let (n, k) = (40, 512);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let qt = Arc::new(QTensor::quantize(&w, GgmlDType::Q4K).unwrap());
        let cpu = Linear::quantized(qt).unwrap();
        let dev = cpu.to_device(&Device::Cpu).unwrap();
        assert!(cpu.blocks.is_some() || cpu.packed.is_some());
        assert!(dev.blocks.is_none() && dev.packed.is_none());
        for m in [1, 3] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
                .collect();
            let a = cpu.forward(&x, m).unwrap();
            let b = dev.forward(&x, m).unwrap();
            let scale = a.iter().fold(0f32, |s, v| s.max(v.abs()));
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() <= 0.02 * scale, "{u} vs {v}");
            }
        }
    }

    /// Weights held repacked still give other backends the file's blocks, byte for byte.
    #[test]
    fn repacked_weights_unpack_to_the_file_blocks() {
        let (n, k) = (16, 512);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let qt = Arc::new(QTensor::quantize(&w, GgmlDType::Q4K).unwrap());
        let file = qt.data().unwrap().to_vec();
        let linear = Linear::quantized(qt).unwrap();
        if linear.packed.is_none() {
            eprintln!("not repacked on this CPU: nothing to compare");
            return;
        }
        let super::super::WeightMatrix::Quantized(back) = linear.weights() else {
            panic!("quantised weights came back dense");
        };
        assert_eq!(back.dtype(), GgmlDType::Q4K);
        assert!(back.data().unwrap().as_ref() == file.as_slice());
    }
}
