//! **The** decoding loop: draft → filter → upload → verdict. Written once and driven by the native
//! CLI, the browser client and the evaluation harness through [`HybridSession::generate`].
//!
//! Per drafted token `x` at position `t`:
//! 1. the draft model's logits give `p` (greedy: `x = argmax p`; sampling: `x ~ p̂`, the compressed
//!    distribution that would be uploaded, so verification is exact with respect to what is sent);
//! 2. uncertainty `u` by temperature perturbation and, once `x` is fed to the draft model, its
//!    importance from the attention row of its own query;
//! 3. the filter decides skip or upload ([`hlm_core::decide`]); an end-of-sequence token is
//!    always uploaded;
//! 4. tokens gather in a round; when it holds `uploads_per_round` uploads (or `max_round_tokens`
//!    tokens) it goes to the verifier, skipped ids riding along;
//! 5. the verdict keeps a prefix of the round; on a rejection the draft model's KV cache is rolled
//!    back to the rejected position and the verifier's token is fed instead.
//!
//! A token is reported to the caller (as a [`TokenEvent`]) once it is final.

use crate::chat::TextStream;
pub use crate::drafter::{BackendFuture, DraftBackend, DraftStep, Drafter};
use crate::link::VerifierLink;
use crate::pipeline::DepthGauge;
pub use crate::pipeline::Pipeline;
pub use crate::stop::{StopConditions, StopHit, StopMatcher};
use crate::{EngineError, Result};
use hlm_core::head::{FilterHead, TokenFeatures};
use hlm_core::signals::{distribution_signals, TokenClass};
use hlm_core::{
    compress, decide, expected_uncertainty_on, sample_sparse, seeded_rng, softmax,
    temperature_perturbation_on, uncertainty_on, CompressConfig, Decision, FilterKnobs, FilterMode,
    Importance, ImportanceRuleName, Rng, UncertaintyConfig, UncertaintyEstimate,
};
use hlm_protocol::{
    decode_server, encode_client, BlockToken, ClientMsg, DraftDist, Round, Sampling, ServerMsg,
    Verdict, VocabInfo, PROTOCOL_VERSION,
};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use web_time::Instant;

/// Everything that shapes one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// `auto` is settled when the loop starts ([`crate::heads::settle`]).
    pub mode: FilterMode,
    pub knobs: FilterKnobs,
    /// The user set `knobs.uncertainty_threshold`; otherwise mode `learned` (`auto` too, when
    /// it settles there) runs at its head's suggested threshold.
    pub threshold_set: bool,
    pub uncertainty: UncertaintyConfig,
    pub importance_rule: ImportanceRuleName,
    /// The importance row is averaged over this many last layers of the draft model.
    pub attention_layers: usize,
    pub compress: CompressConfig,
    /// Uploaded tokens per round trip. 1 = U-HLM's token-by-token verification; more drafts
    /// further ahead and verifies several uploads in one verifier pass.
    pub uploads_per_round: usize,
    /// A round is sent after this many tokens even without an upload, so the verifier's catch-up
    /// stays bounded.
    pub max_round_tokens: usize,
    /// Seed of the uncertainty draws.
    pub seed: u64,
    /// Where the generation ends early (stop strings, the end of the first code block).
    pub stop: StopConditions,
    /// Mode `learned` (or `auto`): the filter head (`head.json` of the filter study); without
    /// one, the head shipped for the pair ([`crate::heads`]).
    pub head: Option<FilterHead>,
    /// Drafting ahead while a round is in flight ([`crate::pipeline`]).
    pub pipeline: Pipeline,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: Sampling::Greedy,
            mode: FilterMode::default(),
            knobs: FilterKnobs::default(),
            threshold_set: false,
            uncertainty: UncertaintyConfig::default(),
            importance_rule: ImportanceRuleName::default(),
            attention_layers: 4,
            compress: CompressConfig::default(),
            uploads_per_round: 1,
            max_round_tokens: 64,
            seed: 0,
            stop: StopConditions::default(),
            head: None,
            pipeline: Pipeline::default(),
        }
    }
}

/// The knobs a user sets, flat (CLI flags, the browser API's options); every field optional in
/// JSON, whose names are the browser API's (camelCase: `maxTokens`, `filterHead`).
/// [`GenerationOptions::config`] turns them into a [`GenerationConfig`].
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS), ts(optional_fields))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GenerationOptions {
    /// Tokens to generate at most (default 128).
    pub max_tokens: usize,
    /// 0 = greedy (the default); > 0 samples, with compressed distributions uploaded.
    pub temperature: f32,
    /// Seed of sampling and of the uncertainty draws.
    pub seed: u64,
    /// The filter: `auto` (the default: the learned head shipped for this draft and verifier
    /// pair, else U-HLM), `always` = standard HLM, `uncertainty` = U-HLM,
    /// `uncertainty+importance` (the seed's attention rule), `learned` (a fitted head:
    /// `filterHead`, or the pair's), `never` = the draft model alone.
    pub mode: FilterMode,
    /// The upload knob. On `u` (0..1, modes `uncertainty` and `uncertainty+importance`: tokens
    /// with uncertainty above it are candidates for upload; default 0.07), or in mode `learned`
    /// on the head's probability of a rejection (default: the head's suggested threshold).
    /// Higher uploads fewer.
    pub uncertainty_threshold: Option<f32>,
    /// λ: how far above the mean attention a token must be to count as important (default 2).
    pub importance_strictness: f32,
    pub importance_rule: ImportanceRuleName,
    /// How u is computed: `sampled` (U-HLM's K draws) or `expected` (their expected value, at the
    /// same cost, without their noise).
    pub uncertainty: UncertaintyEstimate,
    /// Uploads gathered before a round goes to the verifier (default 1: token-by-token
    /// verification).
    pub uploads_per_round: usize,
    /// Total-variation bound of the compressed distribution uploaded under sampling (default
    /// 0.05).
    pub tv_bound: f32,
    /// Stop strings: the generation ends when its text contains one (cut before it; text that
    /// may begin one is held back until it cannot).
    pub stop: Vec<String>,
    /// End when the first fenced code block closes (the closing fence is kept).
    pub stop_at_code_block_end: bool,
    /// Mode `learned`: the filter head, as its file (`head.json`, written by
    /// `hlm eval --trace`) holds it.
    #[serde(rename = "filterHead")]
    pub head: Option<FilterHead>,
    /// Tokens the draft model may draft ahead while a round awaits its verdict: absent =
    /// adaptive (the default: deeper when the link is slow and drafts usually stand), 0 = off
    /// (send a round, then wait), n = at most n. The text is the same either way.
    pub pipeline_depth: Option<u32>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        let c = GenerationConfig::default();
        Self {
            max_tokens: c.max_tokens,
            temperature: 0.0,
            seed: 0,
            mode: c.mode,
            uncertainty_threshold: None,
            importance_strictness: c.knobs.importance_strictness,
            importance_rule: c.importance_rule,
            uncertainty: c.uncertainty.estimate,
            uploads_per_round: c.uploads_per_round,
            tv_bound: c.compress.tv_bound,
            stop: Vec::new(),
            stop_at_code_block_end: false,
            head: None,
            pipeline_depth: None,
        }
    }
}

impl GenerationOptions {
    pub fn config(&self) -> GenerationConfig {
        let mut cfg = GenerationConfig {
            max_tokens: self.max_tokens,
            sampling: if self.temperature > 0.0 {
                Sampling::Temperature {
                    temperature: self.temperature,
                    seed: self.seed,
                }
            } else {
                Sampling::Greedy
            },
            mode: self.mode,
            knobs: FilterKnobs {
                uncertainty_threshold: self
                    .uncertainty_threshold
                    .unwrap_or(FilterKnobs::default().uncertainty_threshold),
                importance_strictness: self.importance_strictness,
            },
            threshold_set: self.uncertainty_threshold.is_some(),
            importance_rule: self.importance_rule,
            uploads_per_round: self.uploads_per_round,
            seed: self.seed,
            stop: StopConditions {
                strings: self.stop.clone(),
                code_block_end: self.stop_at_code_block_end,
            },
            ..Default::default()
        };
        cfg.compress.tv_bound = self.tv_bound;
        cfg.uncertainty.estimate = self.uncertainty;
        cfg.head = self.head.clone();
        cfg.pipeline = Pipeline::from_depth(self.pipeline_depth);
        cfg
    }
}

/// How a generated token came to be.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// Accepted locally; only its id went to the verifier, later.
    Skipped,
    /// Uploaded and accepted by the verifier.
    UploadedAccepted,
    /// Uploaded, rejected, and replaced by the verifier's token.
    UploadedResampled,
    /// Generated by the verifier alone (the server-only baseline, [`crate::server_only`]).
    ServerGenerated,
}

/// Running totals of a generation.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub tokens: usize,
    pub skipped: usize,
    pub uploaded: usize,
    pub accepted: usize,
    pub resampled: usize,
    /// Drafted tokens thrown away because an earlier upload in their round (or in the round in
    /// flight when they were drafted ahead) was rejected.
    pub discarded: usize,
    /// Tokens drafted while a round was in flight (pipelining), discarded ones included.
    #[serde(default)]
    pub drafted_ahead: usize,
    pub rounds: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    /// Bits of the compressed distributions alone (CU-HLM's payload).
    pub dist_bits: u64,
    pub llm_forward_passes: usize,
    pub llm_forward_tokens: usize,
    /// Microseconds the verifier reported spending on this generation's rounds (its compute
    /// alone, without queue or network): the server's share of the live energy estimate.
    #[serde(default)]
    pub llm_compute_us: u64,
    /// Forward passes of the draft model and the positions they computed (prompt, drafts,
    /// corrections): with the verifier's two counts, what the run's compute is derived from.
    #[serde(default)]
    pub draft_forward_passes: usize,
    #[serde(default)]
    pub draft_forward_tokens: usize,
    /// Uncertainty estimates computed (one per drafted token, discarded drafts included).
    #[serde(default)]
    pub uncertainty_draws: usize,
    /// Sessions re-established after a lost connection.
    pub reconnects: usize,
    /// Committed tokens sent again to re-establish a session.
    pub replayed_tokens: usize,
}

/// One final token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEvent {
    /// Index among the generated tokens.
    pub index: usize,
    pub id: u32,
    /// Text that became final with this token (may be empty mid-character).
    pub text: String,
    pub kind: TokenKind,
    /// The draft's token when the verifier replaced it.
    pub drafted: Option<u32>,
    /// The filter's score: the uncertainty u, or in mode `learned` the head's P(reject).
    pub uncertainty: f32,
    pub importance: Option<Importance>,
    pub totals: Totals,
    /// Seconds since the generation started, and of them spent drafting (model and filter).
    pub wall_time_s: f64,
    pub draft_time_s: f64,
    /// Of `draft_time_s`, the draft model's forward passes (the rest is the loop's own work:
    /// the filter, sampling, the round's bookkeeping).
    #[serde(default)]
    pub draft_forward_s: f64,
    /// Something about the run changed before this token: the draft backend failed and the CPU
    /// took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EngineSummary")
)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The filter that ran (`auto` settled into `learned` or `uncertainty`).
    pub mode: FilterMode,
    pub knobs: FilterKnobs,
    /// Mode `learned`: what its head was fitted on, and its fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional))]
    pub filter_head: Option<String>,
    pub sampling: Sampling,
    pub importance_rule: ImportanceRuleName,
    #[serde(default)]
    pub uncertainty: UncertaintyEstimate,
    pub uploads_per_round: usize,
    #[serde(default)]
    pub pipeline: Pipeline,
    pub prompt_tokens: usize,
    #[serde(flatten)]
    pub totals: Totals,
    pub stop_reason: StopReason,
    pub wall_time_s: f64,
    /// Time spent in the draft model and the filter.
    pub draft_time_s: f64,
    /// Of `draft_time_s`, the draft model's forward passes (the rest is the loop's own work:
    /// the filter's uncertainty and importance, sampling, the round's bookkeeping).
    #[serde(default)]
    pub draft_forward_s: f64,
    /// Time waiting for verdicts (network and verifier).
    pub wait_time_s: f64,
    pub tokens_per_s: f64,
    pub upload_rate: f64,
    pub text: String,
    pub ids: Vec<u32>,
    /// Where the draft model ran at the end ([`Drafter::backend_kind`]: `"cpu"`, `"webgpu"` ...).
    #[serde(default)]
    pub draft_backend: String,
    /// What the run told the user on the way (a failed draft backend and the fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    EndOfSequence,
    MaxTokens,
    Aborted,
    /// The text reached one of the stop strings.
    StopString,
    /// The first fenced code block closed.
    CodeBlockEnd,
}

impl From<StopHit> for StopReason {
    fn from(h: StopHit) -> Self {
        match h {
            StopHit::String => StopReason::StopString,
            StopHit::CodeBlockEnd => StopReason::CodeBlockEnd,
        }
    }
}

/// Vocabulary identity of a tokenizer + model pair: size and a fingerprint of every token string.
pub fn vocab_info(tokenizer: &Tokenizer, cfg: &crate::model::ModelConfig) -> VocabInfo {
    let tokens: Vec<String> = (0..cfg.vocab_size as u32)
        .map(|i| tokenizer.id_to_token(i).unwrap_or_default())
        .collect();
    VocabInfo {
        size: cfg.vocab_size as u32,
        fingerprint: VocabInfo::fingerprint_of(tokens.iter().map(String::as_str)),
        eos_ids: cfg.eos_ids.clone(),
    }
}

/// Per-token facts kept until the token is final.
struct Pending {
    id: u32,
    /// `None` while an uploaded token awaits its verdict.
    kind: Option<TokenKind>,
    /// Sent for verification (as opposed to riding along as an accepted id).
    verify: bool,
    drafted: Option<u32>,
    uncertainty: f32,
    importance: Option<Importance>,
    dist: Option<DraftDist>,
    reported: bool,
}

/// A token just drafted, before the filter's decision.
struct Drafted {
    id: u32,
    /// The compressed distribution it was drawn from (sampling only), uploaded with it.
    dist: Option<DraftDist>,
    /// The filter's score: the sampled uncertainty, or the learned head's P(reject).
    score: f32,
}

impl Pending {
    fn uploaded(&self) -> bool {
        self.verify
    }
}

/// A connection to a verifier after the handshake.
pub struct HybridSession<L: VerifierLink> {
    link: L,
    /// What a reconnection needs to open a new session with the same vocabulary.
    resync: Resync,
    pub server: String,
    pub verifier_model: String,
    pub max_context: u32,
}

/// The handshake, kept to re-establish a session after the connection is lost.
struct Resync {
    hello: Vec<u8>,
    vocab: VocabInfo,
}

/// What the verifier said in its `Welcome`.
struct Welcome {
    server: String,
    model: String,
    max_context: u32,
}

impl Resync {
    /// Sends `Hello`, waits for `Welcome`, and checks that both sides share one vocabulary.
    /// Returns the bytes sent and received with the verifier's answer.
    async fn handshake<L: VerifierLink>(&self, link: &mut L) -> Result<(Welcome, usize, usize)> {
        link.send(self.hello.clone()).await?;
        let reply = link.recv().await?;
        match decode_server(&reply)? {
            ServerMsg::Welcome {
                server,
                model,
                vocab: theirs,
                max_context,
                ..
            } => {
                self.vocab.check_compatible(&theirs)?;
                let w = Welcome {
                    server,
                    model,
                    max_context,
                };
                Ok((w, self.hello.len(), reply.len()))
            }
            ServerMsg::Error { code, message } => Err(EngineError::Remote { code, message }),
            other => Err(EngineError::Link(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }
}

impl<L: VerifierLink> HybridSession<L> {
    /// Sends `Hello`, waits for `Welcome`, and checks that both sides share one vocabulary.
    pub async fn connect(mut link: L, vocab: VocabInfo, client: &str) -> Result<Self> {
        let hello = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: client.to_string(),
            vocab: vocab.clone(),
            sampling: Sampling::Greedy,
        };
        let resync = Resync {
            hello: encode_client(&hello),
            vocab,
        };
        let (w, _, _) = resync.handshake(&mut link).await?;
        Ok(Self {
            link,
            resync,
            server: w.server,
            verifier_model: w.model,
            max_context: w.max_context,
        })
    }

    /// Closes the connection to the verifier.
    pub async fn close(mut self) -> Result<()> {
        self.link.close().await
    }

    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// Generates up to `cfg.max_tokens` tokens after `prompt`. `on_token` sees each final token;
    /// returning `false` stops the generation (stop reason `aborted`).
    ///
    /// If the connection is lost (or the verifier restarts), the link reconnects with its own
    /// backoff ([`VerifierLink::reconnect`]) and the loop re-establishes the session: `Hello`,
    /// `Reset`, then one round that replays every committed token as a skipped id followed by the
    /// round that was in flight. Committed text is never re-drafted, so nothing accepted is lost
    /// or repeated; the replay's bytes and forward pass count in the totals.
    pub async fn generate(
        &mut self,
        drafter: &mut Drafter,
        prompt: &[u32],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Summary> {
        let cfg = crate::heads::settle(cfg, drafter.model().name(), &self.verifier_model)?;
        Generation::new(drafter, prompt, &cfg)?
            .run(&mut self.link, &self.resync, on_token)
            .await
    }
}

/// Reconnections one generation may make before it gives up.
pub const MAX_RECONNECTS: usize = 8;

/// The state of one generation; [`Generation::run`] is the loop.
struct Generation<'a> {
    drafter: &'a mut Drafter,
    cfg: &'a GenerationConfig,
    rule: &'static dyn hlm_core::ImportanceRule,
    /// The draft model's end-of-sequence ids.
    eos: Vec<u32>,
    /// The draft model's logits for the next position.
    logits: Vec<f32>,
    prompt_len: usize,
    /// Committed tokens (prompt and generated) followed by the open round's tokens.
    seq: Vec<u32>,
    /// The open round: tokens since the last verdict, starting at position `round_base`.
    round: Vec<Pending>,
    round_base: usize,
    round_no: u32,
    /// The round sent and not yet answered (kept whole: a reconnection sends it again).
    in_flight: Option<Round>,
    /// Tokens of `round` that are in flight; those after them were drafted ahead.
    sent_len: usize,
    /// When the round in flight was sent.
    sent_at: Instant,
    /// The random streams (draft, signal) as they were when the round in flight was sent: a
    /// rejection puts them back, so drafts thrown away leave no trace.
    rngs_at_send: Option<(Rng, Rng)>,
    /// A reply seen while drafting ahead, not yet taken.
    early_reply: Option<Result<Vec<u8>>>,
    /// How far to draft ahead.
    gauge: DepthGauge,
    /// Set when the link failed; the next wait for a verdict reconnects first.
    link_down: Option<EngineError>,
    /// Generated tokens in `seq` (final or in the open round).
    generated: usize,
    totals: Totals,
    stream: TextStream,
    outbox: Vec<TokenEvent>,
    draft_rng: Rng,
    signal_rng: Rng,
    draft_time: f64,
    /// Of `draft_time`, the draft model's forward passes.
    draft_forward_time: f64,
    wait_time: f64,
    started: Instant,
    /// Every notice of the run, for the summary.
    notices: Vec<String>,
    /// Notices not yet attached to a reported token.
    unreported_notice: Option<String>,
    /// The final text against the stop conditions.
    stop: StopMatcher,
    /// The current step is the generation's last: text held back for stop strings goes out
    /// with its last token.
    finishing: bool,
    /// Each generated position's uncertainty (mode `learned` reads the last few).
    u_history: Vec<f32>,
}

/// The filter's passes over the vocabulary (the uncertainty's normalisers, one per draw) run on
/// the draft model's kernel threads: the same values, sooner.
fn on_kernel_threads(n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    crate::model::kernel_parallel().for_ranges(n, f)
}

/// Mode `learned` needs a head the loop can compute (no attention inputs); other modes ignore it.
fn check_head(cfg: &GenerationConfig) -> Result<()> {
    if cfg.mode != FilterMode::Learned {
        return Ok(());
    }
    let head = cfg.head.as_ref().ok_or_else(|| {
        EngineError::model("mode `learned` needs a filter head (the filter study's head.json)")
    })?;
    head.validate()
        .map_err(|e| EngineError::model(e.to_string()))?;
    match head.inputs.iter().find(|i| i.needs_attention()) {
        Some(i) => Err(EngineError::model(format!(
            "this filter head reads {i:?}, an attention signal; the loop computes heads over the \
             draft's distribution, recent uncertainty, position and token class"
        ))),
        None => Ok(()),
    }
}

impl<'a> Generation<'a> {
    /// The learned head's probability that the verifier rejects `x`, from the same features the
    /// filter study's traces hold ([`hlm_core::head::TokenFeatures`]): `u` is this position's
    /// sampled uncertainty, already in `u_history`.
    fn reject_probability(&self, head: &FilterHead, x: u32, u: f32) -> f32 {
        let logits = &self.logits;
        let p = self.generated;
        let before = &self.u_history[p.saturating_sub(4)..p];
        let recent_u = if before.is_empty() {
            0.0
        } else {
            before.iter().sum::<f32>() / before.len() as f32
        };
        let tok = self.drafter.tokenizer();
        let piece = |id: u32| tok.decode(&[id], false).unwrap_or_default();
        let previous = match self.seq.last() {
            Some(&id) if p > 0 => piece(id),
            _ => String::new(),
        };
        let d = distribution_signals(logits, x);
        let u_cfg = &self.cfg.uncertainty;
        let features = TokenFeatures {
            u,
            u_expected: expected_uncertainty_on(
                logits,
                x,
                u_cfg.theta_max,
                u_cfg.draws,
                &on_kernel_threads,
            ),
            top1: d.top1,
            top2: d.top2,
            entropy: d.entropy,
            recent_u,
            position: p,
            class: TokenClass::of(&piece(x), &previous),
            attention: None,
            received: None,
        };
        head.probability(&features) as f32
    }

    fn new(drafter: &'a mut Drafter, prompt: &[u32], cfg: &'a GenerationConfig) -> Result<Self> {
        if prompt.is_empty() {
            return Err(EngineError::model("empty prompt"));
        }
        cfg.stop.validate().map_err(EngineError::model)?;
        check_head(cfg)?;
        let rule = cfg.importance_rule.rule();
        let sampling_seed = match cfg.sampling {
            Sampling::Temperature { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        let round = prompt
            .iter()
            .map(|&id| Pending {
                id,
                kind: Some(TokenKind::Skipped),
                verify: false,
                drafted: None,
                uncertainty: 0.0,
                importance: None,
                dist: None,
                reported: true,
            })
            .collect();
        let eos = drafter.model().config().eos_ids.clone();
        Ok(Self {
            drafter,
            cfg,
            rule,
            eos,
            logits: Vec::new(),
            prompt_len: prompt.len(),
            seq: prompt.to_vec(),
            round,
            round_base: 0,
            round_no: 0,
            in_flight: None,
            sent_len: 0,
            sent_at: Instant::now(),
            rngs_at_send: None,
            early_reply: None,
            gauge: DepthGauge::new(cfg.pipeline, cfg.max_round_tokens),
            link_down: None,
            generated: 0,
            totals: Totals::default(),
            stream: TextStream::new(),
            outbox: Vec::new(),
            draft_rng: seeded_rng(sampling_seed),
            signal_rng: seeded_rng(cfg.seed),
            draft_time: 0.0,
            draft_forward_time: 0.0,
            wait_time: 0.0,
            started: Instant::now(),
            u_history: Vec::new(),
            notices: Vec::new(),
            unreported_notice: None,
            stop: StopMatcher::new(&cfg.stop),
            finishing: false,
        })
    }

    /// Runs `ids` through the draft model, counting the pass and its positions.
    async fn draft_feed(&mut self, ids: &[u32], attention_layers: usize) -> Result<DraftStep> {
        self.totals.draft_forward_passes += 1;
        self.totals.draft_forward_tokens += ids.len();
        let t = Instant::now();
        let step = self.drafter.feed(ids, attention_layers).await;
        self.draft_forward_time += t.elapsed().as_secs_f64();
        step
    }

    /// After a stop condition: the tokens drafted past the stopping token are never final; they
    /// leave the round, the sequence and the counts (as discarded drafts). Idempotent.
    fn drop_after_stop(&mut self) {
        for p in self.round.iter().filter(|p| !p.reported) {
            if p.uploaded() {
                self.totals.uploaded -= 1;
                if p.kind == Some(TokenKind::UploadedAccepted) {
                    self.totals.accepted -= 1;
                }
            } else if p.kind == Some(TokenKind::UploadedResampled) {
                self.totals.resampled -= 1;
            } else {
                self.totals.skipped -= 1;
            }
            self.totals.discarded += 1;
        }
        self.round.retain(|p| p.reported);
        self.generated = self.totals.tokens;
        self.seq.truncate(self.prompt_len + self.totals.tokens);
    }

    /// The loop: opens the verifier's session and feeds the prompt ([`Self::begin`]), then takes
    /// one [`Self::step`] per generated position until a stop condition or `max_tokens`.
    async fn run<L: VerifierLink>(
        mut self,
        link: &mut L,
        resync: &Resync,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Summary> {
        let start = Instant::now();
        self.begin(link).await?;
        let mut stop = StopReason::MaxTokens;
        while self.generated < self.cfg.max_tokens {
            link.yield_now().await;
            if let Some(reason) = self.step(link, resync, on_token).await? {
                stop = reason;
                break;
            }
        }
        self.drain_in_flight(link).await;
        Ok(self.summary(stop, start.elapsed().as_secs_f64()))
    }

    /// A round still in flight when the generation stops (an abort, or a stop string in text
    /// that was final before the verdict came): its verdict is read, so that the session's next
    /// generation (which opens with `Reset`) starts from a quiet link, and counted (the verifier
    /// did that work), but changes no token.
    async fn drain_in_flight<L: VerifierLink>(&mut self, link: &mut L) {
        if self.in_flight.take().is_none() || self.link_down.is_some() {
            return;
        }
        let reply = match self.early_reply.take() {
            Some(r) => r,
            None => link.recv().await,
        };
        let Ok(frame) = reply else { return };
        self.totals.bytes_down += frame.len();
        if let Ok(ServerMsg::Verdict(v)) = decode_server(&frame) {
            self.count_pass(&v);
        }
    }

    /// Whether the verifier takes part (in mode `never` the draft model works alone).
    fn uses_verifier(&self) -> bool {
        self.cfg.mode != FilterMode::Never
    }

    /// Starts the verifier's session afresh (`Reset`) and feeds the prompt to the draft model.
    /// With pipelining the prompt first goes to the verifier as a round of its own, so that the
    /// two models' prompt passes overlap.
    async fn begin<L: VerifierLink>(&mut self, link: &mut L) -> Result<()> {
        if self.uses_verifier() {
            let reset = self.reset_frame();
            let sent = link.send(reset).await;
            self.note_link(sent)?;
            if self.cfg.pipeline.is_on() {
                self.send_round(link).await?;
            }
        }
        let t = Instant::now();
        self.drafter.clear();
        let prompt = self.seq.clone();
        let (logits, _) = self.draft_feed(&prompt, 0).await?;
        self.logits = logits;
        self.draft_time += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// A `Reset` for this generation's sampling, counted as sent.
    fn reset_frame(&mut self) -> Vec<u8> {
        let reset = encode_client(&ClientMsg::Reset {
            sampling: self.cfg.sampling,
        });
        self.totals.bytes_up += reset.len();
        reset
    }

    /// One generated position: draft a token, let the filter decide, add it to the open round,
    /// send the round when it is due, apply the verdict in flight when the loop may not draft
    /// further ahead ([`Self::settle_due`]), then report what became final. Returns why the
    /// generation stops, if it stops here.
    async fn step<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Option<StopReason>> {
        let t = Instant::now();
        if self.in_flight.is_some() {
            self.totals.drafted_ahead += 1;
        }
        let drafted = self.draft_token()?;
        let x = drafted.id;
        let is_eos = self.eos.contains(&x);
        let last = is_eos || self.generated + 1 == self.cfg.max_tokens;
        // When the filter needs importance, x is fed before deciding; otherwise it is fed
        // while the round is in flight, so the draft step overlaps the verifier's work.
        let feed_first = self.cfg.mode == FilterMode::UncertaintyImportance;
        let importance = if feed_first {
            self.feed_drafted(x).await?
        } else {
            None
        };
        let upload = self.decide_upload(drafted.score, importance.as_ref(), is_eos);
        self.push_drafted(drafted, upload, importance);
        if self.in_flight.is_none() && self.round_due(last) {
            self.send_round(link).await?;
        }
        if !feed_first && !last {
            // Reported with the token, not used by these modes' decisions.
            let importance = self.feed_drafted(x).await?;
            if let Some(p) = self.round.last_mut() {
                p.importance = importance;
            }
        }
        let spent = t.elapsed().as_secs_f64();
        self.draft_time += spent;
        self.gauge.drafted(spent);
        let ended = self.settle_due(link, resync, last).await?;
        self.finishing = ended;
        self.report_final();
        Ok(self.stop_after(ended, on_token))
    }

    /// Applies the verdict in flight while the loop may not draft further ahead
    /// ([`Self::must_wait`]), and sends the round drafted meanwhile once it is due. Returns
    /// whether the generation has ended: `last` (the token just drafted was its last) and
    /// nothing rejected, or a correction that ends it.
    async fn settle_due<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
        last: bool,
    ) -> Result<bool> {
        while self.in_flight.is_some() && self.stop.hit().is_none() && self.must_wait(link, last) {
            if let Some(y) = self.settle_round(link, resync).await? {
                return Ok(self.eos.contains(&y) || self.generated >= self.cfg.max_tokens);
            }
            if self.stop.hit().is_none() && self.round_due(last) {
                self.send_round(link).await?;
            }
        }
        Ok(last)
    }

    /// Whether the loop must wait for the verdict in flight instead of drafting another token
    /// ahead: pipelining is off or at its depth, the tokens drafted ahead make a round that is
    /// due (it is sent once the verdict is in), the generation's `last` token is drafted, or
    /// the verdict has already arrived.
    fn must_wait<L: VerifierLink>(&mut self, link: &mut L, last: bool) -> bool {
        let ahead = self.round.len() - self.sent_len;
        if last || ahead >= self.gauge.depth() || self.round_due(false) {
            return true;
        }
        if self.early_reply.is_none() {
            self.early_reply = link.try_recv();
        }
        self.early_reply.is_some()
    }

    /// Drafts the next token from the current logits (greedy: their argmax; sampling: a draw
    /// from the compressed distribution that would be uploaded, so verification is exact with
    /// respect to what is sent) and scores it for the filter.
    fn draft_token(&mut self) -> Result<Drafted> {
        let (id, dist) = match self.cfg.sampling {
            Sampling::Greedy => (hlm_core::argmax(&self.logits), None),
            Sampling::Temperature { temperature, .. } => {
                let p = softmax(&self.logits, temperature);
                let d = compress(&p, &self.cfg.compress);
                let p_hat = d.reconstruct()?;
                (sample_sparse(&p_hat, &mut self.draft_rng), Some(d))
            }
        };
        let score = self.filter_score(id);
        Ok(Drafted { id, dist, score })
    }

    /// The score of `x` the filter compares with its threshold and the events report: its
    /// sampled uncertainty, or in mode `learned` the head's P(reject). Records the sampled
    /// uncertainty in `u_history`. (Importance comes later, once `x` has been fed.)
    fn filter_score(&mut self, x: u32) -> f32 {
        let cfg = self.cfg;
        // A head reads U-HLM's sampled u (as its traces held it), whatever `uncertainty` says.
        let (logits, rng) = (&self.logits, &mut self.signal_rng);
        let u = if cfg.mode == FilterMode::Learned {
            temperature_perturbation_on(logits, x, &cfg.uncertainty, rng, &on_kernel_threads)
        } else {
            uncertainty_on(logits, x, &cfg.uncertainty, rng, &on_kernel_threads)
        };
        self.totals.uncertainty_draws += 1;
        self.u_history.truncate(self.generated);
        self.u_history.push(u);
        match (cfg.mode, &cfg.head) {
            (FilterMode::Learned, Some(head)) => {
                self.totals.uncertainty_draws += 1;
                self.reject_probability(head, x, u)
            }
            _ => u,
        }
    }

    /// Feeds the drafted `x` to the draft model: the logits move on to the next position, and
    /// `x`'s importance comes from the attention row of its own query (when there is one).
    async fn feed_drafted(&mut self, x: u32) -> Result<Option<Importance>> {
        let cfg = self.cfg;
        let (next, row) = self.draft_feed(&[x], cfg.attention_layers).await?;
        self.logits = next;
        Ok(row.map(|r| self.rule.assess(&r, cfg.knobs.importance_strictness)))
    }

    /// The filter's decision for a token with `score` (an end of sequence is always uploaded);
    /// nothing is uploaded without a verifier.
    fn decide_upload(&self, score: f32, importance: Option<&Importance>, is_eos: bool) -> bool {
        let cfg = self.cfg;
        self.uses_verifier()
            && decide(cfg.mode, &cfg.knobs, score, importance, is_eos) == Decision::Upload
    }

    /// Appends the drafted token to the sequence and the open round, counted as uploaded (its
    /// distribution goes with it) or skipped (final at once).
    fn push_drafted(&mut self, d: Drafted, upload: bool, importance: Option<Importance>) {
        self.seq.push(d.id);
        self.round.push(Pending {
            id: d.id,
            kind: (!upload).then_some(TokenKind::Skipped),
            verify: upload,
            drafted: None,
            uncertainty: d.score,
            importance,
            dist: if upload { d.dist } else { None },
            reported: false,
        });
        self.generated += 1;
        if upload {
            self.totals.uploaded += 1;
        } else {
            self.totals.skipped += 1;
        }
    }

    /// Whether the open round goes to the verifier now: it holds `uploads_per_round` uploads or
    /// `max_round_tokens` tokens, or the generation's `last` token is in and an upload waits.
    /// While a round is in flight, the same for the tokens drafted after it.
    fn round_due(&self, last: bool) -> bool {
        let cfg = self.cfg;
        let open = &self.round[self.sent_len..];
        let uploads = open.iter().filter(|p| p.uploaded()).count();
        self.uses_verifier()
            && (uploads >= cfg.uploads_per_round.max(1)
                || open.len() >= cfg.max_round_tokens.max(1)
                || (last && uploads > 0))
    }

    /// Waits for the verdict on the round just sent and applies it; on a rejection the draft
    /// model, rolled back, is fed the verifier's token instead. Returns that token.
    async fn settle_round<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
    ) -> Result<Option<u32>> {
        let t = Instant::now();
        let correction = self.receive_verdict(link, resync).await?;
        self.wait_time += t.elapsed().as_secs_f64();
        self.gauge
            .verdict(self.sent_at.elapsed().as_secs_f64(), correction.is_none());
        if let Some(y) = correction {
            let t = Instant::now();
            let (next, _) = self.draft_feed(&[y], 0).await?;
            self.logits = next;
            self.draft_time += t.elapsed().as_secs_f64();
        }
        Ok(correction)
    }

    /// Hands the reported tokens to `on_token`, then checks the stop conditions in order: the
    /// caller's abort, a stop string or token (what was drafted past it is dropped), the end of
    /// the generation (`ended`: an end of sequence or `max_tokens`).
    fn stop_after(
        &mut self,
        ended: bool,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Option<StopReason> {
        if !self.deliver(on_token) {
            return Some(StopReason::Aborted);
        }
        if let Some(hit) = self.stop.hit() {
            self.drop_after_stop();
            return Some(hit.into());
        }
        if !ended {
            return None;
        }
        if self.seq.last().is_some_and(|id| self.eos.contains(id)) {
            Some(StopReason::EndOfSequence)
        } else {
            Some(StopReason::MaxTokens)
        }
    }

    /// What the generation did, once it has stopped for `stop` after `wall` seconds.
    fn summary(self, stop: StopReason, wall: f64) -> Summary {
        let cfg = self.cfg;
        let ids = self.seq[self.prompt_len..].to_vec();
        Summary {
            mode: cfg.mode,
            knobs: cfg.knobs,
            filter_head: cfg.head.as_ref().map(|h| h.describe()),
            sampling: cfg.sampling,
            importance_rule: cfg.importance_rule,
            uncertainty: cfg.uncertainty.estimate,
            uploads_per_round: cfg.uploads_per_round,
            pipeline: cfg.pipeline,
            prompt_tokens: self.prompt_len,
            stop_reason: stop,
            wall_time_s: wall,
            draft_time_s: self.draft_time,
            draft_forward_s: self.draft_forward_time,
            wait_time_s: self.wait_time,
            tokens_per_s: self.totals.tokens as f64 / wall.max(1e-9),
            upload_rate: self.totals.uploaded as f64 / (self.totals.tokens.max(1)) as f64,
            text: self
                .stop
                .cut(&self.stream.text(self.drafter.tokenizer()))
                .to_string(),
            ids,
            totals: self.totals,
            draft_backend: self.drafter.backend_kind().to_string(),
            notices: self.notices,
        }
    }

    /// Queues an event for every token of the open round that is final and not yet reported,
    /// in order, up to the first upload still awaiting its verdict.
    fn report_final(&mut self) {
        // A notice rides on the next token reported, which may come in a later call.
        for n in self.drafter.take_notices() {
            self.notices.push(n.clone());
            self.unreported_notice = Some(match self.unreported_notice.take() {
                Some(before) => format!("{before}; {n}"),
                None => n,
            });
        }
        let mut i = 0;
        while i < self.round.len() && self.stop.hit().is_none() {
            let Some(kind) = self.round[i].kind else {
                break;
            };
            if !self.round[i].reported {
                self.round[i].reported = true;
                let p = &self.round[i];
                let (id, drafted, uncertainty, importance) =
                    (p.id, p.drafted, p.uncertainty, p.importance);
                let piece = self.stream.push(self.drafter.tokenizer(), id);
                let text = self.stop.push(&piece);
                self.totals.tokens += 1;
                self.outbox.push(TokenEvent {
                    index: self.totals.tokens - 1,
                    id,
                    text,
                    kind,
                    drafted,
                    uncertainty,
                    importance,
                    totals: self.totals.clone(),
                    wall_time_s: self.started.elapsed().as_secs_f64(),
                    draft_time_s: self.draft_time,
                    draft_forward_s: self.draft_forward_time,
                    notice: self.unreported_notice.take(),
                });
            }
            i += 1;
        }
        if self.finishing {
            let held = self.stop.flush();
            if let Some(last) = self.outbox.last_mut() {
                last.text += &held;
            }
        }
    }

    fn deliver(&mut self, on_token: &mut dyn FnMut(&TokenEvent) -> bool) -> bool {
        let mut go_on = true;
        for ev in self.outbox.drain(..) {
            go_on &= on_token(&ev);
        }
        go_on
    }

    /// Sends the open round (its tokens stay open until the verdict), noting what a rejection
    /// would put back.
    async fn send_round<L: VerifierLink>(&mut self, link: &mut L) -> Result<()> {
        self.sent_len = self.round.len();
        self.sent_at = Instant::now();
        self.rngs_at_send = Some((self.draft_rng.clone(), self.signal_rng.clone()));
        let tokens: Vec<BlockToken> = self
            .round
            .iter_mut()
            .map(|p| BlockToken {
                id: p.id,
                verify: p.uploaded(),
                dist: p.dist.take(),
            })
            .collect();
        self.totals.dist_bits += tokens
            .iter()
            .filter_map(|t| t.dist.as_ref().map(|d| d.wire_bits()))
            .sum::<u64>();
        let round = Round {
            round: self.round_no,
            base: self.round_base as u32,
            tokens,
        };
        let frame = encode_client(&ClientMsg::Round(round.clone()));
        self.in_flight = Some(round);
        self.totals.bytes_up += frame.len();
        if self.link_down.is_some() {
            return Ok(()); // the wait for the verdict reconnects and replays this round
        }
        let sent = link.send(frame).await;
        self.note_link(sent)
    }

    /// A transient link failure is remembered (the next wait for a verdict recovers from it);
    /// anything else is returned.
    fn note_link(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Err(e) if e.is_transient() => {
                self.link_down.get_or_insert(e);
                Ok(())
            }
            other => other,
        }
    }

    /// The reply to the round in flight, and how many replayed tokens precede that round in the
    /// verdict's count. Reconnects (up to [`MAX_RECONNECTS`] times) when the link is down.
    async fn await_reply<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
    ) -> Result<(ServerMsg, usize, usize)> {
        if self.link_down.is_none() {
            let reply = match self.early_reply.take() {
                Some(r) => r,
                None => link.recv().await,
            };
            match reply.and_then(Self::decoded) {
                Ok((msg, bytes)) => return Ok((msg, bytes, 0)),
                Err(e) if e.is_transient() => self.link_down = Some(e),
                Err(e) => return Err(e),
            }
        }
        self.early_reply = None;
        loop {
            let cause = self
                .link_down
                .take()
                .unwrap_or_else(|| EngineError::Link("connection lost".into()));
            if self.totals.reconnects >= MAX_RECONNECTS {
                return Err(EngineError::Link(format!(
                    "gave up after {MAX_RECONNECTS} reconnections; last failure: {cause}"
                )));
            }
            link.reconnect()
                .await
                .map_err(|e| EngineError::Link(format!("{cause}; reconnecting failed: {e}")))?;
            self.totals.reconnects += 1;
            match self.replay(link, resync).await {
                Ok(reply) => return Ok(reply),
                Err(e) if e.is_transient() => self.link_down = Some(e),
                Err(e) => return Err(e),
            }
        }
    }

    /// Decodes a reply once, with its size; an `Error` a new session could get past (overloaded,
    /// idle, internal) becomes a transient error, any other message is returned as is.
    fn decoded(reply: Vec<u8>) -> Result<(ServerMsg, usize)> {
        match decode_server(&reply)? {
            ServerMsg::Error { code, message } if EngineError::transient_code(code) => {
                Err(EngineError::Remote { code, message })
            }
            msg => Ok((msg, reply.len())),
        }
    }

    /// On a fresh connection: handshake, `Reset`, and one round holding every committed token
    /// (as skipped ids) followed by the round in flight.
    async fn replay<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
    ) -> Result<(ServerMsg, usize, usize)> {
        let (_, up, down) = resync.handshake(link).await?;
        self.totals.bytes_up += up;
        self.totals.bytes_down += down;
        let reset = self.reset_frame();
        link.send(reset).await?;
        let committed = &self.seq[..self.round_base];
        let mut tokens: Vec<BlockToken> = committed
            .iter()
            .map(|&id| BlockToken {
                id,
                verify: false,
                dist: None,
            })
            .collect();
        let round_no = self.round_no;
        if let Some(r) = &self.in_flight {
            tokens.extend(r.tokens.iter().cloned());
        }
        let frame = encode_client(&ClientMsg::Round(Round {
            round: round_no,
            base: 0,
            tokens,
        }));
        self.totals.bytes_up += frame.len();
        self.totals.replayed_tokens += committed.len();
        link.send(frame).await?;
        let (msg, bytes) = Self::decoded(link.recv().await?)?;
        Ok((msg, bytes, committed.len()))
    }

    /// Waits for the verdict on the round in flight, applies it, and returns the verifier's
    /// correction if any.
    async fn receive_verdict<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
    ) -> Result<Option<u32>> {
        let verdict = self.take_verdict(link, resync).await?;
        self.check_verdict(&verdict)?;
        let sent = std::mem::take(&mut self.sent_len);
        let rngs = self.rngs_at_send.take();
        self.count_verdict(&verdict);
        self.report_final();
        if self.stop.hit().is_some() {
            // The text ended within this round: nothing after the stop counts, not even a
            // rejection (the verifier's correction would come after the end).
            self.drop_after_stop();
            return Ok(None);
        }
        let Some(y) = verdict.correction else {
            // Tokens drafted ahead (if any) make the open round now.
            self.round_base += sent;
            self.round.drain(..sent);
            return Ok(None);
        };
        if let Some((draft, signal)) = rngs {
            (self.draft_rng, self.signal_rng) = (draft, signal);
        }
        self.roll_back(verdict.accepted as usize, y);
        Ok(Some(y))
    }

    /// The reply to the round in flight, as a verdict on that round alone: a replayed prefix
    /// (verified along with it after a reconnection) is taken off its count. An `Error` or any
    /// other message fails the generation.
    async fn take_verdict<L: VerifierLink>(
        &mut self,
        link: &mut L,
        resync: &Resync,
    ) -> Result<Verdict> {
        let (reply, bytes, replayed) = self.await_reply(link, resync).await?;
        self.in_flight = None;
        self.totals.bytes_down += bytes;
        match reply {
            ServerMsg::Verdict(mut v) => {
                if (v.accepted as usize) < replayed || v.forward_tokens as usize <= replayed {
                    return Err(EngineError::Link(format!(
                        "verdict {v:?} rejects part of the {replayed} replayed tokens"
                    )));
                }
                v.accepted -= replayed as u32;
                Ok(v)
            }
            ServerMsg::Error { code, message } => Err(EngineError::Remote { code, message }),
            other => Err(EngineError::Link(format!(
                "expected a verdict, got {other:?}"
            ))),
        }
    }

    /// A verdict must answer the open round: its number, and either all of its tokens accepted
    /// or a prefix followed by a correction of an uploaded token, with an id in the vocabulary.
    fn check_verdict(&self, verdict: &Verdict) -> Result<()> {
        let n = self.sent_len;
        let a = verdict.accepted as usize;
        let consistent = verdict.round == self.round_no
            && match verdict.correction {
                None => a == n,
                Some(y) => {
                    a < n
                        && self.round[a].uploaded()
                        && (y as usize) < self.drafter.model().config().vocab_size
                }
            };
        if consistent {
            Ok(())
        } else {
            Err(EngineError::Link(format!(
                "verdict {verdict:?} does not fit round {} of {n} tokens",
                self.round_no
            )))
        }
    }

    /// Counts the verifier's round (its forward pass and compute time) and marks the uploads
    /// in the accepted prefix as accepted: they are final now.
    fn count_verdict(&mut self, verdict: &Verdict) {
        self.round_no += 1;
        self.count_pass(verdict);
        for p in &mut self.round[..verdict.accepted as usize] {
            if p.kind.is_none() {
                p.kind = Some(TokenKind::UploadedAccepted);
                self.totals.accepted += 1;
            }
        }
    }

    /// The verifier's work behind a verdict: a round, one forward pass over its positions.
    fn count_pass(&mut self, verdict: &Verdict) {
        self.totals.rounds += 1;
        self.totals.llm_forward_passes += 1;
        self.totals.llm_forward_tokens += verdict.forward_tokens as usize;
        self.totals.llm_compute_us += u64::from(verdict.compute_us);
    }

    /// A rejection at position `a` of the open round: the tokens before it stand; the rejected
    /// one and all after it (those drafted ahead too) leave the sequence, the draft model's KV
    /// cache and the counts (those after it as discarded drafts). The verifier's `y` is final
    /// and opens the next round (the verifier expects it there).
    fn roll_back(&mut self, a: usize, y: u32) {
        let rejected = &self.round[a];
        let (drafted, uncertainty, importance) =
            (rejected.id, rejected.uncertainty, rejected.importance);
        let dropped: Vec<Pending> = self.round.drain(a..).collect();
        self.totals.discarded += dropped.len() - 1;
        for p in &dropped[1..] {
            if p.uploaded() {
                self.totals.uploaded -= 1;
            } else {
                self.totals.skipped -= 1;
            }
        }
        self.totals.resampled += 1;
        self.generated -= dropped.len();
        self.round_base += a;
        self.seq.truncate(self.round_base);
        self.drafter.truncate(self.round_base);
        self.round.clear();
        self.seq.push(y);
        self.generated += 1;
        self.round.push(Pending {
            id: y,
            kind: Some(TokenKind::UploadedResampled),
            verify: false,
            drafted: Some(drafted),
            uncertainty,
            importance,
            dist: None,
            reported: false,
        });
    }
}
