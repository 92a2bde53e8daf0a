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
    /// Directory of static files served at `/` (the demo page).
    #[arg(long, env = "HLM_WWW")]
    www: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let path = hlm_fetch::resolve(&args.model, &mut |p| {
        tracing::info!("{}: {}/{} bytes", p.stage, p.done, p.total)
    })
    .with_context(|| format!("obtaining model {}", args.model))?;
    let t = std::time::Instant::now();
    let (model, tokenizer) = hlm_engine::load_model_and_tokenizer(&path, &LoadOptions::default())
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
    let state = verifier_server::AppState::new(model, vocab, args.max_context);
    let app = verifier_server::router(state, args.www);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!("listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
