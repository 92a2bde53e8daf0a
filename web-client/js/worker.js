// Module Web Worker running the draft model (WebAssembly) off the page's main thread.
//
// Protocol (main thread -> worker):
//   {type:"load", id?, modelUrl, modelName, cacheName}   modelUrl absolute (resolve it on the page)
//   {type:"connect", id?, url, token?, clientName?}
//   {type:"generate", id, prompt, options}                options in the engine's snake_case form
//   {type:"abort", id?}                                   stops generation `id` (running or still queued);
//                                                         without id, the running one
//   {type:"disconnect", id?}
// Worker -> main thread:
//   {type:"progress", loaded, total, fromCache}           total is 0 when the size is unknown
//   {type:"cache", hit}                                   hit: the model came from Cache Storage
//   {type:"warning", message}                             e.g. cache unavailable or over quota
//   {type:"status", stage}                                "downloading" | "reading-cache" | "caching" | "initialising"
//   {type:"loaded", id, info, seconds, downloadSeconds, initSeconds, bytes, fromCache}
//   {type:"connected", id, url, welcome}                  welcome: {server, verifier_model, max_context} from the engine
//   {type:"disconnected", id}
//   {type:"token", id, ev}                                one per final token, in order
//   {type:"done", id, summary, draftTokensPerS}
//   {type:"error", id, stage, message}                    stage: "load" | "connect" | "generate" | "disconnect" | "protocol"
// `id` echoes the request's id (absent if the request had none).

import init, { Engine } from './wasm/hlm_web_client.js';

const CLIENT_NAME = 'hybrid-llm-web/0.1.0';
const PROGRESS_INTERVAL_MS = 100;
const CACHE_CHUNK = 1 << 20; // bytes per chunk handed to the Cache API when storing the model

let wasmReady = null;
let engine = null;
let current = null; // id of the running generation
const queued = new Set(); // ids of generations waiting their turn
const abortAtStart = new Set(); // queued ids aborted before they started

function post(msg) {
  self.postMessage(msg);
}

function messageOf(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  if (e && typeof e.message === 'string') return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

// Engine results as plain objects and numbers whatever the Rust side's serializer produced
// (serde-wasm-bindgen turns maps, and structs with #[serde(flatten)], into ES Maps, and may give
// 64-bit integers as BigInt).
function plain(v) {
  if (v instanceof Map) {
    const o = {};
    for (const [k, x] of v) o[k] = plain(x);
    return o;
  }
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object' && !ArrayBuffer.isView(v)) {
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

function initWasm() {
  if (!wasmReady) {
    wasmReady = init({ module_or_path: new URL('./wasm/hlm_web_client_bg.wasm', import.meta.url) });
  }
  return wasmReady;
}

/**
 * Reads a response body into ONE Uint8Array, posting progress.
 * With a Content-Length the array is preallocated at that size and the chunks are copied into
 * it as they arrive; without one (or if the body turns out longer, e.g. a compressed transfer)
 * the chunks are kept and concatenated once at the end.
 */
async function readBody(response, fromCache) {
  const declared = Number(response.headers.get('content-length')) || 0;
  const encoded = (response.headers.get('content-encoding') || 'identity') !== 'identity';
  // With a content-encoding, Content-Length counts the encoded bytes, not what the stream yields.
  const total = encoded ? 0 : declared;
  let buf = total > 0 ? new Uint8Array(total) : null;
  let chunks = buf ? null : [];
  let loaded = 0;
  let lastPost = 0;
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

/** Opens the cache, or returns null (with a warning) when Cache Storage is unavailable. */
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

/** The model file's bytes: from Cache Storage when present, else downloaded and stored. */
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
    throw new Error(`model download failed: ${modelUrl}: ${messageOf(e)}`);
  }
  if (!response.ok) {
    throw new Error(`model download failed: ${modelUrl}: HTTP ${response.status} ${response.statusText}`.trim());
  }
  const bytes = await readBody(response, false);
  if (cache) await storeModel(cache, modelUrl, bytes);
  return { bytes, fromCache: false };
}

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
    const quota = e && (e.name === 'QuotaExceededError' || /quota/i.test(messageOf(e)));
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

async function load(msg) {
  const t0 = performance.now();
  await initWasm();
  let { bytes, fromCache } = await fetchModel(msg.modelUrl, msg.cacheName);
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
    engine = Engine.load(bytes, msg.modelName || '');
  } finally {
    bytes = null; // the engine has read what it needs (in place); let the file's array go
  }
  const t2 = performance.now();
  post({ type: 'status', stage: 'starting-backend' });
  const info = plain(await engine.use_backend(msg.backend || 'auto'));
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

async function generate(msg) {
  current = msg.id;
  // Aborted while queued: stop at the first token (the engine checks its flag as it delivers one).
  const early = abortAtStart.delete(msg.id);
  try {
    const summary = plain(
      await engine.generate(msg.prompt, msg.options || {}, (ev) => {
        const e = plain(ev);
        if (e.notice) post({ type: 'warning', message: e.notice });
        post({ type: 'token', id: msg.id, ev: e });
        if (early) engine.abort();
      }),
    );
    const draftTokensPerS = summary.draft_time_s > 0 ? summary.tokens / summary.draft_time_s : null;
    post({ type: 'done', id: msg.id, summary, draftTokensPerS, info: plain(engine.info()) });
  } finally {
    current = null;
  }
}

// Requests run one at a time in arrival order, except `abort`, which acts at once (the engine's
// loop yields to the event loop regularly, so this handler runs during a generation). An abort
// for a generation that has already ended is ignored, so it cannot stop the next one.
let queue = Promise.resolve();

self.onmessage = (event) => {
  const msg = event.data || {};
  if (msg.type === 'simulate-gpu-loss') {
    // At once, like abort: it is meant to hit a running generation.
    post({ type: 'gpu-loss', id: msg.id, lost: engine ? engine.simulate_gpu_loss() : false });
    return;
  }
  if (msg.type === 'abort') {
    if (current !== null && (msg.id === undefined || msg.id === current)) engine.abort();
    else if (queued.has(msg.id)) abortAtStart.add(msg.id);
    return;
  }
  if (msg.type === 'generate') queued.add(msg.id);
  queue = queue.then(() => handle(msg));
};

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
        if (!engine) throw new Error('no model loaded');
        const welcome = await engine.connect(msg.url, msg.token || undefined, msg.clientName || CLIENT_NAME);
        post({ type: 'connected', id: msg.id, url: msg.url, welcome: plain(welcome ?? null) });
        break;
      }
      case 'generate': {
        queued.delete(msg.id);
        if (!engine) {
          abortAtStart.delete(msg.id);
          throw new Error('no model loaded');
        }
        await generate(msg);
        break;
      }
      case 'backend': {
        if (!engine) throw new Error('no model loaded');
        const info = plain(await engine.use_backend(msg.backend || 'auto'));
        post({ type: 'backend', id: msg.id, info });
        break;
      }
      case 'disconnect': {
        if (engine) await engine.disconnect();
        post({ type: 'disconnected', id: msg.id });
        break;
      }
      default:
        post({ type: 'error', id: msg.id, stage: 'protocol', message: `unknown message type ${JSON.stringify(msg.type)}` });
    }
  } catch (e) {
    post({ type: 'error', id: msg.id, stage, message: messageOf(e) });
  }
}
