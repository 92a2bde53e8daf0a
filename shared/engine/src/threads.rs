//! How many threads the model's kernels use.
//!
//! candle sizes its worker pools by the machine's physical cores, whatever CPUs the process may
//! actually run on. Pinned to fewer (`taskset`, a container's cpuset, Kubernetes' static CPU
//! manager), its spinning workers then take turns on the same core: measured here, the 1.5B
//! verifier pinned to one core of two took 33.6 s for a 64-token answer that takes 9.2 s with
//! one thread.
//! [`size_to_affinity`] sets the thread count to the CPUs allowed when fewer than all are.

/// When this process may run on fewer CPUs than are online, and neither `RAYON_NUM_THREADS` nor
/// `CANDLE_NUM_THREADS` is set, sets `RAYON_NUM_THREADS` (which both rayon and candle read) to
/// the number allowed. Returns the count it set. Call first thing in `main`, before any thread
/// is started (it changes the environment).
pub fn size_to_affinity() -> Option<usize> {
    if ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return None;
    }
    let allowed = std::thread::available_parallelism().ok()?.get();
    let online = online_cpus()?;
    if allowed >= online {
        return None;
    }
    std::env::set_var("RAYON_NUM_THREADS", allowed.to_string());
    Some(allowed)
}

/// CPUs online (Linux: `/sys/devices/system/cpu/online`, e.g. `0-3,6`).
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    count_cpu_list(text.trim())
}

/// The number of CPUs in a kernel CPU list such as `0-3,6,8-9`.
fn count_cpu_list(list: &str) -> Option<usize> {
    list.split(',').try_fold(0usize, |n, part| {
        let one = match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
        Some(n + one)
    })
}

#[cfg(test)]
mod tests {
    use super::count_cpu_list;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }
}
