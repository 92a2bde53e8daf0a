//! The analytic energy and link models of a hybrid generation: the device (draft compute, radio,
//! idle) and the verifier's server. One implementation for the evaluation harness (counts × costs),
//! the browser's live estimate and the CLI. Constants live in `shared/core/constants.toml`, each
//! with its source.
//!
//! For one generation of `n` tokens with `r` rounds, the device's compute time `t_d`, the
//! verifier's compute time `t_v` on the server charged for, and the bits sent up `b_u` and down
//! `b_d`:
//!
//! ```text
//! rate     = W · log2(1 + SNR)                                (Shannon, SNR linear)
//! E_device = P_compute · t_d  +  P_tx · b_u / rate  +  P_rx · b_d / rate  +  P_idle · (t_v + r · RTT)
//! E_server = P_server · t_v
//! E_system = E_device + E_server,          per token: E / n
//! ```
//!
//! (the device idles while the verifier computes and while each round crosses the link), and the
//! analytic throughput over that link:
//!
//! ```text
//! delay  = t_d + (b_u + b_d) / rate + r · RTT + t_v            tokens/s = n / delay
//! ```
//!
//! The evaluation derives `t_d` and `t_v` from counts × per-operation costs timed on its CPU
//! (`t_v` divided by the server preset's `speedup`); the browser's live estimate uses the times it
//! measured. The server-only baseline (LLM-only) streams its answer: one round, no device
//! compute.

use serde::{Deserialize, Serialize};

/// The constants file shipped with the crate.
pub const DEFAULT_CONSTANTS: &str = include_str!("../constants.toml");

#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyDevice")
)]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub compute_power_w: f64,
    pub idle_power_w: f64,
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyRadio")
)]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Radio {
    pub tx_power_w: f64,
    pub rx_power_w: f64,
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyLink")
)]
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

/// Which kind of machine the verifier's energy is charged for.
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyServerKind")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    Cpu,
    Gpu,
}

/// A verifier machine: its power while computing, and how much faster than the CPU this run's
/// costs were measured on it computes the same forward passes.
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyServerPreset")
)]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerPreset {
    pub power_w: f64,
    pub speedup: f64,
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyServer")
)]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub preset: ServerKind,
    pub cpu: ServerPreset,
    pub gpu: ServerPreset,
}

impl Server {
    pub fn chosen(&self) -> ServerPreset {
        match self.preset {
            ServerKind::Cpu => self.cpu,
            ServerKind::Gpu => self.gpu,
        }
    }
}

#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(ts_rs::TS),
    ts(rename = "EnergyConstants")
)]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Constants {
    pub device: Device,
    pub radio: Radio,
    pub link: Link,
    pub server: Server,
}

impl Constants {
    /// Constants from a TOML text shaped like `constants.toml` (every field required).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The shipped constants (`constants.toml`).
    pub fn default_constants() -> Self {
        Self::from_toml(DEFAULT_CONSTANTS).expect("the shipped constants.toml parses")
    }

    /// The shipped constants with some fields replaced: `overrides` is a JSON object shaped like
    /// the constants (e.g. `{"device": {"compute_power_w": 6}}`); an unknown or mistyped field is
    /// an error naming it.
    pub fn with_overrides(overrides: &serde_json::Value) -> Result<Self, String> {
        let mut v = serde_json::to_value(Self::default_constants()).map_err(|e| e.to_string())?;
        merge(&mut v, overrides, "")?;
        serde_json::from_value(v).map_err(|e| format!("energy constants: {e}"))
    }
}

/// Writes `over`'s leaves into `base`, refusing keys `base` does not have.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value, at: &str) -> Result<(), String> {
    let Some(fields) = over.as_object() else {
        return Err(format!("energy constants{at}: expected an object"));
    };
    for (k, v) in fields {
        let path = format!("{at}.{k}");
        let slot = base
            .get_mut(k)
            .ok_or_else(|| format!("energy constants: unknown field `{}`", &path[1..]))?;
        if slot.is_object() {
            merge(slot, v, &path)?;
        } else {
            *slot = v.clone();
        }
    }
    Ok(())
}

/// What one generation did, as the models need it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Activity {
    pub tokens: usize,
    pub rounds: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    /// The device's compute (draft model and filter), seconds.
    pub device_compute_s: f64,
    /// The verifier's compute on the server charged for, seconds.
    pub verifier_s: f64,
}

/// Energy of one generation, by part (joules).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Energy {
    pub compute_j: f64,
    pub tx_j: f64,
    pub rx_j: f64,
    pub idle_j: f64,
    /// compute + tx + rx + idle.
    pub device_j: f64,
    pub server_j: f64,
    /// device + server.
    pub total_j: f64,
}

pub fn energy(a: &Activity, c: &Constants) -> Energy {
    let rate = c.link.rate_bps();
    let verifier_s = a.verifier_s;
    let compute_j = c.device.compute_power_w * a.device_compute_s;
    let tx_j = c.radio.tx_power_w * 8.0 * a.bytes_up as f64 / rate;
    let rx_j = c.radio.rx_power_w * 8.0 * a.bytes_down as f64 / rate;
    let idle_j = c.device.idle_power_w * (verifier_s + a.rounds as f64 * c.link.rtt_s);
    let device_j = compute_j + tx_j + rx_j + idle_j;
    let server_j = c.server.chosen().power_w * verifier_s;
    Energy {
        compute_j,
        tx_j,
        rx_j,
        idle_j,
        device_j,
        server_j,
        total_j: device_j + server_j,
    }
}

/// Seconds one generation takes over the analytic link.
pub fn analytic_delay(a: &Activity, c: &Constants) -> f64 {
    a.device_compute_s
        + 8.0 * (a.bytes_up + a.bytes_down) as f64 / c.link.rate_bps()
        + a.rounds as f64 * c.link.rtt_s
        + a.verifier_s
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
            server: Server {
                preset: ServerKind::Cpu,
                cpu: ServerPreset {
                    power_w: 10.0,
                    speedup: 1.0,
                },
                gpu: ServerPreset {
                    power_w: 100.0,
                    speedup: 4.0,
                },
            },
        }
    }

    #[test]
    fn overrides_replace_leaves_and_refuse_unknown_fields() {
        let c = Constants::with_overrides(&serde_json::json!({
            "device": {"compute_power_w": 6.5},
            "server": {"preset": "gpu"}
        }))
        .unwrap();
        assert_eq!(c.device.compute_power_w, 6.5);
        assert_eq!(c.server.preset, ServerKind::Gpu);
        assert_eq!(c.link, Constants::default_constants().link);
        for (bad, says) in [
            (
                serde_json::json!({"device": {"watts": 1}}),
                "unknown field `device.watts`",
            ),
            (
                serde_json::json!({"device": {"compute_power_w": "x"}}),
                "invalid type",
            ),
            (
                serde_json::json!({"server": {"preset": "tpu"}}),
                "unknown variant",
            ),
            (serde_json::json!([1]), "expected an object"),
        ] {
            let e = Constants::with_overrides(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn shannon_rate_by_hand() {
        assert!((constants().link.rate_bps() - 2e6).abs() < 1e-6);
        // The shipped preset: 100 kHz at 20 dB = 1e5 · log2(101).
        let c = Constants::default_constants();
        assert!((c.link.rate_bps() - 1e5 * 101f64.log2()).abs() < 1e-6);
    }

    /// 10 tokens, 4 rounds, 2 s drafting, 0.3 s verifying, 250 kB up (2 Mbit = 1 s at 2 Mbit/s),
    /// 25 kB down (0.1 s): compute 8 J, tx 2 J, rx 0.1 J, idle 0.5 · (0.3 + 4 · 0.1) = 0.35 J;
    /// server 10 W · 0.3 s = 3 J.
    #[test]
    fn energy_by_hand() {
        let a = Activity {
            tokens: 10,
            rounds: 4,
            device_compute_s: 2.0,
            verifier_s: 0.3,
            bytes_up: 250_000,
            bytes_down: 25_000,
        };
        let e = energy(&a, &constants());
        assert!((e.compute_j - 8.0).abs() < 1e-9);
        assert!((e.tx_j - 2.0).abs() < 1e-9);
        assert!((e.rx_j - 0.1).abs() < 1e-9);
        assert!((e.idle_j - 0.35).abs() < 1e-9);
        assert!((e.device_j - 10.45).abs() < 1e-9);
        assert!((e.server_j - 3.0).abs() < 1e-9);
        assert!((e.total_j - 13.45).abs() < 1e-9);
        // delay = 2 + 1.1 + 4 · 0.1 + 0.3 = 3.8 s.
        assert!((analytic_delay(&a, &constants()) - 3.8).abs() < 1e-9);
        // The GPU preset charges its own power.
        let mut c = constants();
        c.server.preset = ServerKind::Gpu;
        assert!((energy(&a, &c).server_j - 30.0).abs() < 1e-9);
    }
}
