//! Rounds of several sessions verified in one forward pass ([`Model::forward_batch`],
//! [`answer_batch`]) give every session what it gets alone, and bad input in a batch fails only
//! its own session. Tiny random models here; `real_models.rs` repeats the check on SmolLM2.

use hlm_engine::model::{BatchItem, ForwardOutput, LogitRows};
use hlm_engine::testing::*;
use hlm_engine::verifier::{answer_batch, Input, VerifierSession};
use hlm_protocol::{
    decode_client, encode_client, ClientMsg, ErrorCode, ProtocolError, Sampling, ServerMsg,
};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &ForwardOutput, b: &ForwardOutput) {
    assert_eq!(a.logits.len(), b.logits.len());
    for ((i, x), (j, y)) in a.logits.iter().zip(&b.logits) {
        assert_eq!(i, j);
        assert!(max_abs_diff(x, y) < 1e-4, "row {i}: {}", max_abs_diff(x, y));
    }
    assert!(max_abs_diff(&a.last_hidden, &b.last_hidden) < 1e-4);
    match (&a.attention, &b.attention) {
        (Some(x), Some(y)) => assert!(max_abs_diff(x, y) < 1e-5),
        (None, None) => {}
        other => panic!("attention captured on one side only: {other:?}"),
    }
}

#[test]
fn forward_batch_equals_each_sequence_alone() {
    let (_d, m) = tiny_model(5);
    // Three sequences with different histories (0, 3 and 9 positions) and different new tokens.
    let history: [&[u32]; 3] = [&[], &[4, 8, 15], &[16, 23, 42, 7, 7, 1, 2, 3, 4]];
    let new: [&[u32]; 3] = [&[9, 10, 11, 12], &[13], &[20, 21, 22]];
    let rows = [LogitRows::All, LogitRows::Last, LogitRows::Rows(vec![0, 2])];
    let fresh = |h: &[u32]| {
        let mut c = m.new_cache();
        if !h.is_empty() {
            m.forward(&mut c, h, &LogitRows::None, 0).unwrap();
        }
        c
    };
    let alone: Vec<ForwardOutput> = (0..3)
        .map(|i| {
            m.forward(&mut fresh(history[i]), new[i], &rows[i], 2)
                .unwrap()
        })
        .collect();
    let mut caches: Vec<_> = history.iter().map(|h| fresh(h)).collect();
    let mut items: Vec<BatchItem> = caches
        .iter_mut()
        .zip(new.iter().zip(&rows))
        .map(|(cache, (tokens, rows))| BatchItem {
            cache,
            tokens,
            rows: rows.clone(),
        })
        .collect();
    let batched = m.forward_batch(&mut items, 2).unwrap();
    for (a, b) in alone.iter().zip(&batched) {
        assert_close(a, b);
    }
    for (i, c) in caches.iter().enumerate() {
        assert_eq!(c.len(), history[i].len() + new[i].len());
    }
}

#[test]
fn a_bad_item_fails_the_batch_before_any_cache_changes() {
    let (_d, m) = tiny_model(5);
    let (mut a, mut b) = (m.new_cache(), m.new_cache());
    m.forward(&mut a, &[1, 2], &LogitRows::None, 0).unwrap();
    for bad in [vec![VOCAB as u32], vec![], vec![3; 600]] {
        let mut items = vec![
            BatchItem {
                cache: &mut a,
                tokens: &[5, 6],
                rows: LogitRows::Last,
            },
            BatchItem {
                cache: &mut b,
                tokens: &bad,
                rows: LogitRows::Last,
            },
        ];
        assert!(
            m.forward_batch(&mut items, 0).is_err(),
            "{} tokens",
            bad.len()
        );
        assert_eq!((a.len(), b.len()), (2, 0));
    }
    let mut items = vec![BatchItem {
        cache: &mut a,
        tokens: &[5, 6],
        rows: LogitRows::Rows(vec![2]),
    }];
    assert!(
        m.forward_batch(&mut items, 0).is_err(),
        "row past the new tokens"
    );
    assert_eq!(a.len(), 2);
}

/// `n` scripted sessions for `steps` messages each, alone and batched.
fn alone_and_batched(sampling: Sampling, n: usize, steps: usize) -> [Vec<Vec<ServerMsg>>; 2] {
    let (_d, verifier) = tiny_drafter(12);
    let (model, vocab) = (verifier.model_arc(), verifier.vocab_info());
    let serve = |batched| serve_scripted(&model, &vocab, sampling, (n, steps, 100), batched);
    [serve(false), serve(true)]
}

#[test]
fn batched_sessions_get_the_verdicts_they_get_alone_greedy() {
    let [alone, batched] = alone_and_batched(Sampling::Greedy, 5, 12);
    assert_eq!(alone, batched);
    let corrections = alone
        .iter()
        .flatten()
        .filter(|m| matches!(m, ServerMsg::Verdict(v) if v.correction.is_some()))
        .count();
    assert!(corrections > 0, "the script exercises rejections");
}

#[test]
fn batched_sessions_get_the_verdicts_they_get_alone_sampled() {
    let sampling = Sampling::Temperature {
        temperature: 0.8,
        seed: 7,
    };
    let [alone, batched] = alone_and_batched(sampling, 4, 12);
    assert_eq!(alone, batched);
}

#[test]
fn bad_input_in_a_batch_fails_only_its_own_session() {
    let (_d, verifier) = tiny_drafter(12);
    let vocab = verifier.vocab_info();
    let new_session = || VerifierSession::new(verifier.model_arc(), vocab.clone(), "t", 64);
    // Four sessions greeted; sessions 1-3 then send bad rounds, session 0 a good one.
    let mut sessions: Vec<VerifierSession> = (0..4).map(|_| new_session()).collect();
    let mut clients: Vec<ScriptedClient> = (0..4)
        .map(|i| ScriptedClient::new(i, vocab.clone(), Sampling::Greedy))
        .collect();
    for (s, c) in sessions.iter_mut().zip(&mut clients) {
        let welcome = s.handle(c.next_msg()).unwrap().unwrap();
        c.on_reply(&welcome);
    }
    let good = clients[0].next_msg();
    let ClientMsg::Round(mut out_of_sync) = clients[1].next_msg() else {
        unreachable!()
    };
    out_of_sync.base = 3;
    let ClientMsg::Round(mut too_long) = clients[2].next_msg() else {
        unreachable!()
    };
    too_long.tokens = vec![too_long.tokens[0].clone(); 65];
    let frame = encode_client(&good);
    let garbage = decode_client(&frame[..frame.len() - 3]);
    let garbage_code = garbage.as_ref().err().map(ProtocolError::code);
    assert!(garbage_code.is_some());
    let msgs = vec![
        Input::Message(Ok(good.clone())),
        Input::Message(Ok(ClientMsg::Round(out_of_sync))),
        Input::Message(Ok(ClientMsg::Round(too_long))),
        Input::Message(garbage),
    ];
    let mut refs: Vec<&mut VerifierSession> = sessions.iter_mut().collect();
    let answers = answer_batch(&mut refs, msgs);
    let code = |a: &Result<Option<ServerMsg>, ProtocolError>| a.as_ref().err().map(|e| e.code());
    assert_eq!(code(&answers[1]), Some(ErrorCode::OutOfSync));
    assert_eq!(code(&answers[2]), Some(ErrorCode::ContextFull));
    assert_eq!(code(&answers[3]), garbage_code);
    // The good session's verdict is the one it gets alone, and the bad ones' caches are untouched.
    let mut alone = new_session();
    let mut c = ScriptedClient::new(0, vocab.clone(), Sampling::Greedy);
    alone.handle(c.next_msg()).unwrap();
    let expected = alone
        .handle(decode_client(&encode_client(&good)).unwrap())
        .unwrap();
    let got = answers[0].as_ref().unwrap().clone();
    assert_eq!(got.map(without_timing), expected.map(without_timing));
    assert!(sessions[1..].iter().all(|s| s.committed() == 0));
}
