//! The analytic energy and link models, and the measured CPU energy (RAPL) where the machine
//! exposes it. Constants live in `shared/eval/constants.toml`, each with its source.
//!
//! For one generation of `n` tokens, with the draft's compute time `t_d`, the time spent waiting
//! for verdicts `t_w`, and the bits sent up `b_u` and down `b_d`:
//!
//! ```text
//! rate   = W · log2(1 + SNR)                                   (Shannon, SNR linear)
//! E      = P_compute · t_d  +  P_tx · b_u / rate  +  P_rx · b_d / rate  +  P_idle · t_idle
//! t_idle = max(0, t_w − (b_u + b_d) / rate)                   (waiting, radio not busy)
//! E/token = E / n
//! ```
//!
//! and the analytic throughput over that link, with `r` rounds and the verifier's compute time
//! `t_v` (all measured):
//!
//! ```text
//! delay  = t_d + (b_u + b_d) / rate + r · RTT + t_v            tokens/s = n / delay
//! ```

use crate::{EvalError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The constants file shipped with the crate.
pub const DEFAULT_CONSTANTS: &str = include_str!("../constants.toml");

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub compute_power_w: f64,
    pub idle_power_w: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Radio {
    pub tx_power_w: f64,
    pub rx_power_w: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub bandwidth_hz: f64,
    pub snr_db: f64,
    pub rtt_s: f64,
}

impl Link {
    /// Shannon rate `W · log2(1 + 10^(SNR_dB / 10))`, bits per second.
    pub fn rate_bps(&self) -> f64 {
        self.bandwidth_hz * (1.0 + 10f64.powf(self.snr_db / 10.0)).log2()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Constants {
    pub device: Device,
    pub radio: Radio,
    pub link: Link,
}

impl Constants {
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| EvalError::File {
            path: "constants".into(),
            message: e.to_string(),
        })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        toml::from_str(&text).map_err(|e| EvalError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The shipped constants (`constants.toml`).
    pub fn default_constants() -> Self {
        Self::from_toml(DEFAULT_CONSTANTS).expect("the shipped constants.toml parses")
    }
}

/// What one generation measured.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Measured {
    pub tokens: usize,
    pub rounds: usize,
    pub draft_time_s: f64,
    pub wait_time_s: f64,
    /// The verifier's own compute for this generation (part of `wait_time_s` on a real link).
    pub verifier_time_s: f64,
    pub bytes_up: usize,
    pub bytes_down: usize,
}

/// Energy of one generation, by part (joules).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Energy {
    pub compute_j: f64,
    pub tx_j: f64,
    pub rx_j: f64,
    pub idle_j: f64,
    pub total_j: f64,
    pub per_token_j: f64,
}

pub fn energy(m: &Measured, c: &Constants) -> Energy {
    let rate = c.link.rate_bps();
    let up_s = 8.0 * m.bytes_up as f64 / rate;
    let down_s = 8.0 * m.bytes_down as f64 / rate;
    let compute_j = c.device.compute_power_w * m.draft_time_s;
    let tx_j = c.radio.tx_power_w * up_s;
    let rx_j = c.radio.rx_power_w * down_s;
    let idle_j = c.device.idle_power_w * (m.wait_time_s - up_s - down_s).max(0.0);
    let total_j = compute_j + tx_j + rx_j + idle_j;
    Energy {
        compute_j,
        tx_j,
        rx_j,
        idle_j,
        total_j,
        per_token_j: total_j / m.tokens.max(1) as f64,
    }
}

/// Tokens per second over the analytic link.
pub fn analytic_throughput(m: &Measured, link: &Link) -> f64 {
    let delay = m.draft_time_s
        + 8.0 * (m.bytes_up + m.bytes_down) as f64 / link.rate_bps()
        + m.rounds as f64 * link.rtt_s
        + m.verifier_time_s;
    m.tokens as f64 / delay.max(1e-12)
}

/// The CPU package energy counter (Intel RAPL, `/sys/class/powercap/intel-rapl:0/energy_uj`).
pub struct Rapl {
    path: std::path::PathBuf,
    max_uj: u64,
}

impl Rapl {
    /// `None` where the machine does not expose it (VMs, containers, non-Intel): report "not
    /// available" rather than an estimate.
    pub fn open() -> Option<Self> {
        let dir = Path::new("/sys/class/powercap/intel-rapl:0");
        let path = dir.join("energy_uj");
        std::fs::read_to_string(&path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()?;
        let max_uj = std::fs::read_to_string(dir.join("max_energy_range_uj"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u64::MAX);
        Some(Self { path, max_uj })
    }

    pub fn read_uj(&self) -> Option<u64> {
        std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Joules between two readings, allowing for one wrap of the counter.
    pub fn joules_between(&self, before: u64, after: u64) -> f64 {
        let d = if after >= before {
            after - before
        } else {
            self.max_uj - before + after
        };
        d as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constants() -> Constants {
        Constants {
            device: Device {
                compute_power_w: 4.0,
                idle_power_w: 0.5,
            },
            radio: Radio {
                tx_power_w: 2.0,
                rx_power_w: 1.0,
            },
            link: Link {
                bandwidth_hz: 1e6,
                snr_db: 10.0 * 3f64.log10(), // SNR = 3: log2(4) = 2 bits/Hz
                rtt_s: 0.1,
            },
        }
    }

    #[test]
    fn shannon_rate_by_hand() {
        assert!((constants().link.rate_bps() - 2e6).abs() < 1e-6);
        // The shipped preset: 100 kHz at 20 dB = 1e5 · log2(101).
        let c = Constants::default_constants();
        assert!((c.link.rate_bps() - 1e5 * 101f64.log2()).abs() < 1e-6);
    }

    /// 10 tokens, 2 s drafting, 1 s waiting, 250 kB up (2 Mbit = 1 s at 2 Mbit/s), 25 kB down
    /// (0.1 s): compute 8 J, tx 2 J, rx 0.1 J, idle 0.5 · max(0, 1 − 1.1) = 0.
    #[test]
    fn energy_by_hand() {
        let m = Measured {
            tokens: 10,
            rounds: 4,
            draft_time_s: 2.0,
            wait_time_s: 1.0,
            verifier_time_s: 0.3,
            bytes_up: 250_000,
            bytes_down: 25_000,
        };
        let e = energy(&m, &constants());
        assert!((e.compute_j - 8.0).abs() < 1e-9);
        assert!((e.tx_j - 2.0).abs() < 1e-9);
        assert!((e.rx_j - 0.1).abs() < 1e-9);
        assert_eq!(e.idle_j, 0.0);
        assert!((e.per_token_j - 1.01).abs() < 1e-9);
        let idle = energy(
            &Measured {
                wait_time_s: 3.1,
                ..m
            },
            &constants(),
        );
        assert!((idle.idle_j - 1.0).abs() < 1e-9, "0.5 W × (3.1 − 1.1) s");
        // delay = 2 + 1.1 + 4 · 0.1 + 0.3 = 3.8 s for 10 tokens.
        let tps = analytic_throughput(&m, &constants().link);
        assert!((tps - 10.0 / 3.8).abs() < 1e-9);
    }

    #[test]
    fn rapl_counter_wraps() {
        let r = Rapl {
            path: "/nonexistent".into(),
            max_uj: 1_000_000,
        };
        assert!((r.joules_between(900_000, 100_000) - 0.2).abs() < 1e-12);
        assert!((r.joules_between(100_000, 600_000) - 0.5).abs() < 1e-12);
    }
}
