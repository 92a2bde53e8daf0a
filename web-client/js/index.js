// hybrid-llm-web: a draft model in the browser (WebAssembly, in a Web Worker) in front of a
// verifier server; only the tokens the filter marks as informative are uploaded.
//
//   const client = await HybridClient.create({ draftModelUrl, draftModelName, verifierUrl, token });
//   for await (const ev of client.generate('Write a binary search in Rust')) out.append(ev.text);
//
// The events, the summary, the model information and the error codes are the engine's own
// (types.generated.d.ts, generated from the Rust types); the messages to and from the worker are
// declared in worker-messages.d.ts.
//
// @ts-check

/** @typedef {import('./types.generated').Backend} Backend */
/** @typedef {import('./types.generated').ErrorCode} ErrorCode */
/** @typedef {import('./types.generated').FilterMode} FilterMode */
/** @typedef {import('./types.generated').ModelInfo} ModelInfo */
/** @typedef {import('./types.generated').Summary} Summary */
/** @typedef {import('./types.generated').TokenEvent} TokenEvent */
/** @typedef {import('./types.generated').TokenKind} TokenKind */
/** @typedef {import('./types.generated').UncertaintyEstimate} UncertaintyEstimate */
/** @typedef {import('./types.generated').VerifierWelcome} VerifierWelcome */
/** @typedef {import('./worker-messages').EngineOptions} EngineOptions */
/** @typedef {import('./worker-messages').Loaded} Loaded */
/** @typedef {import('./worker-messages').WorkerReply} WorkerReply */
/** @typedef {import('./worker-messages').WorkerRequest} WorkerRequest */
/** @typedef {import('./worker-messages').Stage} Stage */
/** @typedef {import('./index').CreateOptions} CreateOptions */
/** @typedef {import('./index').GenerateOptions} GenerateOptions */
/** @typedef {import('./index').ProgressReport} ProgressReport */

export const VERSION = '0.1.0';

const CREATE = Symbol('create'); // keeps the constructor private to HybridClient.create
/** @type {readonly FilterMode[]} */
export const MODES = Object.freeze(['auto', 'always', 'uncertainty', 'uncertainty+importance', 'learned', 'never']);
/** @type {readonly UncertaintyEstimate[]} */
export const UNCERTAINTY = Object.freeze(['sampled', 'expected']);
/** @type {readonly TokenKind[]} */
export const KINDS = Object.freeze(['skipped', 'uploaded-accepted', 'uploaded-resampled', 'server-generated']);
/** @type {readonly Backend[]} */
export const BACKENDS = Object.freeze(['auto', 'webgpu', 'wasm']);

/**
 * @param {unknown} b
 * @returns {Backend}
 */
function checkBackend(b) {
  if (b === undefined || b === null) return 'auto';
  if (!BACKENDS.includes(/** @type {Backend} */ (b))) {
    throw new HybridError(`backend must be one of ${BACKENDS.join(', ')}, not ${JSON.stringify(b)}`, 'bad-option');
  }
  return /** @type {Backend} */ (b);
}

/** An error with a stable `code` next to its readable message. */
export class HybridError extends Error {
  /**
   * @param {string} message
   * @param {ErrorCode} code
   * @param {string} [raw]
   */
  constructor(message, code, raw) {
    super(message);
    this.name = 'HybridError';
    /** What kind of failure (the engine's `ErrorCode`, generated from Rust). */
    this.code = code;
    /** The engine's own message, when it was reworded. */
    if (raw !== undefined) this.raw = raw;
  }
}

/**
 * The worker's error reply as a HybridError: its code as the engine gave it, the message with
 * what the page knows added (the verifier's URL, the origin to allow).
 * @param {Extract<WorkerReply, { type: 'error' }>} reply
 * @param {string | null} [url]
 */
function errorFor(reply, url) {
  const { code, message } = reply;
  switch (code) {
    case 'unreachable':
      return new HybridError(url && !message.includes(url) ? `${message} (${url})` : message, code, message);
    case 'origin-not-allowed': {
      const origin = globalThis.location ? globalThis.location.origin : 'this page';
      return new HybridError(`${message} (start the verifier with --allowed-origin ${origin})`, code, message);
    }
    case 'load-failed':
      return new HybridError(`could not load the draft model: ${message}`, code, message);
    default:
      return new HybridError(message, code, message);
  }
}

/**
 * `ws(s)://…` for a verifier URL given relative, as http(s), or not at all (this page's /ws).
 * @param {string | null} [url]
 */
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

/**
 * The engine's options: the same names (the engine's `GenerationOptions` are camelCase); a
 * single stop string becomes a list. The engine checks every name and value.
 * @param {GenerateOptions} o
 * @returns {EngineOptions}
 */
function engineOptions(o) {
  const { stop, ...rest } = o;
  /** @type {EngineOptions} */
  const out = { ...rest };
  if (stop !== undefined && stop !== null) {
    const list = typeof stop === 'string' ? [stop] : stop;
    if (!Array.isArray(list) || !list.every((x) => typeof x === 'string' && x.length > 0)) {
      throw new HybridError('stop must be a non-empty string or an array of them', 'bad-option');
    }
    out.stop = list;
  }
  return out;
}

/**
 * A running generation: the events not yet taken, and how it ended.
 * @typedef {object} Generation
 * @property {number} id
 * @property {TokenEvent[]} queue
 * @property {Summary | null} summary
 * @property {HybridError | null} error
 * @property {(() => void) | null} wakeFn
 * @property {() => void} wake
 * @property {() => void} settle
 * @property {Promise<void>} settled
 */

/**
 * A request waiting for the worker's reply.
 * @typedef {object} Pending
 * @property {(reply: WorkerReply) => void} resolve
 * @property {(e: HybridError) => void} reject
 * @property {string | undefined} url
 */

/** Distributes `Omit<T, 'id'>` over a union, so each request keeps its own fields. */
/** @template T @typedef {T extends unknown ? Omit<T, 'id'> : never} WithoutId */

export class HybridClient {
  /** @type {Worker | null} */
  #worker = null;
  /** @type {Map<number, Pending>} */
  #pending = new Map();
  #nextId = 1;
  /** @type {Generation | null} */
  #gen = null;
  #closed = false;
  /** @type {CreateOptions & { cacheName: string, backend: Backend }} */
  #opts;

  /**
   * Use `HybridClient.create`.
   * @param {CreateOptions & { cacheName: string, backend: Backend }} opts
   * @param {symbol} secret
   */
  constructor(opts, secret) {
    if (secret !== CREATE) throw new TypeError('use `await HybridClient.create(options)`');
    this.#opts = opts;
    /** @type {ModelInfo | null} Model info from the engine: { name, vocab_size, layers, weight_bytes, backend, ... }. */
    this.info = null;
    /** @type {ModelInfo['backend'] | null} Where the draft model runs: "webgpu" or "wasm-simd". */
    this.backend = null;
    /** @type {string | null} Why: the self-check's figures on WebGPU, or why WebGPU is not used. */
    this.backendNote = null;
    /** @type {boolean | null} true when the model came from Cache Storage, false when downloaded. */
    this.cacheHit = null;
    /** @type {number | null} Seconds the model took to load (download or cache read, and initialisation). */
    this.loadSeconds = null;
    /** @type {string | null} */
    this.verifierUrl = null;
    /** @type {VerifierWelcome | null} What the verifier said when connecting. */
    this.verifier = null;
    this.connected = false;
    /** @type {Summary | null} The last generation's summary (also the generator's return value). */
    this.lastSummary = null;
    /** @type {number | null} Draft tokens per second of the last generation (tokens / seconds spent drafting). */
    this.draftTokensPerS = null;
    /** @type {string[]} Warnings from the worker (e.g. the model could not be cached). */
    this.warnings = [];
  }

  /**
   * Starts the worker, loads the draft model (from Cache Storage when it is there) and, unless
   * `connect: false`, connects to the verifier.
   * @param {CreateOptions} opts
   */
  static async create(opts) {
    if (!opts || !opts.draftModelUrl) throw new HybridError('draftModelUrl is required', 'bad-option');
    const backend = checkBackend(opts.backend);
    if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) {
      throw new HybridError(`threads must be a whole number of at least 1, not ${JSON.stringify(opts.threads)}`, 'bad-option');
    }
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
    const worker = workerUrl
      ? new Worker(workerUrl, { type: 'module' })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.#worker = worker;
    worker.onmessage = (e) => this.#onMessage(e.data);
    worker.onerror = (e) => {
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
    worker.onmessageerror = () => {
      this.#fail(new HybridError('a message from the draft-model worker could not be read', 'worker-failed'));
    };
  }

  /** @param {ProgressReport} msg */
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

  /** @param {WorkerRequest} msg */
  #post(msg) {
    if (!this.#worker) throw new HybridError('the client is closed', 'closed');
    this.#worker.postMessage(msg);
  }

  /**
   * Sends a request and resolves with the worker's reply to it.
   * @param {WithoutId<Exclude<WorkerRequest, { type: 'abort' | 'generate' }>>} msg
   * @returns {Promise<WorkerReply>}
   */
  #request(msg) {
    if (this.#closed) return Promise.reject(new HybridError('the client is closed', 'closed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, url: 'url' in msg ? msg.url : undefined });
      this.#post(/** @type {WorkerRequest} */ ({ ...msg, id }));
    });
  }

  /** @param {WorkerReply} msg */
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
          g.queue.push(msg.ev);
          g.wake();
        }
        return;
      }
      case 'done': {
        const g = this.#gen;
        if (g && g.id === msg.id) {
          this.draftTokensPerS = msg.summary.draftTokensPerS;
          this.#setInfo(msg.info);
          g.summary = msg.summary;
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
      g.error = errorFor(msg, this.verifierUrl);
      g.settle();
      g.wake();
      return;
    }
    const p = msg.id === undefined ? undefined : this.#pending.get(msg.id);
    if (!p || msg.id === undefined) return;
    this.#pending.delete(msg.id);
    if (msg.type === 'error') p.reject(errorFor(msg, p.url));
    else p.resolve(msg);
  }

  /** @param {HybridError} err */
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
    const { draftModelUrl, draftModelName, cacheName, backend, threads } = this.#opts;
    const modelUrl = new URL(draftModelUrl, globalThis.location ? globalThis.location.href : undefined).href;
    const r = expect(
      await this.#request({ type: 'load', modelUrl, modelName: draftModelName || '', cacheName, backend, threads }),
      'loaded',
    );
    this.#setInfo(r.info);
    this.cacheHit = r.fromCache;
    this.loadSeconds = r.seconds;
    this.#report({ type: 'loaded', info: r.info, seconds: r.seconds, fromCache: r.fromCache, bytes: r.bytes });
  }

  /** @param {ModelInfo} info */
  #setInfo(info) {
    this.info = info;
    this.backend = info.backend;
    this.backendNote = info.backend_note;
  }

  /**
   * Moves the draft model to another backend ('auto' | 'webgpu' | 'wasm'; see `CreateOptions.backend`)
   * between generations. Resolves with the new `info`; `backend` and `backendNote` say what runs.
   * @param {Backend} backend
   */
  async setBackend(backend) {
    if (this.#gen) throw new HybridError('a generation is running on this client', 'busy');
    const r = expect(await this.#request({ type: 'backend', backend: checkBackend(backend) }), 'backend');
    this.#setInfo(r.info);
    return r.info;
  }

  /**
   * Connects (or reconnects) to the verifier. Defaults: the URL and token given to `create`;
   * without a URL, ws(s)://<this page's host>/ws.
   * @param {string} [verifierUrl]
   * @param {string} [token]
   */
  async connect(verifierUrl, token) {
    if (verifierUrl !== undefined) this.#opts.verifierUrl = verifierUrl;
    if (token !== undefined) this.#opts.token = token;
    const url = resolveVerifierUrl(this.#opts.verifierUrl);
    this.verifierUrl = url;
    this.connected = false;
    this.verifier = null;
    const { clientName } = this.#opts;
    const r = expect(await this.#request({ type: 'connect', url, token: this.#opts.token || undefined, clientName }), 'connected');
    this.verifier = r.welcome;
    this.connected = true;
    this.#report({ type: 'connected', url, verifier: this.verifier });
  }

  /**
   * Generates a completion of `prompt`, yielding each token once it is final. The generator's
   * return value is the summary (also kept in `client.lastSummary`). Stopping the iteration early
   * (break) aborts the generation.
   * @param {string} prompt
   * @param {GenerateOptions} [options]
   * @returns {AsyncGenerator<TokenEvent, Summary, undefined>}
   */
  async *generate(prompt, options = {}) {
    if (this.#closed) throw new HybridError('the client is closed', 'closed');
    if (this.#gen) throw new HybridError('a generation is already running on this client', 'busy');
    const opts = engineOptions(options);
    if (this.#opts.energyConstants) opts.energyConstants = this.#opts.energyConstants;
    /** @type {Generation} */
    const g = {
      id: this.#nextId++,
      queue: [],
      summary: null,
      error: null,
      wakeFn: null,
      wake: () => {
        const w = g.wakeFn;
        g.wakeFn = null;
        if (w) w();
      },
      settle: () => {},
      settled: Promise.resolve(),
    };
    g.settled = new Promise((resolve) => {
      g.settle = resolve;
    });
    this.#gen = g;
    let posted = false;
    try {
      this.#post({ type: 'generate', id: g.id, prompt: String(prompt), options: opts });
      posted = true;
      for (;;) {
        const ev = g.queue.shift();
        if (ev) {
          yield ev;
          continue;
        }
        if (g.error) throw g.error;
        if (g.summary) return g.summary;
        await new Promise((resolve) => {
          g.wakeFn = () => resolve(undefined);
        });
      }
    } finally {
      if (posted && !g.summary && !g.error && !this.#closed) {
        // The consumer stopped early: stop the engine and wait until it has.
        this.#post({ type: 'abort', id: g.id });
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
    const r = expect(await this.#request({ type: 'simulate-gpu-loss' }), 'gpu-loss');
    return r.lost === true;
  }

  /** Stops the running generation soon; it then ends with stopReason "aborted". */
  abort() {
    if (this.#gen && !this.#closed) this.#post({ type: 'abort', id: this.#gen.id });
  }

  /** Closes the verifier connection (the model stays loaded; `connect()` again to go on). */
  async disconnect() {
    if (this.#closed) return;
    await this.#request({ type: 'disconnect' });
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

/**
 * The reply of the type a request expects (the worker answers each request with its own type,
 * or an error, which rejects the request instead).
 * @template {WorkerReply['type']} K
 * @param {WorkerReply} reply
 * @param {K} type
 * @returns {Extract<WorkerReply, { type: K }>}
 */
function expect(reply, type) {
  if (reply.type !== type) {
    throw new HybridError(`the worker answered ${reply.type} where ${type} was expected`, 'error');
  }
  return /** @type {Extract<WorkerReply, { type: K }>} */ (reply);
}
