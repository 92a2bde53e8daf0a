//! Prometheus metrics, served at `/metrics` (the `metrics` facade with its Prometheus exporter).
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
//! | `hlm_round_seconds` | histogram | time to answer a round, queueing for the model included |

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// The process-wide recorder (installed once; every server state in the process shares it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static bucket list is valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program): keep ours
        // reachable through the handle either way.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn refused(reason: &'static str) {
    metrics::counter!("hlm_connections_refused_total", "reason" => reason).increment(1);
}
