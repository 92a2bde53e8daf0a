//! Seeded random mutations of valid frames fed straight into a verifier session (the code every
//! WebSocket frame reaches): whatever the bytes, the session answers or refuses with a named
//! error, and never panics. A cheap, deterministic companion to coverage-guided fuzzing.

use hlm_engine::testing::tiny_drafter;
use hlm_engine::verifier::VerifierSession;
use hlm_protocol::*;
use rand::{Rng, SeedableRng};

fn valid_frames(vocab: &VocabInfo) -> Vec<Vec<u8>> {
    let temp = Sampling::Temperature {
        temperature: 0.9,
        seed: 3,
    };
    let dist = DraftDist::Quantized(QuantizedDist::from_entries(
        vocab.size,
        &[(7, 2), (9, 20), (11, 40)],
    ));
    vec![
        encode_client(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: "fuzz".into(),
            vocab: vocab.clone(),
            sampling: temp,
        }),
        encode_client(&ClientMsg::Reset { sampling: temp }),
        encode_client(&ClientMsg::Round(Round {
            round: 0,
            base: 0,
            tokens: vec![
                BlockToken {
                    id: 5,
                    verify: false,
                    dist: None,
                },
                BlockToken {
                    id: 7,
                    verify: true,
                    dist: Some(dist),
                },
            ],
        })),
        encode_client(&ClientMsg::Round(Round {
            round: 1,
            base: 2,
            tokens: vec![BlockToken {
                id: 9,
                verify: true,
                dist: Some(DraftDist::Exact {
                    vocab_size: vocab.size,
                    entries: vec![(9, 0.5), (3, 0.25)],
                }),
            }],
        })),
    ]
}

#[test]
fn mutated_frames_never_panic_the_session() {
    let (_d, verifier) = tiny_drafter(12);
    let vocab = verifier.vocab_info();
    let frames = valid_frames(&vocab);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let (mut answered, mut refused) = (0usize, 0usize);
    for _ in 0..20_000 {
        let mut session = VerifierSession::new(verifier.model_arc(), vocab.clone(), "fuzz", 64);
        // A valid Hello first half of the time, so deeper states are reached.
        if rng.random_bool(0.5) {
            session.handle_frame(&frames[0]);
        }
        let mut f = frames[rng.random_range(0..frames.len())].clone();
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..4) {
                0 if !f.is_empty() => {
                    let i = rng.random_range(0..f.len());
                    f[i] = rng.random();
                }
                1 if !f.is_empty() => {
                    let n = rng.random_range(0..f.len());
                    f.truncate(n);
                }
                2 => {
                    let i = rng.random_range(0..=f.len());
                    f.insert(i, rng.random());
                }
                _ if f.len() > 2 => {
                    let i = rng.random_range(2..f.len());
                    f[i] ^= 1 << rng.random_range(0..8);
                }
                _ => {}
            }
        }
        let reply = session.handle_frame(&f);
        match reply.close {
            Some((code, message)) => {
                assert!(!message.is_empty(), "{code:?} without a message");
                refused += 1;
            }
            None => answered += 1,
        }
    }
    eprintln!("answered {answered}, refused {refused}");
    assert!(
        refused > 1000 && answered > 100,
        "answered {answered}, refused {refused}"
    );
}
