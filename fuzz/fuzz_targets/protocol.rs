//! Arbitrary bytes through the protocol decoders (`hlm_engine::fuzzing::protocol`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hlm_engine::fuzzing::protocol(data));
