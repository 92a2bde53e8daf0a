//! A verifier process killed (SIGKILL) mid-generation and started again: the client reconnects
//! with backoff, replays its accepted tokens, and finishes with exactly the text of a run without
//! the fault. Real binary, real model (SmolLM2-135M on both sides), real WebSocket on loopback.

use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, GenerationConfig, HybridSession, Summary};
use hlm_engine::model::LoadOptions;
use hlm_engine::ws_link::WsLink;
use std::process::Child;
use std::sync::Arc;

const MODEL: &str = "smollm2-135m-instruct-q4_1";

async fn spawn_server(port: u16) -> Child {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_verifier-server"));
    verifier_server::loadgen::spawn_server(bin, MODEL, port, &[])
        .await
        .expect("start verifier-server")
}

fn drafter() -> Drafter {
    let path = hlm_fetch::resolve(MODEL, &mut |_| {}).expect("model (run `hlm fetch`)");
    let (m, tok) = hlm_engine::load_model_and_tokenizer(&path, &LoadOptions::default()).unwrap();
    Drafter::new(Arc::new(m), tok)
}

/// Generates 40 tokens; `on_index` runs when the token with that index is final.
async fn generate(
    port: u16,
    drafter: &mut Drafter,
    mut fault: Option<(usize, &mut dyn FnMut())>,
) -> (Summary, Vec<u32>) {
    let link = WsLink::connect(&format!("ws://127.0.0.1:{port}/ws"))
        .await
        .unwrap();
    let mut s = HybridSession::connect(link, drafter.vocab_info(), "restart-test")
        .await
        .unwrap();
    let cfg = GenerationConfig {
        max_tokens: 40,
        mode: FilterMode::Always,
        ..Default::default()
    };
    let prompt = drafter.encode("def fibonacci(n):").unwrap();
    let mut seen = Vec::new();
    let summary = s
        .generate(drafter, &prompt, &cfg, &mut |e| {
            seen.push(e.id);
            if let Some((at, f)) = fault.as_mut() {
                if e.index == *at {
                    f();
                }
            }
            true
        })
        .await
        .expect("generation survives the restart");
    (summary, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_verifier_loses_nothing() {
    let port = verifier_server::loadgen::free_port().unwrap();
    let mut server = spawn_server(port).await;
    let mut d = drafter();
    let (clean, _) = generate(port, &mut d, None).await;
    assert_eq!(clean.totals.reconnects, 0);

    let mut restarted = false;
    let mut kill_and_restart = || {
        server.kill().unwrap(); // SIGKILL: no drain, no goodbye
        server.wait().unwrap();
        // Started, not awaited: the client's backoff waits for it to come up.
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_verifier-server"));
        server = verifier_server::loadgen::server_command(bin, MODEL, port, &[])
            .spawn()
            .expect("restart verifier-server");
        restarted = true;
    };
    let (faulty, seen) = generate(port, &mut d, Some((12, &mut kill_and_restart))).await;
    assert!(restarted);
    assert!(faulty.totals.reconnects >= 1, "{:?}", faulty.totals);
    assert!(faulty.totals.replayed_tokens >= 12);
    assert_eq!(
        faulty.ids, clean.ids,
        "same tokens as the run without the fault"
    );
    assert_eq!(faulty.text, clean.text);
    assert_eq!(
        seen, faulty.ids,
        "each accepted token reported exactly once"
    );
    server.kill().unwrap();
    let _ = server.wait();
}
