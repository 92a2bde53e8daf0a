// A helper thread of the draft model (module Web Worker, started by worker.js in a cross-origin
// isolated page): it instantiates the threaded WebAssembly module over the engine's shared memory,
// says it is ready, and from then on takes rows of the kernels' products (`pool_helper_run`,
// which never returns; see web-client/src/pool.rs).
//
// @ts-check

import init, { pool_helper_failed, pool_helper_run } from './wasm-threads/hlm_web_client.js';

/** @param {MessageEvent<{ module: WebAssembly.Module, memory: WebAssembly.Memory }>} event */
self.onmessage = async (event) => {
  const { module, memory } = event.data;
  try {
    await init({ module_or_path: module, memory });
  } catch (e) {
    self.postMessage({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
    return;
  }
  self.postMessage({ type: 'ready' });
  try {
    pool_helper_run(); // never returns, unless it traps
  } catch (e) {
    // The engine's worker may be waiting for this helper's part of a product: let it finish
    // the product alone, and every later one (its `info.threads` drops to 1).
    pool_helper_failed();
    self.postMessage({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
  }
};
