//! A load generator for a running verifier: many concurrent sessions on loopback, each sending
//! rounds as a hybrid client would (a prompt, then a few drafted tokens per round, some
//! uploaded for verification, the verifier's correction opening the next round), while the
//! server process's memory is sampled. Drives `hlm-loadtest` and the load test in `tests/`.
//!
//! The drafted tokens are random ids, so most uploads are rejected: every round costs the
//! verifier a forward pass and a rollback, which is the heavier case for the server.

use hlm_engine::link::VerifierLink;
use hlm_engine::ws_link::WsLink;
use hlm_protocol::*;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub token: Option<String>,
    pub vocab: VocabInfo,
    pub sessions: usize,
    pub duration: Duration,
    /// Rounds after which a session stops even before `duration` is up (`None`: only the
    /// duration ends it). A test sets both, so that what it checks does not hang on the
    /// machine's speed.
    pub max_rounds: Option<u32>,
    /// Tokens per round after the prompt (one in two is uploaded).
    pub round_tokens: usize,
    pub prompt_tokens: usize,
    /// Context a session fills before it starts a new generation (`Reset`).
    pub context: usize,
    /// Pause between a verdict and the next round (the client's drafting time).
    pub think: Duration,
    /// Process whose resident memory is sampled (the server's pid).
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub sessions: usize,
    pub seconds: f64,
    pub rounds: u64,
    pub generations: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub rounds_per_s: f64,
    /// Uploaded tokens the verifier checked, per second (summed over the verdicts).
    pub tokens_verified_per_s: f64,
    /// Positions the verifier ran through its model (catch-up included), per second.
    pub forward_tokens_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Server RSS before the sessions start, and the highest seen while they ran (MiB).
    pub rss_idle_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
}

#[derive(Default)]
struct Shared {
    latencies: Mutex<Vec<f64>>,
    errors: Mutex<Vec<String>>,
    rounds: AtomicU64,
    generations: AtomicU64,
    verified: AtomicU64,
    forward_tokens: AtomicU64,
}

impl Shared {
    /// A round answered after `latency` seconds with verdict `v`.
    fn count_verdict(&self, v: &Verdict, latency: f64) {
        self.verified
            .fetch_add(v.verified as u64, Ordering::Relaxed);
        self.forward_tokens
            .fetch_add(v.forward_tokens as u64, Ordering::Relaxed);
        self.rounds.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies.lock() {
            l.push(latency);
        }
    }
}

/// The command line of a `verifier-server` serving `model` on `127.0.0.1:port` (quiet logs).
pub fn server_command(
    bin: &std::path::Path,
    model: &str,
    port: u16,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--model", model, "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "warn");
    cmd
}

/// Starts a `verifier-server` binary serving `model` on `127.0.0.1:port` (quiet logs) with
/// `extra` flags, and waits up to 60 s for it to accept connections.
pub async fn spawn_server(
    bin: &std::path::Path,
    model: &str,
    port: u16,
    extra: &[&str],
) -> std::io::Result<std::process::Child> {
    let mut child = server_command(bin, model, port, extra).spawn()?;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(std::io::Error::other(format!(
                "{} exited early: {status}",
                bin.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    Err(std::io::Error::other("the server did not come up in 60 s"))
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Debian's nginx run in the foreground from a configuration in a folder of the caller's (the
/// load balancer and TLS terminator of the failover and `wss://` tests); stopped with SIGTERM,
/// which takes its workers down too, when dropped.
pub struct Nginx {
    child: std::process::Child,
}

/// Where Debian's package installs nginx.
pub const NGINX: &str = "/usr/sbin/nginx";

impl Nginx {
    /// Writes `conf` to `dir/nginx.conf` (nginx writes its temp files and logs in `dir`, which
    /// its workers, user nobody under root, must be able to enter), starts nginx and waits up to
    /// 5 s for it to listen on `port`.
    pub fn start(dir: &std::path::Path, conf: &str, port: u16) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = std::process::Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!("{NGINX}: {e} (apt-get install nginx-light)"))
            })?;
        let nginx = Self { child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(format!(
            "nginx did not listen on {port} in 5 s"
        )))
    }

    /// Reloads `dir/nginx.conf` (SIGHUP to the master process).
    pub fn reload(&self) -> std::io::Result<()> {
        signal(self.child.id(), "HUP")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) -> std::io::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{sig} {pid}: {status}"
        )))
    }
}

/// Resident memory of `pid` in MiB (Linux `/proc`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the load and reports. Errors of single sessions are counted, not returned.
pub async fn run(cfg: LoadConfig) -> LoadReport {
    let shared = Arc::new(Shared::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rss_idle = cfg.server_pid.and_then(rss_mib);
    let peak = Arc::new(Mutex::new(rss_idle.unwrap_or(0.0)));
    let sampler = cfg.server_pid.map(|pid| {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(r), Ok(mut p)) = (rss_mib(pid), peak.lock()) {
                    *p = p.max(r);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..cfg.sessions {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = session(i as u64, &cfg, &shared, start).await {
                if let Ok(mut errs) = shared.errors.lock() {
                    errs.push(format!("session {i}: {e}"));
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            if let Ok(mut errs) = shared.errors.lock() {
                errs.push(format!("session task: {e}"));
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let mut lat = shared
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize] * 1e3
        }
    };
    let errors = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let rounds = shared.rounds.load(Ordering::Relaxed);
    LoadReport {
        sessions: cfg.sessions,
        seconds,
        rounds,
        generations: shared.generations.load(Ordering::Relaxed),
        errors: errors.len() as u64,
        first_errors: errors.into_iter().take(5).collect(),
        rounds_per_s: rounds as f64 / seconds,
        tokens_verified_per_s: shared.verified.load(Ordering::Relaxed) as f64 / seconds,
        forward_tokens_per_s: shared.forward_tokens.load(Ordering::Relaxed) as f64 / seconds,
        latency_p50_ms: pct(0.50),
        latency_p90_ms: pct(0.90),
        latency_p99_ms: pct(0.99),
        latency_max_ms: pct(1.0),
        rss_idle_mib: rss_idle,
        rss_peak_mib: cfg
            .server_pid
            .map(|_| *peak.lock().unwrap_or_else(|e| e.into_inner())),
    }
}

/// One client: handshake, then generations of rounds until the time is up.
async fn session(id: u64, cfg: &LoadConfig, shared: &Shared, start: Instant) -> Result<(), String> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(id);
    let mut link = handshake(id, cfg).await?;
    let mut committed = 0usize;
    let mut opening: Option<u32> = None;
    let mut round_no = 0u32;
    while start.elapsed() < cfg.duration && cfg.max_rounds.is_none_or(|n| round_no < n) {
        if committed + cfg.round_tokens + 1 > cfg.context {
            let reset = encode_client(&ClientMsg::Reset {
                sampling: Sampling::Greedy,
            });
            link.send(reset).await.map_err(|e| e.to_string())?;
            committed = 0;
            opening = None;
        }
        if committed == 0 {
            shared.generations.fetch_add(1, Ordering::Relaxed);
        }
        let tokens = round_tokens(&mut rng, cfg, committed == 0, opening.take());
        let n = tokens.len();
        let frame = encode_client(&ClientMsg::Round(Round {
            round: round_no,
            base: committed as u32,
            tokens,
        }));
        let t = Instant::now();
        link.send(frame).await.map_err(|e| e.to_string())?;
        let reply = link.recv().await.map_err(|e| e.to_string())?;
        let latency = t.elapsed().as_secs_f64();
        match decode_server(&reply) {
            Ok(ServerMsg::Verdict(v)) if v.round == round_no => {
                if v.correction.is_none() && v.accepted as usize != n {
                    return Err(format!("verdict {v:?} for a round of {n}"));
                }
                committed += v.accepted as usize;
                opening = v.correction;
                shared.count_verdict(&v, latency);
            }
            other => return Err(format!("expected a verdict, got {other:?}")),
        }
        round_no = round_no.wrapping_add(1);
        tokio::time::sleep(cfg.think).await;
    }
    let _ = link.close().await;
    Ok(())
}

/// A connection that has said `Hello` (greedy sampling) and had its `Welcome`.
async fn handshake(id: u64, cfg: &LoadConfig) -> Result<WsLink, String> {
    let mut link = WsLink::connect_with_token(&cfg.url, cfg.token.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: format!("loadgen-{id}"),
        vocab: cfg.vocab.clone(),
        sampling: Sampling::Greedy,
    };
    link.send(encode_client(&hello))
        .await
        .map_err(|e| e.to_string())?;
    match decode_server(&link.recv().await.map_err(|e| e.to_string())?) {
        Ok(ServerMsg::Welcome { .. }) => Ok(link),
        other => Err(format!("expected Welcome, got {other:?}")),
    }
}

/// One round's tokens, random over the vocabulary: a prompt first when a generation starts,
/// then the last verdict's correction (if any), then `round_tokens` drafts of which every other
/// one and the last are sent for verification.
fn round_tokens(
    rng: &mut rand_chacha::ChaCha8Rng,
    cfg: &LoadConfig,
    new_generation: bool,
    opening: Option<u32>,
) -> Vec<BlockToken> {
    let vocab = cfg.vocab.size;
    let unverified = |id| BlockToken {
        id,
        verify: false,
        dist: None,
    };
    let mut tokens = Vec::new();
    if new_generation {
        tokens.extend((0..cfg.prompt_tokens).map(|_| unverified(rng.random_range(0..vocab))));
    }
    tokens.extend(opening.map(unverified));
    for i in 0..cfg.round_tokens {
        tokens.push(BlockToken {
            id: rng.random_range(0..vocab),
            verify: i % 2 == 1 || i + 1 == cfg.round_tokens,
            dist: None,
        });
    }
    tokens
}
