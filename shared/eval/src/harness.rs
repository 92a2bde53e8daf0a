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
use crate::calibration::{self, Calibration};
use crate::energy::{analytic_throughput, energy, Constants, Measured};
use crate::humaneval::{self, Problem, Sandbox};
use crate::plot::Series;
use crate::{EvalError, Result};
use hlm_core::FilterMode;
use hlm_engine::decode::{
    Drafter, GenerationOptions, HybridSession, Summary, TokenEvent, TokenKind,
};
use hlm_engine::link::{block_on, LocalLink};
use hlm_engine::model::Model;
use hlm_engine::verifier::VerifierSession;
use hlm_engine::ws_link::WsLink;
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
    /// U-HLM, at the run's `u_th` or at its own (a knob sweep's point).
    UHlm {
        u_th: Option<f32>,
    },
    /// Ours with the named importance rule, at the run's knobs or at its own.
    Ours {
        rule: String,
        u_th: Option<f32>,
        lambda: Option<f32>,
    },
}

/// The importance rule of `ours` without a `:<rule>` suffix.
pub const DEFAULT_RULE: &str = "sink-zscore";

impl Method {
    /// `ours` with the default rule and the run's knobs.
    pub fn ours() -> Self {
        Method::Ours {
            rule: DEFAULT_RULE.into(),
            u_th: None,
            lambda: None,
        }
    }

    /// The row's name: the method, `:<rule>` for another importance rule, and `@u=<u_th>` /
    /// `@l=<λ>` for knobs set per method (e.g. `ours@u=0.2@l=1`).
    pub fn name(&self) -> String {
        let knobs = |u: &Option<f32>, l: &Option<f32>| {
            let mut s = String::new();
            if let Some(u) = u {
                s += &format!("@u={u}");
            }
            if let Some(l) = l {
                s += &format!("@l={l}");
            }
            s
        };
        match self {
            Method::LlmOnly => "llm-only".into(),
            Method::SlmOnly => "slm-only".into(),
            Method::StandardHlm => "standard-hlm".into(),
            Method::UHlm { u_th } => format!("u-hlm{}", knobs(u_th, &None)),
            Method::Ours { rule, u_th, lambda } if rule == DEFAULT_RULE => {
                format!("ours{}", knobs(u_th, lambda))
            }
            Method::Ours { rule, u_th, lambda } => format!("ours:{rule}{}", knobs(u_th, lambda)),
        }
    }

    /// Parses what [`Method::name`] writes.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let unknown = || {
            format!(
                "unknown method `{s}` (llm-only, slm-only, standard-hlm, u-hlm, ours, ours:<{}>, \
                 with @u=<u_th> / @l=<λ> for u-hlm and ours)",
                hlm_core::IMPORTANCE_RULES.join("|")
            )
        };
        let mut parts = s.split('@');
        let base = parts.next().unwrap_or_default();
        let (mut u_th, mut lambda) = (None, None);
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(unknown)?;
            let v: f32 = v
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{p}` in `{s}`: the value must be a number ≥ 0"))?;
            match k {
                "u" => u_th = Some(v),
                "l" => lambda = Some(v),
                _ => return Err(unknown()),
            }
        }
        let knobless = |m: Method| {
            if u_th.is_some() || lambda.is_some() {
                Err(format!("`{s}`: only u-hlm and ours take knobs"))
            } else {
                Ok(m)
            }
        };
        match base {
            "llm-only" => knobless(Method::LlmOnly),
            "slm-only" => knobless(Method::SlmOnly),
            "standard-hlm" => knobless(Method::StandardHlm),
            "u-hlm" if lambda.is_none() => Ok(Method::UHlm { u_th }),
            "u-hlm" => Err(format!("`{s}`: u-hlm has no importance knob")),
            "ours" => Ok(Method::Ours {
                rule: DEFAULT_RULE.into(),
                u_th,
                lambda,
            }),
            other => match other.strip_prefix("ours:") {
                Some(rule) if hlm_core::IMPORTANCE_RULES.contains(&rule) => Ok(Method::Ours {
                    rule: rule.into(),
                    u_th,
                    lambda,
                }),
                _ => Err(unknown()),
            },
        }
    }

    /// The default rows.
    pub fn all() -> Vec<Method> {
        vec![
            Method::LlmOnly,
            Method::SlmOnly,
            Method::StandardHlm,
            Method::UHlm { u_th: None },
            Method::ours(),
        ]
    }

    /// The rows of a knob sweep: U-HLM and ours at each `u_th` of `us` (ours at the run's λ),
    /// and ours at each λ of `lambdas` (at the run's `u_th`).
    pub fn sweep(us: &[f32], lambdas: &[f32]) -> Vec<Method> {
        let mut v = Vec::new();
        for &u in us {
            v.push(Method::UHlm { u_th: Some(u) });
            v.push(Method::Ours {
                rule: DEFAULT_RULE.into(),
                u_th: Some(u),
                lambda: None,
            });
        }
        for &l in lambdas {
            v.push(Method::Ours {
                rule: DEFAULT_RULE.into(),
                u_th: None,
                lambda: Some(l),
            });
        }
        v
    }
}

/// A verifier behind a WebSocket (e.g. across [`crate::shaped_link::ShapedLink`]), for the
/// loop's methods; the LLM-only baseline still runs in process.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub token: Option<String>,
    pub runtime: Arc<tokio::runtime::Runtime>,
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub max_tokens: usize,
    pub seed: u64,
    pub uncertainty_threshold: f32,
    pub importance_strictness: f32,
    pub constants: Constants,
    pub sandbox: Sandbox,
    /// Run the loop's methods against this verifier instead of in process; their wall time is
    /// then the real-link throughput.
    pub remote: Option<Remote>,
}

/// One task under one method.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// Waiting for verdicts: in process, the verifier's compute; over a real link, everything.
    pub wait_time_s: f64,
    /// Wall time of the generation when it ran over a real link (else absent).
    #[serde(default)]
    pub real_link_wall_s: Option<f64>,
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
    /// tokens / wall time over the real constrained link, when the run used one.
    #[serde(default)]
    pub throughput_real_link_tok_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub samples: Vec<Sample>,
    /// The U-HLM calibration, from the standard-HLM run's tokens (when it ran).
    pub calibration: Option<Calibration>,
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
    let mut verdicts: Vec<(f32, bool)> = Vec::new();
    for task in tasks {
        let text = hlm_engine::chat::chatml(&task.instruction, None);
        let prompt = drafter.encode(&text)?;
        let mut llm_text: Option<String> = None;
        for method in methods {
            let summary = match method {
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
                        real_link_wall_s: None,
                        passed: None,
                        bert_vs_llm: None,
                        bert_vs_reference: None,
                        energy_j: 0.0,
                        throughput_analytic: 0.0,
                    };
                    llm_text = Some(text);
                    s
                }
                _ => {
                    let opts = options(method, cfg);
                    let calibrating = *method == Method::StandardHlm;
                    let mut on_token = |ev: &TokenEvent| {
                        if calibrating {
                            let rejected = ev.kind == TokenKind::UploadedResampled;
                            verdicts.push((ev.uncertainty, rejected));
                        }
                        true
                    };
                    let config = opts.config();
                    let summary: Summary = match &cfg.remote {
                        None => {
                            let session = VerifierSession::new(
                                verifier.clone(),
                                vocab.clone(),
                                "eval",
                                1 << 16,
                            );
                            block_on(async {
                                let mut s = HybridSession::connect(
                                    LocalLink::new(session),
                                    vocab.clone(),
                                    "eval",
                                )
                                .await?;
                                s.generate(drafter, &prompt, &config, &mut on_token).await
                            })?
                        }
                        Some(r) => r.runtime.block_on(async {
                            let link =
                                WsLink::connect_with_token(&r.url, r.token.as_deref()).await?;
                            let mut s = HybridSession::connect(link, vocab.clone(), "eval").await?;
                            let summary =
                                s.generate(drafter, &prompt, &config, &mut on_token).await?;
                            let _ = s.close().await;
                            Ok::<_, hlm_engine::EngineError>(summary)
                        })?,
                    };
                    let t = &summary.totals;
                    Sample {
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
                        real_link_wall_s: cfg.remote.as_ref().map(|_| summary.wall_time_s),
                        passed: None,
                        bert_vs_llm: None,
                        bert_vs_reference: None,
                        energy_j: 0.0,
                        throughput_analytic: 0.0,
                    }
                }
            };
            let mut s = summary;
            rescore(&mut s, &cfg.constants);
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
        calibration: calibration::fit(&verdicts),
    })
}

/// Fills a sample's energy and analytic throughput from what it measured (also used to rescore
/// an earlier run's samples under other constants).
///
/// In process, the verifier's compute is the wait; over the analytic link the device would wait
/// that plus the transfers and one RTT per round, idle but for the transfers. Over a real link the
/// wait was measured whole (and the verifier's compute within it is not known apart: the analytic
/// throughput then counts the whole wait as verifier compute).
pub fn rescore(s: &mut Sample, c: &Constants) {
    let transfer_s = 8.0 * (s.bytes_up + s.bytes_down) as f64 / c.link.rate_bps();
    let wait_s = match s.real_link_wall_s {
        None => s.wait_time_s + transfer_s + s.rounds as f64 * c.link.rtt_s,
        Some(_) => s.wait_time_s,
    };
    let m = Measured {
        tokens: s.tokens,
        rounds: s.rounds,
        draft_time_s: s.draft_time_s,
        wait_time_s: wait_s,
        verifier_time_s: s.wait_time_s,
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
    };
    s.energy_j = energy(&m, c).total_j;
    s.throughput_analytic = analytic_throughput(&m, &c.link);
}

fn options(method: &Method, cfg: &EvalConfig) -> GenerationOptions {
    let (mut u_th, mut lambda) = (cfg.uncertainty_threshold, cfg.importance_strictness);
    let (mode, rule) = match method {
        Method::SlmOnly => (FilterMode::Never, DEFAULT_RULE),
        Method::StandardHlm => (FilterMode::Always, DEFAULT_RULE),
        Method::UHlm { u_th: u } => {
            u_th = u.unwrap_or(u_th);
            (FilterMode::Uncertainty, DEFAULT_RULE)
        }
        Method::Ours {
            rule,
            u_th: u,
            lambda: l,
        } => {
            u_th = u.unwrap_or(u_th);
            lambda = l.unwrap_or(lambda);
            (FilterMode::UncertaintyImportance, rule.as_str())
        }
        Method::LlmOnly => unreachable!("the LLM-only baseline does not run the loop"),
    };
    GenerationOptions {
        max_tokens: cfg.max_tokens,
        seed: cfg.seed,
        mode,
        uncertainty_threshold: u_th,
        importance_strictness: lambda,
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
                throughput_real_link_tok_s: ss
                    .iter()
                    .map(|s| s.real_link_wall_s)
                    .sum::<Option<f64>>()
                    .filter(|_| !ss.is_empty())
                    .map(|wall| tokens / wall.max(1e-12)),
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
        "| method | BERTScore F1 vs LLM | BERTScore F1 vs reference | pass@1 | upload rate | LLM passes / token | bytes up / token | bytes down / token | energy / token | energy saving vs standard HLM | throughput (analytic) | throughput (real link) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.1} | {:.1} | {:.3} J | {} | {:.2} tok/s | {} |\n",
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
            r.throughput_real_link_tok_s
                .map_or("–".to_string(), |t| format!("{t:.2} tok/s")),
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
    /// The run's knobs (methods without `@u=` / `@l=` use these), as written on the command line
    /// (f32 widened by its shortest decimal form, so 0.07 stays 0.07 in the JSON).
    #[serde(serialize_with = "f32_decimal")]
    pub uncertainty_threshold: f32,
    #[serde(serialize_with = "f32_decimal")]
    pub importance_strictness: f32,
    /// Where the loop's verifier ran: "in process" or the real link's description.
    pub link: String,
}

fn f32_decimal<S: serde::Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(v.to_string().parse().unwrap_or(f64::from(*v)))
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

/// Writes `results.json` (run info, rows, calibration, every sample), `table.md` and, with
/// BERTScore, the plots (see [`write_plots`]) into `dir`.
///
/// `info` is the run's [`RunInfo`] as JSON (or that of an earlier run being rescored); the knobs
/// the sweep plots label their default rows with are read from it.
pub fn write_outputs(
    dir: &std::path::Path,
    info: &serde_json::Value,
    report: &Report,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({
        "run": info,
        "rows": report.rows,
        "calibration": report.calibration,
        "samples": report.samples,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    write_table(dir, info, report)?;
    let defaults = hlm_core::FilterKnobs::default();
    let knob = |k: &str, d: f32| info[k].as_f64().map_or(d, |x| x as f32);
    write_plots(
        dir,
        &report.rows,
        report.calibration.as_ref(),
        (
            knob("uncertainty_threshold", defaults.uncertainty_threshold),
            knob("importance_strictness", defaults.importance_strictness),
        ),
    )
}

/// `table.md`: the run's header line, the table, and the calibration line.
fn write_table(dir: &std::path::Path, info: &serde_json::Value, report: &Report) -> Result<()> {
    let f = |k: &str| match &info[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".into(),
        v => v.to_string(),
    };
    let mut md = format!(
        "Draft `{}`, verifier `{}`; {} ({} tasks, {} new tokens at most, seed {}); knobs u_th = {}, λ = {}; \
         verifier {}; {} ({} cores); hlm {}.\n\n{}",
        f("draft"),
        f("verifier"),
        f("dataset"),
        f("tasks"),
        f("max_tokens"),
        f("seed"),
        f("uncertainty_threshold"),
        f("importance_strictness"),
        f("link"),
        f("cpu"),
        f("cores"),
        f("hlm_version"),
        markdown(&report.rows)
    );
    if let Some(c) = &report.calibration {
        md += &format!("\n{}\n", c.summary());
    }
    std::fs::write(dir.join("table.md"), md)?;
    Ok(())
}

/// The knobs a row ran at, given the run's defaults: `(family, u_th, λ)` with family `u-hlm` or
/// `ours` (other importance rules and the baselines are not on the sweep curves).
fn knobs_of(row: &Row, defaults: (f32, f32)) -> Option<(&'static str, f32, f32)> {
    match Method::parse(&row.method).ok()? {
        Method::UHlm { u_th } => Some(("u-hlm", u_th.unwrap_or(defaults.0), defaults.1)),
        Method::Ours { rule, u_th, lambda } if rule == DEFAULT_RULE => Some((
            "ours",
            u_th.unwrap_or(defaults.0),
            lambda.unwrap_or(defaults.1),
        )),
        _ => None,
    }
}

/// A plot's x coordinate of a row.
type XOf = fn(&Row) -> f64;

/// Which rows a sweep curve takes (from a row's family, `u_th` and λ), ordered by which knob.
type Pick<'a> = &'a dyn Fn(&str, f32, f32) -> Option<(f32, String)>;

/// One sweep curve: the rows `pick` takes, ordered by their knob.
fn sweep_curve(rows: &[Row], defaults: (f32, f32), x: XOf, name: String, pick: Pick) -> Series {
    let mut pts: Vec<(f32, f64, f64, String)> = rows
        .iter()
        .filter_map(|r| {
            let (fam, u, l) = knobs_of(r, defaults)?;
            let (knob, label) = pick(fam, u, l)?;
            Some((knob, x(r), r.bert_f1_vs_llm?, label))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    Series {
        name,
        points: pts.into_iter().map(|p| (p.1, p.2, p.3)).collect(),
    }
}

/// The plots of `rows` (with BERTScore): `quality_vs_energy.svg` and `quality_vs_upload.svg`, one
/// point per method; when the run swept the knobs, `sweep_energy.svg` and `sweep_upload.svg` with
/// one curve per knob (U-HLM's `u_th`; ours' `u_th` at the run's λ; ours' λ at the run's `u_th`)
/// and the baselines as single points; and `calibration.svg`.
pub fn write_plots(
    dir: &std::path::Path,
    rows: &[Row],
    calibration: Option<&Calibration>,
    defaults: (f32, f32),
) -> Result<()> {
    if let Some(c) = calibration {
        std::fs::write(dir.join("calibration.svg"), c.plot())?;
    }
    let q = "BERTScore F1 vs LLM-only";
    let axes: [(&str, &str, &str, XOf); 2] = [
        (
            "energy",
            "Quality vs energy",
            "energy / token (J, analytic)",
            |r| r.energy_per_token_j,
        ),
        ("upload", "Quality vs upload rate", "upload rate", |r| {
            r.upload_rate
        }),
    ];
    let swept = rows.iter().any(|r| r.method.contains('@'));
    for (file, title, x_label, x) in axes {
        // One point per method.
        let singles: Vec<Series> = rows
            .iter()
            .filter(|r| !r.method.contains('@'))
            .filter_map(|r| {
                r.bert_f1_vs_llm.map(|q| Series {
                    name: r.method.clone(),
                    points: vec![(x(r), q, r.method.clone())],
                })
            })
            .collect();
        if singles.is_empty() {
            continue;
        }
        std::fs::write(
            dir.join(format!("quality_vs_{file}.svg")),
            crate::plot::scatter(title, x_label, q, &singles),
        )?;
        if !swept {
            continue;
        }
        let (du, dl) = defaults;
        let mut series = vec![
            sweep_curve(rows, defaults, x, "U-HLM, u_th swept".into(), &|f, u, _| {
                (f == "u-hlm").then(|| (u, format!("u={u}")))
            }),
            sweep_curve(
                rows,
                defaults,
                x,
                format!("ours, u_th swept (λ={dl})"),
                &|f, u, l| (f == "ours" && l == dl).then(|| (u, format!("u={u}"))),
            ),
            sweep_curve(
                rows,
                defaults,
                x,
                format!("ours, λ swept (u_th={du})"),
                &|f, u, l| (f == "ours" && u == du).then(|| (l, format!("λ={l}"))),
            ),
        ];
        series.retain(|s| !s.points.is_empty());
        series.extend(
            singles
                .into_iter()
                .filter(|s| ["llm-only", "slm-only", "standard-hlm"].contains(&s.name.as_str())),
        );
        std::fs::write(
            dir.join(format!("sweep_{file}.svg")),
            crate::plot::scatter(&format!("{title}: knob sweeps"), x_label, q, &series),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip_and_bad_names_are_explained() {
        let mut all = Method::all();
        all.extend(Method::sweep(&[0.0, 0.25], &[1.5]));
        all.push(Method::Ours {
            rule: "median-mad".into(),
            u_th: Some(0.1),
            lambda: Some(3.0),
        });
        for m in &all {
            assert_eq!(Method::parse(&m.name()).as_ref(), Ok(m), "{}", m.name());
        }
        assert_eq!(Method::sweep(&[0.25], &[]).len(), 2);
        assert_eq!(
            Method::parse("ours@u=0.2@l=1").unwrap().name(),
            "ours@u=0.2@l=1"
        );
        for (bad, says) in [
            ("gpt", "unknown method"),
            ("ours:nope", "unknown method"),
            ("u-hlm@l=1", "no importance knob"),
            ("slm-only@u=0.1", "only u-hlm and ours"),
            ("ours@u=-1", "number ≥ 0"),
            ("ours@u=x", "number ≥ 0"),
            ("ours@z=1", "unknown method"),
        ] {
            let e = Method::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn row(method: &str, energy: f64, upload: f64, bert: f64) -> Row {
        Row {
            method: method.into(),
            samples: 1,
            bert_f1_vs_llm: Some(bert),
            bert_f1_vs_reference: None,
            pass_at_1: None,
            upload_rate: upload,
            llm_passes_per_token: upload,
            bytes_up_per_token: 0.0,
            bytes_down_per_token: 0.0,
            energy_per_token_j: energy,
            energy_saving_vs_standard: None,
            throughput_analytic_tok_s: 1.0,
            throughput_real_link_tok_s: None,
        }
    }

    #[test]
    fn sweep_curves_take_their_rows_in_knob_order() {
        let defaults = (0.07, 2.0);
        let rows = vec![
            row("standard-hlm", 1.0, 1.0, 1.0),
            row("u-hlm", 0.5, 0.2, 0.99),
            row("u-hlm@u=0.3", 0.3, 0.1, 0.95),
            row("u-hlm@u=0", 0.6, 0.4, 0.995),
            row("ours", 0.45, 0.18, 0.98),
            row("ours@u=0.3", 0.28, 0.08, 0.94),
            row("ours@l=1", 0.47, 0.19, 0.985),
            row("ours:median-mad", 0.4, 0.1, 0.9),
        ];
        let u = sweep_curve(
            &rows,
            defaults,
            |r| r.upload_rate,
            "u".into(),
            &|f, u, _| (f == "u-hlm").then(|| (u, format!("u={u}"))),
        );
        let labels: Vec<&str> = u.points.iter().map(|p| p.2.as_str()).collect();
        assert_eq!(labels, ["u=0", "u=0.07", "u=0.3"]);
        let l = sweep_curve(
            &rows,
            defaults,
            |r| r.energy_per_token_j,
            "l".into(),
            &|f, u, l| (f == "ours" && u == 0.07).then(|| (l, format!("λ={l}"))),
        );
        assert_eq!(
            l.points,
            vec![(0.47, 0.985, "λ=1".into()), (0.45, 0.98, "λ=2".into())]
        );
        let dir = tempfile::tempdir().unwrap();
        write_plots(dir.path(), &rows, None, defaults).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("sweep_upload.svg")).unwrap();
        assert!(svg.contains("U-HLM, u_th swept") && svg.contains("standard-hlm"));
        assert!(!dir.path().join("calibration.svg").exists());
    }
}
