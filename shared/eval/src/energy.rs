//! The energy and link models (one implementation, in `hlm_core::energy`, re-exported here), the
//! constants read from a file, and the measured CPU energy (RAPL) where the machine exposes it.

pub use hlm_core::energy::*;

use crate::{EvalError, Result};
use std::path::Path;

/// Constants from a TOML file shaped like the shipped `constants.toml`.
pub fn constants_from_file(path: &Path) -> Result<Constants> {
    let text = std::fs::read_to_string(path)?;
    Constants::from_toml(&text).map_err(|message| EvalError::File {
        path: path.display().to_string(),
        message,
    })
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
