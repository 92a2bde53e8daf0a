//! What the fuzz targets (`fuzz/`) run, kept here so that the saved corpus also runs as an
//! ordinary regression test on stable Rust (`tests/fuzz_corpus.rs`). Feature `testing`.
//!
//! * [`protocol`]: arbitrary bytes through both decoders; whatever decodes must re-encode to a
//!   frame that decodes to the same message, and any distribution must reconstruct or be refused.
//! * [`SessionHarness::run`]: a verifier session on a tiny model, opened with a valid `Hello`,
//!   then fed frames cut from the input; odd-tagged chunks are turned into well-formed `Round`s
//!   (so the fuzzer reaches catch-up, verification, rollback and the out-of-sync paths), even ones
//!   go in raw. The session must never panic, must hold at most its context, and must close after
//!   an error, as the server does.

use crate::testing::{tiny_drafter, VOCAB};
use crate::verifier::VerifierSession;
use hlm_protocol::*;
use std::sync::Arc;

/// Decodes `data` as a client and as a server frame; checks the round trip of what decodes.
pub fn protocol(data: &[u8]) {
    if let Ok(msg) = decode_client(data) {
        // Compared as bytes: a NaN the peer sent is not equal to itself.
        let bytes = encode_client(&msg);
        let again = decode_client(&bytes).expect("re-encoded client frame decodes");
        assert_eq!(
            encode_client(&again),
            bytes,
            "client message survives a round trip"
        );
        if let ClientMsg::Round(r) = &msg {
            for t in &r.tokens {
                if let Some(d) = &t.dist {
                    let _ = d.reconstruct();
                }
            }
            let _ = r.validate(151_936, &Sampling::Greedy);
        }
    }
    if let Ok(msg) = decode_server(data) {
        let bytes = encode_server(&msg);
        let again = decode_server(&bytes).expect("re-encoded server frame decodes");
        assert_eq!(
            encode_server(&again),
            bytes,
            "server message survives a round trip"
        );
    }
}

/// A tiny verifier model, made once per process.
pub struct SessionHarness {
    _dir: tempfile::TempDir,
    model: Arc<crate::model::Model>,
    vocab: VocabInfo,
}

/// Context of the fuzzed session: small, so that the context-full path is reachable.
pub const FUZZ_CONTEXT: u32 = 96;

impl SessionHarness {
    pub fn new() -> Self {
        let (dir, verifier) = tiny_drafter(12);
        Self {
            _dir: dir,
            model: verifier.model_arc(),
            vocab: verifier.vocab_info(),
        }
    }

    pub fn run(&self, data: &[u8]) {
        let mut s =
            VerifierSession::new(self.model.clone(), self.vocab.clone(), "fuzz", FUZZ_CONTEXT);
        let sampling = match data.first() {
            Some(b) if b % 2 == 1 => Sampling::Temperature {
                temperature: 0.5 + (*b as f32) / 64.0,
                seed: *b as u64,
            },
            _ => Sampling::Greedy,
        };
        let hello = encode_client(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: "fuzz".into(),
            vocab: self.vocab.clone(),
            sampling,
        });
        assert!(
            s.handle_frame(&hello).close.is_none(),
            "a valid Hello is welcome"
        );
        let mut rest = data.get(1..).unwrap_or_default();
        while rest.len() >= 2 {
            let tag = rest[0];
            let len = (rest[1] as usize).min(rest.len() - 2);
            let chunk = &rest[2..2 + len];
            rest = &rest[2 + len..];
            let frame = if tag % 2 == 1 {
                round_from(chunk, s.committed(), tag)
            } else {
                chunk.to_vec()
            };
            let reply = s.handle_frame(&frame);
            assert!(s.committed() <= FUZZ_CONTEXT as usize, "context bound held");
            if reply.close.is_some() {
                return; // the server closes the connection here
            }
        }
    }
}

impl Default for SessionHarness {
    fn default() -> Self {
        Self::new()
    }
}

/// A well-formed round from fuzz bytes: mostly at the right base, ids mostly in the vocabulary,
/// some uploaded (with a distribution when the tag says so).
fn round_from(chunk: &[u8], committed: usize, tag: u8) -> Vec<u8> {
    let base = match tag & 0b110 {
        0b110 => committed as u32 + 1, // out of sync, on purpose
        _ => committed as u32,
    };
    let tokens = chunk
        .iter()
        .map(|&b| {
            let verify = b & 1 == 1;
            let id = (b as u32 >> 1) % (VOCAB as u32 + 2); // now and then just outside
            let dist = (verify && tag & 0b1000 != 0).then(|| {
                DraftDist::Quantized(QuantizedDist::from_entries(
                    VOCAB as u32,
                    &[
                        (id.min(VOCAB as u32 - 1), b >> 3),
                        ((b as u32 * 7) % VOCAB as u32, 4),
                    ],
                ))
            });
            BlockToken { id, verify, dist }
        })
        .collect();
    encode_client(&ClientMsg::Round(Round {
        round: tag as u32,
        base,
        tokens,
    }))
}
