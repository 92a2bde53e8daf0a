//! `hlm-loadtest`: starts `verifier-server` (the binary next to this one) on a loopback port,
//! opens many concurrent sessions against it for a fixed time, and reports errors, verification
//! latency percentiles and the server's peak resident memory.
//!
//! ```text
//! cargo build --release -p verifier-server
//! target/release/hlm-loadtest --sessions 64 --secs 180
//! ```

use anyhow::Context;
use clap::Parser;
use std::time::Duration;
use verifier_server::loadgen::{self, LoadConfig};

#[derive(Parser, Debug)]
#[command(version, about = "Load-test a verifier-server on loopback")]
struct Args {
    /// Verifier model (a known name, a GGUF path or a safetensors directory).
    #[arg(long, default_value = "smollm2-135m-instruct-q4_1")]
    model: String,
    /// Concurrent sessions (the server is started with exactly this many slots).
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// How long the load runs.
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// Drafted tokens per round after the prompt; one in two is uploaded.
    #[arg(long, default_value_t = 4)]
    round_tokens: usize,
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Context per session: a session that fills it starts a new generation.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Milliseconds a client "drafts" between a verdict and its next round.
    #[arg(long, default_value_t = 25)]
    think_ms: u64,
    /// Rounds one forward pass may verify together (the server's `--batch-rounds`; 1 = no
    /// batching).
    #[arg(long, default_value_t = 32)]
    batch_rounds: usize,
    /// The server binary (default: `verifier-server` next to this program).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match args.server_bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("verifier-server"),
    };
    let path = hlm_fetch::resolve(&args.model, &mut |_| {})?;
    let (model, tokenizer) = hlm_engine::load_model_and_tokenizer(&path, &Default::default())?;
    let vocab = hlm_engine::decode::vocab_info(&tokenizer, model.config());
    drop(model);
    let port = loadgen::free_port()?;
    let extra = [
        "--max-sessions".to_string(),
        args.sessions.to_string(),
        "--max-context".to_string(),
        args.context.to_string(),
        "--batch-rounds".to_string(),
        args.batch_rounds.to_string(),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut server = loadgen::spawn_server(&bin, &args.model, port, &extra)
        .await
        .with_context(|| format!("starting {}", bin.display()))?;
    eprintln!(
        "{} sessions for {} s against {} (pid {}, --batch-rounds {})",
        args.sessions,
        args.secs,
        args.model,
        server.id(),
        args.batch_rounds
    );
    let report = loadgen::run(LoadConfig {
        max_rounds: None,
        url: format!("ws://127.0.0.1:{port}/ws"),
        token: None,
        vocab,
        sessions: args.sessions,
        duration: Duration::from_secs(args.secs),
        round_tokens: args.round_tokens,
        prompt_tokens: args.prompt_tokens,
        context: args.context,
        think: Duration::from_millis(args.think_ms),
        server_pid: Some(server.id()),
    })
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(p) = args.json {
        std::fs::write(&p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    println!(
        "| {} sessions | batch {} | {:.0} s | {} rounds ({:.1}/s) | {:.1} verified tok/s | {:.1} forward tok/s | errors {} | p50 {:.0} ms | p90 {:.0} ms | p99 {:.0} ms | RSS idle {:.0} MiB, peak {:.0} MiB |",
        report.sessions,
        args.batch_rounds,
        report.seconds,
        report.rounds,
        report.rounds_per_s,
        report.tokens_verified_per_s,
        report.forward_tokens_per_s,
        report.errors,
        report.latency_p50_ms,
        report.latency_p90_ms,
        report.latency_p99_ms,
        report.rss_idle_mib.unwrap_or(f64::NAN),
        report.rss_peak_mib.unwrap_or(f64::NAN)
    );
    if report.errors > 0 {
        anyhow::bail!(
            "{} sessions failed: {:?}",
            report.errors,
            report.first_errors
        );
    }
    Ok(())
}
