//! A verifier session on a tiny model fed fuzzed frames (`hlm_engine::fuzzing::SessionHarness`).
#![no_main]
use std::sync::OnceLock;

static HARNESS: OnceLock<hlm_engine::fuzzing::SessionHarness> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS.get_or_init(Default::default).run(data));
