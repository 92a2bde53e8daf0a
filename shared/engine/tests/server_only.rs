//! The verifier generating on its own ([`ClientMsg::Generate`]), through the session and the
//! same link as the hybrid loop ([`HybridSession::generate_on_server`]): the tokens are the
//! model's own greedy generation, stop conditions and aborts end the server's generation, a
//! generation shares batches with other sessions' rounds, and bad requests are named.

use hlm_engine::decode::{GenerationConfig, HybridSession, StopReason, TokenKind};
use hlm_engine::link::{block_on, LocalLink};
use hlm_engine::testing::*;
use hlm_engine::verifier::{answer_batch, Input, Reply, VerifierSession};
use hlm_protocol::*;

fn session(v: &hlm_engine::decode::Drafter) -> VerifierSession {
    VerifierSession::new(v.model_arc(), v.vocab_info(), "t", 512)
}

#[test]
fn greedy_tokens_are_the_models_own_and_stops_end_the_servers_generation() {
    let (_d, v) = tiny_drafter(12);
    let prompt = [5u32, 6, 7, 8];
    let expected = v.model().generate_greedy(&prompt, 20).unwrap();
    block_on(async {
        let link = LocalLink::new(session(&v));
        let mut s = HybridSession::connect(link, v.vocab_info(), "t")
            .await
            .unwrap();
        let cfg = GenerationConfig {
            max_tokens: 20,
            ..Default::default()
        };
        let mut kinds = Vec::new();
        let sum = s
            .generate_on_server(v.tokenizer(), &prompt, &cfg, &mut |e| {
                kinds.push(e.kind);
                true
            })
            .await
            .unwrap();
        assert_eq!(sum.ids, expected);
        assert!(kinds.iter().all(|k| *k == TokenKind::ServerGenerated));
        let t = &sum.totals;
        assert_eq!(t.llm_forward_passes, sum.ids.len());
        assert_eq!(t.llm_forward_tokens, prompt.len() + sum.ids.len() - 1);
        assert!(t.bytes_up > 0 && t.bytes_down > 0 && t.draft_forward_passes == 0);

        // An abort after 3 tokens ends the server's generation; the next request on the same
        // session starts clean and is not confused by the first one's leftovers.
        let mut n = 0;
        let aborted = s
            .generate_on_server(v.tokenizer(), &prompt, &cfg, &mut |_| {
                n += 1;
                n < 3
            })
            .await
            .unwrap();
        assert_eq!(aborted.stop_reason, StopReason::Aborted);
        assert_eq!(aborted.ids, expected[..3]);
        assert!(!s.link_mut().session.generating());
        let again = s
            .generate_on_server(v.tokenizer(), &prompt, &cfg, &mut |_| true)
            .await
            .unwrap();
        assert_eq!(again.ids, expected);

        // A stop string cuts the text where it first appears.
        let words: Vec<String> = expected.iter().map(|id| format!("t{id}")).collect();
        let stop_at = words[4].clone();
        let cfg = GenerationConfig {
            stop: hlm_engine::decode::StopConditions {
                strings: vec![stop_at.clone()],
                ..Default::default()
            },
            ..cfg
        };
        let stopped = s
            .generate_on_server(v.tokenizer(), &prompt, &cfg, &mut |_| true)
            .await
            .unwrap();
        assert_eq!(stopped.stop_reason, StopReason::StopString);
        assert!(!stopped.text.contains(&stop_at), "{}", stopped.text);
        assert!(stopped.ids.len() <= 5);

        // The hybrid loop runs on the same session afterwards, and agrees (greedy is lossless).
        let mut drafter = tiny_drafter(11).1;
        let hybrid = s
            .generate(
                &mut drafter,
                &prompt,
                &GenerationConfig {
                    max_tokens: 20,
                    ..Default::default()
                },
                &mut |_| true,
            )
            .await
            .unwrap();
        assert_eq!(hybrid.ids, expected);
    });
}

#[test]
fn sampled_generation_is_reproducible_from_its_seed() {
    let (_d, v) = tiny_drafter(12);
    let run = |seed: u64| {
        block_on(async {
            let link = LocalLink::new(session(&v));
            let mut s = HybridSession::connect(link, v.vocab_info(), "t")
                .await
                .unwrap();
            let cfg = GenerationConfig {
                max_tokens: 24,
                sampling: Sampling::Temperature {
                    temperature: 30.0,
                    seed,
                },
                ..Default::default()
            };
            s.generate_on_server(v.tokenizer(), &[3, 4], &cfg, &mut |_| true)
                .await
                .unwrap()
                .ids
        })
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// A session generating and others verifying rounds, served in batches, get what they get alone.
#[test]
fn generation_steps_share_batches_with_other_sessions_rounds() {
    let (_d, v) = tiny_drafter(12);
    let vocab = v.vocab_info();
    let serve = |batched: bool| {
        let mut gen = session(&v);
        let mut others: Vec<VerifierSession> = (0..2).map(|_| session(&v)).collect();
        let mut clients: Vec<ScriptedClient> = (0..2)
            .map(|i| ScriptedClient::new(i, vocab.clone(), Sampling::Greedy))
            .collect();
        let hello = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: "g".into(),
            vocab: vocab.clone(),
            sampling: Sampling::Greedy,
        };
        gen.handle(hello).unwrap();
        let mut first = Some(ClientMsg::Generate(GenerateRequest {
            request: 1,
            base: 0,
            prompt: vec![9, 8, 7],
            max_tokens: 6,
        }));
        let mut replies = Vec::new();
        for _ in 0..7 {
            let g_in = match first.take() {
                Some(m) => Input::Message(Ok(m)),
                None => Input::Continue,
            };
            let msgs: Vec<ClientMsg> = clients.iter_mut().map(|c| c.next_msg()).collect();
            let answers: Vec<_> = if batched {
                let mut refs: Vec<&mut VerifierSession> = vec![&mut gen];
                refs.extend(others.iter_mut());
                let mut inputs = vec![g_in];
                inputs.extend(msgs.into_iter().map(|m| Input::Message(Ok(m))));
                answer_batch(&mut refs, inputs)
            } else {
                let mut a = answer_batch(&mut [&mut gen], vec![g_in]);
                a.extend(others.iter_mut().zip(msgs).map(|(s, m)| s.handle(m)));
                a
            };
            for (i, a) in answers.into_iter().enumerate() {
                let msg = a.unwrap().map(without_timing);
                if let (Some(m), true) = (&msg, i > 0) {
                    clients[i - 1].on_reply(m);
                }
                replies.push(msg);
            }
        }
        replies
    };
    let (alone, batched) = (serve(false), serve(true));
    assert_eq!(alone, batched);
    let generated: Vec<u32> = alone
        .iter()
        .filter_map(|m| match m {
            Some(ServerMsg::Generated(g)) => Some(g.id),
            _ => None,
        })
        .collect();
    assert_eq!(generated, v.model().generate_greedy(&[9, 8, 7], 6).unwrap());
}

#[test]
fn bad_generate_requests_are_named() {
    let (_d, v) = tiny_drafter(12);
    let vocab = v.vocab_info();
    let req = |base: u32, prompt: Vec<u32>, max_tokens: u32| {
        ClientMsg::Generate(GenerateRequest {
            request: 1,
            base,
            prompt,
            max_tokens,
        })
    };
    let cases = [
        (req(0, vec![], 4), ErrorCode::Malformed),
        (req(0, vec![1], 0), ErrorCode::Malformed),
        (req(0, vec![VOCAB as u32], 4), ErrorCode::TokenOutOfRange),
        (req(3, vec![1], 4), ErrorCode::OutOfSync),
        (req(0, vec![1; 600], 4), ErrorCode::ContextFull),
    ];
    for (msg, code) in cases {
        let mut s = session(&v);
        let before_hello = s.handle(msg.clone()).unwrap_err();
        assert_eq!(
            before_hello.code(),
            ErrorCode::OutOfSync,
            "Hello comes first"
        );
        s.handle(ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            client: "t".into(),
            vocab: vocab.clone(),
            sampling: Sampling::Greedy,
        })
        .unwrap();
        assert_eq!(s.handle(msg).unwrap_err().code(), code);
        assert!(!s.generating());
    }
}

/// After a generation the verifier expects its last token to open the next round, as after a
/// correction; the context then runs on.
#[test]
fn a_round_after_a_generation_opens_with_its_last_token() {
    let (_d, v) = tiny_drafter(12);
    let mut s = session(&v);
    s.handle(ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        client: "t".into(),
        vocab: v.vocab_info(),
        sampling: Sampling::Greedy,
    })
    .unwrap();
    let first = s
        .handle(ClientMsg::Generate(GenerateRequest {
            request: 7,
            base: 0,
            prompt: vec![4, 5],
            max_tokens: 2,
        }))
        .unwrap();
    let Some(ServerMsg::Generated(a)) = first else {
        panic!("{first:?}")
    };
    assert!(s.generating() && a.end.is_none() && a.forward_tokens == 2);
    let Reply { frame: Some(f), .. } = s.handle_continue() else {
        panic!("no second token")
    };
    let ServerMsg::Generated(b) = decode_server(&f).unwrap() else {
        panic!()
    };
    assert_eq!((b.index, b.end), (1, Some(GenerationEnd::MaxTokens)));
    assert!(!s.generating());
    assert_eq!(s.committed(), 3, "the prompt and the first token");
    let round = |first: u32| {
        ClientMsg::Round(Round {
            round: 0,
            base: 3,
            tokens: vec![BlockToken {
                id: first,
                verify: false,
                dist: None,
            }],
        })
    };
    let wrong = (b.id + 1) % VOCAB as u32;
    assert_eq!(
        s.handle(round(wrong)).unwrap_err().code(),
        ErrorCode::OutOfSync
    );
}
