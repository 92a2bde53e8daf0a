// Module Web Worker running the draft model (WebAssembly) off the page's main thread.
//
// The messages it takes and sends (WorkerRequest, WorkerReply) are declared in
// worker-messages.d.ts; what the engine reports in them (token events, the summary, model
// information, error codes) is generated from the Rust types (types.generated.d.ts).
// `id` echoes the request's id.
//
// @ts-check

/** @typedef {import('./worker-messages').WorkerRequest} WorkerRequest */
/** @typedef {import('./worker-messages').WorkerReply} WorkerReply */
/** @typedef {import('./worker-messages').Loaded} Loaded */
/** @typedef {import('./types.generated').ErrorCode} ErrorCode */
/** @typedef {import('./types.generated').ModelInfo} ModelInfo */
/** @typedef {import('./types.generated').Summary} Summary */
/** @typedef {import('./types.generated').TokenEvent} TokenEvent */
/** @typedef {import('./types.generated').VerifierWelcome} VerifierWelcome */

/** @typedef {typeof import('./wasm/hlm_web_client.js')} SingleThreadModule */
/** @typedef {typeof import('./wasm-threads/hlm_web_client.js')} ThreadedModule */
/** @typedef {import('./wasm/hlm_web_client.js').Engine} Engine */

const CLIENT_NAME = 'hybrid-llm-web/0.1.0';
const PROGRESS_INTERVAL_MS = 100;
const CACHE_CHUNK = 1 << 20; // bytes per chunk handed to the Cache API when storing the model

/** Most threads the draft model asks for by default (the browser's cores, at most this). */
const MAX_DEFAULT_THREADS = 8;
/** How long the helper threads may take to start before the draft runs without them. */
const HELPERS_TIMEOUT_MS = 30_000;

/** @type {Promise<SingleThreadModule | ThreadedModule> | null} */
let wasmReady = null;
/** @type {Worker[]} the helper threads (kept referenced for the worker's life) */
const helpers = [];
/** @type {Engine | null} */
let engine = null;
/** @type {number | null} id of the running generation */
let current = null;
/** @type {Set<number>} ids of generations waiting their turn */
const queued = new Set();
/** @type {Set<number>} queued ids aborted before they started */
const abortAtStart = new Set();

/** @param {WorkerReply} msg */
function post(msg) {
  self.postMessage(msg);
}

/**
 * An Error carrying its code, as the engine's are.
 * @param {string} message
 * @param {ErrorCode} code
 */
function codedError(message, code) {
  return Object.assign(new Error(message), { code });
}

/**
 * The code an error carries (the engine's rejections and `codedError`), else `fallback`.
 * @param {unknown} e
 * @param {ErrorCode} fallback
 * @returns {ErrorCode}
 */
function codeOf(e, fallback) {
  const code = e && typeof e === 'object' && 'code' in e ? e.code : undefined;
  return typeof code === 'string' ? /** @type {ErrorCode} */ (code) : fallback;
}

/** @param {unknown} e */
function messageOf(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  if (e && typeof e === 'object' && 'message' in e && typeof e.message === 'string') return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

/**
 * The WebAssembly module, started once: the threaded build (shared memory, helper threads) when
 * more than one thread is asked for and this worker may share memory, else the single-thread
 * build. (Sharing memory needs a cross-origin isolated page: the headers
 * `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp`.)
 * @param {number | undefined} threads asked for (undefined: 8); never more than the browser's cores
 * @returns {Promise<SingleThreadModule | ThreadedModule>}
 */
function initWasm(threads) {
  if (!wasmReady) wasmReady = startWasm(Math.min(threads ?? MAX_DEFAULT_THREADS, cores()));
  return wasmReady;
}

/** The browser's cores (1 when it does not say). */
function cores() {
  return Math.max(1, Number(self.navigator?.hardwareConcurrency) || 1);
}

/** @param {number} threads */
async function startWasm(threads) {
  const isolated = self.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
  if (threads > 1 && !isolated) {
    post({
      type: 'warning',
      message:
        'the draft model runs on one thread: the page is not cross-origin isolated (WebAssembly ' +
        'threads need the headers Cross-Origin-Opener-Policy: same-origin and ' +
        'Cross-Origin-Embedder-Policy: require-corp)',
    });
  }
  if (threads > 1 && isolated) {
    /** @type {ThreadedModule | null} */
    let mod = null;
    try {
      mod = await import('./wasm-threads/hlm_web_client.js');
      await mod.default({ module_or_path: new URL('./wasm-threads/hlm_web_client_bg.wasm', import.meta.url) });
    } catch (e) {
      post({ type: 'warning', message: `WebAssembly threads are unavailable (${messageOf(e)}); the draft model runs on one thread` });
      mod = null;
    }
    if (mod) {
      await startHelpers(mod, threads - 1);
      return mod;
    }
  }
  const mod = await import('./wasm/hlm_web_client.js');
  await mod.default({ module_or_path: new URL('./wasm/hlm_web_client_bg.wasm', import.meta.url) });
  return mod;
}

/**
 * Starts `n` helper threads (pool-worker.js) over the threaded module's memory and waits until
 * they run. Until all have started, the products run on this worker alone; if one fails, they
 * stay there (a warning says so).
 * @param {ThreadedModule} mod
 * @param {number} n
 */
async function startHelpers(mod, n) {
  if (n < 1 || !mod.pool_init(n)) return;
  const module = mod.wasm_module();
  const memory = mod.wasm_memory();
  /** @type {Promise<void>[]} */
  const started = [];
  for (let i = 0; i < n; i++) {
    const w = new Worker(new URL('./pool-worker.js', import.meta.url), { type: 'module', name: `hlm-helper-${i + 1}` });
    helpers.push(w);
    started.push(
      new Promise((resolve, reject) => {
        w.onmessage = (e) => (e.data?.type === 'ready' ? resolve() : reject(new Error(e.data?.message || 'no reason given')));
        w.onerror = (e) => {
          e.preventDefault?.();
          reject(new Error(e.message || 'pool-worker.js could not be loaded'));
        };
      }),
    );
    w.postMessage({ module, memory });
  }
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not all started within ${HELPERS_TIMEOUT_MS / 1000} s`)), HELPERS_TIMEOUT_MS);
  });
  try {
    await Promise.race([Promise.all(started), timeout]);
  } catch (e) {
    post({ type: 'warning', message: `the draft model's helper threads failed (${messageOf(e)}); it runs on one thread` });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads a response body into ONE Uint8Array, posting progress.
 * With a Content-Length the array is preallocated at that size and the chunks are copied into
 * it as they arrive; without one (or if the body turns out longer, e.g. a compressed transfer)
 * the chunks are kept and concatenated once at the end.
 */
/**
 * @param {Response} response
 * @param {boolean} fromCache
 * @returns {Promise<Uint8Array>}
 */
async function readBody(response, fromCache) {
  const declared = Number(response.headers.get('content-length')) || 0;
  const encoded = (response.headers.get('content-encoding') || 'identity') !== 'identity';
  // With a content-encoding, Content-Length counts the encoded bytes, not what the stream yields.
  const total = encoded ? 0 : declared;
  /** @type {Uint8Array | null} */
  let buf = total > 0 ? new Uint8Array(total) : null;
  /** @type {Uint8Array[]} */
  let chunks = [];
  let loaded = 0;
  let lastPost = 0;
  /** @param {boolean} force */
  const progress = (force) => {
    const now = Date.now();
    if (force || now - lastPost >= PROGRESS_INTERVAL_MS) {
      lastPost = now;
      post({ type: 'progress', loaded, total: Math.max(total, total ? loaded : 0), fromCache });
    }
  };
  progress(true);
  if (!response.body) {
    // No stream (very old engines): one copy from arrayBuffer.
    const all = new Uint8Array(await response.arrayBuffer());
    loaded = all.byteLength;
    progress(true);
    return all;
  }
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (buf && loaded + value.byteLength > buf.byteLength) {
      // Longer than announced: switch to chunks (keep what was read so far as the first chunk).
      chunks = [buf.subarray(0, loaded)];
      buf = null;
    }
    if (buf) buf.set(value, loaded);
    else chunks.push(value);
    loaded += value.byteLength;
    progress(false);
  }
  progress(true);
  if (buf) return loaded === buf.byteLength ? buf : buf.subarray(0, loaded);
  const all = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.byteLength;
  }
  return all;
}

/**
 * A Response over `bytes` WITHOUT copying them in JavaScript: its body is a stream that hands
 * out 1 MiB views (subarray) of the same array. (`new Response(bytes)` would copy the whole
 * file, and `response.clone()` before reading would tee the stream and could buffer up to a
 * second copy when the cache writes slower than the network delivers.) The Cache API copies one
 * chunk at a time into its storage, so the file is held once, plus a chunk.
 */
/** @param {Uint8Array} bytes */
function responseOver(bytes) {
  let off = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (off >= bytes.byteLength) {
        controller.close();
        return;
      }
      const end = Math.min(off + CACHE_CHUNK, bytes.byteLength);
      controller.enqueue(bytes.subarray(off, end));
      off = end;
    },
  });
  return new Response(body, {
    headers: {
      'content-type': 'application/octet-stream',
      'content-length': String(bytes.byteLength),
    },
  });
}

/**
 * Opens the cache, or returns null (with a warning) when Cache Storage is unavailable.
 * @param {string | undefined} cacheName
 */
async function openCache(cacheName) {
  if (!cacheName) return null;
  if (typeof caches === 'undefined') {
    post({
      type: 'warning',
      message:
        'Cache Storage is unavailable (it needs a secure context: https:// or localhost); ' +
        'the model is kept in memory only and will be downloaded again next time',
    });
    return null;
  }
  try {
    return await caches.open(cacheName);
  } catch (e) {
    post({ type: 'warning', message: `Cache Storage unavailable (${messageOf(e)}); the model is kept in memory only` });
    return null;
  }
}

/**
 * The model file's bytes: from Cache Storage when present, else downloaded and stored.
 * @param {string} modelUrl
 * @param {string | undefined} cacheName
 */
async function fetchModel(modelUrl, cacheName) {
  const cache = await openCache(cacheName);
  if (cache) {
    try {
      const hit = await cache.match(modelUrl);
      if (hit) {
        post({ type: 'status', stage: 'reading-cache' });
        const bytes = await readBody(hit, true);
        const expected = Number(hit.headers.get('content-length')) || 0;
        if (!expected || expected === bytes.byteLength) {
          post({ type: 'cache', hit: true });
          return { bytes, fromCache: true };
        }
        post({ type: 'warning', message: 'the cached model was incomplete; downloading it again' });
        await cache.delete(modelUrl);
      }
    } catch (e) {
      post({ type: 'warning', message: `could not read the model from Cache Storage (${messageOf(e)}); downloading it` });
    }
  }
  post({ type: 'cache', hit: false });
  post({ type: 'status', stage: 'downloading' });
  let response;
  try {
    // When Cache Storage keeps the file, keep it out of the HTTP cache (no second copy on disk).
    response = await fetch(modelUrl, cache ? { cache: 'no-store' } : {});
  } catch (e) {
    throw codedError(`model download failed: ${modelUrl}: ${messageOf(e)}`, 'load-failed');
  }
  if (!response.ok) {
    const status = `HTTP ${response.status} ${response.statusText}`.trim();
    throw codedError(`model download failed: ${modelUrl}: ${status}`, 'load-failed');
  }
  const bytes = await readBody(response, false);
  if (cache) await storeModel(cache, modelUrl, bytes);
  return { bytes, fromCache: false };
}

/**
 * @param {Cache} cache
 * @param {string} modelUrl
 * @param {Uint8Array} bytes
 */
async function storeModel(cache, modelUrl, bytes) {
  try {
    if (self.navigator && navigator.storage && navigator.storage.estimate) {
      const { quota, usage } = await navigator.storage.estimate();
      if (typeof quota === 'number' && typeof usage === 'number' && quota - usage < bytes.byteLength) {
        post({
          type: 'warning',
          message:
            `not enough storage quota to cache the model (${bytes.byteLength} bytes needed, ` +
            `${Math.max(0, quota - usage)} available); it is kept in memory only`,
        });
        return;
      }
    }
    post({ type: 'status', stage: 'caching' });
    await cache.put(modelUrl, responseOver(bytes));
  } catch (e) {
    // The kind from the exception's name (the DOM standard's), never from its message text.
    const quota = e instanceof DOMException && e.name === 'QuotaExceededError';
    post({
      type: 'warning',
      message: `${quota ? 'storage quota exceeded' : 'could not store the model in Cache Storage'} ` +
        `(${messageOf(e)}); it is kept in memory only and will be downloaded again next time`,
    });
    try {
      await cache.delete(modelUrl);
    } catch {
      // nothing stored, nothing to remove
    }
  }
}

/**
 * @param {Extract<WorkerRequest, { type: 'load' }>} msg
 * @returns {Promise<Loaded>}
 */
async function load(msg) {
  const t0 = performance.now();
  /** @type {SingleThreadModule | ThreadedModule} */
  let wasm;
  try {
    wasm = await initWasm(msg.threads);
  } catch (e) {
    throw codedError(`the WebAssembly module could not be loaded: ${messageOf(e)}`, 'load-failed');
  }
  const fetched = await fetchModel(msg.modelUrl, msg.cacheName);
  const fromCache = fetched.fromCache;
  /** @type {Uint8Array | null} */
  let bytes = fetched.bytes;
  const t1 = performance.now();
  post({ type: 'status', stage: 'initialising' });
  const size = bytes.byteLength;
  if (engine) {
    // A second load replaces the model (and closes its session).
    const old = engine;
    engine = null;
    await Promise.resolve(old.disconnect()).catch(() => {});
    old.free();
  }
  try {
    engine = wasm.Engine.load(/** @type {Uint8Array<ArrayBuffer>} */ (bytes), msg.modelName || '');
  } finally {
    bytes = null; // the engine has read what it needs (in place); let the file's array go
  }
  const t2 = performance.now();
  post({ type: 'status', stage: 'starting-backend' });
  /** @type {ModelInfo} */
  const info = await engine.use_backend(msg.backend || 'auto');
  const t3 = performance.now();
  return {
    info,
    backendSeconds: (t3 - t2) / 1000,
    seconds: (t2 - t0) / 1000,
    downloadSeconds: (t1 - t0) / 1000,
    initSeconds: (t2 - t1) / 1000,
    bytes: size,
    fromCache,
  };
}

/**
 * @param {Engine} engine
 * @param {Extract<WorkerRequest, { type: 'generate' }>} msg
 */
async function generate(engine, msg) {
  current = msg.id;
  // Aborted while queued: stop at the first token (the engine checks its flag as it delivers one).
  const early = abortAtStart.delete(msg.id);
  try {
    /** @param {TokenEvent} ev */
    const onToken = (ev) => {
      if (ev.notice) post({ type: 'warning', message: ev.notice });
      post({ type: 'token', id: msg.id, ev });
      if (early) engine.abort();
    };
    /** @type {Summary} */
    const summary = await engine.generate(msg.prompt, msg.options || {}, onToken);
    post({ type: 'done', id: msg.id, summary, info: engine.info() });
  } finally {
    current = null;
  }
}

// Requests run one at a time in arrival order, except `abort`, which acts at once (the engine's
// loop yields to the event loop regularly, so this handler runs during a generation). An abort
// for a generation that has already ended is ignored, so it cannot stop the next one.
let queue = Promise.resolve();

/** @param {MessageEvent<WorkerRequest>} event */
self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === 'simulate-gpu-loss') {
    // At once, like abort: it is meant to hit a running generation.
    post({ type: 'gpu-loss', id: msg.id, lost: engine ? engine.simulate_gpu_loss() : false });
    return;
  }
  if (msg.type === 'abort') {
    if (current !== null && (msg.id === undefined || msg.id === current)) engine?.abort();
    else if (msg.id !== undefined && queued.has(msg.id)) abortAtStart.add(msg.id);
    return;
  }
  if (msg.type === 'generate') queued.add(msg.id);
  queue = queue.then(() => handle(msg));
};

/** The loaded engine, or an error saying there is none. */
function loaded() {
  if (!engine) throw codedError('no model loaded', 'error');
  return engine;
}

/**
 * Runs one request and posts its reply (an `error` reply with the failure's code).
 * @param {Exclude<WorkerRequest, { type: 'abort' | 'simulate-gpu-loss' }>} msg
 */
async function handle(msg) {
  const stage = msg.type;
  try {
    switch (msg.type) {
      case 'load': {
        const r = await load(msg);
        post({ type: 'loaded', id: msg.id, ...r });
        break;
      }
      case 'connect': {
        const e = loaded();
        /** @type {VerifierWelcome} */
        const welcome = await e.connect(msg.url, msg.token || undefined, msg.clientName || CLIENT_NAME);
        post({ type: 'connected', id: msg.id, url: msg.url, welcome });
        break;
      }
      case 'generate': {
        queued.delete(msg.id);
        if (!engine) abortAtStart.delete(msg.id);
        await generate(loaded(), msg);
        break;
      }
      case 'backend': {
        /** @type {ModelInfo} */
        const info = await loaded().use_backend(msg.backend || 'auto');
        post({ type: 'backend', id: msg.id, info });
        break;
      }
      case 'disconnect': {
        if (engine) await engine.disconnect();
        post({ type: 'disconnected', id: msg.id });
        break;
      }
      default: {
        /** @type {{ type: unknown, id?: number }} */
        const unknown = msg;
        const message = `unknown message type ${JSON.stringify(unknown.type)}`;
        post({ type: 'error', id: unknown.id, stage: 'protocol', code: 'error', message });
      }
    }
  } catch (e) {
    const code = codeOf(e, stage === 'load' ? 'load-failed' : 'error');
    post({ type: 'error', id: msg.id, stage, code, message: messageOf(e) });
  }
}
