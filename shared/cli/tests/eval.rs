//! A CI-sized run of `hlm eval` (2 HumanEval problems, 16 tokens, the default Qwen pair): the
//! files are written and the numbers agree with what each method is.

use std::process::Command;

#[test]
fn eval_writes_consistent_results() {
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_hlm"))
        .args(["eval", "--limit", "2", "--max-tokens", "16", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(st.success());
    let table = std::fs::read_to_string(out.path().join("table.md")).unwrap();
    assert!(table.contains("| ours |"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let row = |m: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == m)
            .unwrap_or_else(|| panic!("no row {m}"))
            .clone()
    };
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    assert_eq!(f(&row("llm-only"), "upload_rate"), 1.0);
    assert_eq!(f(&row("standard-hlm"), "upload_rate"), 1.0);
    let slm = row("slm-only");
    assert_eq!(f(&slm, "upload_rate"), 0.0);
    assert_eq!(f(&slm, "bytes_up_per_token"), 0.0);
    assert_eq!(f(&slm, "llm_passes_per_token"), 0.0);
    // Standard HLM under greedy decoding is lossless: the LLM's own text.
    assert!((f(&row("standard-hlm"), "bert_f1_vs_llm") - 1.0).abs() < 1e-5);
    assert!((f(&row("llm-only"), "bert_f1_vs_llm") - 1.0).abs() < 1e-5);
    assert_eq!(f(&row("standard-hlm"), "energy_saving_vs_standard"), 0.0);
    for m in ["u-hlm", "ours"] {
        let r = row(m);
        assert!(f(&r, "upload_rate") <= 1.0 && f(&r, "upload_rate") >= 0.0);
        assert!(f(&r, "bytes_up_per_token") > 0.0);
    }
    // Every sample's per-sample counts add up to its row's.
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2 * 5);
    let ours: Vec<_> = samples.iter().filter(|s| s["method"] == "ours").collect();
    let up: f64 = ours.iter().map(|s| s["bytes_up"].as_f64().unwrap()).sum();
    let tokens: f64 = ours.iter().map(|s| s["tokens"].as_f64().unwrap()).sum();
    assert!((up / tokens - f(&row("ours"), "bytes_up_per_token")).abs() < 1e-9);
    assert!(
        samples.iter().all(|s| s["passed"].is_boolean()),
        "pass@1 checked for every sample"
    );
}
