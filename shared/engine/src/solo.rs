//! The verifier's model generating on its own, one token per forward: the "server alone" that
//! the hybrid is compared with, and what the verifier serves to plain clients (its
//! OpenAI-compatible endpoint). Same model, same KV cache type and the same sampling rule as a
//! verification session ([`Sampling`]: argmax, or temperature sampling from the seeded stream).

use crate::model::{KvCache, LogitRows, Model};
use crate::{EngineError, Result};
use hlm_core::{argmax, sample_index, seeded_rng, softmax, Rng};
use hlm_protocol::Sampling;
use std::sync::Arc;

/// The next token under `sampling`: the argmax, or a draw from `softmax(logits / T)`.
pub fn choose_token(logits: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Temperature { temperature, .. } => {
            sample_index(&softmax(logits, temperature), rng)
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoloEnd {
    /// The model produced an end-of-sequence token (not part of the output).
    EndOfSequence,
    /// `max_tokens` were produced.
    MaxTokens,
    /// The context is full.
    ContextFull,
}

/// One generation by the model alone: the prompt in one forward, then a forward per token.
pub struct SoloGeneration {
    model: Arc<Model>,
    cache: KvCache,
    sampling: Sampling,
    rng: Rng,
    /// The distribution over the next token (logits of the last forward).
    logits: Vec<f32>,
    produced: usize,
    max_tokens: usize,
    max_context: usize,
    ended: Option<SoloEnd>,
    /// Positions the model's forward passes covered (the prompt included).
    pub forward_tokens: usize,
    /// Forward passes run.
    pub forward_passes: usize,
}

impl SoloGeneration {
    /// Runs the prompt's forward. `max_context` caps the sequence (prompt and output).
    pub fn start(
        model: Arc<Model>,
        prompt: &[u32],
        sampling: Sampling,
        max_tokens: usize,
        max_context: usize,
    ) -> Result<Self> {
        let max_context = max_context.min(model.config().max_context);
        if prompt.is_empty() {
            return Err(EngineError::model("the prompt is empty"));
        }
        if prompt.len() >= max_context {
            return Err(EngineError::model(format!(
                "the prompt's {} tokens leave no room in a context of {max_context}",
                prompt.len()
            )));
        }
        let mut cache = model.new_cache();
        cache.set_limit(max_context);
        let out = model.forward(&mut cache, prompt, &LogitRows::Last, 0)?;
        let logits = out.last_logits().unwrap_or_default().to_vec();
        let seed = match sampling {
            Sampling::Temperature { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        Ok(Self {
            model,
            cache,
            sampling,
            rng: seeded_rng(seed),
            logits,
            produced: 0,
            max_tokens,
            max_context,
            ended: None,
            forward_tokens: prompt.len(),
            forward_passes: 1,
        })
    }

    /// The next token, or `None` once the generation has ended ([`SoloGeneration::ended`] says
    /// why). The token's own forward runs only if another token may follow.
    pub fn step(&mut self) -> Result<Option<u32>> {
        if self.ended.is_some() {
            return Ok(None);
        }
        if self.produced >= self.max_tokens {
            self.ended = Some(SoloEnd::MaxTokens);
            return Ok(None);
        }
        let next = choose_token(&self.logits, self.sampling, &mut self.rng);
        if self.model.config().eos_ids.contains(&next) {
            self.ended = Some(SoloEnd::EndOfSequence);
            return Ok(None);
        }
        self.produced += 1;
        if self.produced >= self.max_tokens {
            self.ended = Some(SoloEnd::MaxTokens);
        } else if self.cache.len() + 1 >= self.max_context {
            self.ended = Some(SoloEnd::ContextFull);
        } else {
            let out = self
                .model
                .forward(&mut self.cache, &[next], &LogitRows::Last, 0)?;
            self.logits = out.last_logits().unwrap_or_default().to_vec();
            self.forward_tokens += 1;
            self.forward_passes += 1;
        }
        Ok(Some(next))
    }

    /// Why the generation ended (`None` while it goes on).
    pub fn ended(&self) -> Option<SoloEnd> {
        self.ended
    }

    /// Tokens produced so far.
    pub fn produced(&self) -> usize {
        self.produced
    }
}
