//! `hlm-gpu`: the draft model's forward pass on a GPU through `wgpu` — Vulkan / Metal / DX12
//! natively, WebGPU in the browser — with WGSL compute kernels written for this project (candle has
//! no WebGPU backend). candle on the CPU stays the fallback and the reference the kernels are
//! tested against.
//!
//! Data flow:
//! * **Weights** are uploaded once, as the GGUF file stores them: the quantised blocks (Q4_0, Q4_1,
//!   Q5_0, Q8_0, Q4_K, Q6_K) go to storage buffers byte for byte and the matrix-vector kernel
//!   decodes them on the fly; nothing is dequantised to f32 in memory.
//! * **Activations** (the hidden state, q/k/v, the MLP's intermediate) and the **KV cache** live on
//!   the GPU for the whole generation.
//! * **One token** = one command encoder holding every kernel of every layer, one submission
//!   ([`kernels::record`]); the position is the only per-token input besides the token's
//!   embedding row.
//! * **Read back** only what the decoding loop needs: the logits of that position (or, greedy, just
//!   the argmax) and the head-averaged attention row the importance filter reads.
//!
//! [`GpuContext`] opens the device with the adapter's own buffer limits; [`kernels::Kernels`]
//! holds the compiled kernels; [`GpuModel`] runs a Qwen2 / Llama decoder from the engine's
//! loaded [`hlm_engine::model::Model`], one token per submission; [`GpuBackend`] plugs it into the
//! engine's [`hlm_engine::decode::Drafter`] after a start-up self-check against the CPU, and
//! [`choose`] picks between it and the CPU (`auto` / `gpu` / `cpu`).

pub mod backend;
mod context;
mod error;
pub mod kernels;
mod model;

pub use wgpu;

pub use backend::{choose, Choice, GpuBackend, Preference, SelfCheck};
pub use context::{GpuContext, Readback};
pub use error::{GpuError, Result};
pub use kernels::{Dispatch, Kernels, QuantFormat};
pub use model::{Activations, GpuForward, GpuModel, GpuOptions};
