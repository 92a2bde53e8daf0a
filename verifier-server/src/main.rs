//! `verifier-server`: serve a verifier model over WebSocket.

use anyhow::Context;
use clap::Parser;
use hlm_engine::model::LoadOptions;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serve a verifier model to hybrid (draft + filter) clients over WebSocket"
)]
struct Args {
    /// Verifier model: a known name (see `hlm fetch --list`), a GGUF path, or a safetensors directory.
    #[arg(
        long,
        env = "HLM_VERIFIER_MODEL",
        default_value = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    )]
    model: String,
    /// Address to listen on.
    #[arg(long, env = "HLM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Longest sequence (prompt + generation) a session may hold.
    #[arg(long, env = "HLM_MAX_CONTEXT", default_value_t = 4096)]
    max_context: u32,
    /// Draft model offered to browsers at `/models/draft.gguf` (a known name, a GGUF path): the
    /// demo page downloads it and runs it in WebAssembly. Must share the verifier's vocabulary.
    #[arg(long, env = "HLM_DRAFT_MODEL")]
    draft_model: Option<String>,
    /// Directory of static files served at `/` (the demo page).
    #[arg(long, env = "HLM_WWW")]
    www: Option<std::path::PathBuf>,
    /// Shared secret clients must present (`Authorization: Bearer …`, or the `hlm-token.…`
    /// WebSocket subprotocol from browsers). Characters: A-Z a-z 0-9 . _ ~ -
    #[arg(long, env = "HLM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File of accepted tokens, one per line (`#` comments allowed); adds to --token.
    #[arg(long, env = "HLM_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Listen on a non-loopback address without any token (anyone who can reach it may use it).
    #[arg(long)]
    insecure: bool,
    /// Sessions served at once; more are refused with "overloaded, retry later" (close 1013).
    #[arg(long, env = "HLM_MAX_SESSIONS", default_value_t = 64)]
    max_sessions: usize,
    /// Seconds a session may stay silent before it is closed (close 4408).
    #[arg(long, env = "HLM_IDLE_TIMEOUT", default_value_t = 300)]
    idle_timeout: u64,
    /// Browser origin allowed to open sessions besides the server's own page (repeatable; `*` for
    /// any). Clients that send no Origin header (native ones) are not affected.
    #[arg(
        long = "allowed-origin",
        env = "HLM_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Memory (MB) all sessions' KV caches may take together. Each session's cache is bounded by
    /// --max-context; the server refuses to start if --max-sessions full sessions would not fit.
    #[arg(long, env = "HLM_MAX_KV_MB")]
    max_kv_mb: Option<usize>,
    /// Where the model's weight matrices run: `cpu`, or `cuda` / `cuda:N` (build with
    /// `--features cuda`).
    #[arg(long, env = "HLM_DEVICE", default_value = "cpu", value_parser = parse_device)]
    device: candle_core::Device,
    /// On SIGTERM / Ctrl-C, seconds to let sessions finish their current round before exiting.
    #[arg(long, env = "HLM_DRAIN", default_value_t = 10)]
    drain: u64,
    /// Rounds from different sessions one forward pass may verify together (1 = no batching).
    #[arg(long, env = "HLM_BATCH_ROUNDS", default_value_t = 32)]
    batch_rounds: usize,
    /// Positions (new tokens of all its rounds) one batched forward pass may hold; a larger
    /// round still runs, alone.
    #[arg(long, env = "HLM_BATCH_POSITIONS", default_value_t = 256)]
    batch_positions: usize,
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads: it may set the thread count in the environment.
    let pinned = hlm_engine::threads::size_to_affinity();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(pinned))
}

async fn serve(pinned: Option<usize>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Some(n) = pinned {
        tracing::info!("{n} CPU(s) allowed: the model runs {n} thread(s)");
    }
    let args = Args::parse();
    let tokens = accepted_tokens(&args)?;
    let path = fetch_model(&args.model, "model")?;
    let draft_model = match &args.draft_model {
        Some(name) => Some((name.clone(), fetch_model(name, "draft model")?)),
        None => None,
    };
    let t = std::time::Instant::now();
    let (model, tokenizer) = hlm_engine::load_model_and_tokenizer(
        &path,
        &LoadOptions {
            device: args.device.clone(),
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", path.display()))?;
    let model = Arc::new(model);
    let vocab = hlm_engine::decode::vocab_info(&tokenizer, model.config());
    tracing::info!(
        "loaded {} in {:.1}s ({} MB of weights, vocab {})",
        model.name(),
        t.elapsed().as_secs_f64(),
        model.weight_bytes() / 1_000_000,
        vocab.size
    );
    let config = server_config(&args, tokens, draft_model, model.config())?;
    let state = verifier_server::AppState::with_config(model, vocab, config);
    state.set_tokenizer(tokenizer);
    if let Err(why) = state.readiness().await {
        anyhow::bail!("the model failed its start-up check (a one-token forward): {why}");
    }
    let app = verifier_server::router(state.clone(), args.www.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!("listening on ws://{}/ws", listener.local_addr()?);
    let drain = std::time::Duration::from_secs(args.drain);
    axum::serve(listener, app)
        .with_graceful_shutdown(drain_on_signal(state, drain))
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// The tokens clients may present (`--token` and `--token-file`), each checked to travel as a
/// WebSocket subprotocol; none is allowed only on a loopback address or with `--insecure`.
fn accepted_tokens(args: &Args) -> anyhow::Result<Vec<String>> {
    let mut tokens: Vec<String> = args.token.iter().cloned().collect();
    if let Some(f) = &args.token_file {
        tokens.extend(
            verifier_server::auth::tokens_from_file(f)
                .with_context(|| format!("reading tokens from {}", f.display()))?,
        );
    }
    if let Some(bad) = tokens
        .iter()
        .find(|t| !verifier_server::auth::valid_token(t))
    {
        anyhow::bail!(
            "token of {} characters has characters outside A-Z a-z 0-9 . _ ~ - (it must travel as a WebSocket subprotocol)",
            bad.len()
        );
    }
    if tokens.is_empty() && !args.listen.ip().is_loopback() && !args.insecure {
        anyhow::bail!(
            "refusing to listen on {} without a token: set --token / --token-file, or pass --insecure",
            args.listen
        );
    }
    Ok(tokens)
}

/// A model's file: a known name (downloaded into the cache if missing, progress in the log) or
/// a path; `what` names it in the error.
fn fetch_model(name: &str, what: &str) -> anyhow::Result<std::path::PathBuf> {
    hlm_fetch::resolve(name, &mut |p| {
        tracing::info!("{}: {}/{} bytes", p.stage, p.done, p.total)
    })
    .with_context(|| format!("obtaining {what} {name}"))
}

/// The server's limits from the command line, checked against the model's KV cache size.
fn server_config(
    args: &Args,
    tokens: Vec<String>,
    draft_model: Option<(String, std::path::PathBuf)>,
    model: &hlm_engine::model::ModelConfig,
) -> anyhow::Result<verifier_server::ServerConfig> {
    let config = verifier_server::ServerConfig {
        max_context: args.max_context,
        tokens,
        max_sessions: args.max_sessions.max(1),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
        allowed_origins: args.allowed_origins.clone(),
        max_kv_bytes: args.max_kv_mb.map(|mb| mb << 20),
        draft_model,
        batch: verifier_server::batch::BatchLimits {
            max_rounds: args.batch_rounds.max(1),
            max_positions: args.batch_positions.max(1),
            ..Default::default()
        },
        ..Default::default()
    };
    config.check_memory(model).map_err(anyhow::Error::msg)?;
    tracing::info!(
        "each session holds at most {} MB of KV cache ({} sessions: {} MB)",
        config.kv_bytes_per_session(model) >> 20,
        config.max_sessions,
        (config.kv_bytes_per_session(model) * config.max_sessions) >> 20
    );
    Ok(config)
}

/// Resolves on SIGTERM / Ctrl-C, after telling open sessions to finish (upgraded WebSockets
/// escape axum's graceful shutdown) and waiting up to `drain` for them.
async fn drain_on_signal(state: Arc<verifier_server::AppState>, drain: std::time::Duration) {
    shutdown_signal().await;
    tracing::info!("shutting down: no new sessions, draining for up to {drain:?}");
    let left = state.shut_down(drain).await;
    if left > 0 {
        tracing::warn!("{left} sessions still open after the drain");
    }
}

fn parse_device(s: &str) -> Result<candle_core::Device, String> {
    match s.split_once(':') {
        None if s == "cpu" => Ok(candle_core::Device::Cpu),
        None if s == "cuda" => cuda(0),
        Some(("cuda", n)) => cuda(n.parse().map_err(|_| format!("bad CUDA ordinal `{n}`"))?),
        _ => Err(format!("unknown device `{s}` (cpu, cuda, cuda:N)")),
    }
}

fn cuda(ordinal: usize) -> Result<candle_core::Device, String> {
    candle_core::Device::new_cuda(ordinal).map_err(|e| {
        format!("CUDA device {ordinal}: {e} (is this build made with `--features cuda`?)")
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
