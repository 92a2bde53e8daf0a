// hybrid-llm-web: a draft model in the browser (WebAssembly, in a Web Worker) in front of a
// verifier server; only the tokens the filter marks as informative are uploaded.
//
//   const client = await HybridClient.create({ draftModelUrl, draftModelName, verifierUrl, token });
//   for await (const ev of client.generate('Write a binary search in Rust')) out.append(ev.text);



export const VERSION = '0.1.0';

const CREATE = Symbol('create'); // keeps the constructor private to HybridClient.create
export const MODES = Object.freeze(['always', 'uncertainty', 'uncertainty+importance', 'learned', 'never']);
export const UNCERTAINTY = Object.freeze(['sampled', 'expected']);
export const KINDS = Object.freeze(['skipped', 'uploaded-accepted', 'uploaded-resampled']);
export const BACKENDS = Object.freeze(['auto', 'webgpu', 'wasm']);

function checkBackend(b) {
  if (b === undefined || b === null) return 'auto';
  if (!BACKENDS.includes(b)) {
    throw new HybridError(`backend must be one of ${BACKENDS.join(', ')}, not ${JSON.stringify(b)}`, 'bad-option');
  }
  return b;
}

/** An error with a stable `code` next to its readable message. */
export class HybridError extends Error {
  constructor(message, code, raw) {
    super(message);
    this.name = 'HybridError';
    /** 'unreachable' | 'wrong-token' | 'model-mismatch' | 'overloaded' | 'origin-not-allowed' |
     *  'load-failed' | 'worker-failed' | 'busy' | 'closed' | 'bad-option' | 'error' */
    this.code = code;
    /** The engine's own message, when it was reworded. */
    if (raw !== undefined) this.raw = raw;
  }
}

function errorFor(stage, raw, url) {
  const msg = String(raw || 'unknown error');
  const rest = (prefix) => {
    const r = msg.slice(prefix.length).replace(/^[\s:,-]+/, '');
    return r ? `: ${r}` : '';
  };
  if (/^verifier unreachable/i.test(msg)) {
    const text = url && !msg.includes(url) ? `verifier unreachable at ${url}${rest('verifier unreachable')}` : msg;
    return new HybridError(text, 'unreachable', msg);
  }
  if (/^wrong token/i.test(msg)) {
    const text = msg.length > 'wrong token'.length ? msg : `wrong token: the verifier${url ? ` at ${url}` : ''} refused the access token`;
    return new HybridError(text, 'wrong-token', msg);
  }
  if (/^model mismatch/i.test(msg)) return new HybridError(msg, 'model-mismatch', msg);
  if (/^overloaded/i.test(msg)) return new HybridError(msg, 'overloaded', msg);
  if (/^origin not allowed/i.test(msg)) {
    const origin = globalThis.location ? globalThis.location.origin : 'this page';
    return new HybridError(`${msg} (start the verifier with --allowed-origin ${origin})`, 'origin-not-allowed', msg);
  }
  if (stage === 'load') return new HybridError(`could not load the draft model: ${msg}`, 'load-failed', msg);
  return new HybridError(msg, 'error', msg);
}

function n(x) {
  if (typeof x === 'bigint') return Number(x);
  return typeof x === 'number' ? x : 0;
}

/** `ws(s)://…` for a verifier URL given relative, as http(s), or not at all (this page's /ws). */
export function resolveVerifierUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  if (!url && !base) throw new HybridError('verifierUrl is required outside a web page', 'bad-option');
  const u = new URL(url || '/ws', base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new HybridError(`verifierUrl must be ws://, wss://, http:// or https://, not ${u.protocol}`, 'bad-option');
  }
  return u.href;
}

function wasmOptions(o = {}) {
  const out = {};
  const set = (k, v) => {
    if (v !== undefined && v !== null) out[k] = v;
  };
  if (o.mode !== undefined && !MODES.includes(o.mode)) {
    throw new HybridError(`unknown mode ${JSON.stringify(o.mode)} (one of ${MODES.join(', ')})`, 'bad-option');
  }
  set('max_tokens', o.maxTokens);
  set('temperature', o.temperature);
  set('uncertainty_threshold', o.uncertaintyThreshold);
  set('importance_strictness', o.importanceStrictness);
  set('mode', o.mode);
  set('seed', o.seed);
  set('chat', o.chat);
  set('importance_rule', o.importanceRule);
  if (o.uncertainty !== undefined && !UNCERTAINTY.includes(o.uncertainty)) {
    throw new HybridError(
      `unknown uncertainty ${JSON.stringify(o.uncertainty)} (one of ${UNCERTAINTY.join(', ')})`,
      'bad-option',
    );
  }
  set('uncertainty', o.uncertainty);
  // Mode "learned": the filter head as its file holds it (the engine checks it).
  set('head', o.filterHead);
  set('uploads_per_round', o.uploadsPerRound);
  set('tv_bound', o.tvBound);
  if (o.stop !== undefined && o.stop !== null) {
    const stop = typeof o.stop === 'string' ? [o.stop] : o.stop;
    if (!Array.isArray(stop) || !stop.every((x) => typeof x === 'string' && x.length > 0)) {
      throw new HybridError('stop must be a non-empty string or an array of them', 'bad-option');
    }
    out.stop = stop;
  }
  set('stop_at_code_block_end', o.stopAtCodeBlockEnd);
  return out;
}

// `e`: the engine's live energy estimate (hlm-engine's energy.rs, computed in the wasm module
// with the same model as the evaluation): { energy, standard_hlm, standard_hlm_bytes_up, ... }.
function camelTotals(t, e = {}) {
  const tokens = n(t.tokens);
  const uploaded = n(t.uploaded);
  const en = e.energy || {};
  const std = e.standard_hlm || {};
  return {
    tokens,
    skipped: n(t.skipped),
    uploaded,
    accepted: n(t.accepted),
    resampled: n(t.resampled),
    discarded: n(t.discarded),
    rounds: n(t.rounds),
    bytesUp: n(t.bytes_up),
    bytesDown: n(t.bytes_down),
    distBits: n(t.dist_bits),
    llmPasses: n(t.llm_forward_passes),
    llmForwardTokens: n(t.llm_forward_tokens),
    llmComputeS: n(t.llm_compute_us) / 1e6,
    reconnects: n(t.reconnects),
    replayedTokens: n(t.replayed_tokens),
    uploadRate: tokens > 0 ? uploaded / tokens : 0,
    energyJ: n(en.device_j),
    draftEnergyJ: n(en.compute_j),
    radioEnergyJ: n(en.tx_j) + n(en.rx_j),
    idleEnergyJ: n(en.idle_j),
    serverEnergyJ: n(en.server_j),
    systemEnergyJ: n(en.total_j),
    standardHlmEnergyJ: n(std.device_j),
    standardHlmSystemEnergyJ: n(std.total_j),
    standardHlmBytesUp: n(e.standard_hlm_bytes_up),
    standardHlmBytesDown: n(e.standard_hlm_bytes_down),
    standardHlmLlmPasses: n(e.standard_hlm_llm_passes),
  };
}

function camelEvent(ev) {
  return {
    index: ev.index,
    id: ev.id,
    text: ev.text,
    kind: ev.kind,
    drafted: ev.drafted ?? null,
    uncertainty: ev.uncertainty,
    importance: ev.importance ?? null,
    totals: camelTotals(ev.totals || {}, ev.energy),
    draftTimeS: n(ev.draft_time_s),
    wallTimeS: n(ev.wall_time_s),
    notice: ev.notice ?? null,
  };
}

function camelSummary(s, draftTokensPerS) {
  return {
    ...camelTotals(s, s.energy),
    stopReason: s.stop_reason,
    wallTimeS: n(s.wall_time_s),
    draftTimeS: n(s.draft_time_s),
    waitTimeS: n(s.wait_time_s),
    tokensPerS: n(s.tokens_per_s),
    uploadRate: n(s.upload_rate),
    draftTokensPerS: draftTokensPerS ?? null,
    text: s.text,
    ids: s.ids,
    mode: s.mode,
    promptTokens: n(s.prompt_tokens),
    draftBackend: s.draft_backend || null,
    notices: s.notices || [],
    raw: s,
  };
}

export class HybridClient {
  #worker;
  #pending = new Map();
  #nextId = 1;
  #gen = null;
  #closed = false;
  #opts;

  /** Use `HybridClient.create`. */
  constructor(opts, secret) {
    if (secret !== CREATE) throw new TypeError('use `await HybridClient.create(options)`');
    this.#opts = opts;
    /** Model info from the engine: { name, vocab_size, layers, weight_bytes, backend, ... }. */
    this.info = null;
    /** Where the draft model runs: "webgpu" or "wasm-simd". */
    this.backend = null;
    /** Why: the self-check's figures on WebGPU, or why WebGPU is not used. */
    this.backendNote = null;
    /** true when the model came from Cache Storage, false when downloaded. */
    this.cacheHit = null;
    /** Seconds the model took to load (download or cache read, and initialisation). */
    this.loadSeconds = null;
    this.verifierUrl = null;
    /** What the verifier said when connecting: { server, verifier_model, max_context }. */
    this.verifier = null;
    this.connected = false;
    /** The last generation's summary (also the generator's return value). */
    this.lastSummary = null;
    /** Draft tokens per second of the last generation (tokens / seconds spent drafting). */
    this.draftTokensPerS = null;
    /** Warnings from the worker (e.g. the model could not be cached). */
    this.warnings = [];
  }

  /**
   * Starts the worker, loads the draft model (from Cache Storage when it is there) and, unless
   * `connect: false`, connects to the verifier.
   */
  static async create(opts = {}) {
    if (!opts.draftModelUrl) throw new HybridError('draftModelUrl is required', 'bad-option');
    const backend = checkBackend(opts.backend);
    const client = new HybridClient({ cacheName: 'hybrid-llm-models', ...opts, backend }, CREATE);
    try {
      client.#start();
      await client.#load();
      if (opts.connect !== false) await client.connect();
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  #start() {
    const { workerUrl } = this.#opts;
    this.#worker = workerUrl
      ? new Worker(workerUrl, { type: 'module' })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.#worker.onmessage = (e) => this.#onMessage(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault?.();
      const detail = e.message || 'the script or its WebAssembly module could not be loaded';
      this.#fail(
        new HybridError(
          `the draft-model worker failed: ${detail} (check that worker.js, wasm/hlm_web_client.js ` +
            'and wasm/hlm_web_client_bg.wasm are served, as text/javascript and application/wasm)',
          'worker-failed',
        ),
      );
    };
    this.#worker.onmessageerror = () => {
      this.#fail(new HybridError('a message from the draft-model worker could not be read', 'worker-failed'));
    };
  }

  #report(msg) {
    const cb = this.#opts.onProgress;
    if (cb) {
      try {
        cb(msg);
      } catch (e) {
        console.error('onProgress threw', e);
      }
    }
  }

  #request(msg, stage) {
    if (this.#closed) return Promise.reject(new HybridError('the client is closed', 'closed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, stage, url: msg.url });
      this.#worker.postMessage({ ...msg, id });
    });
  }

  #onMessage(msg) {
    switch (msg.type) {
      case 'progress':
      case 'status':
        this.#report(msg);
        return;
      case 'cache':
        this.cacheHit = msg.hit;
        this.#report(msg);
        return;
      case 'warning':
        this.warnings.push(msg.message);
        if (this.#opts.onWarning) this.#opts.onWarning(msg.message);
        else console.warn(`hybrid-llm-web: ${msg.message}`);
        this.#report(msg);
        return;
      case 'token': {
        const g = this.#gen;
        if (g && g.id === msg.id) {
          g.queue.push(camelEvent(msg.ev));
          g.wake();
        }
        return;
      }
      case 'done': {
        const g = this.#gen;
        if (g && g.id === msg.id) {
          this.draftTokensPerS = msg.draftTokensPerS ?? null;
          if (msg.info) this.#setInfo(msg.info);
          g.summary = camelSummary(msg.summary, msg.draftTokensPerS);
          this.lastSummary = g.summary;
          g.settle();
          g.wake();
        }
        return;
      }
      default:
        break;
    }
    const g = this.#gen;
    if (msg.type === 'error' && g && g.id === msg.id) {
      g.error = errorFor('generate', msg.message, this.verifierUrl);
      g.settle();
      g.wake();
      return;
    }
    const p = this.#pending.get(msg.id);
    if (!p) return;
    this.#pending.delete(msg.id);
    if (msg.type === 'error') p.reject(errorFor(p.stage, msg.message, p.url));
    else p.resolve(msg);
  }

  #fail(err) {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    const g = this.#gen;
    if (g && !g.summary && !g.error) {
      g.error = err;
      g.settle();
      g.wake();
    }
  }

  async #load() {
    const { draftModelUrl, draftModelName, cacheName, backend } = this.#opts;
    const modelUrl = new URL(draftModelUrl, globalThis.location ? globalThis.location.href : undefined).href;
    const r = await this.#request({ type: 'load', modelUrl, modelName: draftModelName || '', cacheName, backend }, 'load');
    this.#setInfo(r.info);
    this.cacheHit = r.fromCache;
    this.loadSeconds = r.seconds;
    this.#report({ type: 'loaded', info: r.info, seconds: r.seconds, fromCache: r.fromCache, bytes: r.bytes });
  }

  #setInfo(info) {
    this.info = info;
    this.backend = (info && info.backend) || null;
    this.backendNote = (info && info.backend_note) || null;
  }

  /**
   * Moves the draft model to another backend ('auto' | 'webgpu' | 'wasm'; see `CreateOptions.backend`)
   * between generations. Resolves with the new `info`; `backend` and `backendNote` say what runs.
   */
  async setBackend(backend) {
    if (this.#gen) throw new HybridError('a generation is running on this client', 'busy');
    const r = await this.#request({ type: 'backend', backend: checkBackend(backend) }, 'backend');
    this.#setInfo(r.info);
    return r.info;
  }

  /**
   * Connects (or reconnects) to the verifier. Defaults: the URL and token given to `create`;
   * without a URL, ws(s)://<this page's host>/ws.
   */
  async connect(verifierUrl, token) {
    if (verifierUrl !== undefined) this.#opts.verifierUrl = verifierUrl;
    if (token !== undefined) this.#opts.token = token;
    const url = resolveVerifierUrl(this.#opts.verifierUrl);
    this.verifierUrl = url;
    this.connected = false;
    this.verifier = null;
    const msg = { type: 'connect', url, token: this.#opts.token || undefined };
    if (this.#opts.clientName) msg.clientName = this.#opts.clientName;
    const r = await this.#request(msg, 'connect');
    this.verifier = r.welcome || null;
    this.connected = true;
    this.#report({ type: 'connected', url, verifier: this.verifier });
  }

  /**
   * Generates a completion of `prompt`, yielding each token once it is final. The generator's
   * return value is the summary (also kept in `client.lastSummary`). Stopping the iteration early
   * (break) aborts the generation.
   */
  async *generate(prompt, options = {}) {
    if (this.#closed) throw new HybridError('the client is closed', 'closed');
    if (this.#gen) throw new HybridError('a generation is already running on this client', 'busy');
    const opts = wasmOptions(options);
    if (this.#opts.energyConstants) opts.energy_constants = this.#opts.energyConstants;
    const request = { type: 'generate', prompt: String(prompt), options: opts };
    const g = { id: this.#nextId++, queue: [], summary: null, error: null, wakeFn: null };
    g.wake = () => {
      const w = g.wakeFn;
      g.wakeFn = null;
      if (w) w();
    };
    g.settled = new Promise((resolve) => {
      g.settle = resolve;
    });
    this.#gen = g;
    let posted = false;
    try {
      this.#worker.postMessage({ ...request, id: g.id });
      posted = true;
      for (;;) {
        while (g.queue.length) yield g.queue.shift();
        if (g.error) throw g.error;
        if (g.summary) return g.summary;
        await new Promise((resolve) => {
          g.wakeFn = resolve;
        });
      }
    } finally {
      if (posted && !g.summary && !g.error && !this.#closed) {
        // The consumer stopped early: stop the engine and wait until it has.
        this.#worker.postMessage({ type: 'abort', id: g.id });
        await g.settled;
      }
      if (this.#gen === g) this.#gen = null;
    }
  }

  /**
   * Destroys the WebGPU device the draft model runs on, as a driver reset would (compare WebGL's
   * `loseContext()`), to test how an app handles the fallback: the running or next generation
   * continues on WASM SIMD, a token's `notice` and a warning say so. Resolves with false when the
   * model is not on WebGPU.
   */
  async simulateGpuLoss() {
    const r = await this.#request({ type: 'simulate-gpu-loss' }, 'backend');
    return r.lost === true;
  }

  /** Stops the running generation soon; it then ends with stopReason "aborted". */
  abort() {
    if (this.#gen && !this.#closed) this.#worker.postMessage({ type: 'abort', id: this.#gen.id });
  }

  /** Closes the verifier connection (the model stays loaded; `connect()` again to go on). */
  async disconnect() {
    if (this.#closed) return;
    await this.#request({ type: 'disconnect' }, 'disconnect');
    this.connected = false;
  }

  /** Ends the worker, which frees the model and closes the connection. The client cannot be used afterwards. */
  close() {
    if (this.#closed) return;
    this.#fail(new HybridError('the client is closed', 'closed'));
    this.#closed = true;
    this.connected = false;
    this.#worker?.terminate();
  }
}
