//! Weight matrices (quantised or dense) behind one type, and the token embedding.

use crate::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::sync::Arc;

/// `y = x Wᵀ` for `x` of `m` rows: candle's `QMatMul` over a GGUF block format, or a dense `f32`
/// matrix (safetensors).
pub struct Linear {
    mm: QMatMul,
    in_dim: usize,
    out_dim: usize,
    bytes: usize,
}

impl Linear {
    pub fn quantized(qt: Arc<QTensor>) -> Result<Self> {
        let (out_dim, in_dim) = qt.shape().dims2()?;
        let bytes = qt.storage_size_in_bytes();
        Ok(Self {
            mm: QMatMul::from_arc(qt)?,
            in_dim,
            out_dim,
            bytes,
        })
    }

    pub fn dense(w: Tensor) -> Result<Self> {
        let (out_dim, in_dim) = w.dims2()?;
        Ok(Self {
            bytes: w.elem_count() * w.dtype().size_in_bytes(),
            mm: QMatMul::Tensor(w),
            in_dim,
            out_dim,
        })
    }

    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let t = Tensor::from_slice(x, (m, self.in_dim), &Device::Cpu)?;
        let y = self.mm.forward(&t)?;
        debug_assert_eq!(y.elem_count(), m * self.out_dim);
        Ok(y.flatten_all()?.to_vec1()?)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
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

    pub fn bytes(&self) -> usize {
        match self {
            Embedding::Quantized(q) => q.storage_size_in_bytes(),
            Embedding::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
        }
    }
}
