//! Continuous batching of verification rounds across sessions.
//!
//! Every session hands its decoded message to one queue; one worker takes the model's compute
//! turn, then everything queued at that moment (within [`BatchLimits`]) goes through one forward
//! pass ([`hlm_engine::verifier::answer_batch`]): the weights are read once for all sessions' new
//! tokens, while each session keeps its own cache, attention and verdict. A round never waits for
//! company: a batch is whatever is queued when the model is free, one round if that is all.
//!
//! ```text
//! session ─┐                         ┌─► reply ─► session
//! session ─┼─► queue (bounded, FIFO) ─► worker: compute turn → one forward → verdicts
//! session ─┘                         └─► reply ─► session
//! ```
//!
//! Order is first come, first served: a batch takes the front of the queue, and a round that does
//! not fit opens the next batch. The queue holds at most one message per session slot (a session
//! waits for its reply before it reads another frame), so it never grows past `max_sessions`.

use crate::{telemetry, AppState};
use hlm_engine::verifier::{handle_batch, Input, Reply, VerifierSession};
use hlm_protocol::ClientMsg;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};

/// How large a batch may grow. The first round of a batch is always taken, whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Rounds in one forward pass (1 = no batching: one round per forward, as before batching).
    pub max_rounds: usize,
    /// Positions (new tokens, summed over the rounds) in one forward pass.
    pub max_positions: usize,
    /// Frame bytes of the batch's messages together.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_rounds: 32,
            max_positions: 256,
            max_bytes: 4 << 20,
        }
    }
}

/// One session's message (or generation step) waiting for its batch.
pub struct Job {
    pub session: VerifierSession,
    pub input: Input,
    /// Size of the frame it came in.
    pub bytes: usize,
    /// Where the session and its reply go back.
    pub done: oneshot::Sender<(VerifierSession, Reply)>,
}

impl Job {
    /// Positions the message adds to a forward pass.
    fn positions(&self) -> usize {
        match &self.input {
            Input::Message(Ok(ClientMsg::Round(r))) => r.tokens.len(),
            Input::Message(Ok(ClientMsg::Generate(g))) => g.prompt.len(),
            Input::Continue => 1,
            Input::Message(_) => 0,
        }
    }
}

/// The queue's sending end, and the worker behind it (spawned on first use).
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// A queue for `capacity` sessions and its worker, which ends when the server state is gone.
    pub fn start(state: Weak<AppState>, capacity: usize, limits: BatchLimits) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(worker(state, rx, limits));
        Self { tx }
    }

    /// Messages waiting in the queue (not counting the one the worker holds while it waits for
    /// the model's turn).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues a job; `Err` gives it back when the worker has stopped.
    pub async fn submit(&self, job: Job) -> Result<(), Job> {
        self.tx.send(job).await.map_err(|e| e.0)
    }
}

/// Takes batches off the queue, one compute turn each, until the queue closes.
async fn worker(state: Weak<AppState>, mut rx: mpsc::Receiver<Job>, limits: BatchLimits) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Some(state) = state.upgrade() else { return };
        // The turn first, then the queue: rounds that arrive while another forward runs (a chat
        // request's, a health probe's) join this batch.
        let Ok(permit) = state.compute.acquire().await else {
            return;
        };
        let (batch, next) = gather(first, &mut rx, &limits);
        carry = next;
        let ran = tokio::task::spawn_blocking(move || run(batch)).await;
        drop(permit);
        // A failed task dropped its jobs' reply senders: those sessions see it and close.
        if let Ok((done, pass)) = ran {
            if pass.rounds > 0 {
                telemetry::batch(pass.rounds, pass.positions);
                state.forward_succeeded();
            }
            for (tx, answer) in done {
                // A session that left meanwhile just drops its reply.
                let _ = tx.send(answer);
            }
        }
    }
}

/// The batch that starts with `first`: more queued jobs while they fit, in order. A job that
/// does not fit is returned to open the next batch.
fn gather(
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
    limits: &BatchLimits,
) -> (Vec<Job>, Option<Job>) {
    let (mut positions, mut bytes) = (first.positions(), first.bytes);
    let mut batch = vec![first];
    while batch.len() < limits.max_rounds {
        let Ok(job) = rx.try_recv() else { break };
        if positions + job.positions() > limits.max_positions
            || bytes + job.bytes > limits.max_bytes
        {
            return (batch, Some(job));
        }
        positions += job.positions();
        bytes += job.bytes;
        batch.push(job);
    }
    (batch, None)
}

type Done = Vec<(
    oneshot::Sender<(VerifierSession, Reply)>,
    (VerifierSession, Reply),
)>;

/// What one forward pass served: rounds and generation steps, and their positions together.
#[derive(Default)]
struct Pass {
    rounds: usize,
    positions: usize,
}

impl Pass {
    fn of(sessions: &[VerifierSession]) -> Self {
        sessions.iter().fold(Self::default(), |p, s| Self {
            rounds: p.rounds + (s.stats.rounds + s.stats.generated) as usize,
            positions: p.positions + s.stats.forward_tokens as usize,
        })
    }
}

/// Answers a batch on the blocking pool.
fn run(batch: Vec<Job>) -> (Done, Pass) {
    let mut sessions = Vec::with_capacity(batch.len());
    let mut msgs = Vec::with_capacity(batch.len());
    let mut senders = Vec::with_capacity(batch.len());
    for job in batch {
        sessions.push(job.session);
        msgs.push(job.input);
        senders.push(job.done);
    }
    let before = Pass::of(&sessions);
    let replies = {
        let mut refs: Vec<&mut VerifierSession> = sessions.iter_mut().collect();
        handle_batch(&mut refs, msgs)
    };
    let after = Pass::of(&sessions);
    let pass = Pass {
        rounds: after.rounds - before.rounds,
        positions: after.positions - before.positions,
    };
    let done = senders
        .into_iter()
        .zip(sessions.into_iter().zip(replies))
        .collect();
    (done, pass)
}

/// The server's batcher, started on first use inside the runtime.
/// Queues one session's input for the next batch and waits for it: the session comes back with
/// its reply. `None` when the queue's worker has stopped (shutdown) or the batch's task failed.
pub(crate) async fn submit_one(
    state: &Arc<AppState>,
    session: VerifierSession,
    input: Input,
    bytes: usize,
) -> Option<(VerifierSession, Reply)> {
    let (done, reply) = oneshot::channel();
    let job = Job {
        session,
        input,
        bytes,
        done,
    };
    batcher(state).submit(job).await.ok()?;
    reply.await.ok()
}

pub(crate) fn batcher(state: &Arc<AppState>) -> &Batcher {
    state.batcher.get_or_init(|| {
        Batcher::start(
            Arc::downgrade(state),
            state.config.max_sessions,
            state.config.batch,
        )
    })
}
