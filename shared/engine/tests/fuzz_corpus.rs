//! The fuzz corpus (`fuzz/corpus/`, grown by `cargo +nightly fuzz run …`) replayed as a regression
//! test on stable Rust: every saved input through the same harness the fuzz targets run.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn protocol_corpus_replays_cleanly() {
    let inputs = corpus("protocol");
    assert!(inputs.len() >= 50, "corpus of {} inputs", inputs.len());
    for input in &inputs {
        hlm_engine::fuzzing::protocol(input);
    }
}

#[test]
fn session_corpus_replays_cleanly() {
    let inputs = corpus("session");
    assert!(inputs.len() >= 50, "corpus of {} inputs", inputs.len());
    let harness = hlm_engine::fuzzing::SessionHarness::new();
    for input in &inputs {
        harness.run(input);
    }
}
