//! A short load run in CI (the long one is `hlm-loadtest`, figures in docs/benchmarks.md): 16 sessions
//! against the real binary and model, 12 rounds each, no errors, memory bounded. The run is
//! counted in rounds, not seconds, so that a slower machine takes longer rather than checks less.

use std::time::Duration;
use verifier_server::loadgen::{self, LoadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_sessions_without_errors_and_bounded_memory() {
    let model = "smollm2-135m-instruct-q4_1";
    let path = hlm_fetch::resolve(model, &mut |_| {}).expect("model (run `hlm fetch`)");
    let (m, tok) = hlm_engine::load_model_and_tokenizer(&path, &Default::default()).unwrap();
    let vocab = hlm_engine::decode::vocab_info(&tok, m.config());
    drop(m);
    let port = loadgen::free_port().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_verifier-server"));
    let extra = ["--max-sessions", "16", "--max-context", "256"];
    let mut server = loadgen::spawn_server(bin, model, port, &extra)
        .await
        .unwrap();
    let report = loadgen::run(LoadConfig {
        url: format!("ws://127.0.0.1:{port}/ws"),
        token: None,
        vocab,
        sessions: 16,
        duration: Duration::from_secs(300),
        max_rounds: Some(12),
        round_tokens: 4,
        prompt_tokens: 8,
        context: 24,
        think: Duration::from_millis(10),
        server_pid: Some(server.id()),
    })
    .await;
    let _ = server.kill();
    let _ = server.wait();
    eprintln!("{report:#?}");
    assert_eq!(report.errors, 0, "{:?}", report.first_errors);
    // Random tokens are rejected at their first upload: the prompt's round commits 9 positions and
    // each later one 2 (more when a token happens to pass), so a session of context 24 starts a
    // second generation by its 8th round.
    assert_eq!(report.rounds, 16 * 12);
    assert!(
        report.generations >= 2 * 16,
        "sessions filled their context and reset ({} generations)",
        report.generations
    );
    // 16 sessions × 256 positions × 30 layers × 2 × 3 kv heads × 64 dims × 4 B = 180 MiB of KV at most.
    let (idle, peak) = (report.rss_idle_mib.unwrap(), report.rss_peak_mib.unwrap());
    assert!(
        peak < idle + 400.0,
        "RSS grew from {idle:.0} to {peak:.0} MiB"
    );
}
