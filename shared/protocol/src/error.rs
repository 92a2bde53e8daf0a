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

/// The WebSocket close codes a connection ends with: RFC 6455's where one fits, application
/// codes (4000-4999) for the protocol's own refusals.
pub mod close {
    /// The client is done (RFC 6455 1000).
    pub const NORMAL: u16 = 1000;
    /// The server shuts down (1001).
    pub const GOING_AWAY: u16 = 1001;
    /// A malformed or out-of-order message (1002).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame: the protocol is binary (1003).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message whose content is invalid: a token or a distribution (1007).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message over [`crate::MAX_MESSAGE_BYTES`] (1009).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server failed (1011).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// No free session: come back later (1013).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const UNSUPPORTED_VERSION: u16 = 4001;
    pub const VOCAB_MISMATCH: u16 = 4002;
    pub const CONTEXT_FULL: u16 = 4003;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN_ORIGIN: u16 = 4403;
    pub const IDLE: u16 = 4408;
}

impl ErrorCode {
    /// The WebSocket close code that ends a connection for this error ([`close`]).
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::Malformed | ErrorCode::OutOfSync | ErrorCode::NotReady => {
                close::PROTOCOL_ERROR
            }
            ErrorCode::UnsupportedVersion => close::UNSUPPORTED_VERSION,
            ErrorCode::VocabMismatch => close::VOCAB_MISMATCH,
            ErrorCode::ContextFull => close::CONTEXT_FULL,
            ErrorCode::Unauthorized => close::UNAUTHORIZED,
            ErrorCode::ForbiddenOrigin => close::FORBIDDEN_ORIGIN,
            ErrorCode::TokenOutOfRange | ErrorCode::BadDistribution => close::INVALID_PAYLOAD,
            ErrorCode::TooLarge => close::MESSAGE_TOO_BIG,
            ErrorCode::Overloaded => close::TRY_AGAIN_LATER,
            ErrorCode::Idle => close::IDLE,
            ErrorCode::Internal => close::INTERNAL_ERROR,
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
