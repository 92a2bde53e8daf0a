//! The server-only baseline over the same link as the hybrid loop: the client sends its prompt
//! in a `Generate` and the verifier streams back every token of its own generation
//! ([`hlm_protocol::ClientMsg::Generate`]). What a user compares the hybrid with: asking the
//! server alone, through the same server, socket and network.
//!
//! Stop strings and the caller's abort are checked here, as tokens arrive; a stop ends the
//! server's generation with a `Reset`, whose arrival the server checks between tokens.

use crate::chat::TextStream;
use crate::decode::{HybridSession, StopReason, Summary, TokenEvent, TokenKind, Totals};
use crate::link::VerifierLink;
use crate::pipeline::Pipeline;
use crate::stop::StopMatcher;
use crate::{EngineError, Result};
use hlm_protocol::{
    decode_server, encode_client, ClientMsg, GenerateRequest, Generated, GenerationEnd, ServerMsg,
};
use std::sync::atomic::{AtomicU32, Ordering};
use tokenizers::Tokenizer;
use web_time::Instant;

/// Request numbers, so that tokens of a generation stopped early are told from the next one's.
static NEXT_REQUEST: AtomicU32 = AtomicU32::new(1);

/// A generation on the server, as its tokens arrive.
struct Stream<'t> {
    tokenizer: &'t Tokenizer,
    text: TextStream,
    stop: StopMatcher,
    ids: Vec<u32>,
    totals: Totals,
    started: Instant,
}

impl Stream<'_> {
    /// Takes one token in; returns its event and whether the server said it was the last.
    fn push(&mut self, g: &Generated, frame_bytes: usize) -> TokenEvent {
        self.ids.push(g.id);
        let t = &mut self.totals;
        t.tokens += 1;
        t.bytes_down += frame_bytes;
        t.llm_forward_passes += 1;
        t.llm_forward_tokens += g.forward_tokens as usize;
        t.llm_compute_us += g.compute_us as u64;
        let piece = self.text.push(self.tokenizer, g.id);
        let mut text = self.stop.push(&piece);
        if g.end.is_some() && self.stop.hit().is_none() {
            text += &self.stop.flush();
        }
        TokenEvent {
            index: self.ids.len() - 1,
            id: g.id,
            text,
            kind: TokenKind::ServerGenerated,
            drafted: None,
            uncertainty: 0.0,
            importance: None,
            totals: self.totals.clone(),
            wall_time_s: self.started.elapsed().as_secs_f64(),
            draft_time_s: 0.0,
            draft_forward_s: 0.0,
            notice: None,
        }
    }
}

impl<L: VerifierLink> HybridSession<L> {
    /// The verifier alone: up to `cfg.max_tokens` tokens after `prompt`, chosen by the server
    /// under `cfg.sampling` and streamed back one frame each. `on_token` sees every token;
    /// returning `false` stops the generation (stop reason `aborted`), as do `cfg.stop`'s
    /// conditions. `tokenizer` (the verifier's vocabulary, which the handshake checked the
    /// client shares) turns ids into text.
    ///
    /// The summary's counts are the server's: one forward pass per token, the prompt's
    /// positions in the first; nothing is drafted. A lost connection is an error here (the
    /// hybrid loop's replay does not apply: nothing is committed on the client's side).
    pub async fn generate_on_server(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        cfg: &crate::decode::GenerationConfig,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Summary> {
        if prompt.is_empty() || cfg.max_tokens == 0 {
            return Err(EngineError::model(
                "a server generation needs a prompt and max_tokens of at least 1",
            ));
        }
        let started = Instant::now();
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let mut s = Stream {
            tokenizer,
            text: TextStream::new(),
            stop: StopMatcher::new(&cfg.stop),
            ids: Vec::with_capacity(cfg.max_tokens),
            totals: Totals::default(),
            started,
        };
        // A fresh context under this generation's sampling rule, then the request.
        let reset = encode_client(&ClientMsg::Reset {
            sampling: cfg.sampling,
        });
        let generate = encode_client(&ClientMsg::Generate(GenerateRequest {
            request,
            base: 0,
            prompt: prompt.to_vec(),
            max_tokens: u32::try_from(cfg.max_tokens).unwrap_or(u32::MAX),
        }));
        s.totals.bytes_up += reset.len() + generate.len();
        s.totals.rounds = 1;
        let link = self.link_mut();
        link.send(reset).await?;
        link.send(generate).await?;
        let (stop, server_done) = receive(link, request, &mut s, on_token).await?;
        if !server_done {
            // Stopped here first: end the server's generation (its tokens still on the way are
            // told apart by their request number).
            let reset = encode_client(&ClientMsg::Reset {
                sampling: cfg.sampling,
            });
            s.totals.bytes_up += reset.len();
            self.link_mut().send(reset).await?;
        }
        let wall = started.elapsed().as_secs_f64();
        let text = s.stop.cut(&s.text.text(tokenizer)).to_string();
        Ok(Summary {
            mode: cfg.mode,
            knobs: cfg.knobs,
            filter_head: None,
            sampling: cfg.sampling,
            importance_rule: cfg.importance_rule,
            uncertainty: cfg.uncertainty.estimate,
            uploads_per_round: cfg.uploads_per_round,
            pipeline: Pipeline::Off,
            prompt_tokens: prompt.len(),
            stop_reason: stop,
            wall_time_s: wall,
            draft_time_s: 0.0,
            draft_forward_s: 0.0,
            wait_time_s: wall,
            tokens_per_s: s.totals.tokens as f64 / wall.max(1e-9),
            upload_rate: 0.0,
            text,
            ids: s.ids,
            totals: s.totals,
            draft_backend: "none (server only)".into(),
            notices: Vec::new(),
        })
    }
}

/// Takes the request's tokens as they arrive until the server's last one or a stop here.
/// Returns why it stopped and whether the server had finished.
async fn receive<L: VerifierLink>(
    link: &mut L,
    request: u32,
    s: &mut Stream<'_>,
    on_token: &mut dyn FnMut(&TokenEvent) -> bool,
) -> Result<(StopReason, bool)> {
    loop {
        let frame = link.recv().await?;
        let g = match decode_server(&frame)? {
            ServerMsg::Generated(g) if g.request == request => g,
            // A token of an earlier request, stopped before it ended.
            ServerMsg::Generated(_) => continue,
            ServerMsg::Error { code, message } => {
                return Err(EngineError::Remote { code, message })
            }
            other => {
                return Err(EngineError::Link(format!(
                    "expected a generated token, got {other:?}"
                )))
            }
        };
        let event = s.push(&g, frame.len());
        if !on_token(&event) {
            return Ok((StopReason::Aborted, g.end.is_some()));
        }
        if let Some(hit) = s.stop.hit() {
            return Ok((hit.into(), g.end.is_some()));
        }
        match g.end {
            None => {}
            Some(GenerationEnd::EndOfSequence) => return Ok((StopReason::EndOfSequence, true)),
            Some(GenerationEnd::MaxTokens | GenerationEnd::ContextFull) => {
                return Ok((StopReason::MaxTokens, true))
            }
        }
    }
}
