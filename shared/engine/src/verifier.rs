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
//!
//! A server with many sessions answers their waiting messages together ([`answer_batch`]): the
//! rounds among them share one forward pass ([`Model::forward_batch`]), each on its own cache,
//! and each session's verdict is the one it would get alone. A single session's
//! [`VerifierSession::handle`] is the same path with a batch of one.

use crate::model::{BatchItem, ForwardOutput, KvCache, LogitRows, Model};
use hlm_core::{seeded_rng, softmax, verify_greedy, verify_sampled, Outcome, Rng};
use hlm_protocol::{
    decode_client, encode_server, ClientMsg, ErrorCode, GenerateRequest, Generated, GenerationEnd,
    ProtocolError, Round, Sampling, ServerMsg, Verdict, VocabInfo, PROTOCOL_VERSION,
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
    /// Tokens the verifier generated on its own ([`ClientMsg::Generate`]).
    pub generated: u64,
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
    /// A generation of the verifier's own in progress.
    generation: Option<OwnGeneration>,
    pub stats: SessionStats,
}

/// The verifier's own generation in progress ([`ClientMsg::Generate`]).
struct OwnGeneration {
    request: u32,
    /// The last token chosen and sent, not yet in the cache.
    next: u32,
    produced: u32,
    max_tokens: u32,
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
            generation: None,
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

    /// Whether a generation of the verifier's own is in progress: its next token comes from
    /// [`Input::Continue`].
    pub fn generating(&self) -> bool {
        self.generation.is_some()
    }

    /// Decodes one frame, acts on it, and encodes the reply. Never panics on bad input: a protocol
    /// error becomes an `Error` message and a request to close the connection.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Reply {
        let msg = decode_client(frame);
        handle_batch(&mut [self], vec![Input::Message(msg)])
            .pop()
            .unwrap_or_else(|| reply(Err(ProtocolError::Internal("no reply".into()))))
    }

    /// The next token of the session's own generation, encoded (no frame when none is in
    /// progress).
    pub fn handle_continue(&mut self) -> Reply {
        handle_batch(&mut [self], vec![Input::Continue])
            .pop()
            .unwrap_or_else(|| reply(Err(ProtocolError::Internal("no reply".into()))))
    }

    /// Acts on one decoded message; `Ok(None)` means no reply is due.
    pub fn handle(&mut self, msg: ClientMsg) -> Result<Option<ServerMsg>, ProtocolError> {
        answer_batch(&mut [self], vec![Input::Message(Ok(msg))])
            .pop()
            .unwrap_or_else(|| Err(ProtocolError::Internal("no answer".into())))
    }

    /// A message that needs no forward pass (`Hello`, `Reset`), or the checks that open a round:
    /// the round comes back ready for the batch's forward pass.
    fn start(&mut self, input: Input) -> Result<Started, ProtocolError> {
        let msg = match input {
            Input::Continue => return Ok(self.continue_generation()),
            Input::Message(msg) => msg?,
        };
        // Any message ends a generation in progress: its last token opens what comes next.
        if let Some(g) = self.generation.take() {
            self.expected_next = Some(g.next);
        }
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
                Ok(Started::Answered(Some(ServerMsg::Welcome {
                    version: PROTOCOL_VERSION,
                    server: self.server_name.clone(),
                    model: self.model.name().to_string(),
                    vocab: self.vocab.clone(),
                    max_context: self.max_context,
                })))
            }
            ClientMsg::Reset { sampling } => {
                self.require_hello()?;
                self.reset(sampling)?;
                Ok(Started::Answered(None))
            }
            ClientMsg::Round(round) => {
                let sampling = self.require_hello()?;
                Ok(Started::Round(self.prepare_round(round, sampling)?))
            }
            ClientMsg::Generate(req) => {
                self.require_hello()?;
                Ok(Started::Generate(self.prepare_generation(req)?))
            }
        }
    }

    /// Checks a [`ClientMsg::Generate`] as a round is checked: position, expected opening token,
    /// room in the context.
    fn prepare_generation(
        &mut self,
        req: GenerateRequest,
    ) -> Result<GenerationStep, ProtocolError> {
        req.validate(self.vocab.size)?;
        let what = format!("generation {}", req.request);
        self.check_opening(&what, req.base, req.prompt[0], req.prompt.len())?;
        self.expected_next = None;
        self.generation = Some(OwnGeneration {
            request: req.request,
            next: 0,
            produced: 0,
            max_tokens: req.max_tokens,
        });
        Ok(GenerationStep { ids: req.prompt })
    }

    /// The forward pass behind the generation's next token: its last token's (nothing when no
    /// generation is in progress).
    fn continue_generation(&mut self) -> Started {
        match &self.generation {
            Some(g) => Started::Generate(GenerationStep { ids: vec![g.next] }),
            None => Started::Answered(None),
        }
    }

    /// Chooses the generation's next token from the step's logits and says whether it is the
    /// last (end of sequence, `max_tokens`, or no room for its own forward pass).
    fn finish_generation_step(
        &mut self,
        step: GenerationStep,
        out: ForwardOutput,
        started: Instant,
    ) -> Result<Generated, ProtocolError> {
        let sampling = self.require_hello()?;
        let Some(mut g) = self.generation.take() else {
            return Err(ProtocolError::Internal("no generation in progress".into()));
        };
        let logits = out
            .last_logits()
            .ok_or_else(|| ProtocolError::Internal("the generation step has no logits".into()))?;
        let id = crate::solo::choose_token(logits, sampling, &mut self.rng);
        self.stats.forward_passes += 1;
        self.stats.forward_tokens += step.ids.len() as u64;
        self.stats.generated += 1;
        let index = g.produced;
        g.produced += 1;
        let end = if self.model.config().eos_ids.contains(&id) {
            Some(GenerationEnd::EndOfSequence)
        } else if g.produced >= g.max_tokens {
            Some(GenerationEnd::MaxTokens)
        } else if self.cache.len() + 1 > self.max_context as usize {
            Some(GenerationEnd::ContextFull)
        } else {
            None
        };
        self.last_hidden = Some(out.last_hidden);
        let request = g.request;
        if end.is_some() {
            self.expected_next = Some(id);
        } else {
            g.next = id;
            self.generation = Some(g);
        }
        Ok(Generated {
            request,
            index,
            id,
            end,
            forward_tokens: step.ids.len() as u32,
            compute_us: micros_since(started),
        })
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

    /// What a round and a generation request must both fit: they start at the committed
    /// position `base`, open with the token the verifier chose last (a correction, or the last
    /// token of its own generation) when it expects one, and leave their `len` tokens room in the
    /// context. Returns the committed position.
    fn check_opening(
        &self,
        what: &str,
        base: u32,
        first: u32,
        len: usize,
    ) -> Result<usize, ProtocolError> {
        let held = self.cache.len();
        if base as usize != held {
            return Err(ProtocolError::OutOfSync(format!(
                "{what} starts at position {base}, the verifier holds {held}"
            )));
        }
        if let Some(y) = self.expected_next {
            if first != y {
                return Err(ProtocolError::OutOfSync(format!(
                    "{what} must start with the verifier's last token {y}, got {first}"
                )));
            }
        }
        let needed = (held + len) as u32;
        if needed > self.max_context {
            return Err(ProtocolError::ContextFull {
                needed,
                limit: self.max_context,
            });
        }
        Ok(held)
    }

    /// Checks a round against the session (position, expected correction, context, first token)
    /// and lists the rows of the forward pass whose logits verify an uploaded token.
    fn prepare_round(
        &self,
        round: Round,
        sampling: Sampling,
    ) -> Result<PreparedRound, ProtocolError> {
        round.validate(self.vocab.size, &sampling)?;
        let what = format!("round {}", round.round);
        let base = self.check_opening(&what, round.base, round.tokens[0].id, round.tokens.len())?;
        let n = round.tokens.len();
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
        Ok(PreparedRound {
            round,
            sampling,
            base,
            ids,
            rows,
        })
    }

    /// Walks a round after its forward pass: skipped tokens stand, uploaded ones are verified in
    /// order, and the first rejection truncates the cache and names the correction.
    fn finish_round(
        &mut self,
        p: PreparedRound,
        out: ForwardOutput,
        started: Instant,
    ) -> Result<Verdict, ProtocolError> {
        let (round, sampling, base) = (&p.round, p.sampling, p.base);
        let n = round.tokens.len();
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

/// A round that passed its checks, waiting for the forward pass.
struct PreparedRound {
    round: Round,
    sampling: Sampling,
    /// Positions committed before the round.
    base: usize,
    ids: Vec<u32>,
    /// Rows of the pass whose logits verify the token after them.
    rows: Vec<usize>,
}

/// The forward pass behind one token of the verifier's own generation: the prompt for the
/// first, the previous token for the others.
struct GenerationStep {
    ids: Vec<u32>,
}

/// What a session brings to a batch.
pub enum Input {
    /// A message from the client (or why its frame did not decode).
    Message(Result<ClientMsg, ProtocolError>),
    /// The next token of the session's own generation ([`VerifierSession::generating`]).
    Continue,
}

/// Where a message stands after [`VerifierSession::start`].
enum Started {
    /// Done without the model (`Hello`, `Reset`).
    Answered(Option<ServerMsg>),
    /// A round for the batch's forward pass.
    Round(PreparedRound),
    /// A step of the verifier's own generation for the batch's forward pass.
    Generate(GenerationStep),
}

impl Started {
    /// The tokens and logit rows this stage puts in the batch's forward pass, if any.
    fn forward(&self) -> Option<(&[u32], LogitRows)> {
        match self {
            Started::Answered(_) => None,
            Started::Round(p) => Some((&p.ids, LogitRows::Rows(p.rows.clone()))),
            Started::Generate(g) => Some((&g.ids, LogitRows::Last)),
        }
    }
}

/// What each message of a batch comes to.
type Answer = Result<Option<ServerMsg>, ProtocolError>;

/// Answers one decoded message from each of several sessions and encodes the replies (see
/// [`answer_batch`]). Bad input fails only its own session: its reply is an `Error` message and
/// a request to close that connection.
pub fn handle_batch(sessions: &mut [&mut VerifierSession], msgs: Vec<Input>) -> Vec<Reply> {
    answer_batch(sessions, msgs)
        .into_iter()
        .map(reply)
        .collect()
}

/// Answers one message from each of several sessions: the rounds among them go through **one**
/// forward pass ([`Model::forward_batch`]: the weights are read once for every session's new
/// tokens), and each session's verdict is the one it would get alone. A round that fails its
/// checks never enters the pass. Should the batched pass itself fail, each round is run alone so
/// that the error reaches only the session that caused it.
pub fn answer_batch(sessions: &mut [&mut VerifierSession], msgs: Vec<Input>) -> Vec<Answer> {
    let mut stages: Vec<Result<Started, ProtocolError>> = sessions
        .iter_mut()
        .zip(msgs)
        .map(|(s, m)| s.start(m))
        .collect();
    let started = Instant::now();
    let mut outputs = batch_forward(sessions, &stages);
    sessions
        .iter_mut()
        .zip(stages.drain(..))
        .map(|(s, stage)| match stage? {
            Started::Answered(msg) => Ok(msg),
            Started::Round(p) => {
                let out = next_output(&mut outputs)?;
                s.finish_round(p, out, started)
                    .map(|v| Some(ServerMsg::Verdict(v)))
            }
            Started::Generate(g) => {
                let out = next_output(&mut outputs)?;
                s.finish_generation_step(g, out, started)
                    .map(|t| Some(ServerMsg::Generated(t)))
            }
        })
        .collect()
}

fn next_output(
    outputs: &mut impl Iterator<Item = Result<ForwardOutput, ProtocolError>>,
) -> Result<ForwardOutput, ProtocolError> {
    outputs
        .next()
        .unwrap_or_else(|| Err(ProtocolError::Internal("no forward output".into())))
}

/// The forward pass of the prepared rounds and generation steps, in order: together when their sessions share one
/// model and the pass succeeds, else one by one.
fn batch_forward(
    sessions: &mut [&mut VerifierSession],
    stages: &[Result<Started, ProtocolError>],
) -> std::vec::IntoIter<Result<ForwardOutput, ProtocolError>> {
    let mut pending: Vec<(&mut VerifierSession, (&[u32], LogitRows))> = sessions
        .iter_mut()
        .zip(stages)
        .filter_map(|(s, st)| Some((&mut **s, st.as_ref().ok()?.forward()?)))
        .collect();
    let Some(model) = pending.first().map(|(s, _)| s.model.clone()) else {
        return Vec::new().into_iter();
    };
    let internal =
        |e: crate::EngineError| ProtocolError::Internal(format!("verifier forward failed: {e}"));
    if pending.len() > 1 && pending.iter().all(|(s, _)| Arc::ptr_eq(&s.model, &model)) {
        let mut items: Vec<BatchItem<'_>> = pending
            .iter_mut()
            .map(|(s, (ids, rows))| BatchItem {
                cache: &mut s.cache,
                tokens: ids,
                rows: rows.clone(),
            })
            .collect();
        if let Ok(outs) = model.forward_batch(&mut items, 0) {
            return outs.into_iter().map(Ok).collect::<Vec<_>>().into_iter();
        }
    }
    pending
        .into_iter()
        .map(|(s, (ids, rows))| {
            s.model
                .forward(&mut s.cache, ids, &rows, 0)
                .map_err(internal)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// Encodes an answer: a reply frame, or an `Error` message and a close request.
fn reply(answer: Answer) -> Reply {
    match answer {
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

/// Microseconds since `t`, saturating (a round never takes 71 minutes).
fn micros_since(t: Instant) -> u32 {
    u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)
}
