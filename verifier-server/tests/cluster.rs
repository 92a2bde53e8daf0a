//! Several verifier replicas behind nginx (Debian's package, configured by
//! `deploy/local/nginx.conf.template`, as `scripts/cluster.sh` runs it): real processes on
//! loopback, SmolLM2-135M on both sides.
//!
//! * 3 replicas, 24 concurrent sessions through nginx: one replica is SIGKILLed mid-generation and
//!   another drained with SIGTERM (close 1001); every session ends with exactly the text of an
//!   uninterrupted run, each token reported once. The extra time the affected sessions took is
//!   printed (`cluster-failover: {...}`, copied into docs/protocol-and-operations.md).
//! * A replica added while the cluster runs (nginx reloaded) takes new sessions.
//! * Every replica down: a session fails with "verifier unreachable" once its reconnect budget is
//!   spent, and a new one at once; nothing hangs.

use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, GenerationConfig, HybridSession};
use hlm_engine::model::{LoadOptions, Model};
use hlm_engine::ws_link::WsLink;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;

mod common;
use common::{http_get, metric};
use verifier_server::loadgen::{free_port, signal, spawn_server, Nginx, NGINX};
use verifier_server::telemetry::names;

const MODEL: &str = "smollm2-135m-instruct-q4_1";
const SESSIONS: usize = 24;
const TOKENS: usize = 24;
const PROMPTS: [&str; 4] = [
    "def fibonacci(n):",
    "The capital of France is",
    "Write a haiku about the sea.",
    "fn main() {",
];
/// Seconds a drained replica gives its sessions (its `--drain`).
const DRAIN_S: &str = "2";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The template with its three fields filled in: where nginx writes, where it listens, and one
/// `server` line per replica port.
fn nginx_config(prefix: &Path, listen: u16, replicas: &[u16]) -> String {
    let template = std::fs::read_to_string(repo().join("deploy/local/nginx.conf.template"))
        .expect("deploy/local/nginx.conf.template");
    let servers: Vec<String> = replicas
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;"))
        .collect();
    template
        .replace("{{prefix}}", &prefix.display().to_string())
        .replace("{{listen}}", &format!("127.0.0.1:{listen}"))
        .replace("{{servers}}", &servers.join("\n"))
}

/// nginx and its replicas; everything still running is killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    nginx: Nginx,
    /// Port and process of every replica ever started (`None` once stopped).
    replicas: Vec<(u16, Option<Child>)>,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Vec::new();
        for _ in 0..n {
            replicas.push(start_replica().await);
        }
        let port = free_port().unwrap();
        let ports: Vec<u16> = replicas.iter().map(|r| r.0).collect();
        let conf = nginx_config(dir.path(), port, &ports);
        let nginx = Nginx::start(dir.path(), &conf, port).expect("start nginx");
        Cluster {
            dir,
            port,
            nginx,
            replicas,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn write_config(&self) {
        let ports: Vec<u16> = self.replicas.iter().map(|r| r.0).collect();
        let conf = nginx_config(self.dir.path(), self.port, &ports);
        std::fs::write(self.dir.path().join("nginx.conf"), conf).unwrap();
    }

    /// Adds a replica and reloads nginx (SIGHUP to its master process) with it in the upstream.
    async fn add_replica(&mut self) -> u16 {
        let r = start_replica().await;
        let port = r.0;
        self.replicas.push(r);
        self.write_config();
        self.nginx.reload().unwrap();
        port
    }

    fn live(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|&i| self.replicas[i].1.is_some())
            .collect()
    }

    /// The live replica holding the most sessions now (its own `/metrics`).
    async fn busiest(&self) -> usize {
        let mut best = (0.0, self.live()[0]);
        for i in self.live() {
            let m = replica_metrics(self.replicas[i].0).await;
            let active = metric(&m, names::SESSIONS_ACTIVE);
            if active > best.0 {
                best = (active, i);
            }
        }
        best.1
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.replicas[i].1.take().unwrap();
        child.kill().unwrap(); // SIGKILL: no drain, no goodbye
        child.wait().unwrap();
    }

    /// SIGTERM: the replica closes its sessions with 1001 after their current round and exits.
    async fn drain(&mut self, i: usize) {
        let mut child = self.replicas[i].1.take().unwrap();
        signal(child.id(), "TERM").unwrap();
        for _ in 0..300 {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("a drained replica did not exit within 15 s");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.replicas {
            if let Some(c) = c {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

async fn start_replica() -> (u16, Option<Child>) {
    let bin = Path::new(env!("CARGO_BIN_EXE_verifier-server"));
    let port = free_port().unwrap();
    let child = spawn_server(bin, MODEL, port, &["--drain", DRAIN_S])
        .await
        .expect("start verifier-server");
    (port, Some(child))
}

async fn replica_metrics(port: u16) -> String {
    http_get(&format!("ws://127.0.0.1:{port}/ws"), "/metrics").await
}

/// What one session saw.
#[derive(Debug)]
struct Outcome {
    prompt: usize,
    ids: Vec<u32>,
    /// The index of every reported token, in order.
    indices: Vec<usize>,
    reconnects: usize,
    wall_s: f64,
}

/// A session of `max_tokens` through `url`, on its own thread (the drafter is the client's);
/// `progress` counts the tokens every session has reported; `at_token` runs once, when this
/// session reports its token of that index.
struct Session {
    url: String,
    prompt: usize,
    max_tokens: usize,
    patience: Duration,
    progress: Arc<AtomicUsize>,
    at_token: Option<(usize, Box<dyn FnOnce() + Send>)>,
}

impl Session {
    fn new(url: &str, prompt: usize, max_tokens: usize, progress: &Arc<AtomicUsize>) -> Self {
        Self {
            url: url.to_string(),
            prompt,
            max_tokens,
            patience: Duration::from_secs(30),
            progress: progress.clone(),
            at_token: None,
        }
    }

    fn spawn(
        self,
        model: &(Arc<Model>, Tokenizer),
    ) -> std::thread::JoinHandle<Result<Outcome, String>> {
        let (m, t) = (model.0.clone(), model.1.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(self.run(Drafter::new(m, t)))
        })
    }

    async fn run(mut self, mut drafter: Drafter) -> Result<Outcome, String> {
        let started = Instant::now();
        let mut link = WsLink::connect(&self.url)
            .await
            .map_err(|e| e.to_string())?;
        link.reconnect_patience = self.patience;
        let mut session = HybridSession::connect(link, drafter.vocab_info(), "cluster-test")
            .await
            .map_err(|e| e.to_string())?;
        let cfg = GenerationConfig {
            max_tokens: self.max_tokens,
            // Every token goes to the verifier: a session is busy on its replica throughout.
            mode: FilterMode::Always,
            ..Default::default()
        };
        let prompt = drafter.encode(PROMPTS[self.prompt]).unwrap();
        let mut indices = Vec::new();
        let (progress, mut at_token) = (self.progress.clone(), self.at_token.take());
        let summary = session
            .generate(&mut drafter, &prompt, &cfg, &mut |e| {
                indices.push(e.index);
                progress.fetch_add(1, Ordering::Relaxed);
                if at_token.as_ref().is_some_and(|(at, _)| *at == e.index) {
                    (at_token.take().unwrap().1)();
                }
                true
            })
            .await
            .map_err(|e| e.to_string())?;
        let _ = session.close().await;
        Ok(Outcome {
            prompt: self.prompt,
            ids: summary.ids,
            indices,
            reconnects: summary.totals.reconnects,
            wall_s: started.elapsed().as_secs_f64(),
        })
    }
}

fn load_model() -> (Arc<Model>, Tokenizer) {
    let path = hlm_fetch::resolve(MODEL, &mut |_| {}).expect("model (run `hlm fetch`)");
    let (m, t) = hlm_engine::load_model_and_tokenizer(&path, &LoadOptions::default()).unwrap();
    (Arc::new(m), t)
}

/// Waits for every session, at most `secs` in all.
fn join_all(
    handles: Vec<std::thread::JoinHandle<Result<Outcome, String>>>,
    secs: u64,
) -> Vec<Result<Outcome, String>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    handles
        .into_iter()
        .map(|h| {
            while !h.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "sessions still running after {secs} s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            h.join().expect("session thread")
        })
        .collect()
}

/// Waits until the sessions have reported `n` tokens in all (or `secs` passed).
async fn wait_progress(progress: &AtomicUsize, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while progress.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One scenario on purpose: the replicas, nginx and the model load once for the three parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_nginx_fail_over_and_scale_out_with_nothing_lost() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: apt-get install nginx-light (scripts/setup-tools.sh does)"
    );
    let model = load_model();
    let mut cluster = Cluster::start(3).await;
    let url = cluster.url();
    let progress = Arc::new(AtomicUsize::new(0));

    // Uninterrupted runs: the text every session must end with.
    let clean: Vec<_> = (0..PROMPTS.len())
        .map(|p| Session::new(&url, p, TOKENS, &progress).spawn(&model))
        .collect();
    let reference: Vec<Vec<u32>> = join_all(clean, 120)
        .into_iter()
        .map(|r| {
            let o = r.expect("an uninterrupted session");
            assert_eq!(o.reconnects, 0);
            o.ids
        })
        .collect();

    // 1. 24 sessions; the busiest replica is killed a quarter of the way, another drained at half.
    progress.store(0, Ordering::Relaxed);
    let handles: Vec<_> = (0..SESSIONS)
        .map(|i| Session::new(&url, i % PROMPTS.len(), TOKENS, &progress).spawn(&model))
        .collect();
    let total = SESSIONS * TOKENS;
    wait_progress(&progress, total / 4, 120).await;
    let killed = cluster.busiest().await;
    let killed_at = progress.load(Ordering::Relaxed);
    cluster.kill(killed);
    wait_progress(&progress, total / 2, 120).await;
    let drained = cluster.busiest().await;
    let drained_at = progress.load(Ordering::Relaxed);
    cluster.drain(drained).await;
    let outcomes: Vec<Outcome> = join_all(handles, 300)
        .into_iter()
        .map(|r| r.expect("every session survives the failover"))
        .collect();
    assert!(
        killed_at < total && drained_at < total,
        "faults came after the end"
    );
    for o in &outcomes {
        assert_eq!(o.ids, reference[o.prompt], "same text as without faults");
        let want: Vec<usize> = (0..o.ids.len()).collect();
        assert_eq!(o.indices, want, "each token reported once, in order");
    }
    let (hit, spared): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.reconnects > 0);
    assert!(
        !hit.is_empty(),
        "no session reconnected: the faults missed them"
    );
    let walls = |v: &[&Outcome]| mean(&v.iter().map(|o| o.wall_s).collect::<Vec<_>>());
    println!(
        "cluster-failover: {}",
        serde_json::json!({
            "replicas": 3, "sessions": SESSIONS, "tokens": TOKENS,
            "killed_after_tokens": killed_at, "drained_after_tokens": drained_at,
            "sessions_reconnected": hit.len(),
            "reconnects": outcomes.iter().map(|o| o.reconnects).sum::<usize>(),
            "mean_wall_s_reconnected": walls(&hit), "mean_wall_s_spared": walls(&spared),
        })
    );

    // 2. A replica added (nginx reloaded) takes new sessions.
    let added = cluster.add_replica().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handles: Vec<_> = (0..4)
        .map(|i| Session::new(&url, i, TOKENS / 2, &progress).spawn(&model))
        .collect();
    for r in join_all(handles, 120) {
        let o = r.expect("a session after the scale-out");
        assert_eq!(o.ids[..], reference[o.prompt][..o.ids.len()]);
    }
    let served = metric(&replica_metrics(added).await, names::SESSIONS_TOTAL);
    assert!(served >= 1.0, "the added replica served {served} sessions");

    // 3. Every replica dies mid-session: the session gives up after its 3 s budget, and a new
    //    session fails at once; both say the verifier is unreachable.
    let pids: Vec<u32> = cluster
        .live()
        .iter()
        .map(|&i| cluster.replicas[i].1.as_ref().unwrap().id())
        .collect();
    let mut doomed = Session::new(&url, 0, TOKENS, &progress);
    doomed.patience = Duration::from_secs(3);
    doomed.at_token = Some((
        5,
        Box::new(move || {
            for p in pids {
                signal(p, "KILL").unwrap();
            }
        }),
    ));
    let t = Instant::now();
    let err = join_all(vec![doomed.spawn(&model)], 60)
        .pop()
        .unwrap()
        .expect_err("no replica is left");
    assert!(err.contains("unreachable"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    for i in cluster.live() {
        let _ = cluster.replicas[i].1.take().unwrap().wait();
    }
    let err = join_all(vec![Session::new(&url, 0, 4, &progress).spawn(&model)], 30)
        .pop()
        .unwrap()
        .expect_err("no replica is left");
    assert!(err.contains("unreachable"), "{err}");
}
