//! A real constrained link for the evaluation's second throughput figure: the verifier runs as a
//! `verifier-server` process in a network namespace of its own, joined to this one by a veth pair
//! whose two ends are rate-limited with `tc qdisc … tbf`; a small relay in this process adds the
//! round-trip delay in user space (this kernel has no `netem`).
//!
//! ```text
//! HybridSession ─ws─▶ relay 127.0.0.1:P ─(+RTT/2)─▶ veth (tbf, rate R) ─▶ netns: verifier-server
//!               ◀──────────────────────(+RTT/2)─── veth (tbf, rate R) ◀─
//! ```
//!
//! Addresses exist only on the veth pair (10.201.N.1/30 here, .2 in the namespace). Creating a
//! namespace needs root (`CAP_NET_ADMIN`); where it cannot be made, [`ShapedLink::start`] says why
//! ([`ShapedLinkError::Unavailable`]) and the harness reports the column as not available.
//!
//! `tbf` is given a bucket of one packet (`burst` = 1600 bytes), so a frame of `b` bits takes about
//! `b / R` seconds to cross, as the analytic model assumes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, thiserror::Error)]
pub enum ShapedLinkError {
    /// Namespaces or traffic control cannot be used here (not root, no `ip`/`tc`).
    #[error("a real constrained link cannot be made here: {0}")]
    Unavailable(String),
    #[error("shaped link: {0}")]
    Failed(String),
}

/// The link to build: rate each way and round-trip time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapedLinkSpec {
    pub rate_bps: f64,
    pub rtt: Duration,
}

/// A network namespace joined to this one by a veth pair shaped both ways; deleted on drop.
pub struct Namespace {
    pub name: String,
    /// This side's address on the pair.
    pub host_ip: String,
    /// The namespace's address on the pair.
    pub ns_ip: String,
}

/// A running shaped link with its verifier; torn down on drop (server killed, namespace deleted).
pub struct ShapedLink {
    server: Option<Child>,
    relay: SocketAddr,
    token: String,
    runtime: Arc<tokio::runtime::Runtime>,
    pub spec: ShapedLinkSpec,
    // Dropped last: the server must be gone before its namespace.
    namespace: Namespace,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

/// The `tc` rate argument: whole bits per second.
fn tc_rate(rate_bps: f64) -> String {
    format!("{}bit", rate_bps.round().max(8.0) as u64)
}

impl Namespace {
    /// Creates namespace `hlm-eval-<pid>-<tag>` and its veth pair (10.201.N.1/30 here, .2 there),
    /// each end rate-limited to `rate_bps` by a one-packet-bucket `tbf`.
    pub fn create(tag: u8, rate_bps: f64) -> Result<Self, ShapedLinkError> {
        let pid = std::process::id();
        let name = format!("hlm-eval-{pid}-{tag}");
        // veth names are at most 15 bytes.
        let id = (pid % 1_000_000) * 10 + u32::from(tag % 10);
        let (host_if, ns_if) = (format!("hlmh{id}"), format!("hlmn{id}"));
        let subnet = format!("10.201.{}", (pid + u32::from(tag)) % 250);
        let ns = Namespace {
            host_ip: format!("{subnet}.1"),
            ns_ip: format!("{subnet}.2"),
            name,
        };
        ip(&["netns", "add", &ns.name]).map_err(ShapedLinkError::Unavailable)?;
        let rate = tc_rate(rate_bps);
        let tbf = |dev: &str| -> Vec<String> {
            let args = ["qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate];
            let tail = ["burst", "1600", "latency", "10s"];
            args.iter()
                .chain(tail.iter())
                .map(|s| s.to_string())
                .collect()
        };
        let setup = || -> Result<(), String> {
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ])?;
            ip(&["link", "set", &ns_if, "netns", &ns.name])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &host_if,
            ])?;
            ip(&["link", "set", &host_if, "up"])?;
            run(ns.command("ip").args([
                "addr",
                "add",
                &format!("{}/30", ns.ns_ip),
                "dev",
                &ns_if,
            ]))?;
            run(ns.command("ip").args(["link", "set", &ns_if, "up"]))?;
            run(ns.command("ip").args(["link", "set", "lo", "up"]))?;
            run(Command::new("tc").args(tbf(&host_if)))?;
            run(ns.command("tc").args(tbf(&ns_if)))
        };
        // Traffic control missing is "unavailable", not a failure of the harness; the namespace
        // made so far is deleted by `ns`'s drop.
        setup().map_err(ShapedLinkError::Unavailable)?;
        Ok(ns)
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair and its qdiscs with it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Waits up to `patience` for `addr` to accept a connection, failing early if `child` exits.
pub fn wait_for(
    addr: SocketAddr,
    child: &mut Child,
    patience: Duration,
) -> Result<(), ShapedLinkError> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ShapedLinkError::Failed(format!(
                "the process in the namespace exited: {status}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(ShapedLinkError::Failed(format!(
        "nothing listened on {addr} within {patience:?}"
    )))
}

impl ShapedLink {
    /// Builds the shaped namespace, starts `server_bin` serving `model` in it (with a fresh
    /// token) and the delaying relay, and waits for the server to accept connections.
    pub fn start(
        spec: ShapedLinkSpec,
        server_bin: &Path,
        model: &str,
        extra_server_args: &[&str],
    ) -> Result<Self, ShapedLinkError> {
        let namespace = Namespace::create(0, spec.rate_bps)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| ShapedLinkError::Failed(format!("tokio runtime: {e}")))?;
        let token = format!(
            "eval-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let upstream: SocketAddr = format!("{}:9000", namespace.ns_ip)
            .parse()
            .map_err(|e| ShapedLinkError::Failed(format!("address: {e}")))?;
        let mut server = namespace
            .command(server_bin)
            .args(["--model", model, "--listen", &upstream.to_string()])
            .args(["--token", &token])
            .args(extra_server_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| ShapedLinkError::Failed(format!("{}: {e}", server_bin.display())))?;
        if let Err(e) = wait_for(upstream, &mut server, Duration::from_secs(180)) {
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }
        let half = spec.rtt / 2;
        let relay_addr = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(relay(listener, upstream, half));
            std::io::Result::Ok(addr)
        });
        let relay = match relay_addr {
            Ok(a) => a,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(ShapedLinkError::Failed(format!("relay: {e}")));
            }
        };
        Ok(ShapedLink {
            server: Some(server),
            relay,
            token,
            runtime: Arc::new(runtime),
            spec,
            namespace,
        })
    }

    /// The WebSocket URL through the relay.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.relay)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The runtime the relay runs on; drive the client's link with it.
    pub fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.runtime.clone()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace.name
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Accepts clients and joins each to a fresh upstream connection, delaying every chunk by
/// `one_way` in each direction.
async fn relay(listener: TcpListener, upstream: SocketAddr, one_way: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pump(cr, sw, one_way), pump(sr, cw, one_way));
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read. The queue between the two
/// halves is bounded (64 chunks), so a stalled side slows the other instead of growing memory.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_rate_is_whole_bits() {
        assert_eq!(tc_rate(666_000.4), "666000bit");
        assert_eq!(tc_rate(1.0), "8bit");
    }

    /// The relay alone (no namespace needed): an echo across it takes one round trip.
    #[test]
    fn relay_adds_the_round_trip() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let echo_addr = echo.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = echo.accept().await.unwrap();
                let mut b = [0u8; 5];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
            });
            let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let front_addr = front.local_addr().unwrap();
            tokio::spawn(relay(front, echo_addr, Duration::from_millis(100)));
            let mut c = TcpStream::connect(front_addr).await.unwrap();
            let t = Instant::now();
            c.write_all(b"hello").await.unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).await.unwrap();
            let rtt = t.elapsed();
            assert_eq!(&b, b"hello");
            assert!(
                rtt >= Duration::from_millis(200) && rtt < Duration::from_millis(400),
                "{rtt:?}"
            );
        });
    }
}
