//! Recovery from a lost connection: the loop reconnects, replays the committed tokens to a fresh
//! verifier session, and the text is exactly what an uninterrupted run produces.

use hlm_core::FilterMode;
use hlm_engine::decode::{GenerationConfig, HybridSession, Summary, TokenEvent, MAX_RECONNECTS};
use hlm_engine::testing::{block_on, tiny_drafter, FlakyLink};
use hlm_protocol::Sampling;

fn run(
    mode: FilterMode,
    sampling: Sampling,
    uploads_per_round: usize,
    drop_at: Vec<usize>,
) -> (hlm_engine::Result<Summary>, Vec<TokenEvent>, usize) {
    let (_dd, mut drafter) = tiny_drafter(11);
    let (_vd, verifier) = tiny_drafter(12);
    // Frame 0 is the first Hello: drops count from the generation's frames.
    let drop_at = drop_at.into_iter().map(|n| n + 1).collect();
    let link = FlakyLink::new(verifier.model_arc(), verifier.vocab_info(), drop_at);
    let cfg = GenerationConfig {
        max_tokens: 40,
        mode,
        sampling,
        uploads_per_round,
        ..Default::default()
    };
    let mut events = Vec::new();
    let (summary, reconnects) = block_on(async {
        let mut s = HybridSession::connect(link, drafter.vocab_info(), "t")
            .await
            .unwrap();
        let r = s
            .generate(&mut drafter, &[5, 6, 7, 8], &cfg, &mut |e| {
                events.push(e.clone());
                true
            })
            .await;
        (r, s.link_mut().reconnects)
    });
    (summary, events, reconnects)
}

fn assert_consistent(s: &Summary, events: &[TokenEvent]) {
    let t = &s.totals;
    assert_eq!(events.len(), t.tokens);
    assert_eq!(t.tokens, t.skipped + t.accepted + t.resampled);
    let ids: Vec<u32> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, s.ids, "every final token reported once, in order");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.index, i);
    }
}

#[test]
fn greedy_text_survives_verifier_restarts_unchanged() {
    for mode in [FilterMode::Always, FilterMode::Uncertainty] {
        for per_round in [1, 3] {
            let (clean, _, _) = run(mode, Sampling::Greedy, per_round, vec![]);
            let clean = clean.unwrap();
            // Drops on the first Reset, mid-generation (lost frame and lost reply), and late.
            let drops = vec![0, 3, 6, 11, 20];
            let (s, events, reconnects) = run(mode, Sampling::Greedy, per_round, drops);
            let s = s.unwrap();
            assert!(
                reconnects >= 3,
                "{mode:?}/{per_round}: {reconnects} reconnects"
            );
            assert_eq!(s.totals.reconnects, reconnects);
            assert!(s.totals.replayed_tokens >= 4);
            assert_eq!(
                s.ids, clean.ids,
                "{mode:?}/{per_round}: same text as without faults"
            );
            assert_eq!(s.text, clean.text);
            assert_consistent(&s, &events);
            assert!(
                s.totals.bytes_up > clean.totals.bytes_up,
                "the replay costs bytes"
            );
        }
    }
}

#[test]
fn sampled_generation_stays_in_sync_across_restarts() {
    let sampling = Sampling::Temperature {
        temperature: 0.8,
        seed: 3,
    };
    let (s, events, reconnects) = run(FilterMode::Always, sampling, 2, vec![2, 5, 9]);
    let s = s.unwrap();
    assert_eq!(reconnects, 3);
    assert_eq!(s.totals.tokens, 40.min(s.ids.len()));
    assert_consistent(&s, &events);
}

#[test]
fn a_verifier_that_never_comes_back_ends_in_a_clear_error() {
    let (r, _, reconnects) = run(
        FilterMode::Always,
        Sampling::Greedy,
        1,
        (2..10_000).collect(),
    );
    let err = r.unwrap_err().to_string();
    assert!(err.contains("gave up"), "{err}");
    assert_eq!(reconnects, MAX_RECONNECTS);
}
