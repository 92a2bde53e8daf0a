// Generated from the Rust types that cross the wasm boundary (web-client/src/api.rs and
// the types it refers to): do not edit. Regenerate with
//   HLM_WRITE_TYPES=1 cargo test --release -p hlm-web-client --test typescript

/**
 * Where the draft model should run. `auto`: WebGPU when the browser has a hardware adapter that
 * passes a start-up self-check against the WASM path, else WASM SIMD. `webgpu`: WebGPU on any
 * adapter that passes the self-check (a software one too), else WASM SIMD with the reason in
 * `backend_note`. `wasm`: WASM SIMD.
 */
export type Backend = "auto" | "webgpu" | "wasm";

/**
 * Where the draft model runs.
 */
export type DraftBackend = "webgpu" | "wasm-simd";

export type EnergyConstants = { device: EnergyDevice, radio: EnergyRadio, link: EnergyLink, server: EnergyServer, };

export type EnergyDevice = { compute_power_w: number, idle_power_w: number, };

export type EnergyLink = { bandwidth_hz: number, snr_db: number, rtt_s: number, };

export type EnergyRadio = { tx_power_w: number, rx_power_w: number, };

export type EnergyServer = { preset: EnergyServerKind, cpu: EnergyServerPreset, gpu: EnergyServerPreset, };

/**
 * Which kind of machine the verifier's energy is charged for.
 */
export type EnergyServerKind = "cpu" | "gpu";

/**
 * A verifier machine: its power while computing, and how much faster than the CPU this run's
 * costs were measured on it computes the same forward passes.
 */
export type EnergyServerPreset = { power_w: number, speedup: number, };

export type EngineSummary = {
/**
 * The filter that ran (`auto` settled into `learned` or `uncertainty`).
 */
mode: FilterMode, knobs: FilterKnobs,
/**
 * Mode `learned`: what its head was fitted on, and its fingerprint.
 */
filter_head?: string, sampling: Sampling, importance_rule: ImportanceRuleName, uncertainty: UncertaintyEstimate, uploads_per_round: number, pipeline: Pipeline, prompt_tokens: number, stop_reason: StopReason, wall_time_s: number,
/**
 * Time spent in the draft model and the filter.
 */
draft_time_s: number,
/**
 * Of `draft_time_s`, the draft model's forward passes (the rest is the loop's own work:
 * the filter's uncertainty and importance, sampling, the round's bookkeeping).
 */
draft_forward_s: number,
/**
 * Time waiting for verdicts (network and verifier).
 */
wait_time_s: number, tokens_per_s: number, upload_rate: number, text: string, ids: Array<number>,
/**
 * Where the draft model ran at the end ([`Drafter::backend_kind`]: `"cpu"`, `"webgpu"` ...).
 */
draft_backend: string,
/**
 * What the run told the user on the way (a failed draft backend and the fallback).
 */
notices?: Array<string>, tokens: number, skipped: number, uploaded: number, accepted: number, resampled: number,
/**
 * Drafted tokens thrown away because an earlier upload in their round (or in the round in
 * flight when they were drafted ahead) was rejected.
 */
discarded: number,
/**
 * Tokens drafted while a round was in flight (pipelining), discarded ones included.
 */
drafted_ahead: number, rounds: number, bytes_up: number, bytes_down: number,
/**
 * Bits of the compressed distributions alone (CU-HLM's payload).
 */
dist_bits: number, llm_forward_passes: number, llm_forward_tokens: number,
/**
 * Microseconds the verifier reported spending on this generation's rounds (its compute
 * alone, without queue or network): the server's share of the live energy estimate.
 */
llm_compute_us: number,
/**
 * Forward passes of the draft model and the positions they computed (prompt, drafts,
 * corrections): with the verifier's two counts, what the run's compute is derived from.
 */
draft_forward_passes: number, draft_forward_tokens: number,
/**
 * Uncertainty estimates computed (one per drafted token, discarded drafts included).
 */
uncertainty_draws: number,
/**
 * Sessions re-established after a lost connection.
 */
reconnects: number,
/**
 * Committed tokens sent again to re-establish a session.
 */
replayed_tokens: number, };

/**
 * What kind of failure an error reports: the `code` of the package's `HybridError` (and of the
 * `Error`s the wasm `Engine` rejects with). `worker-failed` and `closed` come from the package's
 * own JavaScript; the rest from the engine.
 */
export type ErrorCode = "unreachable" | "wrong-token" | "model-mismatch" | "overloaded" | "origin-not-allowed" | "load-failed" | "worker-failed" | "busy" | "not-connected" | "closed" | "bad-option" | "error";

/**
 * The filter a generation runs with, once settled: what a page shows before it generates.
 */
export type FilterChoice = {
/**
 * Never `auto`.
 */
mode: FilterMode,
/**
 * The upload threshold: on `u` (0..1), or in mode `learned` on the head's `P(reject)`.
 */
uncertainty_threshold: number,
/**
 * Mode `learned`: what its head was fitted on, and its fingerprint.
 */
head: string | null, };

/**
 * See the module documentation.
 */
export type FilterHead = { version: number,
/**
 * What it was fitted on (models, split, tokens), for the reader.
 */
fitted_on: string, inputs: Array<HeadInput>, mean: Array<number>, scale: Array<number>, weights: Array<number>, bias: number,
/**
 * The threshold on `P(reject)` at which it caught as many rejections as U-HLM (`u > 0.07`)
 * on the split it was fitted on: a starting point for the upload knob.
 */
suggested_threshold?: number | null, };

/**
 * The two knobs.
 */
export type FilterKnobs = {
/**
 * `u_th`: upload only when the uncertainty exceeds it (U-HLM's risk-averse value ≈ 0.07);
 * in mode `learned`, when the head's probability of a rejection exceeds it.
 */
uncertainty_threshold: number,
/**
 * λ of the adaptive importance threshold: higher marks fewer tokens important.
 */
importance_strictness: number, };

export type FilterMode = "auto" | "always" | "uncertainty" | "uncertainty+importance" | "learned" | "never";

/**
 * The knobs a user sets, flat (CLI flags, the browser API's options); every field optional in
 * JSON, whose names are the browser API's (camelCase: `maxTokens`, `filterHead`).
 * [`GenerationOptions::config`] turns them into a [`GenerationConfig`].
 */
export type GenerationOptions = {
/**
 * Tokens to generate at most (default 128).
 */
maxTokens: number,
/**
 * 0 = greedy (the default); > 0 samples, with compressed distributions uploaded.
 */
temperature: number,
/**
 * Seed of sampling and of the uncertainty draws.
 */
seed: number,
/**
 * The filter: `auto` (the default: the learned head shipped for this draft and verifier
 * pair, else U-HLM), `always` = standard HLM, `uncertainty` = U-HLM,
 * `uncertainty+importance` (the seed's attention rule), `learned` (a fitted head:
 * `filterHead`, or the pair's), `never` = the draft model alone.
 */
mode: FilterMode,
/**
 * The upload knob. On `u` (0..1, modes `uncertainty` and `uncertainty+importance`: tokens
 * with uncertainty above it are candidates for upload; default 0.07), or in mode `learned`
 * on the head's probability of a rejection (default: the head's suggested threshold).
 * Higher uploads fewer.
 */
uncertaintyThreshold?: number,
/**
 * λ: how far above the mean attention a token must be to count as important (default 2).
 */
importanceStrictness: number, importanceRule: ImportanceRuleName,
/**
 * How u is computed: `sampled` (U-HLM's K draws) or `expected` (their expected value, at the
 * same cost, without their noise).
 */
uncertainty: UncertaintyEstimate,
/**
 * Uploads gathered before a round goes to the verifier (default 1: token-by-token
 * verification).
 */
uploadsPerRound: number,
/**
 * Total-variation bound of the compressed distribution uploaded under sampling (default
 * 0.05).
 */
tvBound: number,
/**
 * Stop strings: the generation ends when its text contains one (cut before it; text that
 * may begin one is held back until it cannot).
 */
stop: Array<string>,
/**
 * End when the first fenced code block closes (the closing fence is kept).
 */
stopAtCodeBlockEnd: boolean,
/**
 * Mode `learned`: the filter head, as its file (`head.json`, written by
 * `hlm eval --trace`) holds it.
 */
filterHead?: FilterHead,
/**
 * Tokens the draft model may draft ahead while a round awaits its verdict: absent =
 * adaptive (the default: deeper when the link is slow and drafts usually stand), 0 = off
 * (send a round, then wait), n = at most n. The text is the same either way.
 */
pipelineDepth?: number, };

/**
 * A signal a head may read (see [`TokenFeatures`]).
 */
export type HeadInput = "u" | "u-expected" | "one-minus-top1" | "entropy" | "neg-margin" | "recent-u" | "position" | "self-weight" | "importance-z" | "sink" | "attention-entropy" | "received" | { "class": TokenClass };

export type Importance = { score: number, threshold: number, important: boolean, };

/**
 * The importance rules by name: the one place their names are written.
 */
export type ImportanceRuleName = "sink-zscore" | "median-mad" | "fixed-uniform";

/**
 * The module's linear memory (bytes) at each stage of loading a model.
 */
export type LoadMemory = { at_start: number, after_metadata: number, after_tokenizer: number, after_model: number, };

/**
 * Model information reported by the engine.
 */
export type ModelInfo = { name: string, vocab_size: number, layers: number, weight_bytes: number,
/**
 * Where the draft model runs.
 */
backend: DraftBackend,
/**
 * The adapter (WebGPU) or "WebAssembly SIMD128 (hlm-kernels products, candle for the rest)".
 */
backend_description: string,
/**
 * The self-check's figures on WebGPU, or why WebGPU is not used.
 */
backend_note: string,
/**
 * What was asked for (absent until a backend was chosen).
 */
backend_preference: Backend | null,
/**
 * The module's linear memory in bytes now (it only grows).
 */
wasm_memory_bytes: number,
/**
 * Threads the draft model's products run on in WebAssembly: 1, or where the page is
 * cross-origin isolated (WebAssembly threads), the engine's worker and its helpers.
 */
threads: number,
/**
 * The energy estimate's shipped constants (what `energyConstants` overrides).
 */
energy_constants: EnergyConstants,
/**
 * Linear memory at each loading stage: where the bytes went.
 */
load_memory: LoadMemory, };

/**
 * How far the loop drafts ahead while a round is in flight.
 */
export type Pipeline = "off" | "adaptive" | { "depth": number };

/**
 * How tokens are chosen; verification follows the same rule.
 */
export type Sampling = "Greedy" | { "Temperature": { temperature: number, seed: number, } };

export type StopReason = "end-of-sequence" | "max-tokens" | "aborted" | "stop-string" | "code-block-end";

/**
 * How a generation went: its totals, text and timings.
 */
export type Summary = { stopReason: StopReason, wallTimeS: number, draftTimeS: number,
/**
 * Of `draftTimeS`, the draft model's forward passes (the rest is the loop's own work: the
 * filter, sampling).
 */
draftForwardS: number,
/**
 * Seconds waiting for verdicts (network and verifier).
 */
waitTimeS: number, tokensPerS: number,
/**
 * Draft tokens per second: tokens / draftTimeS.
 */
draftTokensPerS: number | null, text: string, ids: Array<number>,
/**
 * The filter that ran (`auto` settled into `learned` or `uncertainty`).
 */
mode: FilterMode,
/**
 * Mode `learned`: what its head was fitted on, and its fingerprint.
 */
filterHead: string | null, promptTokens: number,
/**
 * Where the draft model ran at the end.
 */
draftBackend: DraftBackend,
/**
 * What the run told the user (WebGPU failed, WASM SIMD took over).
 */
notices: Array<string>,
/**
 * The engine's summary as the native client reports it (snake_case).
 */
raw: EngineSummary, tokens: number, skipped: number, uploaded: number, accepted: number, resampled: number,
/**
 * Drafted tokens thrown away after a rejection earlier in their round.
 */
discarded: number, rounds: number, bytesUp: number, bytesDown: number,
/**
 * Bits of the compressed distributions alone.
 */
distBits: number,
/**
 * Verifier forward passes.
 */
llmPasses: number, llmForwardTokens: number,
/**
 * Seconds the verifier's model spent on these rounds, as it reported them (no queue, no
 * network).
 */
llmComputeS: number, reconnects: number, replayedTokens: number,
/**
 * uploaded / tokens
 */
uploadRate: number,
/**
 * Estimated device energy (J): drafting + radio + idle while waiting for verdicts. An
 * analytic estimate from measured drafting and waiting times, bytes and rounds (see
 * `EnergyConstants`).
 */
energyJ: number, draftEnergyJ: number, radioEnergyJ: number, idleEnergyJ: number,
/**
 * The verifier's share: its power × (measured wait − one modelled round trip per round).
 */
serverEnergyJ: number,
/**
 * Device + server.
 */
systemEnergyJ: number,
/**
 * The same device estimate had every token been uploaded (standard HLM).
 */
standardHlmEnergyJ: number, standardHlmSystemEnergyJ: number, standardHlmBytesUp: number, standardHlmBytesDown: number, standardHlmLlmPasses: number, };

/**
 * What kind of text a token is (from its decoded piece and the one before it).
 */
export type TokenClass = "whitespace" | "punctuation" | "number" | "keyword" | "word" | "continuation" | "other";

/**
 * One token, once it is final.
 */
export type TokenEvent = {
/**
 * Index among the generated tokens.
 */
index: number,
/**
 * Token id.
 */
id: number,
/**
 * Text that became final with this token (may be empty mid-character).
 */
text: string, kind: TokenKind,
/**
 * The draft's token when the verifier replaced it.
 */
drafted: number | null,
/**
 * The filter's score: u in 0..1, or in mode `learned` the head's P(reject).
 */
uncertainty: number, importance: Importance | null, totals: Totals,
/**
 * Seconds spent drafting so far.
 */
draftTimeS: number,
/**
 * Of `draftTimeS`, the draft model's forward passes (the rest is the loop's own work: the
 * filter, sampling).
 */
draftForwardS: number,
/**
 * Seconds since the generation started.
 */
wallTimeS: number,
/**
 * Set when WebGPU failed before this token and the draft model moved to WASM SIMD.
 */
notice: string | null, };

/**
 * How a generated token came to be.
 */
export type TokenKind = "skipped" | "uploaded-accepted" | "uploaded-resampled" | "server-generated";

/**
 * Running totals, with the energy estimate and what standard HLM would have cost.
 */
export type Totals = { tokens: number, skipped: number, uploaded: number, accepted: number, resampled: number,
/**
 * Drafted tokens thrown away after a rejection earlier in their round.
 */
discarded: number, rounds: number, bytesUp: number, bytesDown: number,
/**
 * Bits of the compressed distributions alone.
 */
distBits: number,
/**
 * Verifier forward passes.
 */
llmPasses: number, llmForwardTokens: number,
/**
 * Seconds the verifier's model spent on these rounds, as it reported them (no queue, no
 * network).
 */
llmComputeS: number, reconnects: number, replayedTokens: number,
/**
 * uploaded / tokens
 */
uploadRate: number,
/**
 * Estimated device energy (J): drafting + radio + idle while waiting for verdicts. An
 * analytic estimate from measured drafting and waiting times, bytes and rounds (see
 * `EnergyConstants`).
 */
energyJ: number, draftEnergyJ: number, radioEnergyJ: number, idleEnergyJ: number,
/**
 * The verifier's share: its power × (measured wait − one modelled round trip per round).
 */
serverEnergyJ: number,
/**
 * Device + server.
 */
systemEnergyJ: number,
/**
 * The same device estimate had every token been uploaded (standard HLM).
 */
standardHlmEnergyJ: number, standardHlmSystemEnergyJ: number, standardHlmBytesUp: number, standardHlmBytesDown: number, standardHlmLlmPasses: number, };

/**
 * How `u` is computed from the draft's logits.
 */
export type UncertaintyEstimate = "sampled" | "expected";

/**
 * What the verifier said when the session opened.
 */
export type VerifierWelcome = { server: string, verifier_model: string, max_context: number,
/**
 * What mode `auto` with its default threshold runs for this draft model and this verifier:
 * the learned head shipped for the pair, else U-HLM.
 */
default_filter: FilterChoice, };
