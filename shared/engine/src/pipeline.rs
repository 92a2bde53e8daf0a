//! Pipelined drafting: how far the decoding loop drafts ahead while a round is in flight.
//!
//! Without pipelining the loop sends a round and waits, so every round costs a round trip plus
//! the verifier's forward on the critical path. With it, the draft model keeps drafting (and the
//! filter keeps deciding) on the assumption that the round in flight is accepted whole:
//!
//! * accepted: the tokens drafted meanwhile stand, their own decisions too;
//! * rejected: the draft's KV cache rolls back to the rejection, the drafts after it are
//!   discarded (counted), and the random streams go back to where they were when the round was
//!   sent, so what follows is exactly what the loop without pipelining would have produced.
//!
//! Drafting ahead stops at whichever comes first: the verdict arrives, the tokens drafted ahead
//! make a round that is due (one round is in flight at a time, so rounds are the same as without
//! pipelining), the generation's last token, or the depth `D`. The prompt, too, goes to the
//! verifier as a round of its own before the draft model reads it, so both models' prompt passes
//! overlap.
//!
//! The adaptive depth (the default) follows what the loop measures:
//!
//! ```text
//! D = clamp(round(a · W / S) + 1, 1, max_round_tokens)
//! ```
//!
//! with `W` the time from sending a round to its verdict, `S` the time to draft one token, and
//! `a` the share of rounds accepted whole (running averages): deeper when the link is slow and
//! drafts usually stand.

use serde::{Deserialize, Serialize};

/// How far the loop drafts ahead while a round is in flight.
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    /// Send a round, then wait for its verdict (only the token just drafted is fed meanwhile).
    Off,
    /// Depth from the measured round trip, draft step and acceptance (see the module docs).
    #[default]
    Adaptive,
    /// At most this many tokens ahead of the round in flight.
    Depth(u32),
}

impl Pipeline {
    /// From the flat option: absent = adaptive, 0 = off, n = at most n tokens ahead.
    pub fn from_depth(depth: Option<u32>) -> Self {
        match depth {
            None => Pipeline::Adaptive,
            Some(0) => Pipeline::Off,
            Some(n) => Pipeline::Depth(n),
        }
    }

    /// The flat option [`Pipeline::from_depth`] reads.
    pub fn depth_option(self) -> Option<u32> {
        match self {
            Pipeline::Off => Some(0),
            Pipeline::Adaptive => None,
            Pipeline::Depth(n) => Some(n),
        }
    }

    pub fn is_on(self) -> bool {
        self != Pipeline::Off
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pipeline::Off => f.write_str("off"),
            Pipeline::Adaptive => f.write_str("adaptive"),
            Pipeline::Depth(n) => write!(f, "depth {n}"),
        }
    }
}

impl std::str::FromStr for Pipeline {
    type Err = String;
    /// `off`, `auto`/`adaptive`, or a depth (`0` = off).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Pipeline::Off),
            "auto" | "adaptive" => Ok(Pipeline::Adaptive),
            n => n
                .parse::<u32>()
                .map(|n| Pipeline::from_depth(Some(n)))
                .map_err(|_| format!("pipeline depth `{s}`: off, auto, or a number of tokens")),
        }
    }
}

/// Depth before the first verdict has been measured.
const FIRST_DEPTH: usize = 8;
/// Weight of the newest observation in the running averages.
const EWMA: f64 = 0.3;

/// The running measurements behind the adaptive depth.
#[derive(Debug, Clone)]
pub struct DepthGauge {
    pipeline: Pipeline,
    max_depth: usize,
    /// Seconds from sending a round to its verdict.
    wait_s: Option<f64>,
    /// Seconds to draft one token (model and filter).
    step_s: Option<f64>,
    /// Share of rounds accepted whole.
    accepted: f64,
}

fn blend(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => o + EWMA * (new - o),
        None => new,
    }
}

impl DepthGauge {
    pub fn new(pipeline: Pipeline, max_round_tokens: usize) -> Self {
        Self {
            pipeline,
            max_depth: max_round_tokens.max(1),
            wait_s: None,
            step_s: None,
            accepted: 1.0,
        }
    }

    /// A drafted token took `s` seconds.
    pub fn drafted(&mut self, s: f64) {
        self.step_s = Some(blend(self.step_s, s));
    }

    /// A verdict came `wait` seconds after its round was sent; `whole` = nothing rejected.
    pub fn verdict(&mut self, wait: f64, whole: bool) {
        self.wait_s = Some(blend(self.wait_s, wait));
        self.accepted += EWMA * (f64::from(u8::from(whole)) - self.accepted);
    }

    /// How many tokens may be drafted ahead of the round in flight (0 = pipelining off).
    pub fn depth(&self) -> usize {
        match self.pipeline {
            Pipeline::Off => 0,
            Pipeline::Depth(n) => n as usize,
            Pipeline::Adaptive => match (self.wait_s, self.step_s) {
                (Some(w), Some(s)) if s > 0.0 => {
                    let d = (self.accepted * w / s).round();
                    (d as usize).saturating_add(1).clamp(1, self.max_depth)
                }
                _ => FIRST_DEPTH.min(self.max_depth),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_depth_grows_with_the_wait_and_the_acceptance() {
        let mut g = DepthGauge::new(Pipeline::Adaptive, 64);
        assert_eq!(g.depth(), FIRST_DEPTH);
        g.drafted(0.05);
        g.verdict(0.25, true);
        assert_eq!(g.depth(), 6); // 1.0 · 0.25 / 0.05 + 1
        for _ in 0..20 {
            g.verdict(0.25, false);
        }
        assert_eq!(
            g.depth(),
            1,
            "drafts that never stand are not worth drafting"
        );
        let mut slow = DepthGauge::new(Pipeline::Adaptive, 16);
        slow.drafted(0.01);
        slow.verdict(10.0, true);
        assert_eq!(slow.depth(), 16, "bounded by the round size");
    }

    #[test]
    fn fixed_and_off() {
        assert_eq!(DepthGauge::new(Pipeline::Off, 64).depth(), 0);
        assert_eq!(DepthGauge::new(Pipeline::Depth(3), 64).depth(), 3);
        assert_eq!("0".parse::<Pipeline>(), Ok(Pipeline::Off));
        assert_eq!("auto".parse::<Pipeline>(), Ok(Pipeline::Adaptive));
        assert_eq!("5".parse::<Pipeline>(), Ok(Pipeline::Depth(5)));
        assert!("deep".parse::<Pipeline>().is_err());
    }
}
