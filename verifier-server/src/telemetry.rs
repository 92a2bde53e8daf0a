//! Prometheus metrics, served at `/metrics` (the `metrics` facade with its Prometheus exporter).
//! Their names are written once, in [`names`]; the server records them through the functions
//! here.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `hlm_sessions_active` | gauge | sessions open now |
//! | `hlm_sessions_total` | counter | sessions admitted |
//! | `hlm_connections_refused_total{reason}` | counter | `unauthorized`, `origin`, `overloaded`, `idle` |
//! | `hlm_protocol_errors_total{code}` | counter | sessions ended by a protocol error |
//! | `hlm_rounds_total` | counter | rounds verified (one forward pass each) |
//! | `hlm_tokens_verified_total` / `hlm_tokens_rejected_total` | counter | acceptance rate = 1 − rejected / verified |
//! | `hlm_forward_tokens_total` | counter | positions run through the verifier (catch-up included) |
//! | `hlm_bytes_in_total` / `hlm_bytes_out_total` | counter | frame bytes |
//! | `hlm_solo_tokens_total` | counter | tokens the model generated on its own (`/v1/chat/completions`, a session's `Generate`) |
//! | `hlm_round_seconds` | histogram | time to answer a round, queueing for the model included |
//! | `hlm_batch_rounds` | histogram | rounds (and steps of the verifier's own generations) served by one forward pass (sessions batched together) |
//! | `hlm_batch_positions` | histogram | positions (new tokens of all its rounds) in one forward pass |

use hlm_engine::verifier::SessionStats;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// The metrics' names (the table above).
pub mod names {
    pub const SESSIONS_ACTIVE: &str = "hlm_sessions_active";
    pub const SESSIONS_TOTAL: &str = "hlm_sessions_total";
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "hlm_connections_refused_total";
    pub const PROTOCOL_ERRORS_TOTAL: &str = "hlm_protocol_errors_total";
    pub const ROUNDS_TOTAL: &str = "hlm_rounds_total";
    pub const TOKENS_VERIFIED_TOTAL: &str = "hlm_tokens_verified_total";
    pub const TOKENS_REJECTED_TOTAL: &str = "hlm_tokens_rejected_total";
    pub const FORWARD_TOKENS_TOTAL: &str = "hlm_forward_tokens_total";
    pub const BYTES_IN_TOTAL: &str = "hlm_bytes_in_total";
    pub const BYTES_OUT_TOTAL: &str = "hlm_bytes_out_total";
    /// A histogram: Prometheus shows it as `_bucket`, `_sum` and `_count` series.
    pub const ROUND_SECONDS: &str = "hlm_round_seconds";
    /// Histograms per forward pass of the round batcher.
    pub const BATCH_ROUNDS: &str = "hlm_batch_rounds";
    pub const BATCH_POSITIONS: &str = "hlm_batch_positions";
    /// Tokens the model generated on its own (`/v1/chat/completions`).
    pub const SOLO_TOKENS_TOTAL: &str = "hlm_solo_tokens_total";
}

/// The process-wide recorder (installed once; every server state in the process shares it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static bucket list is valid")
            .set_buckets_for_metric(
                Matcher::Full(names::BATCH_ROUNDS.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )
            .expect("static bucket list is valid")
            .set_buckets_for_metric(
                Matcher::Full(names::BATCH_POSITIONS.into()),
                &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0],
            )
            .expect("static bucket list is valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program): keep ours
        // reachable through the handle either way.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// A connection turned away (`unauthorized`, `origin`, `overloaded`) or closed for idleness.
pub fn refused(reason: &'static str) {
    metrics::counter!(names::CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// A session admitted (`open`) or ended.
pub fn session(open: bool) {
    if open {
        metrics::counter!(names::SESSIONS_TOTAL).increment(1);
        metrics::gauge!(names::SESSIONS_ACTIVE).increment(1.0);
    } else {
        metrics::gauge!(names::SESSIONS_ACTIVE).decrement(1.0);
    }
}

pub fn bytes_in(n: usize) {
    metrics::counter!(names::BYTES_IN_TOTAL).increment(n as u64);
}

pub fn bytes_out(n: usize) {
    metrics::counter!(names::BYTES_OUT_TOTAL).increment(n as u64);
}

/// The rounds one frame verified: the session's counts before and after it, and the time it took
/// (queueing for the model included).
pub fn rounds(before: &SessionStats, after: &SessionStats, took: Duration) {
    metrics::histogram!(names::ROUND_SECONDS).record(took.as_secs_f64());
    metrics::counter!(names::ROUNDS_TOTAL).increment(after.rounds - before.rounds);
    metrics::counter!(names::TOKENS_VERIFIED_TOTAL).increment(after.verified - before.verified);
    metrics::counter!(names::TOKENS_REJECTED_TOTAL).increment(after.rejected - before.rejected);
    metrics::counter!(names::FORWARD_TOKENS_TOTAL)
        .increment(after.forward_tokens - before.forward_tokens);
}

/// One forward pass of the batcher: how many rounds it verified and over how many positions.
pub fn batch(rounds: usize, positions: usize) {
    metrics::histogram!(names::BATCH_ROUNDS).record(rounds as f64);
    metrics::histogram!(names::BATCH_POSITIONS).record(positions as f64);
}

/// Tokens the model generated on its own (`/v1/chat/completions`, or a session's `Generate`).
pub fn solo_tokens(n: usize) {
    metrics::counter!(names::SOLO_TOKENS_TOTAL).increment(n as u64);
}

/// A session ended by a protocol error with this code.
pub fn protocol_error(code: hlm_protocol::ErrorCode) {
    metrics::counter!(names::PROTOCOL_ERRORS_TOTAL, "code" => format!("{code:?}")).increment(1);
}
