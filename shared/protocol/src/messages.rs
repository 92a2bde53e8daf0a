//! The messages and the checks a verifier applies before touching its model.

use crate::{DraftDist, ProtocolError};
use serde::{Deserialize, Serialize};

/// Identity of a vocabulary: both models must agree or the handshake fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabInfo {
    pub size: u32,
    /// [`VocabInfo::fingerprint_of`] the token strings.
    pub fingerprint: u64,
    pub eos_ids: Vec<u32>,
}

impl VocabInfo {
    /// FNV-1a (64-bit) over each token string's UTF-8 bytes followed by a `0xFF` separator, in id order.
    pub fn fingerprint_of<'a>(tokens: impl IntoIterator<Item = &'a str>) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        for t in tokens {
            for &b in t.as_bytes().iter().chain(std::iter::once(&0xFFu8)) {
                h ^= b as u64;
                h = h.wrapping_mul(PRIME);
            }
        }
        h
    }

    /// Both sides must have the same vocabulary size and token strings.
    pub fn check_compatible(&self, other: &VocabInfo) -> Result<(), ProtocolError> {
        if self.size != other.size || self.fingerprint != other.fingerprint {
            return Err(ProtocolError::VocabMismatch {
                client: format!(
                    "{} tokens, fingerprint {:016x}",
                    self.size, self.fingerprint
                ),
                server: format!(
                    "{} tokens, fingerprint {:016x}",
                    other.size, other.fingerprint
                ),
            });
        }
        Ok(())
    }
}

/// How tokens are chosen; verification follows the same rule.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Sampling {
    /// Argmax; verification accepts iff the verifier's argmax equals the draft token.
    Greedy,
    /// Sampling at `temperature`; verification by speculative sampling with the session's seed.
    Temperature { temperature: f32, seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    Hello {
        version: u16,
        client: String,
        vocab: VocabInfo,
        sampling: Sampling,
    },
    /// New generation in the same session: the verifier drops its KV cache.
    Reset {
        sampling: Sampling,
    },
    Round(Round),
    /// The verifier generates on its own (the server-only baseline, and a plain server for
    /// clients without a draft model): `prompt` is appended at `base` (the verifier's committed
    /// length), then up to `max_tokens` tokens follow under the session's sampling rule, each
    /// streamed in a [`ServerMsg::Generated`] as soon as it is chosen. Any message the client
    /// sends meanwhile ends the generation first (a `Reset` to stop it). After it, the
    /// last generated token is not yet in the verifier's context: it must open the next round.
    Generate(GenerateRequest),
}

/// See [`ClientMsg::Generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Echoed in every [`Generated`] of this request.
    pub request: u32,
    pub base: u32,
    /// At least one token.
    pub prompt: Vec<u32>,
    /// At least one.
    pub max_tokens: u32,
}

/// Tokens the client produced since the last verdict, in order. Skipped tokens (`verify: false`)
/// are already accepted by the client; the verifier only appends them to its context ("catch-up").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub round: u32,
    /// Position of `tokens[0]` in the sequence (must equal the verifier's committed length).
    pub base: u32,
    pub tokens: Vec<BlockToken>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockToken {
    pub id: u32,
    pub verify: bool,
    /// Draft distribution `p̂`: required for `verify` under temperature sampling, absent otherwise.
    pub dist: Option<DraftDist>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    Welcome {
        version: u16,
        server: String,
        model: String,
        vocab: VocabInfo,
        max_context: u32,
    },
    Verdict(Verdict),
    /// One token of a [`ClientMsg::Generate`].
    Generated(Generated),
    Error {
        code: crate::ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub round: u32,
    /// How many of the round's tokens stand: all, or those before the first rejected one.
    pub accepted: u32,
    /// The verifier's token replacing the first rejected one (then `accepted < tokens.len()`).
    pub correction: Option<u32>,
    /// Uploaded tokens the verifier checked in this round.
    pub verified: u32,
    /// Positions the verifier's forward pass covered in this round.
    pub forward_tokens: u32,
    /// Microseconds the verifier's model spent on this round (its forward pass and the checks;
    /// not the queue, not the network): what the client's energy estimate charges the server for.
    pub compute_us: u32,
}

/// One token the verifier generated on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    pub request: u32,
    /// Position of the token in the generation (0 for the first).
    pub index: u32,
    pub id: u32,
    /// Set on the generation's last token: why it is the last.
    pub end: Option<GenerationEnd>,
    /// Positions the forward pass behind this token covered (the prompt, for the first).
    pub forward_tokens: u32,
    /// Microseconds of model time behind this token (as [`Verdict::compute_us`]).
    pub compute_us: u32,
}

/// Why a server-side generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GenerationEnd {
    /// The token is one of the model's end-of-sequence ids.
    EndOfSequence,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The session's context is full.
    ContextFull,
}

impl GenerateRequest {
    /// Every check the verifier needs before touching its model.
    pub fn validate(&self, vocab_size: u32) -> Result<(), ProtocolError> {
        if self.prompt.is_empty() {
            return Err(ProtocolError::Malformed(
                "a generation needs at least one prompt token".into(),
            ));
        }
        if self.max_tokens == 0 {
            return Err(ProtocolError::Malformed(
                "a generation needs max_tokens of at least 1".into(),
            ));
        }
        match self.prompt.iter().find(|&&id| id >= vocab_size) {
            Some(&id) => Err(ProtocolError::TokenOutOfRange { id, vocab_size }),
            None => Ok(()),
        }
    }
}

impl Round {
    /// Every check the verifier needs before touching its model.
    pub fn validate(&self, vocab_size: u32, sampling: &Sampling) -> Result<(), ProtocolError> {
        if self.tokens.is_empty() {
            return Err(ProtocolError::Malformed(
                "a round needs at least one token".into(),
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.id >= vocab_size {
                return Err(ProtocolError::TokenOutOfRange {
                    id: t.id,
                    vocab_size,
                });
            }
            match (&t.dist, t.verify, sampling) {
                (None, true, Sampling::Temperature { .. }) => {
                    return Err(ProtocolError::BadDistribution(format!(
                        "token {i} is uploaded under temperature sampling without its draft distribution (missing)"
                    )))
                }
                (Some(_), false, _) => {
                    return Err(ProtocolError::Malformed(format!(
                        "token {i} is skipped but carries a distribution"
                    )))
                }
                (Some(_), true, Sampling::Greedy) => {
                    return Err(ProtocolError::Malformed(format!(
                        "token {i} carries a distribution under greedy decoding"
                    )))
                }
                (Some(d), true, _) => {
                    if d.vocab_size() != vocab_size {
                        return Err(ProtocolError::BadDistribution(format!(
                            "distribution over {} tokens, the vocabulary has {vocab_size}",
                            d.vocab_size()
                        )));
                    }
                    d.reconstruct()?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    fn all_messages() -> (Vec<ClientMsg>, Vec<ServerMsg>) {
        let vocab = VocabInfo {
            size: 151_936,
            fingerprint: 42,
            eos_ids: vec![151_645, 151_643],
        };
        let temp = Sampling::Temperature {
            temperature: 0.7,
            seed: 9,
        };
        let client = vec![
            ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                client: "t".into(),
                vocab: vocab.clone(),
                sampling: Sampling::Greedy,
            },
            ClientMsg::Reset { sampling: temp },
            ClientMsg::Round(Round {
                round: 3,
                base: 100,
                tokens: vec![
                    BlockToken {
                        id: 1,
                        verify: false,
                        dist: None,
                    },
                    BlockToken {
                        id: 2,
                        verify: true,
                        dist: Some(DraftDist::Quantized(QuantizedDist::from_entries(
                            151_936,
                            &[(2, 3), (151_935, 40)],
                        ))),
                    },
                    BlockToken {
                        id: 5,
                        verify: true,
                        dist: Some(DraftDist::Exact {
                            vocab_size: 151_936,
                            entries: vec![(5, 0.25)],
                        }),
                    },
                ],
            }),
            ClientMsg::Generate(GenerateRequest {
                request: 4,
                base: 0,
                prompt: vec![1, 151_935],
                max_tokens: 64,
            }),
        ];
        let server = vec![
            ServerMsg::Welcome {
                version: PROTOCOL_VERSION,
                server: "s".into(),
                model: "m".into(),
                vocab,
                max_context: 4096,
            },
            ServerMsg::Verdict(Verdict {
                round: 3,
                accepted: 1,
                correction: Some(7),
                verified: 1,
                forward_tokens: 3,
                compute_us: 41_000,
            }),
            ServerMsg::Generated(Generated {
                request: 4,
                index: 63,
                id: 151_645,
                end: Some(GenerationEnd::MaxTokens),
                forward_tokens: 1,
                compute_us: 9_000,
            }),
            ServerMsg::Error {
                code: ErrorCode::OutOfSync,
                message: "x".into(),
            },
        ];
        (client, server)
    }

    #[test]
    fn every_message_round_trips() {
        let (c, s) = all_messages();
        for m in c {
            assert_eq!(decode_client(&encode_client(&m)).unwrap(), m);
        }
        for m in s {
            assert_eq!(decode_server(&encode_server(&m)).unwrap(), m);
        }
    }

    #[test]
    fn malformed_frames_are_named() {
        let (c, _) = all_messages();
        let good = encode_client(&c[2]);
        assert!(matches!(
            decode_client(&[1]),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_client(&good[..good.len() - 3]),
            Err(ProtocolError::Malformed(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            matches!(decode_client(&trailing), Err(ProtocolError::Malformed(m)) if m.contains("trailing"))
        );
        let mut garbage = PROTOCOL_VERSION.to_le_bytes().to_vec();
        garbage.extend([0xff; 5]);
        assert!(matches!(
            decode_client(&garbage),
            Err(ProtocolError::Malformed(_))
        ));
        // An older peer (version 1 had no `compute_us` in its verdicts) is told, not misread.
        let mut v1 = good.clone();
        v1[..2].copy_from_slice(&1u16.to_le_bytes());
        assert!(matches!(
            decode_client(&v1),
            Err(ProtocolError::UnsupportedVersion {
                got: 1,
                supported: PROTOCOL_VERSION
            })
        ));
        let big = vec![1u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode_client(&big),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn validation_names_each_problem() {
        let greedy = Sampling::Greedy;
        let temp = Sampling::Temperature {
            temperature: 1.0,
            seed: 0,
        };
        let r = |tokens: Vec<BlockToken>| Round {
            round: 0,
            base: 0,
            tokens,
        };
        let t = |id, verify, dist| BlockToken { id, verify, dist };
        assert!(matches!(
            r(vec![]).validate(10, &greedy),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            r(vec![t(10, false, None)]).validate(10, &greedy),
            Err(ProtocolError::TokenOutOfRange {
                id: 10,
                vocab_size: 10
            })
        ));
        assert!(
            matches!(r(vec![t(1, true, None)]).validate(10, &temp), Err(ProtocolError::BadDistribution(m)) if m.contains("missing"))
        );
        let d = DraftDist::Exact {
            vocab_size: 10,
            entries: vec![(1, 0.5)],
        };
        assert!(matches!(
            r(vec![t(1, true, Some(d.clone()))]).validate(10, &greedy),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            r(vec![t(1, false, Some(d.clone()))]).validate(10, &temp),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            r(vec![t(1, true, Some(d.clone()))]).validate(11, &temp),
            Err(ProtocolError::BadDistribution(_))
        ));
        assert!(r(vec![t(1, true, Some(d))]).validate(10, &temp).is_ok());
        assert!(r(vec![t(1, true, None)]).validate(10, &greedy).is_ok());
    }

    #[test]
    fn vocab_mismatch_is_reported() {
        let a = VocabInfo {
            size: 3,
            fingerprint: VocabInfo::fingerprint_of(["a", "b", "c"]),
            eos_ids: vec![],
        };
        let mut b = a.clone();
        assert!(a.check_compatible(&b).is_ok());
        b.fingerprint = VocabInfo::fingerprint_of(["a", "bc", ""]);
        assert!(matches!(
            a.check_compatible(&b),
            Err(ProtocolError::VocabMismatch { .. })
        ));
    }
}
