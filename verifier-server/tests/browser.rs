//! The browser client in a real browser: Debian's Chromium (headless) driven by npm
//! playwright-core runs `web-client/tests/browser.mjs` against the real `verifier-server`
//! binary, which serves the demo page (`www/`), the WebAssembly package and the draft model.
//! SmolLM2-135M is both draft and verifier here: the smallest real pair that exercises the whole
//! path on 2 cores (the default Qwen pair runs the same code; see docs/browser.md).
//!
//! Needs `scripts/build-web.sh` (the package) and `npm ci` in `web-client/tests` (playwright-core);
//! `.ci/run` does both. The script packs the npm package, installs the tarball into a fresh
//! project and drives it from a minimal page; the counters the demo page shows are compared with
//! the server's own metrics.

use std::path::{Path, PathBuf};

mod common;
use common::{http_get, metric};
use verifier_server::telemetry::names;

const MODEL: &str = "smollm2-135m-instruct-q4_1";
const TOKEN: &str = "browser-test-token";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require(path: &Path, how: &str) {
    assert!(path.exists(), "{} is missing: {how}", path.display());
}

/// One long scenario on purpose: starting Chromium, the two servers and the model download once
/// and checking every step against them keeps the test inside CI's time; the steps run in
/// `browser.mjs`, and this function only starts, collects and checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_and_npm_package_in_chromium() {
    let repo = repo();
    require(
        &repo.join("www/pkg/wasm/hlm_web_client_bg.wasm"),
        "run scripts/build-web.sh",
    );
    require(
        &repo.join("web-client/tests/node_modules/playwright-core"),
        "run `npm ci` in web-client/tests",
    );
    require(
        Path::new("/usr/bin/chromium"),
        "apt-get install chromium chromium-driver",
    );

    let port = verifier_server::loadgen::free_port().unwrap();
    let www = repo.join("www");
    let www = www.to_str().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_verifier-server"));
    let extra = ["--draft-model", MODEL, "--www", www, "--token", TOKEN];
    let mut server = verifier_server::loadgen::spawn_server(bin, MODEL, port, &extra)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{port}/");
    // A second verifier with another vocabulary (a tiny generated model), allowing the demo's
    // origin: the page must report "model mismatch".
    let tiny = tempfile::tempdir().unwrap();
    hlm_engine::testing::write_tiny_model(tiny.path(), 5, "qwen2");
    let other_port = verifier_server::loadgen::free_port().unwrap();
    let origin = format!("http://127.0.0.1:{port}");
    let other_extra = ["--allowed-origin", origin.as_str()];
    let tiny_dir = tiny.path().to_str().unwrap();
    let mut other = verifier_server::loadgen::spawn_server(bin, tiny_dir, other_port, &other_extra)
        .await
        .unwrap();
    let mismatch_url = format!("ws://127.0.0.1:{other_port}/ws");
    let out_dir = repo.join("target/browser-test");
    std::fs::create_dir_all(&out_dir).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(repo.join("web-client/tests/browser.mjs"))
        .args(["--base", &base, "--token", TOKEN, "--max-tokens", "24"])
        .args(["--mismatch-verifier", &mismatch_url])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .await
        .expect("node");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    eprintln!("{stdout}");
    let metrics = http_get(&format!("ws://127.0.0.1:{port}/ws"), "/metrics").await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = other.kill();
    let _ = other.wait();
    assert!(run.status.success(), "browser test failed: {}", run.status);

    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |name: &str| {
        reports
            .iter()
            .find(|r| r["test"] == name)
            .unwrap_or_else(|| panic!("no `{name}` report in:\n{stdout}"))
            .clone()
    };
    let demo = find("demo");
    assert!(demo["tokens"].as_u64().unwrap() >= 16, "{demo}");
    // The page's energy figures are the Rust model's, reached through the wasm module: the same
    // estimate natively from the summary's totals and times.
    let summary = &demo["summary"];
    let totals: hlm_engine::decode::Totals = serde_json::from_value(summary.clone()).unwrap();
    let native = hlm_engine::energy::estimate(
        &totals,
        summary["draft_time_s"].as_f64().unwrap(),
        &hlm_core::energy::Constants::default_constants(),
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    let page = &demo["estimate"];
    for (mine, theirs) in [
        (native.energy.device_j, &page["energy_j"]),
        (native.energy.server_j, &page["server_energy_j"]),
        (native.energy.total_j, &page["system_energy_j"]),
        (native.standard_hlm.device_j, &page["standard_hlm_energy_j"]),
    ] {
        assert!(
            close(mine, theirs.as_f64().unwrap()),
            "{mine} vs {theirs}: {demo}"
        );
    }
    assert!(
        native.energy.device_j > 0.0 && native.energy.server_j > 0.0,
        "{demo}"
    );
    // The server is charged for the compute it reported. That fits inside the time the page spent
    // waiting plus drafting, not inside the wait alone: a round goes out before the page feeds the
    // drafted token, so the verifier works while the page drafts (under load the two overlap
    // more, and compute alone came within 1 % of the wait).
    let compute_s = summary["llm_compute_us"].as_f64().unwrap() / 1e6;
    let secs = |k: &str| summary[k].as_f64().unwrap();
    assert!(
        compute_s > 0.0
            && compute_s <= secs("wait_time_s") + secs("draft_time_s")
            && compute_s <= secs("wall_time_s"),
        "{demo}"
    );
    let reload = find("reload");
    assert_eq!(reload["cache_hit"], true, "{reload}");
    assert_eq!(reload["gguf_requests"], 0, "{reload}");
    let minimal = find("minimal");
    assert!(find("model-mismatch")["error"]
        .as_str()
        .is_some_and(|e| e.contains("model mismatch")));
    let abort = find("abort");
    assert_eq!(abort["summary"]["stop_reason"], "aborted", "{abort}");
    assert!(out_dir.join("demo.png").exists(), "screenshot saved");
    assert!(minimal["tokens"].as_u64().unwrap() >= 1, "{minimal}");
    // The package's `stop` option cut the same answer before the stop string.
    let stopped = find("minimal-stop");
    let full = minimal["text"].as_str().unwrap();
    let cut = stopped["text"].as_str().unwrap();
    assert!(
        full.starts_with(cut) && cut.len() < full.len(),
        "{stopped} vs {minimal}"
    );
    // Threads where the page is cross-origin isolated (the server's headers), one thread where
    // it is not, and the same text on both.
    assert!(minimal["threads"].as_u64().unwrap() >= 1, "{minimal}");
    let single = find("single-thread-fallback");
    assert_eq!(single["threads"], 1, "{single}");
    assert_eq!(single["same_text"], true, "{single}");
    // WebGPU: refused without the flag (and said so), used with it, same text as WASM SIMD.
    let fallback = find("webgpu-fallback");
    assert!(
        fallback["note"]
            .as_str()
            .unwrap()
            .contains("WebGPU unavailable"),
        "{fallback}"
    );
    let webgpu = find("webgpu");
    assert_eq!(webgpu["same_text"], true, "{webgpu}");
    assert_eq!(webgpu["summary"]["draft_backend"], "webgpu", "{webgpu}");
    assert!(webgpu["tokens"].as_u64().unwrap() >= 16, "{webgpu}");
    assert_eq!(
        find("webgpu-to-wasm")["summary"]["draft_backend"],
        "wasm-simd"
    );
    // Its device destroyed mid-run, the page finished on WASM SIMD and said so.
    let lost = find("webgpu-lost");
    assert_eq!(lost["summary"]["draft_backend"], "wasm-simd", "{lost}");
    assert!(
        lost["notice"]
            .as_str()
            .is_some_and(|n| n.contains("continuing on the CPU")),
        "{lost}"
    );

    // The page's counts are the server's counts: every generating step talked to this verifier.
    let generating: Vec<&serde_json::Value> = reports
        .iter()
        .filter(|r| r.get("summary").is_some())
        .collect();
    assert_eq!(
        generating.len(),
        8,
        "demo, abort, minimal, minimal-stop, single-thread-fallback, webgpu, webgpu-lost, webgpu-to-wasm"
    );
    let sum = |key: &str| -> f64 {
        generating
            .iter()
            .map(|r| r["summary"][key].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert_eq!(
        metric(&metrics, names::ROUNDS_TOTAL),
        sum("rounds"),
        "rounds: page vs server\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, names::FORWARD_TOKENS_TOTAL),
        sum("llm_forward_tokens"),
        "positions through the verifier: page vs server"
    );
}
