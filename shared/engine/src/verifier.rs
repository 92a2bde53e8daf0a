//! The verifier's side of one session: what the server runs for each WebSocket connection.
//!
//! State: the verifier model's KV cache over the committed sequence, the final hidden state of
//! its last position (to verify a round whose first token is uploaded without another forward),
//! the session's sampling rule and random stream.
//!
//! A [`Round`] brings the tokens the client produced since the last verdict. The session runs
//! **one** forward pass over all of them ("catch-up": skipped tokens are appended to the context
//! in the same pass that scores the uploaded ones), then walks the round in order: skipped tokens
//! stand; an uploaded token `x` at index `i` is verified against the verifier's distribution at
//! that position (`q` from row `i-1` of the pass, or from the kept hidden state when `i = 0`).
//! At the first rejection the cache is truncated to just before `x` and the verdict names the
//! replacement, which must open the next round.

use crate::model::{KvCache, LogitRows, Model};
use hlm_core::{seeded_rng, softmax, verify_greedy, verify_sampled, Outcome, Rng};
use hlm_protocol::{
    decode_client, encode_server, ClientMsg, ErrorCode, ProtocolError, Round, Sampling, ServerMsg,
    Verdict, VocabInfo, PROTOCOL_VERSION,
};
use std::sync::Arc;
use web_time::Instant;

/// Running counters of one session (for logs and metrics).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionStats {
    pub rounds: u64,
    pub forward_passes: u64,
    pub forward_tokens: u64,
    pub verified: u64,
    pub rejected: u64,
}

pub struct VerifierSession {
    model: Arc<Model>,
    vocab: VocabInfo,
    server_name: String,
    cache: KvCache,
    last_hidden: Option<Vec<f32>>,
    expected_next: Option<u32>,
    sampling: Option<Sampling>,
    rng: Rng,
    max_context: u32,
    pub stats: SessionStats,
}

/// A reply to send and whether the connection must then close (after a protocol error).
pub struct Reply {
    pub frame: Option<Vec<u8>>,
    pub close: Option<(ErrorCode, String)>,
}

impl VerifierSession {
    pub fn new(model: Arc<Model>, vocab: VocabInfo, server_name: &str, max_context: u32) -> Self {
        let max_context = max_context.min(model.config().max_context as u32);
        let mut cache = model.new_cache();
        cache.set_limit(max_context as usize);
        Self {
            model,
            vocab,
            server_name: server_name.to_string(),
            cache,
            last_hidden: None,
            expected_next: None,
            sampling: None,
            rng: seeded_rng(0),
            max_context,
            stats: SessionStats::default(),
        }
    }

    /// Positions committed in the verifier's cache.
    pub fn committed(&self) -> usize {
        self.cache.len()
    }

    /// Bytes held by this session's KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Bytes reserved by this session's KV cache: at most `max_context` positions' worth.
    pub fn cache_reserved_bytes(&self) -> usize {
        self.cache.reserved_bytes()
    }

    /// Decodes one frame, acts on it, and encodes the reply. Never panics on bad input: a protocol
    /// error becomes an `Error` message and a request to close the connection.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Reply {
        let result = decode_client(frame).and_then(|msg| self.handle(msg));
        match result {
            Ok(Some(msg)) => Reply {
                frame: Some(encode_server(&msg)),
                close: None,
            },
            Ok(None) => Reply {
                frame: None,
                close: None,
            },
            Err(e) => {
                let code = e.code();
                let message = e.to_string();
                Reply {
                    frame: Some(encode_server(&ServerMsg::Error {
                        code,
                        message: message.clone(),
                    })),
                    close: Some((code, message)),
                }
            }
        }
    }

    /// Acts on one decoded message; `Ok(None)` means no reply is due.
    pub fn handle(&mut self, msg: ClientMsg) -> Result<Option<ServerMsg>, ProtocolError> {
        match msg {
            ClientMsg::Hello {
                version,
                vocab,
                sampling,
                ..
            } => {
                if version != PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedVersion {
                        got: version,
                        supported: PROTOCOL_VERSION,
                    });
                }
                vocab.check_compatible(&self.vocab)?;
                self.reset(sampling)?;
                Ok(Some(ServerMsg::Welcome {
                    version: PROTOCOL_VERSION,
                    server: self.server_name.clone(),
                    model: self.model.name().to_string(),
                    vocab: self.vocab.clone(),
                    max_context: self.max_context,
                }))
            }
            ClientMsg::Reset { sampling } => {
                self.require_hello()?;
                self.reset(sampling)?;
                Ok(None)
            }
            ClientMsg::Round(round) => {
                let sampling = self.require_hello()?;
                let verdict = self.verify_round(&round, sampling)?;
                Ok(Some(ServerMsg::Verdict(verdict)))
            }
        }
    }

    fn require_hello(&self) -> Result<Sampling, ProtocolError> {
        self.sampling
            .ok_or_else(|| ProtocolError::OutOfSync("the first message must be Hello".into()))
    }

    fn reset(&mut self, sampling: Sampling) -> Result<(), ProtocolError> {
        if let Sampling::Temperature { temperature, seed } = sampling {
            if !(temperature.is_finite() && temperature > 0.0 && temperature <= 100.0) {
                return Err(ProtocolError::Malformed(format!(
                    "temperature must be in (0, 100], got {temperature}"
                )));
            }
            self.rng = seeded_rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        }
        self.sampling = Some(sampling);
        self.cache.clear();
        self.last_hidden = None;
        self.expected_next = None;
        Ok(())
    }

    fn verify_round(
        &mut self,
        round: &Round,
        sampling: Sampling,
    ) -> Result<Verdict, ProtocolError> {
        round.validate(self.vocab.size, &sampling)?;
        let base = self.cache.len();
        if round.base as usize != base {
            return Err(ProtocolError::OutOfSync(format!(
                "round {} starts at position {}, the verifier holds {base}",
                round.round, round.base
            )));
        }
        if let Some(y) = self.expected_next {
            if round.tokens[0].id != y {
                return Err(ProtocolError::OutOfSync(format!(
                    "round {} must start with the correction {y}, got {}",
                    round.round, round.tokens[0].id
                )));
            }
        }
        let n = round.tokens.len();
        let needed = (base + n) as u32;
        if needed > self.max_context {
            return Err(ProtocolError::ContextFull {
                needed,
                limit: self.max_context,
            });
        }
        if round.tokens[0].verify && self.last_hidden.is_none() {
            return Err(ProtocolError::OutOfSync(
                "the first token of a sequence cannot be verified: send the prompt first".into(),
            ));
        }
        // Rows of this pass whose logits verify the next token.
        let rows: Vec<usize> = (1..n)
            .filter(|&i| round.tokens[i].verify)
            .map(|i| i - 1)
            .collect();
        let ids: Vec<u32> = round.tokens.iter().map(|t| t.id).collect();
        let started = Instant::now();
        let out = self
            .model
            .forward(&mut self.cache, &ids, &LogitRows::Rows(rows), 0)
            .map_err(|e| ProtocolError::Internal(format!("verifier forward failed: {e}")))?;
        self.stats.rounds += 1;
        self.stats.forward_passes += 1;
        self.stats.forward_tokens += n as u64;
        let mut row_logits = out.logits.into_iter().peekable();
        let mut verified = 0u32;
        for (i, t) in round.tokens.iter().enumerate() {
            if !t.verify {
                continue;
            }
            let q_logits = if i == 0 {
                let h = self.last_hidden.as_deref().unwrap_or_default();
                self.model
                    .logits_from_hidden(h)
                    .map_err(|e| ProtocolError::Internal(format!("verifier head failed: {e}")))?
            } else {
                match row_logits.next() {
                    Some((r, l)) if r == i - 1 => l,
                    _ => return Err(ProtocolError::Internal("logit rows out of order".into())),
                }
            };
            verified += 1;
            let outcome = match (&sampling, &t.dist) {
                (Sampling::Greedy, _) => verify_greedy(&q_logits, t.id),
                (Sampling::Temperature { temperature, .. }, Some(dist)) => {
                    let p_hat = dist.reconstruct()?;
                    let q = softmax(&q_logits, *temperature);
                    verify_sampled(&q, t.id, &p_hat, &mut self.rng)
                }
                (Sampling::Temperature { .. }, None) => {
                    return Err(ProtocolError::BadDistribution(
                        "uploaded token without its draft distribution".into(),
                    ))
                }
            };
            if let Outcome::Resampled(y) = outcome {
                self.stats.verified += verified as u64;
                self.stats.rejected += 1;
                self.cache.truncate(base + i);
                self.last_hidden = None;
                self.expected_next = Some(y);
                return Ok(Verdict {
                    round: round.round,
                    accepted: i as u32,
                    correction: Some(y),
                    verified,
                    forward_tokens: n as u32,
                    compute_us: micros_since(started),
                });
            }
        }
        self.stats.verified += verified as u64;
        self.last_hidden = Some(out.last_hidden);
        self.expected_next = None;
        Ok(Verdict {
            round: round.round,
            accepted: n as u32,
            correction: None,
            verified,
            forward_tokens: n as u32,
            compute_us: micros_since(started),
        })
    }
}

/// Microseconds since `t`, saturating (a round never takes 71 minutes).
fn micros_since(t: Instant) -> u32 {
    u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)
}
