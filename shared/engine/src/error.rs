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

    /// A lost connection (or a verifier that asks to come back later), after which a new session
    /// with the same verifier can continue the work: the decoding loop reconnects and replays.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Link(_) => true,
            Self::Remote { code, .. } => Self::transient_code(*code),
            _ => false,
        }
    }

    /// The verifier's errors that a new session can get past: overloaded, idle, internal.
    pub fn transient_code(code: hlm_protocol::ErrorCode) -> bool {
        use hlm_protocol::ErrorCode;
        matches!(
            code,
            ErrorCode::Overloaded | ErrorCode::Idle | ErrorCode::Internal
        )
    }
}
