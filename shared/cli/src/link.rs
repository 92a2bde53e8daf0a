//! The real constrained link (`hlm_eval::shaped_link`): started for `hlm eval --link shaped`,
//! or on its own by `hlm link` for a client that is not this process (the draft model in a
//! browser page), which it serves until stopped.

use anyhow::Context;
use clap::Args;
use hlm_eval::energy::Constants;
use hlm_eval::shaped_link::{ShapedLink, ShapedLinkError, ShapedLinkSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The link's shape: each flag falls back to the constants' analytic preset.
#[derive(Args, Debug, Clone)]
pub struct LinkShape {
    /// Shaped link: rate each way in kbit/s (default: the constants' W·log2(1+SNR)).
    #[arg(long)]
    pub link_rate_kbit: Option<f64>,
    /// Shaped link: round-trip time in ms added by the relay (default: the constants' RTT).
    #[arg(long)]
    pub link_rtt_ms: Option<f64>,
    /// Shaped link: the `verifier-server` binary (default: next to this `hlm`).
    #[arg(long)]
    pub verifier_server: Option<PathBuf>,
}

impl LinkShape {
    fn spec(&self, constants: &Constants) -> ShapedLinkSpec {
        ShapedLinkSpec {
            rate_bps: self
                .link_rate_kbit
                .map_or(constants.link.rate_bps(), |k| k * 1000.0),
            rtt: Duration::from_secs_f64(
                self.link_rtt_ms
                    .map_or(constants.link.rtt_s, |ms| ms / 1000.0),
            ),
        }
    }

    fn server_bin(&self) -> anyhow::Result<PathBuf> {
        let bin = match &self.verifier_server {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("verifier-server"),
        };
        anyhow::ensure!(
            bin.is_file(),
            "{} not found: build it (cargo build --release -p verifier-server) or pass \
             --verifier-server",
            bin.display()
        );
        Ok(bin)
    }

    /// Starts the link with `verifier` (a model name or path) served behind it, the server also
    /// given `server_args`. `Ok(Err(why))` where this machine cannot make one (not root, no
    /// `ip`/`tc`); the note says what the link is.
    pub fn start(
        &self,
        verifier: &str,
        constants: &Constants,
        server_args: &[&str],
    ) -> anyhow::Result<Result<(ShapedLink, String), String>> {
        let spec = self.spec(constants);
        let bin = self.server_bin()?;
        let verifier_path = hlm_fetch::resolve(verifier, &mut |_| {})?;
        let note = format!(
            "over a real link: namespace + veth, tc tbf {:.0} kbit/s each way, relay RTT {:.0} ms",
            spec.rate_bps / 1000.0,
            spec.rtt.as_secs_f64() * 1000.0
        );
        match ShapedLink::start(spec, &bin, &verifier_path.to_string_lossy(), server_args) {
            Ok(l) => Ok(Ok((l, note))),
            Err(ShapedLinkError::Unavailable(why)) => Ok(Err(why)),
            Err(e) => Err(e.into()),
        }
    }
}

/// `hlm link`.
#[derive(Args, Debug)]
pub struct LinkArgs {
    /// The model the verifier behind the link serves.
    #[arg(long, default_value = "qwen2.5-coder-1.5b-instruct-q4_k_m")]
    verifier: String,
    #[command(flatten)]
    shape: LinkShape,
    /// A web page origin the verifier lets open sessions (repeatable), e.g. the origin of the
    /// page that runs the draft model: `http://127.0.0.1:8094`.
    #[arg(long)]
    allowed_origin: Vec<String>,
    /// Constants of the link model (default: the shipped constants.toml).
    #[arg(long)]
    constants: Option<PathBuf>,
}

/// Starts the link, prints `{"url", "token", "namespace", "link"}` as one JSON line, and keeps it up until
/// SIGINT or SIGTERM; then tears it down (server, namespace).
pub fn run(args: LinkArgs) -> anyhow::Result<()> {
    let constants = constants(args.constants.as_deref())?;
    let server_args: Vec<&str> = args
        .allowed_origin
        .iter()
        .flat_map(|o| ["--allowed-origin", o.as_str()])
        .collect();
    let (link, note) = args
        .shape
        .start(&args.verifier, &constants, &server_args)?
        .map_err(|why| anyhow::anyhow!("a real constrained link cannot be made here: {why}"))?;
    let line = serde_json::json!({
        "url": link.url(),
        "token": link.token(),
        "namespace": link.namespace(),
        "link": note,
    });
    println!("{line}");
    link.runtime().block_on(until_stopped())?;
    eprintln!("hlm link: stopping");
    drop(link);
    Ok(())
}

/// The constants of the energy and link models: from `path`, or the shipped ones.
pub fn constants(path: Option<&Path>) -> anyhow::Result<Constants> {
    match path {
        Some(p) => hlm_eval::energy::constants_from_file(p)
            .with_context(|| format!("reading {}", p.display())),
        None => Ok(Constants::default_constants()),
    }
}

/// Waits for SIGINT or SIGTERM.
async fn until_stopped() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
