//! From a run's samples to its table, paired comparisons and plots.
//!
//! Every figure is derived from the stored samples: quality from their texts and scores, cost
//! from their counts × the run's calibrated per-operation costs ([`Costs`]) × the energy and link
//! constants ([`Constants`]). Each comes with a 95 % bootstrap interval over tasks ([`stats`]).
//!
//! Columns, per method (formulas in docs/evaluation.md):
//! * pass@1 (code tasks), BERTScore F1 against the LLM-only answer and against the reference;
//! * identical to LLM: the share of answers whose tokens equal the LLM-only answer's, and the
//!   mean position (token index) of the first difference among those that differ;
//! * upload rate = uploaded / generated tokens; LLM forward passes per token; bytes per token;
//! * energy per token: the device's (compute, radio, idle), the server's, and their sum;
//! * analytic throughput; real-link throughput when the run used the shaped link;
//! * answers that hit `max_tokens`, and the measured wall time of the method on this machine.

use crate::calibration::{self, Calibration};
use crate::costs::Costs;
use crate::energy::{analytic_delay, energy, Activity, Constants, Energy};
use crate::method::Method;
use crate::plot::Series;
use crate::samples::Sample;
use crate::stats::{self, Estimate, McNemar, PairedDifference};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Seed of the bootstrap resamples (fixed: the same samples give the same intervals).
const BOOTSTRAP_SEED: u64 = 2024;

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub method: String,
    pub tasks: usize,
    pub tokens_per_answer: f64,
    /// Answers that ran into `max_tokens`.
    pub hit_cap: usize,
    pub pass_at_1: Option<Estimate>,
    pub bert_f1_vs_llm: Option<Estimate>,
    pub bert_f1_vs_reference: Option<Estimate>,
    pub identical_to_llm: Option<Estimate>,
    /// Mean token index of the first difference from the LLM-only answer, over answers that
    /// differ (none when every answer is identical).
    pub first_divergence: Option<f64>,
    pub upload_rate: Estimate,
    pub llm_passes_per_token: Estimate,
    pub bytes_up_per_token: f64,
    pub bytes_down_per_token: f64,
    pub device_energy_per_token_j: Estimate,
    pub server_energy_per_token_j: Estimate,
    pub system_energy_per_token_j: Estimate,
    /// 1 − system energy / standard HLM's (per token), when standard HLM ran.
    pub system_energy_saving_vs_standard: Option<f64>,
    pub throughput_analytic_tok_s: Estimate,
    /// tokens / wall time over the real constrained link, when the run used one.
    pub throughput_real_link_tok_s: Option<f64>,
    /// Measured wall time of all this method's generations (scoring excluded).
    pub wall_s: f64,
}

/// Two methods on the tasks both ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub first: String,
    pub second: String,
    pub tasks: usize,
    pub bert_f1_vs_llm: Option<PairedDifference>,
    pub upload_rate: Option<PairedDifference>,
    /// `1 − first's upload rate / second's`: the share of the second's uploads the first saves.
    pub upload_saving: Option<PairedDifference>,
    pub system_energy_per_token_j: Option<PairedDifference>,
    pub pass_at_1: Option<McNemar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub comparisons: Vec<Comparison>,
    /// The U-HLM calibration, from the standard-HLM run's tokens (when it ran).
    pub calibration: Option<Calibration>,
}

/// A sample's cost figures under the run's costs and constants.
#[derive(Debug, Clone, Copy)]
struct Cost {
    energy: Energy,
    delay_s: f64,
}

fn cost(s: &Sample, costs: &Costs, c: &Constants) -> Cost {
    let w = costs.work(s);
    let a = Activity {
        tokens: s.tokens,
        rounds: s.rounds,
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
        device_compute_s: w.device_s,
        // Timed on this CPU; the server preset runs it `speedup` times faster.
        verifier_s: w.verifier_s / c.server.chosen().speedup.max(1e-12),
    };
    Cost {
        energy: energy(&a, c),
        delay_s: analytic_delay(&a, c),
    }
}

/// The position of the first token where `a` and `b` differ (`None` when equal).
fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    (a != b).then(|| a.iter().zip(b).take_while(|(x, y)| x == y).count())
}

/// Builds the report from `samples` for `methods` (in their order; methods without samples are
/// left out).
pub fn build(
    methods: &[Method],
    samples: &[Sample],
    costs: &Costs,
    constants: &Constants,
) -> Report {
    let llm: BTreeMap<&str, &Sample> = samples
        .iter()
        .filter(|s| s.method == Method::LlmOnly.name())
        .map(|s| (s.task.as_str(), s))
        .collect();
    let by_method = |name: &str| -> Vec<&Sample> {
        let mut v: Vec<&Sample> = samples.iter().filter(|s| s.method == name).collect();
        v.sort_by(|a, b| a.task.cmp(&b.task));
        v
    };
    let mut rows: Vec<Row> = methods
        .iter()
        .map(|m| by_method(&m.name()))
        .filter(|ss| !ss.is_empty())
        .map(|ss| row(&ss, &llm, costs, constants))
        .collect();
    if let Some(std_e) = rows
        .iter()
        .find(|r| r.method == Method::StandardHlm.name())
        .map(|r| r.system_energy_per_token_j.value)
    {
        for r in &mut rows {
            r.system_energy_saving_vs_standard =
                Some(1.0 - r.system_energy_per_token_j.value / std_e);
        }
    }
    let comparisons = pairs(methods)
        .into_iter()
        .filter_map(|(a, b)| compare(&by_method(&a), &by_method(&b), costs, constants))
        .collect();
    let verdicts: Vec<(f32, bool)> = samples
        .iter()
        .filter(|s| s.method == Method::StandardHlm.name())
        .flat_map(|s| s.verdicts.iter().copied())
        .collect();
    Report {
        rows,
        comparisons,
        calibration: calibration::fit(&verdicts),
    }
}

/// The pairs compared with U-HLM: `ours` with the default rule (at the run's λ; at each swept
/// `u_th` against U-HLM at that `u_th`) and U-HLM with the expected u, against U-HLM at the same
/// `u_th`; every `learned` row against every U-HLM row (the run's and each sweep point), so a
/// head's point can be read against U-HLM at a similar upload rate as well as at the run's knob.
fn pairs(methods: &[Method]) -> Vec<(String, String)> {
    let baseline = |u_th: Option<f32>| Some(Method::u_hlm(u_th)).filter(|u| methods.contains(u));
    let sampled_u_hlm: Vec<&Method> = methods
        .iter()
        .filter(|m| {
            matches!(
                m,
                Method::UHlm {
                    estimate: hlm_core::UncertaintyEstimate::Sampled,
                    ..
                }
            )
        })
        .collect();
    methods
        .iter()
        .flat_map(|m| {
            let against: Vec<Method> = match m {
                Method::Ours {
                    rule,
                    u_th,
                    lambda: None,
                } if *rule == crate::method::DEFAULT_RULE => baseline(*u_th).into_iter().collect(),
                Method::Learned { .. } => sampled_u_hlm.iter().map(|&u| u.clone()).collect(),
                Method::UHlm {
                    u_th: None,
                    estimate: hlm_core::UncertaintyEstimate::Expected,
                } => baseline(None).into_iter().collect(),
                _ => Vec::new(),
            };
            against.into_iter().map(|a| (m.name(), a.name()))
        })
        .collect()
}

/// A per-task figure, by the task's index.
type PerTask<'a, T> = &'a dyn Fn(usize) -> T;

/// Ratio of sums over the tasks `idx` picks: `Σ num / Σ den` (a per-token figure: long answers
/// weigh more).
fn ratio(idx: &[usize], num: PerTask<f64>, den: PerTask<f64>) -> Option<f64> {
    let d: f64 = idx.iter().map(|&i| den(i)).sum();
    (d > 0.0).then(|| idx.iter().map(|&i| num(i)).sum::<f64>() / d)
}

/// Mean over the tasks `idx` picks of the values `f` has (tasks without one are skipped).
fn mean(idx: &[usize], f: PerTask<Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = idx.iter().filter_map(|&i| f(i)).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

const ZERO: Estimate = Estimate {
    value: 0.0,
    lo: 0.0,
    hi: 0.0,
};

fn row(ss: &[&Sample], llm: &BTreeMap<&str, &Sample>, costs: &Costs, c: &Constants) -> Row {
    let n = ss.len();
    let draws = stats::resamples(n, stats::RESAMPLES, BOOTSTRAP_SEED);
    let cost: Vec<Cost> = ss.iter().map(|s| cost(s, costs, c)).collect();
    let tokens = |i: usize| ss[i].tokens as f64;
    let est = |f: &dyn Fn(&[usize]) -> Option<f64>| stats::bootstrap(n, &draws, f);
    let per_token = |f: PerTask<f64>| est(&|idx| ratio(idx, f, &tokens)).unwrap_or(ZERO);
    let mean_of = |f: PerTask<Option<f64>>| est(&|idx| mean(idx, f));
    let llm_ids = |i: usize| llm.get(ss[i].task.as_str()).map(|l| &l.ids);
    let divergences: Vec<usize> = (0..n)
        .filter_map(|i| first_difference(&ss[i].ids, llm_ids(i)?))
        .collect();
    let all: f64 = ss.iter().map(|s| s.tokens as f64).sum::<f64>().max(1.0);
    let per = |f: &dyn Fn(&Sample) -> usize| ss.iter().map(|s| f(s) as f64).sum::<f64>() / all;
    let real: Option<f64> = ss.iter().map(|s| s.real_link_wall_s).sum();
    Row {
        method: ss[0].method.clone(),
        tasks: n,
        tokens_per_answer: all / n as f64,
        hit_cap: ss.iter().filter(|s| s.hit_cap()).count(),
        pass_at_1: mean_of(&|i| ss[i].passed.map(|p| p as u8 as f64)),
        bert_f1_vs_llm: mean_of(&|i| ss[i].bert_vs_llm.map(|b| b.f1)),
        bert_f1_vs_reference: mean_of(&|i| ss[i].bert_vs_reference.map(|b| b.f1)),
        identical_to_llm: mean_of(&|i| llm_ids(i).map(|l| (*l == ss[i].ids) as u8 as f64)),
        first_divergence: (!divergences.is_empty())
            .then(|| divergences.iter().sum::<usize>() as f64 / divergences.len() as f64),
        upload_rate: per_token(&|i| ss[i].uploaded as f64),
        llm_passes_per_token: per_token(&|i| ss[i].llm_forward_passes as f64),
        bytes_up_per_token: per(&|s| s.bytes_up),
        bytes_down_per_token: per(&|s| s.bytes_down),
        device_energy_per_token_j: per_token(&|i| cost[i].energy.device_j),
        server_energy_per_token_j: per_token(&|i| cost[i].energy.server_j),
        system_energy_per_token_j: per_token(&|i| cost[i].energy.total_j),
        system_energy_saving_vs_standard: None,
        throughput_analytic_tok_s: est(&|idx| ratio(idx, &tokens, &|i| cost[i].delay_s))
            .unwrap_or(ZERO),
        throughput_real_link_tok_s: real.map(|w| all / w.max(1e-12)),
        wall_s: ss.iter().map(|s| s.wall_s).sum(),
    }
}

/// A figure of one method's samples over the tasks `idx` picks.
type Statistic<'a> = &'a dyn Fn(&[usize], &[&Sample]) -> Option<f64>;

/// Paired figures of `a − b` over the tasks both have.
fn compare(a: &[&Sample], b: &[&Sample], costs: &Costs, c: &Constants) -> Option<Comparison> {
    let b_of: BTreeMap<&str, &Sample> = b.iter().map(|s| (s.task.as_str(), *s)).collect();
    let (xs, ys): (Vec<&Sample>, Vec<&Sample>) = a
        .iter()
        .filter_map(|s| Some((*s, *b_of.get(s.task.as_str())?)))
        .unzip();
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let draws = stats::resamples(n, stats::RESAMPLES, BOOTSTRAP_SEED + 1);
    let paired =
        |f: Statistic| stats::paired_bootstrap(n, &draws, &|idx| Some(f(idx, &xs)? - f(idx, &ys)?));
    let per_token = |f: &dyn Fn(&Sample) -> f64| {
        paired(&|idx, ss| ratio(idx, &|i| f(ss[i]), &|i| ss[i].tokens as f64))
    };
    // Each sample's energy once, not once per resample.
    let energy: BTreeMap<(&str, &str), f64> = xs
        .iter()
        .chain(&ys)
        .map(|s| {
            (
                (s.task.as_str(), s.method.as_str()),
                cost(s, costs, c).energy.total_j,
            )
        })
        .collect();
    let passes: Vec<(bool, bool)> = xs
        .iter()
        .zip(&ys)
        .filter_map(|(x, y)| Some((x.passed?, y.passed?)))
        .collect();
    Some(Comparison {
        first: xs[0].method.clone(),
        second: ys[0].method.clone(),
        tasks: n,
        bert_f1_vs_llm: paired(&|idx, ss| mean(idx, &|i| ss[i].bert_vs_llm.map(|b| b.f1))),
        upload_rate: per_token(&|s| s.uploaded as f64),
        upload_saving: stats::paired_bootstrap(n, &draws, &|idx| {
            let rate =
                |ss: &[&Sample]| ratio(idx, &|i| ss[i].uploaded as f64, &|i| ss[i].tokens as f64);
            Some(1.0 - rate(&xs)? / rate(&ys)?.max(1e-12))
        }),
        system_energy_per_token_j: per_token(&|s| energy[&(s.task.as_str(), s.method.as_str())]),
        pass_at_1: (!passes.is_empty()).then(|| stats::mcnemar(&passes)),
    })
}

/// `value [lo, hi]` with `digits` decimals, or as a percentage.
fn fmt(e: &Estimate, digits: usize, pct: bool) -> String {
    let k = if pct { 100.0 } else { 1.0 };
    let unit = if pct { " %" } else { "" };
    format!(
        "{:.digits$}{unit} [{:.digits$}, {:.digits$}]",
        k * e.value,
        k * e.lo,
        k * e.hi
    )
}

fn opt(e: &Option<Estimate>, digits: usize, pct: bool) -> String {
    e.as_ref().map_or("–".into(), |e| fmt(e, digits, pct))
}

/// The quality table, the cost table and the paired comparisons, as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut s = String::from(
        "**Quality** (95 % bootstrap intervals over tasks)\n\n\
         | method | tasks | pass@1 | BERTScore F1 vs LLM | BERTScore F1 vs reference | identical to LLM | first divergence (token) | tokens / answer | hit the cap |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &report.rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
            r.method,
            r.tasks,
            opt(&r.pass_at_1, 3, false),
            opt(&r.bert_f1_vs_llm, 1, true),
            opt(&r.bert_f1_vs_reference, 1, true),
            opt(&r.identical_to_llm, 0, true),
            r.first_divergence.map_or("–".into(), |d| format!("{d:.0}")),
            r.tokens_per_answer,
            r.hit_cap,
        );
    }
    s += "\n**Cost** (per generated token; energy and analytic throughput from counts × the run's \
          calibrated costs)\n\n\
          | method | upload rate | LLM passes / token | bytes up / down | device energy | server energy | system energy | system saving vs standard HLM | throughput (analytic) | throughput (real link) | wall time here |\n\
          |---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in &report.rows {
        s += &format!(
            "| {} | {} | {} | {:.1} / {:.1} | {} J | {} J | {} J | {} | {} tok/s | {} | {:.0} s ({:.1} s / task) |\n",
            r.method,
            fmt(&r.upload_rate, 3, false),
            fmt(&r.llm_passes_per_token, 3, false),
            r.bytes_up_per_token,
            r.bytes_down_per_token,
            fmt(&r.device_energy_per_token_j, 3, false),
            fmt(&r.server_energy_per_token_j, 3, false),
            fmt(&r.system_energy_per_token_j, 3, false),
            r.system_energy_saving_vs_standard
                .map_or("–".into(), |x| format!("{:.1} %", 100.0 * x)),
            fmt(&r.throughput_analytic_tok_s, 2, false),
            r.throughput_real_link_tok_s
                .map_or("–".into(), |t| format!("{t:.2} tok/s")),
            r.wall_s,
            r.wall_s / r.tasks.max(1) as f64,
        );
    }
    if !report.comparisons.is_empty() {
        s += "\n**Paired comparisons** (first − second on the same tasks; paired bootstrap \
              interval and p-value; exact McNemar test for pass@1)\n\n\
              | first − second | tasks | BERTScore F1 vs LLM | upload rate | uploads saved (1 − first / second) | system energy / token | pass@1: first only / second only, p |\n\
              |---|---|---|---|---|---|---|\n";
        let d = |p: &Option<PairedDifference>, digits: usize, pct: bool| {
            p.as_ref().map_or("–".into(), |p| {
                format!("{}, p = {:.3}", fmt(&p.difference, digits, pct), p.p_value)
            })
        };
        for c in &report.comparisons {
            s += &format!(
                "| {} − {} | {} | {} | {} | {} | {} J | {} |\n",
                c.first,
                c.second,
                c.tasks,
                d(&c.bert_f1_vs_llm, 2, true),
                d(&c.upload_rate, 4, false),
                d(&c.upload_saving, 1, true),
                d(&c.system_energy_per_token_j, 4, false),
                c.pass_at_1.map_or("–".into(), |m| format!(
                    "{} / {}, p = {:.3}",
                    m.first_only, m.second_only, m.p_value
                )),
            );
        }
    }
    s
}

/// Writes `results.json` (run info, costs, constants, rows, comparisons, calibration; the
/// samples stay in their `samples*.jsonl`), `table.md` and the plots into `dir`.
pub fn write_outputs(
    dir: &Path,
    info: &serde_json::Value,
    costs: &Costs,
    constants: &Constants,
    report: &Report,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({
        "run": info,
        "costs": costs,
        "constants": constants,
        "rows": report.rows,
        "comparisons": report.comparisons,
        "calibration": report.calibration,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    let mut md = header(info);
    md += &markdown(report);
    if let Some(c) = &report.calibration {
        md += &format!("\n{}\n", c.summary());
    }
    std::fs::write(dir.join("table.md"), md)?;
    if let Some(c) = &report.calibration {
        std::fs::write(dir.join("calibration.svg"), c.plot())?;
    }
    let knob = |k: &str, d: f32| info[k].as_f64().map_or(d, |x| x as f32);
    let defaults = hlm_core::FilterKnobs::default();
    write_plots(
        dir,
        &report.rows,
        (
            knob("uncertainty_threshold", defaults.uncertainty_threshold),
            knob("importance_strictness", defaults.importance_strictness),
        ),
    )
}

/// `table.md`'s first paragraph: what ran, where.
fn header(info: &serde_json::Value) -> String {
    let f = |k: &str| match &info[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".into(),
        v => v.to_string(),
    };
    format!(
        "Draft `{}`, verifier `{}`; {} ({} tasks, {} new tokens at most, seed {}); knobs u_th = {}, \
         λ = {}; verifier {}; {} ({} cores); hlm {}.\n\n",
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
    )
}

/// A plot's coordinate of a row, with its interval.
type Axis = fn(&Row) -> Option<Estimate>;

/// One curve: the rows of a method family along one knob (ordered by it), or a lone baseline.
fn curve(
    rows: &[Row],
    name: String,
    x: Axis,
    y: Axis,
    pick: &dyn Fn(&Method) -> Option<(f32, String)>,
) -> Series {
    type Point = (f32, (f64, f64, String), Option<[f64; 4]>);
    let mut pts: Vec<Point> = rows
        .iter()
        .filter_map(|r| {
            let (knob, label) = pick(&Method::parse(&r.method).ok()?)?;
            let (ex, ey) = (x(r)?, y(r)?);
            Some((
                knob,
                (ex.value, ey.value, label),
                Some([ex.lo, ex.hi, ey.lo, ey.hi]),
            ))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    Series {
        name,
        points: pts.iter().map(|p| p.1.clone()).collect(),
        errors: pts.iter().map(|p| p.2).collect(),
    }
}

/// The series with its points in the order of their x.
fn along_x(mut s: Series) -> Series {
    let mut order: Vec<usize> = (0..s.points.len()).collect();
    order.sort_by(|&a, &b| s.points[a].0.total_cmp(&s.points[b].0));
    s.points = order.iter().map(|&i| s.points[i].clone()).collect();
    s.errors = order.iter().map(|&i| s.errors[i]).collect();
    s
}

/// The Pareto plots: upload rate against pass@1, against BERTScore vs the LLM, and system energy
/// against BERTScore vs the LLM. Each method family is one curve over its knob (U-HLM's `u_th`;
/// ours' `u_th` at the run's λ; ours' λ at the run's `u_th`), the baselines single points, every
/// point with its 95 % intervals.
pub fn write_plots(dir: &Path, rows: &[Row], run: (f32, f32)) -> Result<()> {
    let upload: Axis = |r| Some(r.upload_rate);
    let energy: Axis = |r| Some(r.system_energy_per_token_j);
    let plots: [(&str, &str, Axis, &str, Axis); 3] = [
        (
            "pareto_upload_pass.svg",
            "upload rate",
            upload,
            "pass@1",
            |r| r.pass_at_1,
        ),
        (
            "pareto_upload_bert.svg",
            "upload rate",
            upload,
            "BERTScore F1 vs LLM-only",
            |r| r.bert_f1_vs_llm,
        ),
        (
            "pareto_energy_bert.svg",
            "system energy / token (J)",
            energy,
            "BERTScore F1 vs LLM-only",
            |r| r.bert_f1_vs_llm,
        ),
    ];
    let (du, dl) = run;
    for (file, x_label, x, y_label, y) in plots {
        let mut series = vec![
            curve(rows, "U-HLM (u_th)".into(), x, y, &|m| {
                let (f, u, _) = m.knobs(run)?;
                (f == "u-hlm").then(|| (u, format!("u={u}")))
            }),
            curve(rows, "U-HLM, expected u (u_th)".into(), x, y, &|m| {
                let (f, u, _) = m.knobs(run)?;
                (f == "u-hlm:expected").then(|| (u, format!("u={u}")))
            }),
            // The head's own threshold (a `learned` row without one) is not in the run's
            // record, so this curve runs along the upload rate instead of the knob.
            along_x(curve(
                rows,
                "learned head (P(reject) threshold)".into(),
                x,
                y,
                &|m| match m {
                    Method::Learned { u_th: None } => Some((0.0, "head's p".into())),
                    _ => {
                        let (f, u, _) = m.knobs(run)?;
                        (f == "learned").then(|| (u, format!("p={u}")))
                    }
                },
            )),
            curve(rows, format!("ours (u_th, λ={dl})"), x, y, &|m| {
                let (f, u, l) = m.knobs(run)?;
                (f == "ours" && l == dl).then(|| (u, format!("u={u}")))
            }),
            curve(rows, format!("ours (λ, u_th={du})"), x, y, &|m| {
                let (f, u, l) = m.knobs(run)?;
                (f == "ours" && u == du && l != dl).then(|| (l, format!("λ={l}")))
            }),
        ];
        for base in [Method::LlmOnly, Method::SlmOnly, Method::StandardHlm] {
            let name = base.name();
            series.push(curve(rows, name.clone(), x, y, &|m| {
                (*m == base).then(|| (0.0, name.clone()))
            }));
        }
        series.retain(|s| !s.points.is_empty());
        if series.is_empty() {
            continue;
        }
        std::fs::write(
            dir.join(file),
            crate::plot::scatter(
                &format!("{y_label} against {x_label}"),
                x_label,
                y_label,
                &series,
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bertscore::Score;
    use crate::costs::ForwardCost;
    use crate::samples::tests::sample;

    #[test]
    fn learned_rows_meet_every_u_hlm_row_and_ours_meets_its_own_u_th() {
        let methods: Vec<Method> = [
            "u-hlm",
            "u-hlm@u=0.15",
            "u-hlm:expected",
            "ours",
            "ours@u=0.15",
            "learned",
            "learned@u=0.05",
            "standard-hlm",
        ]
        .iter()
        .map(|m| Method::parse(m).unwrap())
        .collect();
        let got: Vec<String> = pairs(&methods)
            .into_iter()
            .map(|(a, b)| format!("{a} − {b}"))
            .collect();
        let want = [
            "u-hlm:expected − u-hlm",
            "ours − u-hlm",
            "ours@u=0.15 − u-hlm@u=0.15",
            "learned − u-hlm",
            "learned − u-hlm@u=0.15",
            "learned@u=0.05 − u-hlm",
            "learned@u=0.05 − u-hlm@u=0.15",
        ];
        assert_eq!(got, want);
    }

    fn costs() -> Costs {
        Costs {
            draft: ForwardCost {
                per_pass_s: 0.02,
                per_position_s: 0.001,
            },
            verifier: ForwardCost {
                per_pass_s: 0.06,
                per_position_s: 0.002,
            },
            uncertainty_s: 0.0005,
        }
    }

    /// Three methods over 30 tasks: u-hlm and ours decide alike but for ours' wall time, which
    /// must not move any derived figure.
    fn samples() -> Vec<Sample> {
        let mut v = Vec::new();
        for t in 0..30 {
            let task = format!("t{t:02}");
            let mut l = sample(&task, "llm-only");
            l.ids = vec![1, 2, 3, 4];
            l.tokens = 4;
            v.push(l);
            let mut u = sample(&task, "u-hlm");
            u.ids = if t % 3 == 0 {
                vec![1, 2, 9, 4]
            } else {
                vec![1, 2, 3, 4]
            };
            u.tokens = 4;
            u.passed = Some(t % 3 != 0);
            u.bert_vs_llm = Some(Score {
                precision: 1.0,
                recall: 1.0,
                f1: if t % 3 == 0 { 0.9 } else { 1.0 },
            });
            u.verdicts = vec![];
            let mut o = u.clone();
            o.method = "ours".into();
            o.wall_s = 100.0;
            let mut s = u.clone();
            s.method = "standard-hlm".into();
            s.uploaded = 4;
            s.rounds = 4;
            s.llm_forward_passes = 4;
            s.verdicts = vec![(0.1, false), (0.5, true)];
            v.extend([u, o, s]);
        }
        v
    }

    #[test]
    fn identical_decisions_give_identical_cost_figures_and_a_null_comparison() {
        let methods = vec![
            Method::LlmOnly,
            Method::StandardHlm,
            Method::u_hlm(None),
            Method::ours(),
        ];
        let r = build(
            &methods,
            &samples(),
            &costs(),
            &Constants::default_constants(),
        );
        assert_eq!(r.rows.len(), 4);
        let (u, o) = (&r.rows[2], &r.rows[3]);
        assert_eq!(u.system_energy_per_token_j, o.system_energy_per_token_j);
        assert_eq!(u.throughput_analytic_tok_s, o.throughput_analytic_tok_s);
        assert!(u.wall_s < o.wall_s);
        // 10 of 30 differ from the LLM, at token 2.
        let id = u.identical_to_llm.unwrap();
        assert!((id.value - 20.0 / 30.0).abs() < 1e-12 && id.lo < id.value && id.hi > id.value);
        assert_eq!(u.first_divergence, Some(2.0));
        assert!((u.pass_at_1.unwrap().value - 20.0 / 30.0).abs() < 1e-12);
        // LLM-only pays the server, the device only idles and listens.
        let l = &r.rows[0];
        assert!(l.server_energy_per_token_j.value > 0.0);
        assert!(r.rows[1].system_energy_saving_vs_standard == Some(0.0));
        let c = &r.comparisons[0];
        assert_eq!(
            (c.first.as_str(), c.second.as_str(), c.tasks),
            ("ours", "u-hlm", 30)
        );
        let m = c.pass_at_1.unwrap();
        assert_eq!((m.first_only, m.second_only, m.p_value), (0, 0, 1.0));
        assert_eq!(c.bert_f1_vs_llm.unwrap().difference.value, 0.0);
        let cal = r.calibration.as_ref().unwrap();
        assert_eq!(cal.tokens, 60);
        let md = markdown(&r);
        assert!(md.contains("| ours − u-hlm | 30 |"), "{md}");
        let dir = tempfile::tempdir().unwrap();
        write_outputs(
            dir.path(),
            &serde_json::json!({}),
            &costs(),
            &Constants::default_constants(),
            &r,
        )
        .unwrap();
        for f in [
            "results.json",
            "table.md",
            "pareto_upload_pass.svg",
            "pareto_upload_bert.svg",
            "calibration.svg",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }
}
