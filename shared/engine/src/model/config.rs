//! Model hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use serde::Serialize;

/// The families the engine runs. They differ in biases on q/k/v (Qwen2) and in how GGUF stores the
/// rotary dimensions (see [`RopeStyle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    Qwen2,
    Llama,
}

/// How rotary position embedding pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    /// Pairs `(i, i + d/2)` ("NeoX", Hugging Face's `rotate_half`): Qwen2, and Llama from safetensors.
    Halves,
    /// Pairs `(2i, 2i + 1)`: Llama converted to GGUF (llama.cpp permutes q/k weights to this layout).
    Interleaved,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    /// Longest sequence (prompt + generated) the cache accepts.
    pub max_context: usize,
    pub bos_id: Option<u32>,
    /// Tokens that end a generation (e.g. `<|im_end|>` and `<|endoftext|>` for Qwen).
    pub eos_ids: Vec<u32>,
}

impl ModelConfig {
    /// Rejects hyper-parameters the forward pass cannot run with (a corrupt or hostile file must
    /// give an error, not a division by zero).
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("invalid model configuration: {what}"));
        if self.vocab_size == 0 || self.hidden == 0 || self.layers == 0 || self.ffn == 0 {
            return bad("zero-sized dimension");
        }
        if self.heads == 0 || self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return bad(&format!(
                "{} heads over {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(&format!("head dimension {}", self.head_dim));
        }
        if !(self.rms_eps.is_finite() && self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("non-finite epsilon or rope base");
        }
        if self.max_context == 0 {
            return bad("zero context length");
        }
        Ok(())
    }

    /// Floats per position in one layer's K (or V) cache.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}
