//! # hlm-engine: the hybrid engine both sides run
//!
//! The draft side (browser tab or native CLI) and the verifier side (the server) run the same code:
//!
//! ```text
//!  prompt ──► tokenizer ──► DraftModel ──► logits p, attention row
//!                                │
//!                 uncertainty u, importance ──► filter: skip | upload
//!                                │                           │
//!                     (skipped ids ride along)     compressed p-hat
//!                                └──────────► Round ─────────┘
//!                                               │  (VerifierLink: WebSocket or in-process)
//!                                               ▼
//!                     VerifierSession: one batched forward over the round ("catch-up"),
//!                     speculative verification, KV cache rolled back on rejection
//!                                               │
//!                                            Verdict ──► decoding loop rolls back / continues
//! ```
//!
//! * [`model`]: Qwen2 and Llama transformers from GGUF or safetensors, with a truncatable KV cache
//!   and the attention probabilities the importance filter reads.
//! * [`tokenizer`]: a `tokenizers::Tokenizer` built from the GGUF's own metadata.
//! * [`decode`]: **the** decoding loop (draft → filter → upload → verdict), used by the native CLI, the
//!   browser client and the evaluation harness alike.
//! * [`verifier`]: the verifier's per-session state machine (what the server runs per WebSocket).
//! * [`heads`]: the filter heads shipped per model pair, and what mode `auto` becomes.
//! * [`link`]: the transport between the loop and a verifier ([`link::VerifierLink`]), with an
//!   in-process implementation for tests and evaluation.

pub mod chat;
pub mod decode;
pub mod drafter;
pub mod energy;
pub mod error;
#[cfg(feature = "testing")]
pub mod fuzzing;
pub mod heads;
pub mod link;
pub mod model;
pub mod pipeline;
pub mod server_only;
pub mod solo;
pub mod stop;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(not(target_arch = "wasm32"))]
pub mod threads;
pub mod tokenizer;
pub mod verifier;
#[cfg(feature = "ws-client")]
pub mod ws_link;

pub use error::{EngineError, Result};

use candle_core::quantized::gguf_file;
use std::path::Path;

/// Loads a model and its tokenizer from one GGUF file (the tokenizer is built from the file's
/// metadata), or from a safetensors directory holding `tokenizer.json`.
pub fn load_model_and_tokenizer(
    path: &Path,
    opts: &model::LoadOptions,
) -> Result<(model::Model, tokenizers::Tokenizer)> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| EngineError::model(format!("{}: {e}", path.display())))?;
    let mut magic = [0u8; 4];
    let is_gguf = std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"GGUF";
    if is_gguf {
        let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| {
            EngineError::model(format!("{}: not a valid GGUF: {e}", path.display()))
        })?;
        load_gguf(&content, &mut reader, &model_name(path), opts)
    } else {
        let m = model::Model::from_safetensors(path, opts)?;
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            EngineError::Tokenizer(format!("{}/tokenizer.json: {e}", dir.display()))
        })?;
        Ok((m, tok))
    }
}

/// Model and tokenizer from an already parsed GGUF (natively a file, in the browser fetched bytes).
pub fn load_gguf<R: std::io::Read + std::io::Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    name: &str,
    opts: &model::LoadOptions,
) -> Result<(model::Model, tokenizers::Tokenizer)> {
    let tok = tokenizer::tokenizer_from_gguf(content)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let m = model::Model::from_gguf(content, reader, name, opts)?;
    Ok((m, tok))
}

fn model_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}
