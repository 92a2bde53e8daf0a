//! The evaluation run: every method over the same tasks, with the same seeds and generation
//! length, through **the** decoding loop (`HybridSession::generate` over an in-process verifier,
//! `LocalLink`, or a real one behind a WebSocket), scored, and each sample appended to the run's
//! [`Store`] the moment it is done. Tables and plots are built from the stored samples
//! ([`crate::report`]).

use crate::bertscore::BertScorer;
use crate::humaneval::{self, Sandbox};
use crate::method::{Method, RunKnobs};
use crate::samples::{Sample, Shard, Store};
use crate::tasks::Task;
use crate::{EvalError, Result};
use hlm_engine::chat::TextStream;
use hlm_engine::decode::{
    Drafter, GenerationOptions, HybridSession, StopMatcher, StopReason, Summary, TokenEvent,
    TokenKind,
};
use hlm_engine::link::{block_on, LocalLink};
use hlm_engine::model::Model;
use hlm_engine::verifier::VerifierSession;
use hlm_engine::ws_link::WsLink;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

pub use crate::method::DEFAULT_RULE;

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
    pub knobs: RunKnobs,
    pub sandbox: Sandbox,
    /// Run the loop's methods against this verifier instead of in process; their wall time is
    /// then the real-link throughput.
    pub remote: Option<Remote>,
    /// Only the tasks of this slice.
    pub shard: Option<Shard>,
}

/// Frame bytes of the LLM-only baseline: the prompt up as token ids (4 bytes each), each token
/// down in its own frame (4 bytes of id, 2 of version header).
fn llm_only_bytes(prompt_tokens: usize, tokens: usize) -> (usize, usize) {
    (2 + 4 * prompt_tokens, 6 * tokens)
}

/// The text a task's generations start from: its instruction in the chat template.
fn prompt_text(task: &Task) -> String {
    hlm_engine::chat::chatml(&task.instruction, None)
}

/// The tasks of the run's shard (all of them without one).
fn shard_tasks<'a>(tasks: &'a [Task], cfg: &EvalConfig) -> Vec<&'a Task> {
    tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| cfg.shard.is_none_or(|s| s.takes(*i)))
        .map(|(_, t)| t)
        .collect()
}

/// One generation of a run as another driver of the same loop needs it (a browser page, with
/// `chat: false`): the prompt text and the loop's options, absent for LLM-only (the server
/// alone, which runs no loop).
#[derive(Debug, Serialize)]
pub struct Request {
    pub task: String,
    pub method: String,
    pub prompt: String,
    pub options: Option<GenerationOptions>,
}

/// Every task × method of `tasks` and `methods` as the harness would run it (shard included).
pub fn requests(tasks: &[Task], methods: &[Method], cfg: &EvalConfig) -> Vec<Request> {
    let mut out = Vec::new();
    for task in shard_tasks(tasks, cfg) {
        for method in methods {
            out.push(Request {
                task: task.id.clone(),
                method: method.name(),
                prompt: prompt_text(task),
                options: method.options(&cfg.knobs, &task.stop()),
            });
        }
    }
    out
}

/// Runs every method on every task of the shard that `store` does not hold yet, appending each
/// sample as it finishes; `progress(done, total, what)` after each generation.
#[allow(clippy::too_many_arguments)]
pub fn run(
    drafter: &mut Drafter,
    verifier: Arc<Model>,
    tasks: &[Task],
    methods: &[Method],
    cfg: &EvalConfig,
    scorer: Option<&BertScorer>,
    store: &mut Store,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let mine = shard_tasks(tasks, cfg);
    let total = mine.len() * methods.len();
    let mut done = mine
        .iter()
        .map(|t| {
            methods
                .iter()
                .filter(|m| store.is_done(&t.id, &m.name()))
                .count()
        })
        .sum();
    for task in mine {
        let prompt = drafter.encode(&prompt_text(task))?;
        for method in methods {
            if store.is_done(&task.id, &method.name()) {
                continue;
            }
            let mut s = match (method, &cfg.remote) {
                (Method::LlmOnly, None) => llm_only(drafter, &verifier, task, &prompt, cfg)?,
                (Method::LlmOnly, Some(r)) => llm_only_remote(drafter, r, task, &prompt, cfg)?,
                _ => hybrid(drafter, &verifier, task, &prompt, method, cfg)?,
            };
            score(&mut s, task, store, cfg, scorer)?;
            store.append(s)?;
            done += 1;
            progress(done, total, &format!("{} {}", task.id, method.name()));
        }
    }
    Ok(())
}

/// pass@1 for code tasks; BERTScore against the reference and against the LLM-only answer.
fn score(
    s: &mut Sample,
    task: &Task,
    store: &Store,
    cfg: &EvalConfig,
    scorer: Option<&BertScorer>,
) -> Result<()> {
    if let Some(p) = &task.problem {
        let code = humaneval::extract_code(&s.text);
        s.passed = Some(humaneval::check(p, &code, &cfg.sandbox)?.passed());
    }
    let Some(scorer) = scorer else {
        return Ok(());
    };
    if let Some(r) = &task.reference {
        s.bert_vs_reference = Some(scorer.score(&s.text, r)?);
    }
    let llm = Method::LlmOnly.name();
    let llm_text = match store.get(&task.id, &llm) {
        Some(l) => Some(l.text.as_str()),
        None if s.method == llm => Some(s.text.as_str()),
        None => None,
    };
    if let Some(l) = llm_text {
        s.bert_vs_llm = Some(scorer.score(&s.text, l)?);
    }
    Ok(())
}

/// The verifier alone, greedy, streaming its answer: one request (one round), the prompt in one
/// forward, then one forward per token.
pub(crate) fn llm_only(
    drafter: &Drafter,
    verifier: &Model,
    task: &Task,
    prompt: &[u32],
    cfg: &EvalConfig,
) -> Result<Sample> {
    let t = Instant::now();
    let tok = drafter.tokenizer();
    let mut stream = TextStream::new();
    let mut stop = StopMatcher::new(&task.stop());
    let ids = verifier.generate_greedy_until(prompt, cfg.knobs.max_tokens, &mut |id| {
        stop.push(&stream.push(tok, id));
        stop.hit().is_none()
    })?;
    let wall_s = t.elapsed().as_secs_f64();
    let full = tok
        .decode(&ids, true)
        .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
    let eos = &verifier.config().eos_ids;
    let stop_reason = match stop.hit() {
        Some(h) => h.into(),
        None if ids.last().is_some_and(|id| eos.contains(id)) => StopReason::EndOfSequence,
        None => StopReason::MaxTokens,
    };
    let (up, down) = llm_only_bytes(prompt.len(), ids.len());
    Ok(Sample {
        task: task.id.clone(),
        method: Method::LlmOnly.name(),
        text: stop.cut(&full).to_string(),
        stop_reason,
        prompt_tokens: prompt.len(),
        tokens: ids.len(),
        uploaded: ids.len(),
        rejected: 0,
        rounds: 1,
        bytes_up: up,
        bytes_down: down,
        draft_forward_passes: 0,
        draft_forward_tokens: 0,
        uncertainty_draws: 0,
        llm_forward_passes: ids.len(),
        llm_forward_tokens: prompt.len() + ids.len().saturating_sub(1),
        wall_s,
        real_link_wall_s: None,
        real_link_first_token_s: None,
        draft_time_s: None,
        llm_compute_us: None,
        passed: None,
        bert_vs_llm: None,
        bert_vs_reference: None,
        verdicts: Vec::new(),
        ids,
    })
}

/// The LLM-only baseline against the run's remote verifier: the prompt goes up in a `Generate`
/// and the server streams its greedy answer back over the real WebSocket (and whatever link
/// shapes it), so its wall time is what a user asking the server alone would wait.
fn llm_only_remote(
    drafter: &Drafter,
    remote: &Remote,
    task: &Task,
    prompt: &[u32],
    cfg: &EvalConfig,
) -> Result<Sample> {
    let config = hlm_engine::decode::GenerationConfig {
        max_tokens: cfg.knobs.max_tokens,
        stop: task.stop(),
        ..Default::default()
    };
    let vocab = drafter.vocab_info();
    let t = Instant::now();
    let mut first_token_s = None;
    let summary = remote.runtime.block_on(async {
        let link = WsLink::connect_with_token(&remote.url, remote.token.as_deref()).await?;
        let mut s = HybridSession::connect(link, vocab, "eval").await?;
        let summary = s
            .generate_on_server(drafter.tokenizer(), prompt, &config, &mut |ev| {
                first_token_s.get_or_insert(ev.wall_time_s);
                true
            })
            .await?;
        let _ = s.close().await;
        Ok::<_, hlm_engine::EngineError>(summary)
    })?;
    let wall_s = t.elapsed().as_secs_f64();
    let t = &summary.totals;
    Ok(Sample {
        task: task.id.clone(),
        method: Method::LlmOnly.name(),
        text: summary.text.clone(),
        ids: summary.ids.clone(),
        stop_reason: summary.stop_reason,
        prompt_tokens: summary.prompt_tokens,
        tokens: t.tokens,
        uploaded: t.tokens,
        rejected: 0,
        rounds: t.rounds,
        bytes_up: t.bytes_up,
        bytes_down: t.bytes_down,
        draft_forward_passes: 0,
        draft_forward_tokens: 0,
        uncertainty_draws: 0,
        llm_forward_passes: t.llm_forward_passes,
        llm_forward_tokens: t.llm_forward_tokens,
        wall_s,
        real_link_wall_s: Some(summary.wall_time_s),
        real_link_first_token_s: first_token_s,
        draft_time_s: None,
        llm_compute_us: Some(t.llm_compute_us),
        passed: None,
        bert_vs_llm: None,
        bert_vs_reference: None,
        verdicts: Vec::new(),
    })
}

/// A method that runs the decoding loop, in process or against the run's remote verifier.
fn hybrid(
    drafter: &mut Drafter,
    verifier: &Arc<Model>,
    task: &Task,
    prompt: &[u32],
    method: &Method,
    cfg: &EvalConfig,
) -> Result<Sample> {
    let config = method
        .options(&cfg.knobs, &task.stop())
        .ok_or_else(|| EvalError::Invalid("the LLM-only baseline does not run the loop".into()))?
        .config();
    let calibrating = *method == Method::StandardHlm;
    let mut verdicts = Vec::new();
    let mut first_token_s = None;
    let mut on_token = |ev: &TokenEvent| {
        first_token_s.get_or_insert(ev.wall_time_s);
        if calibrating {
            verdicts.push((ev.uncertainty, ev.kind == TokenKind::UploadedResampled));
        }
        true
    };
    let vocab = drafter.vocab_info();
    let t = Instant::now();
    let summary: Summary = match &cfg.remote {
        None => {
            let session = VerifierSession::new(verifier.clone(), vocab.clone(), "eval", 1 << 16);
            block_on(async {
                let mut s =
                    HybridSession::connect(LocalLink::new(session), vocab.clone(), "eval").await?;
                s.generate(drafter, prompt, &config, &mut on_token).await
            })?
        }
        Some(r) => r.runtime.block_on(async {
            let link = WsLink::connect_with_token(&r.url, r.token.as_deref()).await?;
            let mut s = HybridSession::connect(link, vocab.clone(), "eval").await?;
            let summary = s.generate(drafter, prompt, &config, &mut on_token).await?;
            let _ = s.close().await;
            Ok::<_, hlm_engine::EngineError>(summary)
        })?,
    };
    let wall_s = t.elapsed().as_secs_f64();
    let t = &summary.totals;
    Ok(Sample {
        task: task.id.clone(),
        method: method.name(),
        text: summary.text.clone(),
        ids: summary.ids.clone(),
        stop_reason: summary.stop_reason,
        prompt_tokens: summary.prompt_tokens,
        tokens: t.tokens,
        uploaded: t.uploaded,
        rejected: t.resampled,
        rounds: t.rounds,
        bytes_up: t.bytes_up,
        bytes_down: t.bytes_down,
        draft_forward_passes: t.draft_forward_passes,
        draft_forward_tokens: t.draft_forward_tokens,
        uncertainty_draws: t.uncertainty_draws,
        llm_forward_passes: t.llm_forward_passes,
        llm_forward_tokens: t.llm_forward_tokens,
        wall_s,
        real_link_wall_s: cfg.remote.as_ref().map(|_| summary.wall_time_s),
        real_link_first_token_s: cfg.remote.as_ref().and(first_token_s),
        draft_time_s: Some(summary.draft_time_s),
        llm_compute_us: Some(t.llm_compute_us),
        passed: None,
        bert_vs_llm: None,
        bert_vs_reference: None,
        verdicts,
    })
}

/// Where and with what a run happened (`run.json` in its folder, and the head of `table.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The methods (rows) of the run, in table order.
    pub methods: Vec<String>,
    /// What the `learned` rows' filter head was fitted on (its `fitted_on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_head: Option<String>,
    /// Drafting ahead while a round is in flight (runs from before it existed did not).
    #[serde(default = "pipeline_off")]
    pub pipeline: hlm_engine::decode::Pipeline,
}

fn pipeline_off() -> hlm_engine::decode::Pipeline {
    hlm_engine::decode::Pipeline::Off
}

fn f32_decimal<S: serde::Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(v.to_string().parse().unwrap_or(f64::from(*v)))
}

impl RunInfo {
    /// File name in a run folder.
    pub const FILE: &'static str = "run.json";

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

    pub fn load(dir: &std::path::Path) -> Result<Option<Self>> {
        crate::read_json_if_present(&dir.join(Self::FILE))
    }

    /// Joins this run to the one already in `dir`, if any: the settings that shape a sample
    /// (models, dataset, length, seed, knobs, link) must match, or the samples would mix two
    /// experiments; the methods become the union. Writes `run.json` and returns what it holds.
    pub fn join(mut self, dir: &std::path::Path) -> Result<Self> {
        if let Some(before) = Self::load(dir)? {
            let differs = [
                ("draft", before.draft != self.draft),
                ("verifier", before.verifier != self.verifier),
                ("dataset", before.dataset != self.dataset),
                ("max_tokens", before.max_tokens != self.max_tokens),
                ("seed", before.seed != self.seed),
                (
                    "uncertainty_threshold",
                    before.uncertainty_threshold != self.uncertainty_threshold,
                ),
                (
                    "importance_strictness",
                    before.importance_strictness != self.importance_strictness,
                ),
                ("link", before.link != self.link),
                ("pipeline", before.pipeline != self.pipeline),
                (
                    "filter head",
                    before.filter_head.is_some()
                        && self.filter_head.is_some()
                        && before.filter_head != self.filter_head,
                ),
            ];
            let what: Vec<&str> = differs.iter().filter(|d| d.1).map(|d| d.0).collect();
            if !what.is_empty() {
                return Err(EvalError::Invalid(format!(
                    "{} holds a run with another {}: resume it with the same settings or pass \
                     another --out",
                    dir.display(),
                    what.join(", ")
                )));
            }
            let mut methods = before.methods.clone();
            for m in self.methods.drain(..) {
                if !methods.contains(&m) {
                    methods.push(m);
                }
            }
            self.methods = methods;
            self.tasks = self.tasks.max(before.tasks);
            self.filter_head = self.filter_head.or(before.filter_head);
        }
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(Self::FILE),
            serde_json::to_string_pretty(&self).unwrap_or_default(),
        )?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(methods: &[&str], seed: u64, head: Option<&str>) -> RunInfo {
        RunInfo {
            draft: "d".into(),
            verifier: "v".into(),
            dataset: "humaneval (dev split)".into(),
            tasks: 2,
            max_tokens: 16,
            seed,
            cpu: "cpu".into(),
            cores: 2,
            hlm_version: "0".into(),
            network_isolation: false,
            rapl: false,
            uncertainty_threshold: 0.07,
            importance_strictness: 2.0,
            link: "in process".into(),
            pipeline: hlm_engine::decode::Pipeline::Adaptive,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            filter_head: head.map(str::to_string),
        }
    }

    #[test]
    fn a_run_resumes_only_with_its_settings_and_its_filter_head() {
        let dir = tempfile::tempdir().unwrap();
        info(&["u-hlm"], 0, Some("head A"))
            .join(dir.path())
            .unwrap();
        // More methods, same settings: joined; the head is kept when not given again.
        let joined = info(&["learned@u=0.02"], 0, None).join(dir.path()).unwrap();
        assert_eq!(joined.methods, ["u-hlm", "learned@u=0.02"]);
        assert_eq!(joined.filter_head.as_deref(), Some("head A"));
        for (other, says) in [
            (info(&["u-hlm"], 1, None), "seed"),
            (info(&["u-hlm"], 0, Some("head B")), "filter head"),
        ] {
            let e = other.join(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("holds a run with another"),
                "{e}"
            );
        }
    }
}
