//! The real binary refuses configurations it cannot serve, with a message that says what to do.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_verifier-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let (ok, err) = run(&["--device", "cuda:0", "--listen", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("--features cuda"), "{err}");
    let (ok, err) = run(&["--device", "tpu"]);
    assert!(!ok);
    assert!(err.contains("unknown device"), "{err}");
}

#[test]
fn a_kv_budget_too_small_for_the_sessions_is_refused() {
    let (ok, err) = run(&[
        "--model",
        "smollm2-135m-instruct-q4_1",
        "--listen",
        "127.0.0.1:1",
        "--max-sessions",
        "64",
        "--max-context",
        "4096",
        "--max-kv-mb",
        "100",
    ]);
    assert!(!ok);
    assert!(
        err.contains("KV cache") && err.contains("--max-sessions to"),
        "{err}"
    );
}

#[test]
fn non_loopback_without_a_token_is_refused() {
    let (ok, err) = run(&["--listen", "0.0.0.0:1"]);
    assert!(!ok);
    assert!(err.contains("without a token"), "{err}");
}
