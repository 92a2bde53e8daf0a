//! What crosses the wasm boundary, as the page sees it: the one definition of the objects the
//! `Engine` hands JavaScript and of the error codes it rejects with. Compiled natively too, so
//! the TypeScript declarations of the npm package (`web-client/js/types.generated.d.ts`) are
//! generated from these types ([`typescript`], checked by `tests/typescript.rs`).
//!
//! The engine's own types ([`hlm_engine::decode::Summary`] and the rest) keep their snake_case
//! JSON (the CLI's `--json-events`, the evaluation's files); the views here are built from them
//! and name their fields in camelCase for JavaScript, with the live energy estimate folded in.

use hlm_core::energy::Constants;
use hlm_core::{FilterMode, Importance};
use hlm_engine::decode::{StopReason, Totals as EngineTotals};
use hlm_engine::decode::{Summary as EngineSummary, TokenEvent as EngineTokenEvent, TokenKind};
use hlm_engine::energy::EnergyEstimate;
use hlm_engine::heads::FilterChoice;
use hlm_engine::EngineError;
use hlm_protocol::ErrorCode as WireCode;
use serde::{Deserialize, Serialize};

/// Marks a type whose TypeScript declaration goes into `types.generated.d.ts`.
macro_rules! exported {
    ($($item:item)*) => {$(
        #[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
        $item
    )*};
}

exported! {
/// Running totals, with the energy estimate and what standard HLM would have cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub tokens: usize,
    pub skipped: usize,
    pub uploaded: usize,
    pub accepted: usize,
    pub resampled: usize,
    /// Drafted tokens thrown away after a rejection earlier in their round.
    pub discarded: usize,
    pub rounds: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    /// Bits of the compressed distributions alone.
    pub dist_bits: u64,
    /// Verifier forward passes.
    pub llm_passes: usize,
    pub llm_forward_tokens: usize,
    /// Seconds the verifier's model spent on these rounds, as it reported them (no queue, no
    /// network).
    pub llm_compute_s: f64,
    pub reconnects: usize,
    pub replayed_tokens: usize,
    /// uploaded / tokens
    pub upload_rate: f64,
    /// Estimated device energy (J): drafting + radio + idle while waiting for verdicts. An
    /// analytic estimate from measured drafting and waiting times, bytes and rounds (see
    /// `EnergyConstants`).
    pub energy_j: f64,
    pub draft_energy_j: f64,
    pub radio_energy_j: f64,
    pub idle_energy_j: f64,
    /// The verifier's share: its power × (measured wait − one modelled round trip per round).
    pub server_energy_j: f64,
    /// Device + server.
    pub system_energy_j: f64,
    /// The same device estimate had every token been uploaded (standard HLM).
    pub standard_hlm_energy_j: f64,
    pub standard_hlm_system_energy_j: f64,
    pub standard_hlm_bytes_up: usize,
    pub standard_hlm_bytes_down: usize,
    pub standard_hlm_llm_passes: usize,
}

/// One token, once it is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenEvent {
    /// Index among the generated tokens.
    pub index: usize,
    /// Token id.
    pub id: u32,
    /// Text that became final with this token (may be empty mid-character).
    pub text: String,
    pub kind: TokenKind,
    /// The draft's token when the verifier replaced it.
    pub drafted: Option<u32>,
    /// The filter's score: u in 0..1, or in mode `learned` the head's P(reject).
    pub uncertainty: f32,
    pub importance: Option<Importance>,
    pub totals: Totals,
    /// Seconds spent drafting so far.
    pub draft_time_s: f64,
    /// Of `draftTimeS`, the draft model's forward passes (the rest is the loop's own work: the
    /// filter, sampling).
    pub draft_forward_s: f64,
    /// Seconds since the generation started.
    pub wall_time_s: f64,
    /// Set when WebGPU failed before this token and the draft model moved to WASM SIMD.
    pub notice: Option<String>,
}

/// How a generation went: its totals, text and timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[serde(flatten)]
    pub totals: Totals,
    pub stop_reason: StopReason,
    pub wall_time_s: f64,
    pub draft_time_s: f64,
    /// Of `draftTimeS`, the draft model's forward passes (the rest is the loop's own work: the
    /// filter, sampling).
    pub draft_forward_s: f64,
    /// Seconds waiting for verdicts (network and verifier).
    pub wait_time_s: f64,
    pub tokens_per_s: f64,
    /// Draft tokens per second: tokens / draftTimeS.
    pub draft_tokens_per_s: Option<f64>,
    pub text: String,
    pub ids: Vec<u32>,
    /// The filter that ran (`auto` settled into `learned` or `uncertainty`).
    pub mode: FilterMode,
    /// Mode `learned`: what its head was fitted on, and its fingerprint.
    pub filter_head: Option<String>,
    pub prompt_tokens: usize,
    /// Where the draft model ran at the end.
    pub draft_backend: DraftBackend,
    /// What the run told the user (WebGPU failed, WASM SIMD took over).
    pub notices: Vec<String>,
    /// The engine's summary as the native client reports it (snake_case).
    pub raw: EngineSummary,
}

/// Where the draft model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DraftBackend {
    Webgpu,
    WasmSimd,
}

/// Where the draft model should run. `auto`: WebGPU when the browser has a hardware adapter that
/// passes a start-up self-check against the WASM path, else WASM SIMD. `webgpu`: WebGPU on any
/// adapter that passes the self-check (a software one too), else WASM SIMD with the reason in
/// `backend_note`. `wasm`: WASM SIMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    #[default]
    Auto,
    Webgpu,
    Wasm,
}

/// Model information reported by the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub vocab_size: usize,
    pub layers: usize,
    pub weight_bytes: usize,
    /// Where the draft model runs.
    pub backend: DraftBackend,
    /// The adapter (WebGPU) or "WebAssembly SIMD128 (hlm-kernels products, candle for the rest)".
    pub backend_description: String,
    /// The self-check's figures on WebGPU, or why WebGPU is not used.
    pub backend_note: String,
    /// What was asked for (absent until a backend was chosen).
    pub backend_preference: Option<Backend>,
    /// The module's linear memory in bytes now (it only grows).
    pub wasm_memory_bytes: f64,
    /// Threads the draft model's products run on in WebAssembly: 1, or where the page is
    /// cross-origin isolated (WebAssembly threads), the engine's worker and its helpers.
    pub threads: u32,
    /// The energy estimate's shipped constants (what `energyConstants` overrides).
    pub energy_constants: Constants,
    /// Linear memory at each loading stage: where the bytes went.
    pub load_memory: LoadMemory,
}

/// The module's linear memory (bytes) at each stage of loading a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadMemory {
    pub at_start: f64,
    pub after_metadata: f64,
    pub after_tokenizer: f64,
    pub after_model: f64,
}

/// What the verifier said when the session opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierWelcome {
    pub server: String,
    pub verifier_model: String,
    pub max_context: u32,
    /// What mode `auto` with its default threshold runs for this draft model and this verifier:
    /// the learned head shipped for the pair, else U-HLM.
    pub default_filter: FilterChoice,
}

/// What kind of failure an error reports: the `code` of the package's `HybridError` (and of the
/// `Error`s the wasm `Engine` rejects with). `worker-failed` and `closed` come from the package's
/// own JavaScript; the rest from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The verifier could not be reached, or the connection was lost and could not be restored.
    Unreachable,
    /// The verifier refused the access token.
    WrongToken,
    /// The draft model and the verifier's model do not share one vocabulary.
    ModelMismatch,
    /// The verifier has no free session.
    Overloaded,
    /// The verifier does not allow this page's origin.
    OriginNotAllowed,
    /// The draft model could not be downloaded or read.
    LoadFailed,
    /// The worker or its WebAssembly module could not start.
    WorkerFailed,
    /// A generation is running.
    Busy,
    /// No verifier session: connect first.
    NotConnected,
    /// The client was closed.
    Closed,
    /// An option has a wrong name or value.
    BadOption,
    /// Anything else (the message says what).
    Error,
}
}

/// An error for the page: its code and a readable message.
#[derive(Debug, Clone, PartialEq)]
pub struct PageError {
    pub code: ErrorCode,
    pub message: String,
}

impl PageError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The engine's error with the code the page handles it by; a verifier's error reads
    /// "wrong token: …", "model mismatch: …", "overloaded: …", "origin not allowed: …".
    pub fn from_engine(e: &EngineError) -> Self {
        match e {
            EngineError::Remote { code, message } => {
                let (kind, text) = match code {
                    WireCode::Unauthorized => (ErrorCode::WrongToken, "wrong token"),
                    WireCode::VocabMismatch => (ErrorCode::ModelMismatch, "model mismatch"),
                    WireCode::Overloaded => (ErrorCode::Overloaded, "overloaded"),
                    WireCode::ForbiddenOrigin => {
                        (ErrorCode::OriginNotAllowed, "origin not allowed")
                    }
                    _ => {
                        let msg = format!("verifier error ({code:?}): {message}");
                        return Self::new(ErrorCode::Error, msg);
                    }
                };
                if message.starts_with(text) {
                    Self::new(kind, message.clone())
                } else {
                    Self::new(kind, format!("{text}: {message}"))
                }
            }
            // Its own text already starts with "model mismatch".
            EngineError::Protocol(p @ hlm_protocol::ProtocolError::VocabMismatch { .. }) => {
                Self::new(ErrorCode::ModelMismatch, p.to_string())
            }
            // The socket would not open, or closed and a new one would not open either.
            EngineError::Link(m) => Self::new(ErrorCode::Unreachable, m.clone()),
            other => Self::new(ErrorCode::Error, other.to_string()),
        }
    }
}

impl Totals {
    pub fn new(t: &EngineTotals, e: &EnergyEstimate) -> Self {
        Self {
            tokens: t.tokens,
            skipped: t.skipped,
            uploaded: t.uploaded,
            accepted: t.accepted,
            resampled: t.resampled,
            discarded: t.discarded,
            rounds: t.rounds,
            bytes_up: t.bytes_up,
            bytes_down: t.bytes_down,
            dist_bits: t.dist_bits,
            llm_passes: t.llm_forward_passes,
            llm_forward_tokens: t.llm_forward_tokens,
            llm_compute_s: t.llm_compute_us as f64 / 1e6,
            reconnects: t.reconnects,
            replayed_tokens: t.replayed_tokens,
            upload_rate: if t.tokens > 0 {
                t.uploaded as f64 / t.tokens as f64
            } else {
                0.0
            },
            energy_j: e.energy.device_j,
            draft_energy_j: e.energy.compute_j,
            radio_energy_j: e.energy.tx_j + e.energy.rx_j,
            idle_energy_j: e.energy.idle_j,
            server_energy_j: e.energy.server_j,
            system_energy_j: e.energy.total_j,
            standard_hlm_energy_j: e.standard_hlm.device_j,
            standard_hlm_system_energy_j: e.standard_hlm.total_j,
            standard_hlm_bytes_up: e.standard_hlm_bytes_up,
            standard_hlm_bytes_down: e.standard_hlm_bytes_down,
            standard_hlm_llm_passes: e.standard_hlm_llm_passes,
        }
    }
}

impl TokenEvent {
    pub fn new(ev: &EngineTokenEvent, c: &Constants) -> Self {
        let e = hlm_engine::energy::estimate(&ev.totals, ev.draft_time_s, c);
        Self {
            index: ev.index,
            id: ev.id,
            text: ev.text.clone(),
            kind: ev.kind,
            drafted: ev.drafted,
            uncertainty: ev.uncertainty,
            importance: ev.importance,
            totals: Totals::new(&ev.totals, &e),
            draft_time_s: ev.draft_time_s,
            draft_forward_s: ev.draft_forward_s,
            wall_time_s: ev.wall_time_s,
            notice: ev.notice.clone(),
        }
    }
}

impl Summary {
    pub fn new(s: EngineSummary, draft_backend: DraftBackend, c: &Constants) -> Self {
        let e = hlm_engine::energy::estimate(&s.totals, s.draft_time_s, c);
        Self {
            totals: Totals::new(&s.totals, &e),
            stop_reason: s.stop_reason,
            wall_time_s: s.wall_time_s,
            draft_time_s: s.draft_time_s,
            draft_forward_s: s.draft_forward_s,
            wait_time_s: s.wait_time_s,
            tokens_per_s: s.tokens_per_s,
            draft_tokens_per_s: (s.draft_time_s > 0.0)
                .then(|| s.totals.tokens as f64 / s.draft_time_s),
            text: s.text.clone(),
            ids: s.ids.clone(),
            mode: s.mode,
            filter_head: s.filter_head.clone(),
            prompt_tokens: s.prompt_tokens,
            draft_backend,
            notices: s.notices.clone(),
            raw: s,
        }
    }
}

/// A unit variant's name as it is written in JSON (`"wasm-simd"`, `"wrong-token"`).
pub fn json_name(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl DraftBackend {
    /// From the draft backend's kind ([`hlm_engine::decode::Drafter::backend_kind`]): `"cpu"` is
    /// candle on WASM SIMD, anything else the GPU.
    pub fn of_kind(kind: &str) -> Self {
        if kind == "cpu" {
            DraftBackend::WasmSimd
        } else {
            DraftBackend::Webgpu
        }
    }
}

/// The declarations of `types.generated.d.ts`: every type above and every type they refer to
/// (the engine's, hlm-core's), one `export type` each, 64-bit integers as `number`.
#[cfg(not(target_arch = "wasm32"))]
pub fn typescript() -> String {
    use hlm_engine::decode::GenerationOptions;
    use std::collections::BTreeMap;
    use ts_rs::{Config, TypeVisitor, TS};

    /// Collects the declarations of a type and of its dependencies, by name.
    struct Decls<'a> {
        cfg: &'a Config,
        out: BTreeMap<String, String>,
    }
    impl TypeVisitor for Decls<'_> {
        fn visit<T: TS + 'static + ?Sized>(&mut self) {
            if T::output_path().is_none() {
                return; // a primitive, a container: nothing to declare
            }
            let name = T::ident(self.cfg);
            if self.out.contains_key(&name) {
                return;
            }
            let docs = T::docs().unwrap_or_default();
            let decl = format!("{docs}export {}\n", T::decl(self.cfg));
            self.out.insert(name, decl);
            T::visit_dependencies(self);
        }
    }

    let cfg = Config::new().with_large_int("number");
    let mut decls = Decls {
        cfg: &cfg,
        out: BTreeMap::new(),
    };
    decls.visit::<TokenEvent>();
    decls.visit::<Summary>();
    decls.visit::<ModelInfo>();
    decls.visit::<VerifierWelcome>();
    decls.visit::<ErrorCode>();
    decls.visit::<Backend>();
    decls.visit::<GenerationOptions>();
    let mut text = String::from(
        "// Generated from the Rust types that cross the wasm boundary (web-client/src/api.rs and\n\
         // the types it refers to): do not edit. Regenerate with\n\
         //   HLM_WRITE_TYPES=1 cargo test --release -p hlm-web-client --test typescript\n\n",
    );
    for line in decls
        .out
        .into_values()
        .collect::<Vec<_>>()
        .join("\n")
        .lines()
    {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_carry_their_codes() {
        let remote = |code| EngineError::Remote {
            code,
            message: "missing or wrong token".into(),
        };
        let e = PageError::from_engine(&remote(WireCode::Unauthorized));
        assert_eq!(e.code, ErrorCode::WrongToken);
        assert_eq!(e.message, "wrong token: missing or wrong token");
        let e = PageError::from_engine(&remote(WireCode::Internal));
        assert_eq!(e.code, ErrorCode::Error);
        let e = PageError::from_engine(&EngineError::Link("verifier unreachable at ws://x".into()));
        assert_eq!(e.code, ErrorCode::Unreachable);
        assert_eq!(json_name(ErrorCode::OriginNotAllowed), "origin-not-allowed");
        assert_eq!(json_name(DraftBackend::WasmSimd), "wasm-simd");
    }
}
