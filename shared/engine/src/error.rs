//! The engine's error type.

/// Everything that can go wrong inside the engine, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model: {0}")]
    Model(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("protocol: {0}")]
    Protocol(#[from] hlm_protocol::ProtocolError),
    #[error("verifier said {code:?}: {message}")]
    Remote {
        code: hlm_protocol::ErrorCode,
        message: String,
    },
    #[error("link to the verifier: {0}")]
    Link(String),
    #[error("generation aborted")]
    Aborted,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn model(msg: impl Into<String>) -> Self {
        Self::Model(msg.into())
    }
}
