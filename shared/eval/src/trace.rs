//! The filter study's per-token trace (`hlm eval --trace`): for every token the draft model
//! proposes along the verifier's own answer, the signals a filter could decide on and what the
//! verifier made of the token.
//!
//! **How a task is traced** (greedy, as the evaluation's methods are):
//! 1. The verifier answers alone ([`crate::harness`]'s LLM-only baseline): `y₁ … y_n`, the answer
//!    standard HLM (every token verified) converges to.
//! 2. The draft model walks that answer. At position `t`, with `y_<t` in its cache, it proposes
//!    `x_t = argmax p_t` and is fed `x_t` (its attention row is read there, as in the decoding
//!    loop); when `x_t ≠ y_t` it is rolled back and fed `y_t`. For such a token it also drafts
//!    the `w` tokens that would follow `x_t`, to read the attention they give it (look-ahead).
//! 3. The verifier scores the whole answer in batched passes: `q_t` at every position. The token
//!    is **rejected** when `x_t ≠ argmax q_t`.
//! 4. **Harm** (code tasks): for each rejected token, the verifier continues greedily from
//!    `y_<t x_t`, as if the filter had skipped it; harmful when the answer's test result flips.
//!
//! The trace is the idealised standard-HLM run (one teacher-forced walk instead of the loop's
//! rounds); the study (`crate::filter_study`) replays any filter rule over it offline.

use crate::harness::{llm_only, EvalConfig};
use crate::humaneval;
use crate::samples::{Record, Store};
use crate::tasks::Task;
use crate::Result;
pub use hlm_core::signals::TokenClass;
use hlm_core::signals::{attention_signals, distribution_signals};
use hlm_core::{argmax, expected_uncertainty, seeded_rng, softmax, temperature_perturbation};
use hlm_core::{Rng, UncertaintyConfig};
use hlm_engine::chat::TextStream;
use hlm_engine::decode::{Drafter, StopMatcher};
use hlm_engine::model::{KvCache, LogitRows, Model};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// The verifier continued from a rejected draft token as if it had been skipped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Harm {
    /// The final text differs from the verifier's own answer.
    pub text_changed: bool,
    /// The answer's test result differs from the verifier's own answer's.
    pub pass_changed: bool,
}

/// One drafted token: the signals (known before the verifier answers) and the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenTrace {
    /// Index in the answer.
    pub position: usize,
    /// The draft's token `x_t` and the verifier's answer's token `y_t` at this position.
    pub draft: u32,
    pub answer: u32,
    pub class: TokenClass,
    /// U-HLM's sampled uncertainty (K draws) and the value it estimates (see
    /// [`hlm_core::expected_uncertainty`]).
    pub u: f32,
    pub u_exact: f32,
    /// The draft's probabilities (temperature 1): its token's (the top one) and the runner-up's.
    pub top1: f32,
    pub top2: f32,
    /// Entropy of the draft's distribution, nats.
    pub entropy: f32,
    /// Attention of the drafted token's query (heads and last layers averaged): to itself, to the
    /// first position (the sink), and its entropy divided by `ln(positions)`.
    pub self_weight: f32,
    pub sink: f32,
    pub attention_entropy: f32,
    /// The default importance rule's z-score: `(w'_t − mean w') / std w'` over the row with the
    /// sink taken out; important at strictness λ iff `self_z ≥ λ` (`f32::MAX` when the row
    /// cannot tell tokens apart: always important).
    pub self_z: f32,
    /// Attention the next `w` drafted tokens give this one, as a multiple of an even share
    /// (sink excluded), averaged over those tokens; `None` at the answer's end.
    pub received: Option<f32>,
    /// The verifier rejects the draft's token (`x_t ≠ argmax q_t`).
    pub rejected: bool,
    /// `q(x_t)` and `p(x_t)` at temperature 1: the sampled-verification acceptance is
    /// `min(1, q/p)`.
    pub q_x: f32,
    pub p_x: f32,
    /// The verifier's choice here.
    pub verifier: u32,
    /// Code tasks, rejected tokens: what skipping it would have done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harm: Option<Harm>,
}

/// One task's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTrace {
    pub task: String,
    pub prompt_tokens: usize,
    /// The verifier's own answer, and its test result for a code task.
    pub answer_text: String,
    pub answer_passed: Option<bool>,
    pub tokens: Vec<TokenTrace>,
}

impl Record for TaskTrace {
    const PREFIX: &'static str = "trace";
    fn key(&self) -> (String, String) {
        (self.task.clone(), "trace".into())
    }
}

/// How a trace is taken.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub eval: EvalConfig,
    /// Layers the attention row is averaged over (the decoding loop's default).
    pub attention_layers: usize,
    /// `w`, the drafted tokens whose attention a token's `received` averages.
    pub lookahead: usize,
    pub uncertainty: UncertaintyConfig,
    /// Temperatures of [`hlm_core::expected_uncertainty`]'s integral.
    pub exact_points: usize,
}

impl TraceConfig {
    pub fn new(eval: EvalConfig) -> Self {
        Self {
            eval,
            attention_layers: hlm_engine::decode::GenerationConfig::default().attention_layers,
            lookahead: 4,
            uncertainty: UncertaintyConfig::default(),
            exact_points: UncertaintyConfig::default().draws,
        }
    }
}

/// Traces every task of the shard that `store` does not hold yet, appending each as it is done.
pub fn run(
    drafter: &Drafter,
    verifier: &Model,
    tasks: &[Task],
    cfg: &TraceConfig,
    store: &mut Store<TaskTrace>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let mine: Vec<(usize, &Task)> = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| cfg.eval.shard.is_none_or(|s| s.takes(*i)))
        .collect();
    let total = mine.len();
    for (done, (index, task)) in mine.into_iter().enumerate() {
        if store.is_done(&task.id, "trace") {
            continue;
        }
        let trace = trace_task(drafter, verifier, task, index as u64, cfg)?;
        store.append(trace)?;
        progress(done + 1, total, &task.id);
    }
    Ok(())
}

/// The trace of one task (see the module documentation).
pub fn trace_task(
    drafter: &Drafter,
    verifier: &Model,
    task: &Task,
    index: u64,
    cfg: &TraceConfig,
) -> Result<TaskTrace> {
    let (dv, vv) = (
        drafter.model().config().vocab_size,
        verifier.config().vocab_size,
    );
    if dv > vv {
        return Err(crate::EvalError::Invalid(format!(
            "the draft's vocabulary ({dv}) is larger than the verifier's ({vv})"
        )));
    }
    let prompt = drafter.encode(&hlm_engine::chat::chatml(&task.instruction, None))?;
    let answer = llm_only(drafter, verifier, task, &prompt, &cfg.eval)?;
    let answer_passed = match &task.problem {
        Some(p) => Some(passes(p, &answer.text, cfg)?),
        None => None,
    };
    let y = &answer.ids;
    let mut rng = seeded_rng(cfg.eval.knobs.seed ^ index.wrapping_mul(0x9E37_79B9));
    let walk = draft_walk(drafter.model(), &prompt, y, cfg, &mut rng)?;
    let drafts: Vec<u32> = walk.iter().map(|s| s.draft).collect();
    let outcomes = verifier_outcomes(verifier, &prompt, y, &drafts)?;
    let mut tokens = Vec::with_capacity(y.len());
    let mut previous = String::new();
    let tok = drafter.tokenizer();
    for (t, (step, (verifier_token, q_x))) in walk.into_iter().zip(outcomes).enumerate() {
        let text = piece(tok, step.draft);
        tokens.push(TokenTrace {
            position: t,
            draft: step.draft,
            answer: y[t],
            class: TokenClass::of(&text, &previous),
            rejected: step.draft != verifier_token,
            q_x,
            verifier: verifier_token,
            harm: None,
            ..step.signals
        });
        // The draft's context holds the answer's token, not its own.
        previous = piece(tok, y[t]);
    }
    if let Some(problem) = &task.problem {
        let answer = Answer {
            prompt: &prompt,
            ids: y,
        };
        mark_harm(drafter, verifier, task, problem, &answer, &mut tokens, cfg)?;
    }
    Ok(TaskTrace {
        task: task.id.clone(),
        prompt_tokens: prompt.len(),
        answer_text: answer.text,
        answer_passed,
        tokens,
    })
}

fn piece(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

fn passes(problem: &humaneval::Problem, text: &str, cfg: &TraceConfig) -> Result<bool> {
    let code = humaneval::extract_code(text);
    Ok(humaneval::check(problem, &code, &cfg.eval.sandbox)?.passed())
}

/// One position of the draft's walk: its token and the signals (outcome fields left empty).
struct Step {
    draft: u32,
    signals: TokenTrace,
}

/// Step 2 of the module documentation: the draft model along the answer `y`.
fn draft_walk(
    model: &Model,
    prompt: &[u32],
    y: &[u32],
    cfg: &TraceConfig,
    rng: &mut Rng,
) -> Result<Vec<Step>> {
    let layers = cfg.attention_layers;
    let mut cache = model.new_cache();
    let mut logits = last_logits(model.forward(&mut cache, prompt, &LogitRows::Last, 0)?);
    let mut steps: Vec<Step> = Vec::with_capacity(y.len());
    // rows[t]: the attention row of the token drafted at position t (over positions 0..=p+t).
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(y.len());
    let mut own_lookahead: Vec<Option<Option<f32>>> = Vec::with_capacity(y.len());
    for (t, &yt) in y.iter().enumerate() {
        let x = argmax(&logits);
        let pos = cache.len();
        let mut signals = draft_signals(&logits, x, cfg, rng);
        let out = model.forward(&mut cache, &[x], &LogitRows::Last, layers)?;
        let row = out.attention.clone().unwrap_or_default();
        set_attention_signals(&row, &mut signals);
        if x == yt {
            logits = last_logits(out);
            own_lookahead.push(None);
        } else {
            // What the draft would go on to propose after its own token.
            own_lookahead.push(Some(lookahead_after(model, &mut cache, out, pos, cfg)?));
            cache.truncate(pos);
            logits = last_logits(model.forward(&mut cache, &[yt], &LogitRows::Last, 0)?);
        }
        signals.position = t;
        rows.push(row);
        steps.push(Step { draft: x, signals });
    }
    let p = prompt.len();
    for t in 0..steps.len() {
        // A rejected token's look-ahead is its own (none at a full context); an accepted one's
        // is the tokens drafted after it along the answer.
        steps[t].signals.received = match &own_lookahead[t] {
            Some(own) => *own,
            None => {
                let next = &rows[t + 1..(t + 1 + cfg.lookahead).min(rows.len())];
                mean_received(next.iter().map(|r| r.as_slice()), p + t)
            }
        };
    }
    Ok(steps)
}

/// The attention the `w` tokens the draft proposes after its own (rejected) token at `pos` give
/// it; the cache is left longer (the caller truncates it).
fn lookahead_after(
    model: &Model,
    cache: &mut KvCache,
    out: hlm_engine::model::ForwardOutput,
    pos: usize,
    cfg: &TraceConfig,
) -> Result<Option<f32>> {
    let mut logits = last_logits(out);
    let mut rows = Vec::with_capacity(cfg.lookahead);
    for _ in 0..cfg.lookahead {
        if cache.len() >= model.config().max_context {
            break;
        }
        let next = argmax(&logits);
        let o = model.forward(cache, &[next], &LogitRows::Last, cfg.attention_layers)?;
        rows.push(o.attention.clone().unwrap_or_default());
        logits = last_logits(o);
    }
    Ok(mean_received(rows.iter().map(|r| r.as_slice()), pos))
}

/// Mean over `rows` of the weight each gives position `pos`, as a multiple of an even share of
/// the non-sink mass: `row[pos] / (1 − row[0]) · (len − 1)`.
fn mean_received<'a>(rows: impl Iterator<Item = &'a [f32]>, pos: usize) -> Option<f32> {
    let shares: Vec<f32> = rows
        .filter(|r| r.len() > pos && r.len() > 1)
        .map(|r| {
            let rest = (1.0 - r[0]).max(1e-9);
            r[pos] / rest * (r.len() - 1) as f32
        })
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f32>() / shares.len() as f32)
}

fn last_logits(out: hlm_engine::model::ForwardOutput) -> Vec<f32> {
    out.logits
        .into_iter()
        .last()
        .map(|(_, l)| l)
        .unwrap_or_default()
}

/// Signals of the draft's distribution at a position where it proposes `x` (its argmax).
fn draft_signals(logits: &[f32], x: u32, cfg: &TraceConfig, rng: &mut Rng) -> TokenTrace {
    let d = distribution_signals(logits, x);
    TokenTrace {
        position: 0,
        draft: x,
        answer: x,
        class: TokenClass::Other,
        u: temperature_perturbation(logits, x, &cfg.uncertainty, rng),
        u_exact: expected_uncertainty(logits, x, cfg.uncertainty.theta_max, cfg.exact_points),
        top1: d.top1,
        top2: d.top2,
        entropy: d.entropy,
        self_weight: 0.0,
        sink: 0.0,
        attention_entropy: 0.0,
        self_z: f32::MAX,
        received: None,
        rejected: false,
        q_x: 0.0,
        p_x: d.top1,
        verifier: x,
        harm: None,
    }
}

/// The attention features of a drafted token's row (see [`TokenTrace`]).
fn set_attention_signals(row: &[f32], s: &mut TokenTrace) {
    let a = attention_signals(row);
    s.self_weight = a.self_weight;
    s.sink = a.sink;
    s.attention_entropy = a.entropy;
    s.self_z = a.self_z;
}

/// Step 3: at every answer position, the verifier's choice `argmax q_t` and `q_t(x_t)` for the
/// draft's token, from batched passes over the answer (`q_t` is read after `y_<t`).
fn verifier_outcomes(
    verifier: &Model,
    prompt: &[u32],
    y: &[u32],
    drafts: &[u32],
) -> Result<Vec<(u32, f32)>> {
    const CHUNK: usize = 64;
    if y.is_empty() {
        return Ok(Vec::new());
    }
    let judge = |t: usize, q: &[f32]| (argmax(q), softmax(q, 1.0)[drafts[t] as usize]);
    let mut cache = verifier.new_cache();
    let first = verifier.forward(&mut cache, prompt, &LogitRows::Last, 0)?;
    let mut out = vec![judge(0, &last_logits(first))];
    // Every answer token but the last predicts the next position.
    let body = &y[..y.len().saturating_sub(1)];
    for chunk in body.chunks(CHUNK) {
        let rows = verifier.forward(&mut cache, chunk, &LogitRows::All, 0)?;
        for (_, q) in rows.logits {
            out.push(judge(out.len(), &q));
        }
    }
    Ok(out)
}

/// The verifier's own answer to a task.
struct Answer<'a> {
    prompt: &'a [u32],
    ids: &'a [u32],
}

/// Step 4: for each rejected token, the verifier's answer had the filter skipped it. Rejections
/// are taken from the last to the first, so one cache serves them all by truncation.
fn mark_harm(
    drafter: &Drafter,
    verifier: &Model,
    task: &Task,
    problem: &humaneval::Problem,
    answer: &Answer,
    tokens: &mut [TokenTrace],
    cfg: &TraceConfig,
) -> Result<()> {
    let (prompt, y) = (answer.prompt, answer.ids);
    let Some(last) = tokens.iter().rev().find(|t| t.rejected).map(|t| t.position) else {
        return Ok(());
    };
    // Compared as this function decodes both, so only the tokens can make them differ.
    let own_text = decode_answer(drafter.tokenizer(), task, y);
    let own_passed = passes(problem, &own_text, cfg)?;
    let mut cache = verifier.new_cache();
    let mut context = prompt.to_vec();
    context.extend_from_slice(&y[..last]);
    verifier.forward(&mut cache, &context, &LogitRows::None, 0)?;
    for tr in tokens.iter_mut().rev().filter(|tr| tr.rejected) {
        let t = tr.position;
        cache.truncate(prompt.len() + t);
        let mut ids = y[..t].to_vec();
        let budget = cfg.eval.knobs.max_tokens.saturating_sub(t);
        ids.extend(continue_greedy(
            verifier,
            &mut cache,
            drafter.tokenizer(),
            task,
            &y[..t],
            tr.draft,
            budget,
        )?);
        let text = decode_answer(drafter.tokenizer(), task, &ids);
        tr.harm = Some(Harm {
            text_changed: text != own_text,
            pass_changed: passes(problem, &text, cfg)? != own_passed,
        });
    }
    Ok(())
}

/// The answer's text as the harness scores it: decoded, cut at the task's stop.
fn decode_answer(tok: &Tokenizer, task: &Task, ids: &[u32]) -> String {
    let full = tok.decode(ids, true).unwrap_or_default();
    let mut stop = StopMatcher::new(&task.stop());
    stop.push(&full);
    stop.cut(&full).to_string()
}

/// The verifier's greedy answer from `cache` (holding the prompt and `before`) given `first` as
/// the next token, up to `budget` tokens (`first` included), ending as the harness's answers do.
fn continue_greedy(
    model: &Model,
    cache: &mut KvCache,
    tok: &Tokenizer,
    task: &Task,
    before: &[u32],
    first: u32,
    budget: usize,
) -> Result<Vec<u32>> {
    let mut stream = TextStream::new();
    let mut stop = StopMatcher::new(&task.stop());
    for &id in before {
        stop.push(&stream.push(tok, id));
    }
    let eos = &model.config().eos_ids;
    let mut out = Vec::new();
    let mut next = first;
    while out.len() < budget {
        out.push(next);
        stop.push(&stream.push(tok, next));
        let full = cache.len() >= model.config().max_context;
        if eos.contains(&next) || stop.hit().is_some() || out.len() == budget || full {
            break;
        }
        let o = model.forward(cache, &[next], &LogitRows::Last, 0)?;
        next = argmax(&last_logits(o));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_task(problem: Option<humaneval::Problem>) -> Task {
        Task {
            id: "tiny".into(),
            instruction: "alpha beta gamma".into(),
            reference: None,
            problem,
        }
    }

    fn tiny_config(max_tokens: usize) -> TraceConfig {
        TraceConfig::new(EvalConfig {
            knobs: crate::method::RunKnobs {
                max_tokens,
                seed: 0,
                uncertainty_threshold: 0.07,
                importance_strictness: 2.0,
                head: None,
                pipeline: Default::default(),
            },
            sandbox: Default::default(),
            remote: None,
            shard: None,
        })
    }

    #[test]
    fn a_trace_follows_the_verifiers_answer_on_tiny_models() {
        let (_d, drafter) = hlm_engine::testing::tiny_drafter(1);
        let (_v, verifier) = hlm_engine::testing::tiny_drafter(2);
        let cfg = tiny_config(24);
        let tr = trace_task(&drafter, verifier.model(), &tiny_task(None), 0, &cfg).unwrap();
        assert!(!tr.tokens.is_empty() && tr.tokens.len() <= 24);
        let mut agree = 0;
        for (i, t) in tr.tokens.iter().enumerate() {
            assert_eq!(t.position, i);
            assert_eq!(t.rejected, t.draft != t.verifier, "{t:?}");
            assert!((0.0..=1.0).contains(&t.u) && (0.0..=1.0).contains(&t.u_exact));
            assert!(t.top1 >= t.top2 && (t.p_x - t.top1).abs() < 1e-6);
            assert!(
                t.self_weight > 0.0 && t.sink > 0.0,
                "attention was read: {t:?}"
            );
            assert!(t.harm.is_none(), "no test to flip on a prompt task");
            agree += (t.verifier == t.answer) as usize;
        }
        // The batched passes choose the verifier's own greedy tokens (ties aside).
        assert!(
            agree + 1 >= tr.tokens.len(),
            "{agree} of {}",
            tr.tokens.len()
        );
        // A draft identical to the verifier is never rejected.
        let same = trace_task(&verifier, verifier.model(), &tiny_task(None), 0, &cfg).unwrap();
        assert!(same.tokens.iter().filter(|t| t.rejected).count() <= 1);
    }

    #[test]
    fn rejected_tokens_of_code_tasks_say_whether_they_flip_the_test() {
        let problem = humaneval::Problem {
            task_id: "tiny/0".into(),
            prompt: "def f():\n".into(),
            canonical_solution: String::new(),
            test: "def check(candidate):\n    assert candidate() == 1\n".into(),
            entry_point: "f".into(),
        };
        let task = tiny_task(Some(problem));
        // Tiny random models mostly repeat one token: find a pair that disagrees somewhere.
        let (_v, verifier) = hlm_engine::testing::tiny_drafter(2);
        let traced = (3..12).find_map(|seed| {
            let (_d, drafter) = hlm_engine::testing::tiny_drafter(seed);
            let tr = trace_task(&drafter, verifier.model(), &task, 0, &tiny_config(16)).unwrap();
            tr.tokens.iter().any(|t| t.rejected).then_some(tr)
        });
        let tr = traced.expect("a draft seed the verifier rejects somewhere");
        assert_eq!(tr.answer_passed, Some(false), "gibberish fails the test");
        for t in &tr.tokens {
            assert_eq!(t.harm.is_some(), t.rejected, "{t:?}");
            // Gibberish either way: a rejection cannot flip a failing answer into a passing one.
            assert!(t.harm.is_none_or(|h| !h.pass_changed));
        }
    }

    #[test]
    fn received_attention_is_relative_to_an_even_share() {
        // Two later rows over 4 positions; position 2 gets twice and an even share.
        let a = [0.4f32, 0.1, 0.4, 0.1];
        let b = [0.7f32, 0.1, 0.1, 0.1];
        let r = mean_received([&a[..], &b[..]].into_iter(), 2).unwrap();
        assert!(
            (r - (0.4 / 0.6 * 3.0 + 0.1 / 0.3 * 3.0) / 2.0).abs() < 1e-5,
            "{r}"
        );
        assert_eq!(mean_received(std::iter::empty(), 2), None);
    }
}
