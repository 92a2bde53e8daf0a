//! # hlm-protocol: the wire between a hybrid client and its verifier
//!
//! A client (draft model + token filter) and a verifier (large model) exchange binary WebSocket
//! frames. Each frame is the protocol version (`u16`, little-endian) followed by the
//! [postcard](https://docs.rs/postcard) encoding of one message:
//!
//! ```text
//! client                                   verifier
//!   Hello {version, vocab, sampling}  ──►
//!                                     ◄──  Welcome {model, vocab, max_context}   (or Error + close)
//!   Round {base, tokens: [id, verify?, p̂?]…} ──►   one batched forward, verification
//!                                     ◄──  Verdict {accepted, correction?}
//!   Reset {sampling}                  ──►   (new generation, no reply)
//!   Generate {base, prompt, max_tokens} ──►  the verifier alone: prompt forward, then one
//!                                     ◄──  Generated {index, id, end?}      per token, streamed
//! ```
//!
//! Skipped tokens ride in a round as bare ids; uploaded ones carry the draft distribution `p̂`
//! compressed as in CU-HLM ([`QuantizedDist`]) or exact ([`DraftDist::Exact`]). Every decoding and
//! validation path returns a [`ProtocolError`] (never panics), which maps to an [`ErrorCode`] and a
//! WebSocket close code.

mod codec;
mod dist;
mod error;
mod messages;

pub use codec::{decode_client, decode_server, encode_client, encode_server};
pub use dist::{DraftDist, QuantizedDist, SparseDist};
pub use error::{close, ErrorCode, ProtocolError};
pub use messages::{
    BlockToken, ClientMsg, GenerateRequest, Generated, GenerationEnd, Round, Sampling, ServerMsg,
    Verdict, VocabInfo,
};

/// Version spoken by this build; a frame with another version is refused.
pub const PROTOCOL_VERSION: u16 = 2;

/// Largest frame either side accepts (a round of 64 tokens with exact distributions fits easily).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
