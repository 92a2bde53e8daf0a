//! The sampling rule of the verifier's own generation (the protocol's `Generate`: the "server
//! alone" the hybrid is compared with, and what the OpenAI-compatible endpoint serves), the same
//! rule as verification ([`Sampling`]: argmax, or temperature sampling from the session's seeded
//! stream).

use hlm_core::{argmax, sample_index, softmax, Rng};
use hlm_protocol::Sampling;

/// The next token under `sampling`: the argmax, or a draw from `softmax(logits / T)`.
pub fn choose_token(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Temperature { temperature, .. } => {
            sample_index(&softmax(logits, temperature), rng)
        }
    }
}
