//! # hlm-core: the method's math, free of any ML framework
//!
//! Everything here works on plain slices of logits or probabilities, so the native engine, the
//! browser client and the verifier share it bit for bit:
//!
//! * [`uncertainty`]: U-HLM's temperature-perturbation uncertainty `u` of a drafted token;
//! * [`importance`]: the drafted token's importance from the draft model's attention, against a
//!   threshold that adapts to each step's attention distribution (pluggable rules);
//! * [`filter`]: skip or upload, from `u`, the importance and two knobs;
//! * [`compress`]: CU-HLM's top-k quantised upload with a total-variation bound;
//! * [`verify`]: speculative sampling (and its greedy special case) against the uploaded `p̂`;
//! * [`sampling`]: softmax, argmax and seeded sampling helpers;
//! * [`energy`]: the analytic energy and link models (device and server), with their constants.

pub mod compress;
pub mod energy;
pub mod filter;
pub mod head;
pub mod importance;
mod normaliser;
pub mod sampling;
pub mod signals;
pub mod uncertainty;
pub mod verify;

pub use compress::{compress, total_variation, CompressConfig};
pub use filter::{decide, Decision, FilterKnobs, FilterMode};
pub use importance::{Importance, ImportanceRule, ImportanceRuleName};
pub use sampling::{argmax, sample_index, sample_sparse, seeded_rng, softmax, Rng};
pub use uncertainty::{
    expected_uncertainty, expected_uncertainty_on, serially, temperature_perturbation,
    temperature_perturbation_on, uncertainty, uncertainty_on, ForRanges, UncertaintyConfig,
    UncertaintyEstimate,
};
pub use verify::{verify_greedy, verify_sampled, Outcome};
