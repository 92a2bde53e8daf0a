//! Protocol errors and their wire codes.

use serde::{Deserialize, Serialize};

/// What went wrong, as both sides name it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    Malformed,
    UnsupportedVersion,
    VocabMismatch,
    TokenOutOfRange,
    BadDistribution,
    TooLarge,
    OutOfSync,
    ContextFull,
    NotReady,
    Unauthorized,
    ForbiddenOrigin,
    Overloaded,
    Idle,
    Internal,
}

impl ErrorCode {
    /// The WebSocket close code that ends a connection for this error (RFC 6455 codes where one
    /// fits, 4000-4999 application codes otherwise).
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::Malformed | ErrorCode::OutOfSync | ErrorCode::NotReady => 1002,
            ErrorCode::UnsupportedVersion => 4001,
            ErrorCode::VocabMismatch => 4002,
            ErrorCode::ContextFull => 4003,
            ErrorCode::Unauthorized => 4401,
            ErrorCode::ForbiddenOrigin => 4403,
            ErrorCode::TokenOutOfRange | ErrorCode::BadDistribution => 1007,
            ErrorCode::TooLarge => 1009,
            ErrorCode::Overloaded => 1013,
            ErrorCode::Idle => 4408,
            ErrorCode::Internal => 1011,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {got} (this side speaks {supported})")]
    UnsupportedVersion { got: u16, supported: u16 },
    #[error("model mismatch: the two models do not share one vocabulary (client {client}, server {server})")]
    VocabMismatch { client: String, server: String },
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { id: u32, vocab_size: u32 },
    #[error("bad draft distribution: {0}")]
    BadDistribution(String),
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("out of sync: {0}")]
    OutOfSync(String),
    #[error("context full: {needed} positions needed, the verifier allows {limit}")]
    ContextFull { needed: u32, limit: u32 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProtocolError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Malformed(_) => ErrorCode::Malformed,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::VocabMismatch { .. } => ErrorCode::VocabMismatch,
            ProtocolError::TokenOutOfRange { .. } => ErrorCode::TokenOutOfRange,
            ProtocolError::BadDistribution(_) => ErrorCode::BadDistribution,
            ProtocolError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::OutOfSync(_) => ErrorCode::OutOfSync,
            ProtocolError::ContextFull { .. } => ErrorCode::ContextFull,
            ProtocolError::Internal(_) => ErrorCode::Internal,
        }
    }
}
