//! The filter study: how well each signal of a per-token trace ([`crate::trace`]) finds the
//! tokens the verifier rejects, and how few uploads a filter built on them needs to catch as many
//! rejections as U-HLM does.
//!
//! * **Ranking** of each signal: ROC AUC (`P(s_rejected > s_kept)`, ties counted half) and average
//!   precision, with 95 % bootstrap intervals over tasks ([`crate::stats`]); for code tasks also
//!   against the *harmful* rejections (those whose skipping flips the test result).
//! * **Catch curves**: a filter uploads the tokens whose score exceeds a threshold; sweeping it
//!   traces the share of rejections caught against the upload rate. The limit is the oracle that
//!   uploads exactly the rejected tokens.
//! * **Uploads at U-HLM's catch**: U-HLM at its default (`u > 0.07`) catches a share `R₀` of the
//!   rejections with upload rate `U₀`; each filter's least upload rate catching `R₀` and the saving
//!   `1 − U/U₀`, intervals from the same task resamples. Under greedy decoding a rejection that is
//!   not caught changes the text, so catching as many with fewer uploads keeps quality.
//! * **Learned heads**: logistic regression over the signals, scored by 5-fold cross-validation
//!   over tasks (each task scored by a head fitted without it): over all of them, over all but the
//!   look-ahead (a decision at once, as the loop takes it), and over the draft's distribution
//!   alone (no attention: the gap to the causal head is what attention adds).

use crate::plot::{scatter, Series};
use crate::stats::{bootstrap, resamples, Estimate};
use crate::trace::{TaskTrace, TokenClass, TokenTrace};
use hlm_core::head::{FilterHead, HeadInput, TokenFeatures, HEAD_VERSION};
use hlm_core::signals::AttentionSignals;
use serde::Serialize;

/// Resamples for the study's intervals (each re-sorts every token; fewer than the table's).
const STUDY_RESAMPLES: usize = 400;
/// U-HLM's default threshold: the reference every filter is compared at.
pub const U_HLM_THRESHOLD: f64 = 0.07;
/// The strictness of today's `ours` (the decoding loop's default).
pub const OURS_STRICTNESS: f32 = 2.0;

/// One token as the study sees it.
#[derive(Debug, Clone)]
struct Row {
    task: usize,
    rejected: bool,
    harmful: Option<bool>,
    f: TokenFeatures,
    u: f64,
    u_exact: f64,
    important: bool,
    /// The learned heads' cross-validated scores, in [`HEADS`] order.
    head: [f64; 3],
}

impl Row {
    fn z(&self) -> f64 {
        self.f.value(HeadInput::ImportanceZ)
    }

    fn received(&self) -> f64 {
        self.f.value(HeadInput::Received)
    }
}

/// A signal ranked on its own: its name, what it is, and which input of a head it is (higher
/// should mean more likely rejected).
struct Signal {
    name: &'static str,
    about: &'static str,
    input: HeadInput,
}

const fn signal(name: &'static str, about: &'static str, input: HeadInput) -> Signal {
    Signal { name, about, input }
}

const SIGNALS: &[Signal] = &[
    signal("u", "U-HLM's sampled uncertainty (K = 20)", HeadInput::U),
    signal(
        "u_exact",
        "the probability u estimates, without sampling noise",
        HeadInput::UExpected,
    ),
    signal(
        "1 − top1",
        "one minus the draft's probability of its token",
        HeadInput::OneMinusTop1,
    ),
    signal(
        "entropy",
        "entropy of the draft's distribution",
        HeadInput::Entropy,
    ),
    signal(
        "−margin",
        "minus the gap between the draft's top two probabilities",
        HeadInput::NegMargin,
    ),
    signal(
        "recent u",
        "mean u of the 4 tokens before",
        HeadInput::RecentU,
    ),
    signal(
        "self weight",
        "the drafted token's attention to itself",
        HeadInput::SelfWeight,
    ),
    signal(
        "importance z",
        "the default importance rule's z-score (log-scaled)",
        HeadInput::ImportanceZ,
    ),
    signal(
        "sink share",
        "attention on the first position",
        HeadInput::Sink,
    ),
    signal(
        "attention entropy",
        "entropy of the token's attention row, over ln(positions)",
        HeadInput::AttentionEntropy,
    ),
    signal(
        "received",
        "attention the next 4 drafted tokens give it (× an even share)",
        HeadInput::Received,
    ),
    signal("position", "index in the answer", HeadInput::Position),
];

/// A trace token's features, as the loop would compute them (`recent_u` from the 4 before).
pub fn token_features(tokens: &[TokenTrace], i: usize) -> TokenFeatures {
    let t = &tokens[i];
    let recent = &tokens[i.saturating_sub(4)..i];
    let recent_u = if recent.is_empty() {
        0.0
    } else {
        recent.iter().map(|r| r.u).sum::<f32>() / recent.len() as f32
    };
    TokenFeatures {
        u: t.u,
        u_expected: t.u_exact,
        top1: t.top1,
        top2: t.top2,
        entropy: t.entropy,
        recent_u,
        position: t.position,
        class: t.class,
        attention: Some(AttentionSignals {
            self_weight: t.self_weight,
            sink: t.sink,
            entropy: t.attention_entropy,
            self_z: t.self_z,
        }),
        received: t.received,
    }
}

/// Flattens the traces into rows.
fn rows(traces: &[TaskTrace]) -> Vec<Row> {
    let mut out = Vec::new();
    for (task, tr) in traces.iter().enumerate() {
        for (i, t) in tr.tokens.iter().enumerate() {
            out.push(Row {
                task,
                rejected: t.rejected,
                harmful: t
                    .harm
                    .map(|h| h.pass_changed)
                    .or(tr.answer_passed.map(|_| false)),
                f: token_features(&tr.tokens, i),
                u: t.u as f64,
                u_exact: t.u_exact as f64,
                important: t.self_z >= OURS_STRICTNESS,
                head: [0.0; 3],
            });
        }
    }
    out
}

/// ROC AUC of `scored` (score, positive): the Mann-Whitney statistic with average ranks for ties.
pub fn auc(scored: &[(f64, bool)]) -> Option<f64> {
    let pos = scored.iter().filter(|s| s.1).count();
    let neg = scored.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut v = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0.total_cmp(&v[i].0).is_eq() {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * v[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

/// Average precision: the mean, over the positives, of the precision above each one's score
/// (ties taken together).
pub fn average_precision(scored: &[(f64, bool)]) -> Option<f64> {
    let pos = scored.iter().filter(|s| s.1).count();
    if pos == 0 {
        return None;
    }
    let curve = catch_curve(scored);
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for &(upload, recall) in &curve {
        let k = upload * scored.len() as f64;
        if recall > prev_recall && k > 0.0 {
            ap += (recall - prev_recall) * (recall * pos as f64 / k);
        }
        prev_recall = recall;
    }
    Some(ap)
}

/// (upload rate, share of positives caught) as the threshold falls past each distinct score.
pub fn catch_curve(scored: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let n = scored.len();
    let pos = scored.iter().filter(|s| s.1).count().max(1);
    let mut v = scored.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = vec![(0.0, 0.0)];
    let (mut k, mut caught) = (0usize, 0usize);
    while k < n {
        let s = v[k].0;
        while k < n && v[k].0.total_cmp(&s).is_eq() {
            caught += v[k].1 as usize;
            k += 1;
        }
        out.push((k as f64 / n as f64, caught as f64 / pos as f64));
    }
    out
}

/// The least upload rate at which `scored` catches at least `share` of its positives.
pub fn uploads_to_catch(scored: &[(f64, bool)], share: f64) -> Option<f64> {
    catch_curve(scored)
        .into_iter()
        .find(|&(_, r)| r >= share - 1e-12)
        .map(|(u, _)| u)
}

/// The largest share of positives `scored` catches uploading at most a share `rate` of tokens.
pub fn catch_at_rate(scored: &[(f64, bool)], rate: f64) -> Option<f64> {
    if !scored.iter().any(|s| s.1) {
        return None;
    }
    catch_curve(scored)
        .into_iter()
        .take_while(|&(u, _)| u <= rate + 1e-12)
        .map(|(_, r)| r)
        .last()
}

/// Upload rate and share caught of the fixed rule `upload`.
fn rule_point(
    rows: &[&Row],
    positive: &dyn Fn(&Row) -> bool,
    upload: &dyn Fn(&Row) -> bool,
) -> (f64, f64) {
    let n = rows.len().max(1) as f64;
    let pos = rows.iter().filter(|r| positive(r)).count().max(1) as f64;
    let up = rows.iter().filter(|r| upload(r)).count() as f64;
    let caught = rows.iter().filter(|r| positive(r) && upload(r)).count() as f64;
    (up / n, caught / pos)
}

/// Logistic regression `P(rejected) = σ(w · x + b)` over standardised features, fitted by
/// Newton's method with a small ridge penalty.
#[derive(Debug, Clone, Serialize)]
pub struct LogisticHead {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl LogisticHead {
    pub fn fit(xs: &[&[f64]], ys: &[bool]) -> Self {
        let d = xs.first().map_or(0, |x| x.len());
        let n = xs.len().max(1) as f64;
        let mean: Vec<f64> = (0..d)
            .map(|j| xs.iter().map(|x| x[j]).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|j| {
                let v = xs.iter().map(|x| (x[j] - mean[j]).powi(2)).sum::<f64>() / n;
                if v > 1e-12 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| {
                let mut r: Vec<f64> = (0..d).map(|j| (x[j] - mean[j]) / scale[j]).collect();
                r.push(1.0);
                r
            })
            .collect();
        let mut w = vec![0.0; d + 1];
        for _ in 0..30 {
            let mut grad = vec![0.0; d + 1];
            let mut hess = vec![vec![0.0; d + 1]; d + 1];
            for (zi, &yi) in z.iter().zip(ys) {
                let p = sigmoid(dot(&w, zi));
                let g = p - yi as u8 as f64;
                let h = (p * (1.0 - p)).max(1e-9);
                for ((row, ga), za) in hess.iter_mut().zip(grad.iter_mut()).zip(zi) {
                    *ga += g * za;
                    row.iter_mut().zip(zi).for_each(|(c, zb)| *c += h * za * zb);
                }
            }
            // Ridge on the weights (not the bias), scaled with the sample.
            let ridge = 1e-2 * n.sqrt();
            for a in 0..d {
                hess[a][a] += ridge;
                grad[a] += ridge * w[a];
            }
            hess[d][d] += 1e-9;
            let Some(step) = solve(hess, grad) else { break };
            let mut moved = 0.0f64;
            for a in 0..=d {
                w[a] -= step[a];
                moved = moved.max(step[a].abs());
            }
            if moved < 1e-8 {
                break;
            }
        }
        let bias = w.pop().unwrap_or(0.0);
        Self {
            mean,
            scale,
            weights: w,
            bias,
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Gaussian elimination with partial pivoting; `None` for a singular system.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-15 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        let (top, below) = a.split_at_mut(c + 1);
        let pivot = &top[c];
        for (r, row) in below.iter_mut().enumerate() {
            let f = row[c] / pivot[c];
            row.iter_mut()
                .zip(pivot)
                .skip(c)
                .for_each(|(x, p)| *x -= f * p);
            b[c + 1 + r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// A learned head: its name, what it reads, and the signals it leaves out.
pub struct HeadKind {
    pub name: &'static str,
    pub about: &'static str,
    pub leaves_out: &'static [HeadInput],
}

const ATTENTION: &[HeadInput] = &[
    HeadInput::SelfWeight,
    HeadInput::ImportanceZ,
    HeadInput::Sink,
    HeadInput::AttentionEntropy,
    HeadInput::Received,
];

pub const HEADS: [HeadKind; 3] = [
    HeadKind {
        name: "learned head",
        about:
            "logistic regression over all of the above and the token class (5-fold CV over tasks)",
        leaves_out: &[],
    },
    HeadKind {
        name: "learned head, causal",
        about: "the same without the look-ahead: it decides at once, as the loop does",
        leaves_out: &[HeadInput::Received],
    },
    HeadKind {
        name: "learned head, no attention",
        about: "the draft's distribution, recent u, position and class only",
        leaves_out: ATTENTION,
    },
];

/// The head the study ships (`head.json`): the one the loop can compute without attention.
pub const SHIPPED_HEAD: usize = 2;

impl HeadKind {
    /// The head's inputs: every ranked signal it does not leave out, then the token classes but
    /// the last (which the others imply).
    pub fn inputs(&self) -> Vec<HeadInput> {
        let signals = SIGNALS
            .iter()
            .map(|s| s.input)
            .filter(|i| !self.leaves_out.contains(i));
        let classes = TokenClass::ALL[..TokenClass::ALL.len() - 1]
            .iter()
            .map(|&c| HeadInput::Class(c));
        signals.chain(classes).collect()
    }
}

fn values(r: &Row, inputs: &[HeadInput]) -> Vec<f64> {
    inputs.iter().map(|&i| r.f.value(i)).collect()
}

/// A head fitted on `rows`.
fn fit(rows: &[&Row], inputs: &[HeadInput], fitted_on: String) -> FilterHead {
    let xs_all: Vec<Vec<f64>> = rows.iter().map(|r| values(r, inputs)).collect();
    let xs: Vec<&[f64]> = xs_all.iter().map(|x| x.as_slice()).collect();
    let ys: Vec<bool> = rows.iter().map(|r| r.rejected).collect();
    let h = LogisticHead::fit(&xs, &ys);
    FilterHead {
        version: HEAD_VERSION,
        fitted_on,
        inputs: inputs.to_vec(),
        mean: h.mean,
        scale: h.scale,
        weights: h.weights,
        bias: h.bias,
        suggested_threshold: None,
    }
}

/// The threshold on `head`'s probability that catches as many of `rows`' rejections as U-HLM's
/// default: halfway between the last score uploaded and the next one down.
fn threshold_at_u_hlm_catch(head: &FilterHead, rows: &[&Row]) -> Option<f64> {
    let (_, catch) = rule_point(rows, &is_rejected, &u_hlm_rule);
    let mut scored: Vec<(f64, bool)> = rows
        .iter()
        .map(|r| (head.probability(&r.f), r.rejected))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total = scored.iter().filter(|s| s.1).count();
    if total == 0 {
        return None;
    }
    let mut caught = 0;
    for (i, s) in scored.iter().enumerate() {
        caught += s.1 as usize;
        let tie_ends = scored.get(i + 1).is_none_or(|n| n.0 < s.0);
        if tie_ends && caught as f64 / total as f64 >= catch - 1e-12 {
            let next = scored.get(i + 1).map_or(0.0, |n| n.0);
            return Some((s.0 + next) / 2.0);
        }
    }
    None
}

/// Each row's cross-validated score under a head reading `inputs`: 5 folds over tasks.
fn cross_validated_head(rows: &[Row], tasks: usize, inputs: &[HeadInput]) -> Vec<f64> {
    const FOLDS: usize = 5;
    let mut scores = vec![0.0; rows.len()];
    for fold in 0..FOLDS.min(tasks.max(1)) {
        let held = |r: &Row| r.task % FOLDS == fold;
        let train: Vec<&Row> = rows.iter().filter(|r| !held(r)).collect();
        if train.is_empty() {
            continue;
        }
        let head = fit(&train, inputs, String::new());
        for (i, r) in rows.iter().enumerate() {
            if held(r) {
                scores[i] = head.probability(&r.f);
            }
        }
    }
    scores
}

/// The shipped head fitted on every token of `traces`, described by `fitted_on`.
pub fn fit_shipped_head(traces: &[TaskTrace], fitted_on: &str) -> FilterHead {
    let all = rows(traces);
    let refs: Vec<&Row> = all.iter().collect();
    let fitted_on = format!(
        "{fitted_on}: {} tasks, {} drafted tokens, {} rejected",
        traces.len(),
        all.len(),
        all.iter().filter(|r| r.rejected).count()
    );
    let mut head = fit(&refs, &HEADS[SHIPPED_HEAD].inputs(), fitted_on);
    head.suggested_threshold = threshold_at_u_hlm_catch(&head, &refs);
    head
}

/// One signal's ranking figures.
#[derive(Debug, Clone, Serialize)]
pub struct Ranking {
    pub signal: String,
    pub about: String,
    pub auc_rejected: Option<Estimate>,
    pub ap_rejected: Option<Estimate>,
    pub auc_harmful: Option<Estimate>,
}

/// A filter compared with U-HLM at U-HLM's catch.
#[derive(Debug, Clone, Serialize)]
pub struct AtUhlmCatch {
    pub filter: String,
    /// Its least upload rate catching U-HLM's share of rejections.
    pub upload_rate: Option<Estimate>,
    /// `1 − upload_rate / U-HLM's` at its default threshold.
    pub saving: Option<Estimate>,
    /// `1 − upload_rate / U-HLM's` at the threshold that catches as many (U-HLM's curve).
    pub saving_vs_curve: Option<Estimate>,
    /// The other view: the share of rejections it catches uploading no more than U-HLM does.
    pub catch_at_u_hlm_rate: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Study {
    pub tasks: usize,
    pub tokens: usize,
    pub rejected: usize,
    /// Code tasks: rejections whose skipping flips the test result.
    pub harmful: Option<usize>,
    /// U-HLM at `u > 0.07`: upload rate and share of rejections caught.
    pub u_hlm: (f64, f64),
    /// Today's ours (`u > 0.07` and importance z ≥ 2).
    pub ours_now: (f64, f64),
    /// Share of tokens today's importance rule marks important.
    pub important_share: f64,
    pub rankings: Vec<Ranking>,
    pub at_u_hlm_catch: Vec<AtUhlmCatch>,
    /// Rejection rate per token class: (class, tokens, rejected).
    pub classes: Vec<(String, usize, usize)>,
}

/// A score a filter uploads by (higher: upload first).
type Score<'a> = &'a dyn Fn(&Row) -> f64;
/// Which tokens count as the ones to catch.
type Target<'a> = &'a dyn Fn(&Row) -> bool;

fn is_rejected(r: &Row) -> bool {
    r.rejected
}

fn is_harmful(r: &Row) -> bool {
    r.harmful == Some(true)
}

/// U-HLM at its default threshold.
fn u_hlm_rule(r: &Row) -> bool {
    r.u > U_HLM_THRESHOLD
}

/// Today's ours: U-HLM's rule and the default importance rule at λ = 2.
fn ours_rule(r: &Row) -> bool {
    u_hlm_rule(r) && r.important
}

/// A filter: it uploads the tokens whose score exceeds a threshold (its first knob).
struct Filter {
    name: String,
    /// Candidates of one design share a family; the base filters are their own.
    family: &'static str,
    score: Box<dyn Fn(&Row) -> f64>,
}

fn filter(name: String, family: &'static str, score: impl Fn(&Row) -> f64 + 'static) -> Filter {
    Filter {
        name,
        family,
        score: Box::new(score),
    }
}

/// The base filters, then each candidate design over its second knob. Every candidate is
/// `u_exact` at the knob's neutral value (κ = 1, α = 0, β = 0).
fn filters() -> Vec<Filter> {
    let mut f = vec![
        filter("U-HLM: sampled u".into(), "u-hlm", |r| r.u),
        filter("u_exact".into(), "u_exact", |r| r.u_exact),
        filter(
            "today's ours: u_exact among important tokens".into(),
            "ours-now",
            |r| {
                if r.important {
                    r.u_exact
                } else {
                    -1.0
                }
            },
        ),
        filter(HEADS[0].name.into(), "learned head", |r| r.head[0]),
        filter(HEADS[1].name.into(), "learned head, causal", |r| r.head[1]),
        filter(HEADS[2].name.into(), "learned head, no attention", |r| {
            r.head[2]
        }),
    ];
    for kappa in [2.0, 4.0, 8.0] {
        // Two thresholds: u_th for important tokens, κ · u_th for the others.
        f.push(filter(
            format!("two thresholds, κ = {kappa}"),
            "two thresholds",
            move |r| {
                if r.important {
                    r.u_exact
                } else {
                    r.u_exact / kappa
                }
            },
        ));
    }
    for alpha in [0.01, 0.03, 0.1] {
        f.push(filter(
            format!("u_exact + α·tanh(z/3), α = {alpha}"),
            "combined score",
            move |r| r.u_exact + alpha * (r.z() / 3.0).tanh(),
        ));
    }
    for beta in [0.5, 1.0, 2.0] {
        f.push(filter(
            format!("deferred: u_exact · received^β, β = {beta}"),
            "deferred (look-ahead)",
            move |r| r.u_exact * r.received().max(1e-6).powf(beta),
        ));
    }
    f
}

fn scored(rows: &[&Row], score: Score, target: Target) -> Vec<(f64, bool)> {
    rows.iter().map(|r| (score(r), target(r))).collect()
}

/// The rows and the task resamples every interval of the study shares.
struct Resampled<'a> {
    by_task: Vec<Vec<&'a Row>>,
    draws: Vec<Vec<usize>>,
}

impl<'a> Resampled<'a> {
    fn new(rows: &'a [Row], tasks: usize) -> Self {
        let mut by_task: Vec<Vec<&Row>> = vec![Vec::new(); tasks];
        for r in rows {
            by_task[r.task].push(r);
        }
        Self {
            by_task,
            draws: resamples(tasks, STUDY_RESAMPLES, 0x5EED),
        }
    }

    /// `f` over all tasks, with its interval over the resamples (a task drawn twice counts
    /// twice).
    fn estimate(&self, f: &dyn Fn(&[&Row]) -> Option<f64>) -> Option<Estimate> {
        let rows_of = |draw: &[usize]| -> Vec<&Row> {
            draw.iter()
                .flat_map(|&t| self.by_task[t].iter().copied())
                .collect()
        };
        bootstrap(self.by_task.len(), &self.draws, &|d| f(&rows_of(d)))
    }
}

/// A signal to rank: name, description, value.
type Named = (String, String, Box<dyn Fn(&Row) -> f64>);

fn rankings(rs: &Resampled, code: bool) -> Vec<Ranking> {
    let mut named: Vec<Named> = Vec::new();
    for (i, s) in SIGNALS.iter().enumerate() {
        named.push((
            s.name.into(),
            s.about.into(),
            Box::new(move |r| r.f.value(SIGNALS[i].input)),
        ));
    }
    for (k, h) in HEADS.iter().enumerate() {
        named.push((h.name.into(), h.about.into(), Box::new(move |r| r.head[k])));
    }
    named
        .iter()
        .map(|(name, about, f)| Ranking {
            signal: name.clone(),
            about: about.clone(),
            auc_rejected: rs.estimate(&|rows| auc(&scored(rows, f, &is_rejected))),
            ap_rejected: rs.estimate(&|rows| average_precision(&scored(rows, f, &is_rejected))),
            auc_harmful: code
                .then(|| rs.estimate(&|rows| auc(&scored(rows, f, &is_harmful))))
                .flatten(),
        })
        .collect()
}

/// The least upload rate at which `score` catches as many rejections as U-HLM's default.
fn rate_at_u_hlm_catch(rows: &[&Row], score: Score) -> Option<f64> {
    if !rows.iter().any(|r| r.rejected) {
        return None; // nothing to catch: no rate to compare
    }
    let (_, catch) = rule_point(rows, &is_rejected, &u_hlm_rule);
    uploads_to_catch(&scored(rows, score, &is_rejected), catch)
}

fn at_u_hlm_catch(rs: &Resampled, filters: &[Filter]) -> Vec<AtUhlmCatch> {
    let curve = |r: &Row| r.u;
    filters
        .iter()
        .map(|f| {
            let rate = |rows: &[&Row]| rate_at_u_hlm_catch(rows, &f.score);
            let saving = |rows: &[&Row]| {
                let (up0, _) = rule_point(rows, &is_rejected, &u_hlm_rule);
                rate(rows).filter(|_| up0 > 0.0).map(|u| 1.0 - u / up0)
            };
            let saving_vs_curve = |rows: &[&Row]| {
                let base = rate_at_u_hlm_catch(rows, &curve).filter(|&u| u > 0.0)?;
                rate(rows).map(|u| 1.0 - u / base)
            };
            let catch = |rows: &[&Row]| {
                let (up0, _) = rule_point(rows, &is_rejected, &u_hlm_rule);
                catch_at_rate(&scored(rows, &f.score, &is_rejected), up0)
            };
            AtUhlmCatch {
                filter: f.name.clone(),
                upload_rate: rs.estimate(&rate),
                saving: rs.estimate(&saving),
                saving_vs_curve: rs.estimate(&saving_vs_curve),
                catch_at_u_hlm_rate: rs.estimate(&catch),
            }
        })
        .collect()
}

/// The base filters and the best candidate of each design (least uploads at U-HLM's catch).
fn plotted(rows: &[&Row], filters: &[Filter]) -> Vec<usize> {
    let mut best: Vec<(&str, usize, f64)> = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let rate = rate_at_u_hlm_catch(rows, &f.score).unwrap_or(1.0);
        match best.iter_mut().find(|b| b.0 == f.family) {
            Some(b) if rate < b.2 => *b = (f.family, i, rate),
            Some(_) => {}
            None => best.push((f.family, i, rate)),
        }
    }
    best.into_iter().map(|b| b.1).collect()
}

/// Catch curves of every filter for `target` up to three times U-HLM's upload rate (where the
/// choices are), the oracle and the two defaults as points.
fn catch_plot(
    rows: &[&Row],
    filters: &[&Filter],
    title: &str,
    y_label: &str,
    target: Target,
) -> String {
    let p = rule_point(rows, target, &u_hlm_rule);
    let x_max = (3.0 * p.0).clamp(0.05, 1.0);
    let mut series: Vec<Series> = filters
        .iter()
        .map(|f| Series {
            name: f.name.clone(),
            points: thin(catch_curve(&scored(rows, &f.score, target)))
                .into_iter()
                .filter(|&(x, _)| x <= x_max)
                .map(|(x, y)| (x, y, String::new()))
                .collect(),
            errors: vec![],
        })
        .collect();
    let oracle = rule_point(rows, target, target);
    series.push(Series {
        name: "oracle (uploads exactly these)".into(),
        points: vec![
            (0.0, 0.0, String::new()),
            (oracle.0, 1.0, "oracle".into()),
            (x_max, 1.0, String::new()),
        ],
        errors: vec![],
    });
    let o = rule_point(rows, target, &ours_rule);
    series.push(Series {
        name: "defaults: U-HLM u > 0.07 / ours λ = 2".into(),
        points: vec![(p.0, p.1, "U-HLM".into()), (o.0, o.1, "ours".into())],
        errors: vec![],
    });
    scatter(title, "upload rate", y_label, &series)
}

/// Tokens and rejections per token class.
fn classes(traces: &[TaskTrace]) -> Vec<(String, usize, usize)> {
    TokenClass::ALL
        .iter()
        .map(|c| {
            let of: Vec<&TokenTrace> = traces
                .iter()
                .flat_map(|t| &t.tokens)
                .filter(|t| t.class == *c)
                .collect();
            let rejected = of.iter().filter(|t| t.rejected).count();
            (c.as_str().to_string(), of.len(), rejected)
        })
        .collect()
}

/// The study of `traces`, with the catch-curve plots as SVG (by file name).
pub fn study(traces: &[TaskTrace]) -> (Study, Vec<(String, String)>) {
    let mut all = rows(traces);
    for (k, kind) in HEADS.iter().enumerate() {
        let head = cross_validated_head(&all, traces.len(), &kind.inputs());
        for (r, h) in all.iter_mut().zip(head) {
            r.head[k] = h;
        }
    }
    let code = all.iter().any(|r| r.harmful.is_some());
    let rs = Resampled::new(&all, traces.len());
    let every: Vec<&Row> = all.iter().collect();
    let filters = filters();
    let shown: Vec<&Filter> = plotted(&every, &filters)
        .into_iter()
        .map(|i| &filters[i])
        .collect();
    let mut plots = vec![(
        "catch_rejected.svg".to_string(),
        catch_plot(
            &every,
            &shown,
            "rejections caught against upload rate",
            "share of rejected tokens uploaded",
            &is_rejected,
        ),
    )];
    if code {
        plots.push((
            "catch_harmful.svg".to_string(),
            catch_plot(
                &every,
                &shown,
                "harmful rejections caught against upload rate",
                "share of test-flipping rejections uploaded",
                &is_harmful,
            ),
        ));
    }
    let n = all.len().max(1) as f64;
    let study = Study {
        tasks: traces.len(),
        tokens: all.len(),
        rejected: all.iter().filter(|r| r.rejected).count(),
        harmful: code.then(|| all.iter().filter(|r| is_harmful(r)).count()),
        u_hlm: rule_point(&every, &is_rejected, &u_hlm_rule),
        ours_now: rule_point(&every, &is_rejected, &ours_rule),
        important_share: all.iter().filter(|r| r.important).count() as f64 / n,
        rankings: rankings(&rs, code),
        at_u_hlm_catch: at_u_hlm_catch(&rs, &filters),
        classes: classes(traces),
    };
    (study, plots)
}

/// At most ~200 points of a curve (the first, the last and evenly spaced ones between).
fn thin(curve: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let step = (curve.len() / 200).max(1);
    let last = curve.len().saturating_sub(1);
    curve
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i == last)
        .map(|(_, p)| p)
        .collect()
}

fn fmt_est(e: &Option<Estimate>, pct: bool) -> String {
    match e {
        Some(e) if pct => format!(
            "{:.1} % [{:.1}, {:.1}]",
            100.0 * e.value,
            100.0 * e.lo,
            100.0 * e.hi
        ),
        Some(e) => format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi),
        None => "–".into(),
    }
}

/// The study as markdown.
pub fn markdown(s: &Study) -> String {
    let mut out = format!(
        "{} tasks, {} drafted tokens, {} rejected by the verifier ({:.2} %){}.\n\n\
         U-HLM (u > 0.07): uploads {:.1} % of tokens, catches {:.1} % of rejections. \
         Today's ours (and importance z ≥ 2): uploads {:.1} %, catches {:.1} %; the importance \
         rule marks {:.1} % of tokens important.\n\n",
        s.tasks,
        s.tokens,
        s.rejected,
        100.0 * s.rejected as f64 / s.tokens.max(1) as f64,
        s.harmful
            .map(|h| format!(", {h} of them harmful (skipping it flips the test result)"))
            .unwrap_or_default(),
        100.0 * s.u_hlm.0,
        100.0 * s.u_hlm.1,
        100.0 * s.ours_now.0,
        100.0 * s.ours_now.1,
        100.0 * s.important_share,
    );
    out += "### How well each signal ranks the rejected tokens\n\n\
            | signal | what it is | ROC AUC, rejected | average precision | ROC AUC, harmful |\n|---|---|---|---|---|\n";
    for r in &s.rankings {
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            r.signal,
            r.about,
            fmt_est(&r.auc_rejected, false),
            fmt_est(&r.ap_rejected, false),
            fmt_est(&r.auc_harmful, false)
        );
    }
    out += "\n### Uploads needed to catch as many rejections as U-HLM (u > 0.07)\n\n\
            Savings against U-HLM at its default threshold, and against U-HLM's own curve (u at \
            the threshold that catches as many): the second is what a filter adds beyond \
            retuning u_th. The last column is the other view: the share of rejections caught \
            uploading no more than U-HLM at its default.\n\n\
            | filter | upload rate | saving vs U-HLM default | saving vs U-HLM's curve | caught at U-HLM's upload rate |\n|---|---|---|---|---|\n";
    for a in &s.at_u_hlm_catch {
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            a.filter,
            fmt_est(&a.upload_rate, true),
            fmt_est(&a.saving, true),
            fmt_est(&a.saving_vs_curve, true),
            fmt_est(&a.catch_at_u_hlm_rate, true)
        );
    }
    out += "\n### Rejections by token class\n\n| class | tokens | rejected | rate |\n|---|---|---|---|\n";
    for (c, n, r) in &s.classes {
        out += &format!(
            "| {c} | {n} | {r} | {:.2} % |\n",
            100.0 * *r as f64 / (*n).max(1) as f64
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_curves_on_known_cases() {
        let perfect = [(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        assert_eq!(auc(&perfect), Some(1.0));
        assert_eq!(average_precision(&perfect), Some(1.0));
        assert_eq!(uploads_to_catch(&perfect, 1.0), Some(0.5));
        assert_eq!(catch_at_rate(&perfect, 0.25), Some(0.5));
        assert_eq!(catch_at_rate(&perfect, 0.1), Some(0.0));
        let ties = [(0.5, true), (0.5, false)];
        assert_eq!(auc(&ties), Some(0.5));
        let inverse = [(0.1, true), (0.9, false)];
        assert_eq!(auc(&inverse), Some(0.0));
        assert_eq!(uploads_to_catch(&inverse, 1.0), Some(1.0));
        assert_eq!(auc(&[(0.3, true)]), None);
        let curve = catch_curve(&perfect);
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn the_suggested_threshold_catches_what_u_hlm_catches() {
        let row = |u: f32, rejected: bool| Row {
            task: 0,
            rejected,
            harmful: None,
            f: TokenFeatures {
                u,
                u_expected: u,
                top1: 1.0 - u,
                top2: u,
                entropy: u,
                recent_u: 0.0,
                position: 0,
                class: TokenClass::Word,
                attention: None,
                received: None,
            },
            u: u as f64,
            u_exact: u as f64,
            important: true,
            head: [0.0; 3],
        };
        let rows = [
            row(0.0, false),
            row(0.05, false),
            row(0.1, true),
            row(0.3, false),
            row(0.6, true),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let head = FilterHead {
            version: HEAD_VERSION,
            fitted_on: String::new(),
            inputs: vec![HeadInput::U],
            mean: vec![0.07],
            scale: vec![1.0],
            weights: vec![50.0],
            bias: 0.0,
            suggested_threshold: None,
        };
        let th = threshold_at_u_hlm_catch(&head, &refs).unwrap();
        for r in &rows {
            assert_eq!(head.probability(&r.f) > th, u_hlm_rule(r), "u = {}", r.u);
        }
    }

    #[test]
    fn heads_leave_out_what_they_say() {
        for h in &HEADS {
            let inputs = h.inputs();
            assert_eq!(
                inputs.len(),
                SIGNALS.len() - h.leaves_out.len() + TokenClass::ALL.len() - 1
            );
            assert!(
                h.leaves_out.iter().all(|l| !inputs.contains(l)),
                "{}",
                h.name
            );
        }
        // The shipped head needs no attention row: the loop can compute it as it drafts.
        assert!(HEADS[SHIPPED_HEAD]
            .inputs()
            .iter()
            .all(|i| !i.needs_attention()));
    }

    #[test]
    fn the_head_learns_a_separable_signal() {
        let xs: Vec<Vec<f64>> = (0..200)
            .map(|i| vec![(i % 10) as f64, ((i / 10) % 5) as f64])
            .collect();
        let ys: Vec<bool> = xs.iter().map(|x| x[0] >= 8.0).collect();
        let refs: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
        let head = LogisticHead::fit(&refs, &ys);
        // Scored as the loop scores: through the shipped head's type, the two columns as u and
        // u-expected.
        let shipped = FilterHead {
            version: HEAD_VERSION,
            fitted_on: String::new(),
            inputs: vec![HeadInput::U, HeadInput::UExpected],
            mean: head.mean.clone(),
            scale: head.scale.clone(),
            weights: head.weights.clone(),
            bias: head.bias,
            suggested_threshold: None,
        };
        let scored: Vec<(f64, bool)> = xs
            .iter()
            .zip(&ys)
            .map(|(x, &y)| {
                let f = TokenFeatures {
                    u: x[0] as f32,
                    u_expected: x[1] as f32,
                    top1: 1.0,
                    top2: 0.0,
                    entropy: 0.0,
                    recent_u: 0.0,
                    position: 0,
                    class: TokenClass::Other,
                    attention: None,
                    received: None,
                };
                (shipped.probability(&f), y)
            })
            .collect();
        assert!(auc(&scored).unwrap() > 0.99, "{head:?}");
        assert!(head.weights[0] > 0.0 && head.weights[0].abs() > 10.0 * head.weights[1].abs());
    }
}
