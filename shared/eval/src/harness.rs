//! The evaluation run: every method over the same tasks, with the same seeds and generation
//! length, through **the** decoding loop (`HybridSession::generate` over an in-process verifier,
//! `LocalLink`), then scored.
//!
//! Methods (rows):
//! * `llm-only`: the verifier alone (greedy); the device sends the prompt and receives every
//!   token. Upload rate 1 by definition: every token is the LLM's.
//! * `slm-only`: the draft alone (the loop in mode `never`: nothing is sent).
//! * `standard-hlm`: every drafted token uploaded (mode `always`).
//! * `u-hlm`: uploads chosen by uncertainty alone (mode `uncertainty`).
//! * `ours`: uncertainty and attention importance (mode `uncertainty+importance`), with
//!   `ours:<rule>` variants for the importance-rule ablation.
//!
//! Columns, per method, averaged over tasks (formulas in the README):
//! BERTScore F1 against the LLM-only output and against the dataset's reference, pass@1
//! (HumanEval), upload rate = uploaded / generated tokens, LLM forward passes per token, bytes up
//! and down per token (whole frames), analytic energy per token and analytic throughput
//! ([`crate::energy`]).

use crate::bertscore::{BertScorer, Score};
use crate::energy::{analytic_throughput, energy, Constants, Measured};
use crate::humaneval::{self, Problem, Sandbox};
use crate::{EvalError, Result};
use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, GenerationOptions, HybridSession, Summary};
use hlm_engine::link::{block_on, LocalLink};
use hlm_engine::model::Model;
use hlm_engine::verifier::VerifierSession;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// One prompt to generate for.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// The user message (the chat template is applied by the harness).
    pub instruction: String,
    /// A reference answer when the dataset has one.
    pub reference: Option<String>,
    /// For HumanEval tasks: the problem, to run the answer's code against its tests.
    pub problem: Option<Problem>,
}

/// A HumanEval problem as a chat task (the canonical solution is the reference text).
pub fn humaneval_task(p: &Problem) -> Task {
    Task {
        id: p.task_id.clone(),
        instruction: format!(
            "Complete the following Python function. Answer with the whole function in one \
             ```python code block.\n\n```python\n{}```",
            p.prompt
        ),
        reference: Some(format!("{}{}", p.prompt, p.canonical_solution)),
        problem: Some(p.clone()),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Method {
    LlmOnly,
    SlmOnly,
    StandardHlm,
    UHlm,
    /// Ours, with the named importance rule.
    Ours(String),
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::LlmOnly => "llm-only".into(),
            Method::SlmOnly => "slm-only".into(),
            Method::StandardHlm => "standard-hlm".into(),
            Method::UHlm => "u-hlm".into(),
            Method::Ours(rule) if rule == "sink-zscore" => "ours".into(),
            Method::Ours(rule) => format!("ours:{rule}"),
        }
    }

    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "llm-only" => Method::LlmOnly,
            "slm-only" => Method::SlmOnly,
            "standard-hlm" => Method::StandardHlm,
            "u-hlm" => Method::UHlm,
            "ours" => Method::Ours("sink-zscore".into()),
            other => match other.strip_prefix("ours:") {
                Some(rule) if hlm_core::IMPORTANCE_RULES.contains(&rule) => {
                    Method::Ours(rule.into())
                }
                _ => {
                    return Err(format!(
                        "unknown method `{s}` (llm-only, slm-only, standard-hlm, u-hlm, ours, ours:<{}>)",
                        hlm_core::IMPORTANCE_RULES.join("|")
                    ))
                }
            },
        })
    }

    /// The default rows.
    pub fn all() -> Vec<Method> {
        vec![
            Method::LlmOnly,
            Method::SlmOnly,
            Method::StandardHlm,
            Method::UHlm,
            Method::Ours("sink-zscore".into()),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub max_tokens: usize,
    pub seed: u64,
    pub uncertainty_threshold: f32,
    pub importance_strictness: f32,
    pub constants: Constants,
    pub sandbox: Sandbox,
}

/// One task under one method.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub task: String,
    pub method: String,
    pub text: String,
    pub tokens: usize,
    pub uploaded: usize,
    pub llm_forward_passes: usize,
    pub rounds: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    pub draft_time_s: f64,
    pub wait_time_s: f64,
    pub passed: Option<bool>,
    pub bert_vs_llm: Option<Score>,
    pub bert_vs_reference: Option<Score>,
    pub energy_j: f64,
    pub throughput_analytic: f64,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub method: String,
    pub samples: usize,
    pub bert_f1_vs_llm: Option<f64>,
    pub bert_f1_vs_reference: Option<f64>,
    pub pass_at_1: Option<f64>,
    pub upload_rate: f64,
    pub llm_passes_per_token: f64,
    pub bytes_up_per_token: f64,
    pub bytes_down_per_token: f64,
    pub energy_per_token_j: f64,
    /// 1 − energy / standard HLM's energy (per token), when standard HLM ran.
    pub energy_saving_vs_standard: Option<f64>,
    pub throughput_analytic_tok_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub samples: Vec<Sample>,
}

/// Frame bytes of the LLM-only baseline: the prompt up as token ids (4 bytes each), each token
/// down in its own frame (4 bytes of id, 2 of version header).
fn llm_only_bytes(prompt_tokens: usize, tokens: usize) -> (usize, usize) {
    (2 + 4 * prompt_tokens, 6 * tokens)
}

/// Runs every method on every task; `progress(done, total, what)` after each generation.
pub fn run(
    drafter: &mut Drafter,
    verifier: Arc<Model>,
    tasks: &[Task],
    methods: &[Method],
    cfg: &EvalConfig,
    scorer: Option<&BertScorer>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Report> {
    let total = tasks.len() * methods.len();
    let mut samples = Vec::with_capacity(total);
    let mut done = 0;
    let vocab = drafter.vocab_info();
    for task in tasks {
        let text = hlm_engine::chat::chatml(&task.instruction, None);
        let prompt = drafter.encode(&text)?;
        let mut llm_text: Option<String> = None;
        for method in methods {
            let (summary, verifier_time) = match method {
                Method::LlmOnly => {
                    let t = Instant::now();
                    let ids = verifier.generate_greedy(&prompt, cfg.max_tokens)?;
                    let secs = t.elapsed().as_secs_f64();
                    let text = drafter
                        .tokenizer()
                        .decode(&ids, true)
                        .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
                    let (up, down) = llm_only_bytes(prompt.len(), ids.len());
                    let s = Sample {
                        task: task.id.clone(),
                        method: method.name(),
                        text: text.clone(),
                        tokens: ids.len(),
                        uploaded: ids.len(),
                        llm_forward_passes: ids.len(),
                        rounds: ids.len(),
                        bytes_up: up,
                        bytes_down: down,
                        draft_time_s: 0.0,
                        wait_time_s: secs,
                        passed: None,
                        bert_vs_llm: None,
                        bert_vs_reference: None,
                        energy_j: 0.0,
                        throughput_analytic: 0.0,
                    };
                    llm_text = Some(text);
                    (s, secs)
                }
                _ => {
                    let opts = options(method, cfg);
                    let session =
                        VerifierSession::new(verifier.clone(), vocab.clone(), "eval", 1 << 16);
                    let summary: Summary = block_on(async {
                        let mut s =
                            HybridSession::connect(LocalLink::new(session), vocab.clone(), "eval")
                                .await?;
                        s.generate(drafter, &prompt, &opts.config(), &mut |_| true)
                            .await
                    })?;
                    let t = &summary.totals;
                    let s = Sample {
                        task: task.id.clone(),
                        method: method.name(),
                        text: summary.text.clone(),
                        tokens: t.tokens,
                        uploaded: t.uploaded,
                        llm_forward_passes: t.llm_forward_passes,
                        rounds: t.rounds,
                        bytes_up: t.bytes_up,
                        bytes_down: t.bytes_down,
                        draft_time_s: summary.draft_time_s,
                        wait_time_s: summary.wait_time_s,
                        passed: None,
                        bert_vs_llm: None,
                        bert_vs_reference: None,
                        energy_j: 0.0,
                        throughput_analytic: 0.0,
                    };
                    // In process, waiting for a verdict is the verifier's compute.
                    (s, summary.wait_time_s)
                }
            };
            let mut s = summary;
            let m = Measured {
                tokens: s.tokens,
                rounds: s.rounds,
                draft_time_s: s.draft_time_s,
                wait_time_s: s.wait_time_s,
                verifier_time_s: verifier_time,
                bytes_up: s.bytes_up,
                bytes_down: s.bytes_down,
            };
            s.energy_j = energy(&m, &cfg.constants).total_j;
            s.throughput_analytic = analytic_throughput(&m, &cfg.constants.link);
            if let Some(p) = &task.problem {
                let code = humaneval::extract_code(&s.text);
                s.passed = Some(humaneval::check(p, &code, &cfg.sandbox)?.passed());
            }
            if let Some(scorer) = scorer {
                if let Some(r) = &task.reference {
                    s.bert_vs_reference = Some(scorer.score(&s.text, r)?);
                }
                if let Some(l) = &llm_text {
                    s.bert_vs_llm = Some(scorer.score(&s.text, l)?);
                }
            }
            done += 1;
            progress(done, total, &format!("{} {}", task.id, s.method));
            samples.push(s);
        }
    }
    Ok(Report {
        rows: rows(methods, &samples),
        samples,
    })
}

fn options(method: &Method, cfg: &EvalConfig) -> GenerationOptions {
    let (mode, rule) = match method {
        Method::SlmOnly => (FilterMode::Never, "sink-zscore"),
        Method::StandardHlm => (FilterMode::Always, "sink-zscore"),
        Method::UHlm => (FilterMode::Uncertainty, "sink-zscore"),
        Method::Ours(rule) => (FilterMode::UncertaintyImportance, rule.as_str()),
        Method::LlmOnly => unreachable!("the LLM-only baseline does not run the loop"),
    };
    GenerationOptions {
        max_tokens: cfg.max_tokens,
        seed: cfg.seed,
        mode,
        uncertainty_threshold: cfg.uncertainty_threshold,
        importance_strictness: cfg.importance_strictness,
        importance_rule: rule.into(),
        ..Default::default()
    }
}

/// Per-method averages. Per-token figures are totals over totals (a long answer weighs more).
pub fn rows(methods: &[Method], samples: &[Sample]) -> Vec<Row> {
    let mut rows: Vec<Row> = methods
        .iter()
        .map(|m| {
            let name = m.name();
            let ss: Vec<&Sample> = samples.iter().filter(|s| s.method == name).collect();
            let tokens = ss.iter().map(|s| s.tokens).sum::<usize>().max(1) as f64;
            let mean =
                |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let seconds: f64 = ss
                .iter()
                .map(|s| s.tokens as f64 / s.throughput_analytic.max(1e-12))
                .sum();
            Row {
                method: name,
                samples: ss.len(),
                bert_f1_vs_llm: mean(
                    ss.iter()
                        .filter_map(|s| s.bert_vs_llm.map(|b| b.f1))
                        .collect(),
                ),
                bert_f1_vs_reference: mean(
                    ss.iter()
                        .filter_map(|s| s.bert_vs_reference.map(|b| b.f1))
                        .collect(),
                ),
                pass_at_1: mean(
                    ss.iter()
                        .filter_map(|s| s.passed.map(|p| if p { 1.0 } else { 0.0 }))
                        .collect(),
                ),
                upload_rate: ss.iter().map(|s| s.uploaded).sum::<usize>() as f64 / tokens,
                llm_passes_per_token: ss.iter().map(|s| s.llm_forward_passes).sum::<usize>() as f64
                    / tokens,
                bytes_up_per_token: ss.iter().map(|s| s.bytes_up).sum::<usize>() as f64 / tokens,
                bytes_down_per_token: ss.iter().map(|s| s.bytes_down).sum::<usize>() as f64
                    / tokens,
                energy_per_token_j: ss.iter().map(|s| s.energy_j).sum::<f64>() / tokens,
                energy_saving_vs_standard: None,
                throughput_analytic_tok_s: tokens / seconds.max(1e-12),
            }
        })
        .collect();
    if let Some(std_e) = rows
        .iter()
        .find(|r| r.method == "standard-hlm")
        .map(|r| r.energy_per_token_j)
    {
        for r in &mut rows {
            r.energy_saving_vs_standard = Some(1.0 - r.energy_per_token_j / std_e);
        }
    }
    rows
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let opt = |v: Option<f64>, pct: bool| match v {
        Some(x) if pct => format!("{:.1} %", 100.0 * x),
        Some(x) => format!("{x:.3}"),
        None => "–".into(),
    };
    let mut s = String::from(
        "| method | BERTScore F1 vs LLM | BERTScore F1 vs reference | pass@1 | upload rate | LLM passes / token | bytes up / token | bytes down / token | energy / token | energy saving vs standard HLM | throughput (analytic) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.1} | {:.1} | {:.3} J | {} | {:.2} tok/s |\n",
            r.method,
            opt(r.bert_f1_vs_llm, true),
            opt(r.bert_f1_vs_reference, true),
            opt(r.pass_at_1, false),
            r.upload_rate,
            r.llm_passes_per_token,
            r.bytes_up_per_token,
            r.bytes_down_per_token,
            r.energy_per_token_j,
            opt(r.energy_saving_vs_standard, true),
            r.throughput_analytic_tok_s,
        );
    }
    s
}

/// Where and with what a run happened (printed and stored with the results).
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub draft: String,
    pub verifier: String,
    pub dataset: String,
    pub tasks: usize,
    pub max_tokens: usize,
    pub seed: u64,
    pub cpu: String,
    pub cores: usize,
    pub hlm_version: String,
    pub network_isolation: bool,
    pub rapl: bool,
}

impl RunInfo {
    /// The CPU model (from `/proc/cpuinfo`) and core count of this machine.
    pub fn machine() -> (String, usize) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpu, cores)
    }
}

/// Writes `results.json` (run info, rows, every sample), `table.md` and, with BERTScore, the plots
/// `quality_vs_energy.svg` and `quality_vs_upload.svg` into `dir`.
pub fn write_outputs(dir: &std::path::Path, info: &RunInfo, report: &Report) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({ "run": info, "rows": report.rows, "samples": report.samples });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    let md = format!(
        "Draft `{}`, verifier `{}`; {} ({} tasks, {} new tokens at most, seed {}); {} ({} cores); hlm {}.\n\n{}",
        info.draft,
        info.verifier,
        info.dataset,
        info.tasks,
        info.max_tokens,
        info.seed,
        info.cpu,
        info.cores,
        info.hlm_version,
        markdown(&report.rows)
    );
    std::fs::write(dir.join("table.md"), md)?;
    write_plots(dir, &report.rows)
}

/// The plots of `rows`: quality against energy and against the upload rate (with BERTScore).
pub fn write_plots(dir: &std::path::Path, rows: &[Row]) -> Result<()> {
    // One point per method: quality (BERTScore F1 against the LLM's output) against energy and
    // against the upload rate.
    let points = |x: &dyn Fn(&Row) -> f64| -> Vec<crate::plot::Series> {
        rows.iter()
            .filter_map(|r| {
                r.bert_f1_vs_llm.map(|q| crate::plot::Series {
                    name: r.method.clone(),
                    points: vec![(x(r), q, r.method.clone())],
                })
            })
            .collect()
    };
    let q = "BERTScore F1 vs LLM-only";
    let by_energy = points(&|r| r.energy_per_token_j);
    if !by_energy.is_empty() {
        std::fs::write(
            dir.join("quality_vs_energy.svg"),
            crate::plot::scatter(
                "Quality vs energy",
                "energy / token (J, analytic)",
                q,
                &by_energy,
            ),
        )?;
        std::fs::write(
            dir.join("quality_vs_upload.svg"),
            crate::plot::scatter(
                "Quality vs upload rate",
                "upload rate",
                q,
                &points(&|r| r.upload_rate),
            ),
        )?;
    }
    Ok(())
}
