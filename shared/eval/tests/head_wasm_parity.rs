//! The learned filter head decides in WebAssembly exactly as it does natively, on the same
//! trace: every token of the committed development traces, scored with the committed head by
//! `FilterHead::decide` here and by the browser package's module (`scoreWithHead`, run in Node by
//! `web-client/tests/head_parity.mjs`).
//!
//! Needs `scripts/build-web.sh` (the package's wasm module) and Node; `.ci/run` has both.

use hlm_core::head::{FilterHead, TokenFeatures};
use hlm_eval::filter_study::token_features;
use hlm_eval::trace::TaskTrace;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn features(dir: &Path) -> Vec<TokenFeatures> {
    let traces: Vec<TaskTrace> = hlm_eval::samples::read_records(dir).unwrap();
    assert!(!traces.is_empty(), "no traces in {}", dir.display());
    traces
        .iter()
        .flat_map(|t| (0..t.tokens.len()).map(|i| token_features(&t.tokens, i)))
        .collect()
}

#[test]
fn learned_head_decides_the_same_in_wasm_as_natively() {
    let repo = repo();
    let wasm = repo.join("web-client/js/wasm");
    assert!(
        wasm.join("hlm_web_client_bg.wasm").exists(),
        "{} is missing: run scripts/build-web.sh",
        wasm.display()
    );
    let study = repo.join("docs/eval/filter-study");
    let head_path = study.join("dev/head.json");
    let head = FilterHead::from_json(&std::fs::read_to_string(&head_path).unwrap()).unwrap();
    let mut all = features(&study.join("humaneval-dev"));
    all.extend(features(&study.join("aclsum-dev")));
    let dir = tempfile::tempdir().unwrap();
    let features_path = dir.path().join("features.json");
    std::fs::write(&features_path, serde_json::to_string(&all).unwrap()).unwrap();

    for threshold in [head.suggested_threshold.unwrap() as f32, 0.1, 0.5] {
        let out = std::process::Command::new("node")
            .arg(repo.join("web-client/tests/head_parity.mjs"))
            .args([&wasm, &head_path, &features_path])
            .arg(threshold.to_string())
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "node: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let in_wasm: Vec<(f32, bool)> = serde_json::from_slice(&out.stdout).unwrap();
        let native: Vec<(f32, bool)> = all.iter().map(|f| head.decide(f, threshold)).collect();
        assert_eq!(in_wasm.len(), native.len());
        let uploads = native.iter().filter(|d| d.1).count();
        let differ: Vec<usize> = (0..native.len())
            .filter(|&i| native[i] != in_wasm[i])
            .collect();
        assert!(
            differ.is_empty(),
            "at threshold {threshold}, {} of {} tokens differ (first: native {:?}, wasm {:?})",
            differ.len(),
            native.len(),
            native[differ[0]],
            in_wasm[differ[0]]
        );
        // The check is not vacuous: some tokens go up, most stay.
        assert!(threshold >= 0.5 || (uploads > 0 && uploads < native.len()));
        eprintln!(
            "threshold {threshold}: {} tokens, {uploads} uploaded, identical",
            native.len()
        );
    }
}
