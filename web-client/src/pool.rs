//! Threads in the page: a pool of Web Workers that share this module's memory and split each of
//! our kernels' products over its weight rows.
//!
//! Built only with WebAssembly threads (`+atomics`, shared memory: the `wasm-threads` build of
//! `scripts/build-web.sh`). The engine's worker is the pool's first thread; `worker.js` starts
//! the others (`pool-worker.js`), each instantiating this same module over the same memory and
//! then calling [`pool_helper_run`], which never returns.
//!
//! ```text
//! engine worker            helper 1 … helper n
//! for_ranges(n, f):
//!   job ← f, cursor ← 0
//!   generation += 1 ──notify──► wake (or already spinning)
//!   take chunks ◄── cursor ──► take chunks
//!   wait pending = 0 ◄────────── pending −= 1
//! ```
//!
//! A helper spins a little after each product before it sleeps on `memory.atomic.wait32`: the
//! products of one forward pass follow each other closely, so it is usually awake for the next.
//! Until every helper has started, products run on the engine's worker alone.

use std::cell::{Cell, UnsafeCell};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use wasm_bindgen::prelude::*;

/// Spins (atomic loads) a helper makes after a product before it sleeps.
const SPINS_BEFORE_SLEEP: u32 = 1 << 18;
/// Chunks per thread in one product: a shared cursor hands them out, so a slow thread holds
/// back at most one chunk.
const CHUNKS_PER_THREAD: usize = 8;

/// One product: `f` over `0..n`, `chunk` rows at a time.
#[derive(Clone, Copy)]
struct Job {
    /// Lifetime erased: valid until `pending` is back at 0 ([`WorkerPool::for_ranges`] waits).
    f: *const (dyn Fn(Range<usize>) + Sync),
    n: usize,
    chunk: usize,
}

/// The pool (one per module instance set: a static in shared memory).
pub struct WorkerPool {
    /// Helpers asked for ([`pool_init`]).
    expected: AtomicUsize,
    /// Helpers that have entered [`pool_helper_run`].
    arrived: AtomicUsize,
    /// A helper failed ([`pool_helper_failed`]): products run on the engine's worker alone.
    broken: AtomicBool,
    /// Bumped once per product; helpers wait on it.
    generation: AtomicI32,
    /// Helpers still inside the current product.
    pending: AtomicI32,
    /// Next row of the current product not yet taken.
    cursor: AtomicUsize,
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by the engine's worker while no helper reads it (before the
// generation bump that publishes it, and after `pending` has returned to 0).
unsafe impl Sync for WorkerPool {}

static POOL: WorkerPool = WorkerPool {
    expected: AtomicUsize::new(0),
    arrived: AtomicUsize::new(0),
    broken: AtomicBool::new(false),
    generation: AtomicI32::new(0),
    pending: AtomicI32::new(0),
    cursor: AtomicUsize::new(0),
    job: UnsafeCell::new(None),
};

thread_local! {
    /// True on a helper: a product started there runs inline (never waits on itself).
    static IS_HELPER: Cell<bool> = const { Cell::new(false) };
    /// True on a helper while it counts in `pending` (from a product's start to its decrement).
    static IN_PRODUCT: Cell<bool> = const { Cell::new(false) };
}

/// Declares how many helpers `worker.js` is starting (once, before it starts them). Returns
/// false if the pool was already set up.
#[wasm_bindgen]
pub fn pool_init(helpers: usize) -> bool {
    let first = POOL
        .expected
        .compare_exchange(0, helpers, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    first && hlm_engine::model::set_kernel_parallel(&POOL)
}

/// Threads the products run on now: the engine's worker plus the helpers that have started.
#[wasm_bindgen]
pub fn pool_threads() -> usize {
    1 + POOL.helpers()
}

/// This module's `WebAssembly.Module`, for the helpers to instantiate.
#[wasm_bindgen]
pub fn wasm_module() -> JsValue {
    wasm_bindgen::module()
}

/// This module's shared `WebAssembly.Memory`, for the helpers to instantiate over.
#[wasm_bindgen]
pub fn wasm_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// A helper's life: wait for a product, take chunks of it, repeat. Never returns; called by
/// `pool-worker.js` once its instance is ready.
#[wasm_bindgen]
pub fn pool_helper_run() {
    IS_HELPER.with(|h| h.set(true));
    // Read before arriving: a product published after this helper counts it (the engine's
    // worker reads `arrived` before it bumps `generation`).
    let mut seen = POOL.generation.load(Ordering::Acquire);
    POOL.arrived.fetch_add(1, Ordering::AcqRel);
    loop {
        seen = POOL.next_generation(seen);
        IN_PRODUCT.with(|p| p.set(true));
        // SAFETY: published by the bump just observed (Acquire); stays valid until this
        // helper decrements `pending`.
        if let Some(job) = unsafe { *POOL.job.get() } {
            // SAFETY: the engine's worker keeps `f` alive until `pending` is back at 0.
            POOL.take_chunks(unsafe { &*job.f }, job.n, job.chunk);
        }
        IN_PRODUCT.with(|p| p.set(false));
        POOL.leave_product();
    }
}

/// Called by `pool-worker.js` when [`pool_helper_run`] threw (a trap: a bug). The pool stops
/// using helpers, and the product this helper was in is finished on the engine's worker, which
/// would otherwise wait for it forever.
#[wasm_bindgen]
pub fn pool_helper_failed() {
    POOL.broken.store(true, Ordering::Release);
    if IN_PRODUCT.with(|p| p.replace(false)) {
        POOL.leave_product();
    }
}

impl WorkerPool {
    /// Helpers that take part in products: all of them once all have started (and while none
    /// has failed), else none.
    fn helpers(&self) -> usize {
        let expected = self.expected.load(Ordering::Acquire);
        let all_in = self.arrived.load(Ordering::Acquire) == expected;
        if all_in && !self.broken.load(Ordering::Acquire) {
            expected
        } else {
            0
        }
    }

    /// Waits (spinning, then sleeping) until `generation` differs from `seen`; returns it.
    fn next_generation(&self, seen: i32) -> i32 {
        loop {
            for _ in 0..SPINS_BEFORE_SLEEP {
                let g = self.generation.load(Ordering::Acquire);
                if g != seen {
                    return g;
                }
                std::hint::spin_loop();
            }
            wait(&self.generation, seen);
        }
    }

    /// Runs `f` on chunks of `0..n` from the shared cursor until none are left.
    fn take_chunks(&self, f: &(dyn Fn(Range<usize>) + Sync), n: usize, chunk: usize) {
        loop {
            let start = self.cursor.fetch_add(chunk, Ordering::Relaxed);
            if start >= n {
                return;
            }
            f(start..n.min(start + chunk));
        }
    }

    /// A helper is done with the current product.
    fn leave_product(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            notify(&self.pending);
        }
    }

    /// Waits until every helper has left the current product.
    fn wait_for_helpers(&self) {
        let mut spins = 0u32;
        loop {
            let left = self.pending.load(Ordering::Acquire);
            if left == 0 {
                return;
            }
            spins += 1;
            if spins < SPINS_BEFORE_SLEEP {
                std::hint::spin_loop();
            } else {
                wait(&self.pending, left);
            }
        }
    }
}

impl hlm_kernels::Parallel for WorkerPool {
    fn for_ranges(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n == 0 {
            return;
        }
        let helpers = self.helpers();
        if helpers == 0 || n < 2 || IS_HELPER.with(|h| h.get()) {
            return f(0..n);
        }
        let chunk = n.div_ceil((helpers + 1) * CHUNKS_PER_THREAD).max(1);
        // SAFETY: no helper reads `job` now (`pending` is 0 between products). The lifetime of
        // `f` is erased; this function does not return before every helper is done with it.
        unsafe {
            let f: *const (dyn Fn(Range<usize>) + Sync) = f;
            *self.job.get() = Some(Job {
                f: std::mem::transmute::<
                    *const (dyn Fn(Range<usize>) + Sync + '_),
                    *const (dyn Fn(Range<usize>) + Sync + 'static),
                >(f),
                n,
                chunk,
            });
        }
        self.cursor.store(0, Ordering::Relaxed);
        self.pending.store(helpers as i32, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        notify(&self.generation);
        self.take_chunks(f, n, chunk);
        self.wait_for_helpers();
        if self.broken.load(Ordering::Acquire) {
            // A helper failed part-way through its chunk: every row again, here (`f` writes
            // each row's own output, so doing a row twice gives the same result).
            f(0..n);
        }
    }
}

/// Sleeps while `*a == expected` (returns at once if it differs, or when notified).
fn wait(a: &AtomicI32, expected: i32) {
    // SAFETY: `a` is a valid, aligned i32 in this module's (shared) memory.
    unsafe {
        core::arch::wasm32::memory_atomic_wait32(a.as_ptr(), expected, -1);
    }
}

/// Wakes every thread sleeping on `a`.
fn notify(a: &AtomicI32) {
    // SAFETY: as for `wait`.
    unsafe {
        core::arch::wasm32::memory_atomic_notify(a.as_ptr(), u32::MAX);
    }
}
