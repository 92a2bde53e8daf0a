//! The live energy estimate of a generation from what it measured: the same model as the
//! evaluation (`hlm_core::energy`), fed with the device's measured drafting time and the time it
//! waited for verdicts. The browser shows it as the generation runs.
//!
//! * device compute `t_d` = measured drafting time (model and filter);
//! * the verifier's compute `t_v` = the time the verifier reported for its rounds
//!   ([`Totals::llm_compute_us`], each verdict's `compute_us`): its model's work alone. The
//!   device idles for `t_v` plus one modelled round trip per round; the link is the modelled one
//!   (constants), not the one this run happened to use, and time queued behind other sessions on
//!   the server is not charged;
//! * what **standard HLM** (every token uploaded) would have cost for the same tokens: one round
//!   per token, each extra round one more round frame up and one more verdict (this run's
//!   average) down, each skipped token carrying this run's average distribution payload, and the
//!   verifier's time scaled by its forward passes. Without a round to measure from (mode `never`)
//!   the protocol's sizes are used and the verifier's time is unknown (counted as 0).

use crate::decode::Totals;
use hlm_core::energy::{energy, Activity, Constants, Energy};
use serde::{Deserialize, Serialize};

/// Bytes one more round frame costs besides its tokens (protocol version, tag, round and base
/// varints, vector length): measured 6.0 B on the README's 64-token benchmark.
pub const ROUND_FRAME_BYTES: usize = 6;
/// Bytes of one verdict frame when the run had no round to measure it from: protocol 2's
/// version header, tag, round, accepted, no correction, verified, forward positions (one byte
/// each) and `compute_us` (a 3-byte varint for tens of milliseconds): 11 B.
pub const VERDICT_BYTES: usize = 11;
/// Bytes of one token entry in a round (id varint ≤ 3, verify flag, distribution tag).
pub const TOKEN_ENTRY_BYTES: usize = 5;

/// The estimate for a generation so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyEstimate {
    pub energy: Energy,
    /// The same tokens under standard HLM.
    pub standard_hlm: Energy,
    pub standard_hlm_bytes_up: usize,
    pub standard_hlm_bytes_down: usize,
    pub standard_hlm_llm_passes: usize,
}

/// See the module documentation.
pub fn estimate(t: &Totals, draft_time_s: f64, c: &Constants) -> EnergyEstimate {
    let verifier_s = t.llm_compute_us as f64 / 1e6;
    let run = Activity {
        tokens: t.tokens,
        rounds: t.rounds,
        bytes_up: t.bytes_up,
        bytes_down: t.bytes_down,
        device_compute_s: draft_time_s.max(0.0),
        verifier_s,
    };
    let (up, down, rounds, passes) = standard_hlm_traffic(t);
    let std = Activity {
        rounds,
        bytes_up: up,
        bytes_down: down,
        verifier_s: if t.llm_forward_passes > 0 {
            verifier_s * passes as f64 / t.llm_forward_passes as f64
        } else {
            0.0
        },
        ..run
    };
    EnergyEstimate {
        energy: energy(&run, c),
        standard_hlm: energy(&std, c),
        standard_hlm_bytes_up: up,
        standard_hlm_bytes_down: down,
        standard_hlm_llm_passes: passes,
    }
}

/// Bytes up, bytes down, rounds and verifier passes of standard HLM for the same tokens.
fn standard_hlm_traffic(t: &Totals) -> (usize, usize, usize, usize) {
    if t.rounds == 0 {
        return (
            t.tokens * (ROUND_FRAME_BYTES + TOKEN_ENTRY_BYTES),
            t.tokens * VERDICT_BYTES,
            t.tokens,
            t.tokens,
        );
    }
    let extra = t.tokens.saturating_sub(t.rounds);
    let dist_per_upload = if t.uploaded > 0 {
        t.dist_bits as f64 / 8.0 / t.uploaded as f64
    } else {
        0.0
    };
    let up =
        t.bytes_up as f64 + (extra * ROUND_FRAME_BYTES) as f64 + t.skipped as f64 * dist_per_upload;
    let down = t.bytes_down as f64 + extra as f64 * t.bytes_down as f64 / t.rounds as f64;
    (
        up.round() as usize,
        down.round() as usize,
        t.tokens.max(t.rounds),
        t.tokens.max(t.llm_forward_passes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_verdict_frame_is_verdict_bytes_long() {
        use hlm_protocol::{encode_server, ServerMsg, Verdict};
        let frame = encode_server(&ServerMsg::Verdict(Verdict {
            round: 3,
            accepted: 1,
            correction: None,
            verified: 1,
            forward_tokens: 1,
            compute_us: 30_000,
        }));
        assert_eq!(frame.len(), VERDICT_BYTES);
    }

    #[test]
    fn standard_hlm_of_a_filtered_run_costs_more_and_of_itself_the_same() {
        let c = Constants::default_constants();
        let filtered = Totals {
            tokens: 40,
            skipped: 30,
            uploaded: 10,
            accepted: 9,
            resampled: 1,
            rounds: 10,
            bytes_up: 300,
            bytes_down: 80,
            llm_forward_passes: 10,
            llm_compute_us: 1_500_000,
            ..Default::default()
        };
        let e = estimate(&filtered, 2.0, &c);
        assert_eq!(e.standard_hlm_llm_passes, 40);
        assert_eq!(e.standard_hlm_bytes_up, 300 + 30 * ROUND_FRAME_BYTES);
        assert_eq!(e.standard_hlm_bytes_down, 80 + 30 * 8);
        assert!(e.standard_hlm.total_j > e.energy.total_j);
        assert_eq!(e.standard_hlm.compute_j, e.energy.compute_j);
        // The device idles while the verifier computes and while each round crosses the link;
        // the server is charged for the compute it reported, the standard HLM's for 4× its passes.
        let idle_s = 1.5 + 10.0 * c.link.rtt_s;
        assert!((e.energy.idle_j - c.device.idle_power_w * idle_s).abs() < 1e-9);
        assert!((e.energy.server_j - c.server.chosen().power_w * 1.5).abs() < 1e-9);
        assert!((e.standard_hlm.server_j - 4.0 * e.energy.server_j).abs() < 1e-9);
        let always = Totals {
            uploaded: 40,
            skipped: 0,
            rounds: 40,
            llm_forward_passes: 40,
            ..filtered.clone()
        };
        let e = estimate(&always, 2.0, &c);
        assert_eq!(e.standard_hlm, e.energy);
        // Mode `never`: protocol sizes, no verifier.
        let never = Totals {
            tokens: 10,
            ..Default::default()
        };
        let e = estimate(&never, 1.0, &c);
        assert_eq!(e.energy.server_j, 0.0);
        assert_eq!(e.standard_hlm_bytes_up, 10 * 11);
    }
}
