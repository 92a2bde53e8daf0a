// Types of hybrid-llm-web (hand-written; keep in step with index.js, worker.js and the engine's JSON).

export declare const VERSION: string;

/** Filter modes: `always` = standard HLM, `uncertainty` = U-HLM, `uncertainty+importance` = ours, `never` = draft alone. */
export type Mode = 'always' | 'uncertainty' | 'uncertainty+importance' | 'learned' | 'never';
export declare const MODES: readonly Mode[];
export declare const UNCERTAINTY: readonly ('sampled' | 'expected')[];

/** How a token came to be: kept locally, uploaded and accepted, or uploaded and replaced by the verifier. */
export type TokenKind = 'skipped' | 'uploaded-accepted' | 'uploaded-resampled';
export declare const KINDS: readonly TokenKind[];

export type StopReason = 'end-of-sequence' | 'max-tokens' | 'aborted' | 'stop-string' | 'code-block-end';

export type ErrorCode =
  | 'unreachable'
  | 'wrong-token'
  | 'model-mismatch'
  | 'overloaded'
  | 'origin-not-allowed'
  | 'load-failed'
  | 'worker-failed'
  | 'busy'
  | 'closed'
  | 'bad-option'
  | 'error';

export declare class HybridError extends Error {
  readonly name: 'HybridError';
  readonly code: ErrorCode;
  /** The engine's own message, when it was reworded. */
  readonly raw?: string;
  constructor(message: string, code: ErrorCode, raw?: string);
}

/** Model information reported by the engine. */
export interface ModelInfo {
  name: string;
  vocab_size: number;
  layers: number;
  weight_bytes: number;
  /** Where the draft model runs. */
  backend: 'webgpu' | 'wasm-simd';
  /** The adapter (WebGPU) or "candle on WebAssembly SIMD". */
  backend_description: string;
  /** The self-check's figures on WebGPU, or why WebGPU is not used. */
  backend_note: string;
  /** What was asked for. */
  backend_preference?: Backend;
  /** The module's linear memory in bytes now. */
  wasm_memory_bytes?: number;
  /** The energy estimate's shipped constants. */
  energy_constants: EnergyConstants;
}

/**
 * Where the draft model should run. 'auto': WebGPU when the browser has a hardware adapter that
 * passes a start-up self-check against the WASM path, else WASM SIMD. 'webgpu': WebGPU on any
 * adapter that passes the self-check (a software one too), else WASM SIMD with the reason in
 * `backendNote`. 'wasm': WASM SIMD.
 */
export type Backend = 'auto' | 'webgpu' | 'wasm';
export declare const BACKENDS: readonly Backend[];

/** Reports passed to `onProgress` while the client starts. */
export type ProgressReport =
  | { type: 'status'; stage: 'downloading' | 'reading-cache' | 'caching' | 'initialising' | 'starting-backend' }
  /** `total` is 0 when the server sent no Content-Length. */
  | { type: 'progress'; loaded: number; total: number; fromCache: boolean }
  | { type: 'cache'; hit: boolean }
  | { type: 'warning'; message: string }
  | { type: 'loaded'; info: ModelInfo; seconds: number; fromCache: boolean; bytes: number }
  | { type: 'connected'; url: string; verifier: VerifierWelcome | null };

/**
 * Constants of the energy estimate: the evaluation's model and shipped constants
 * (hlm-core's energy.rs and constants.toml, each constant with its source there), computed in the
 * wasm module. `info.energy_constants` holds the shipped values; pass overrides in this shape.
 */
export interface EnergyConstants {
  device: { compute_power_w: number; idle_power_w: number };
  radio: { tx_power_w: number; rx_power_w: number };
  link: { bandwidth_hz: number; snr_db: number; rtt_s: number };
  server: {
    preset: 'cpu' | 'gpu';
    cpu: { power_w: number; speedup: number };
    gpu: { power_w: number; speedup: number };
  };
}

/** Deep-partial overrides of {@link EnergyConstants}; an unknown field is an error. */
export type EnergyConstantsOverrides = {
  [K in keyof EnergyConstants]?: EnergyConstants[K] extends object
    ? { [L in keyof EnergyConstants[K]]?: EnergyConstants[K][L] extends object ? Partial<EnergyConstants[K][L]> : EnergyConstants[K][L] }
    : EnergyConstants[K];
};

export interface CreateOptions {
  /** URL of the draft model's GGUF file (relative URLs resolve against the page). */
  draftModelUrl: string;
  /** The draft model's name (reported by `info.name`). */
  draftModelName?: string;
  /** ws://, wss://, http(s):// or relative URL of the verifier's /ws; default: ws(s)://<page host>/ws. */
  verifierUrl?: string | null;
  /** Access token, if the verifier requires one. */
  token?: string;
  /** Called with load and connection progress. */
  onProgress?: (report: ProgressReport) => void;
  /** Called with non-fatal warnings (default: console.warn). */
  onWarning?: (message: string) => void;
  /** Cache Storage cache holding the model between visits. Default "hybrid-llm-models". */
  cacheName?: string;
  /** Where worker.js is, when a bundler moved it (default: next to index.js). */
  workerUrl?: string | URL;
  /** Connect to the verifier in `create` (default true). With false, call `client.connect()`. */
  connect?: boolean;
  /** Where the draft model runs (default 'auto'). */
  backend?: Backend;
  /** Name this client gives the verifier (default "hybrid-llm-web/0.1.0"). */
  clientName?: string;
  /** Overrides of the energy estimate's constants, e.g. `{ device: { compute_power_w: 15 } }`. */
  energyConstants?: EnergyConstantsOverrides;
}

export interface GenerateOptions {
  /** Tokens to generate at most. */
  maxTokens?: number;
  /** 0 = greedy (default of the engine); > 0 samples, with compressed distributions uploaded. */
  temperature?: number;
  /** u_th in 0..1: tokens with uncertainty above it are candidates for upload (default 0.07). */
  uncertaintyThreshold?: number;
  /** λ: how far above the mean attention a token must be to count as important (default 2). */
  importanceStrictness?: number;
  /** Filter mode (default "uncertainty+importance"). */
  mode?: Mode;
  /** Seed of the uncertainty draws and sampling. */
  seed?: number;
  /** Wrap the prompt in the model's ChatML template (default true). */
  chat?: boolean;
  /** Importance rule (default "sink-zscore"). */
  importanceRule?: 'sink-zscore' | 'median-mad' | 'fixed-uniform';
  /**
   * How the uncertainty u is computed: "sampled" (default; U-HLM's 20 perturbed draws) or
   * "expected" (the probability those draws estimate, at the same cost, without their noise).
   */
  uncertainty?: 'sampled' | 'expected';
  /**
   * Mode "learned": the filter head, the parsed `head.json` that `hlm eval --trace` writes on a
   * development split. `uncertaintyThreshold` is then the threshold on its probability of a
   * rejection.
   */
  filterHead?: FilterHead;
  /** Uploads gathered before a round goes to the verifier (default 1: token-by-token verification). */
  uploadsPerRound?: number;
  /** Total-variation bound of the compressed distribution uploaded under sampling (default 0.05). */
  tvBound?: number;
  /**
   * Stop string(s): the generation ends once its final text contains one; the text is cut before
   * it (stopReason "stop-string"). Text that may begin a stop string is held back until it cannot.
   */
  stop?: string | string[];
  /** End once the first fenced code block (```) closes, fence kept (stopReason "code-block-end"). */
  stopAtCodeBlockEnd?: boolean;
}

/** A learned filter head (hlm-core's `FilterHead`): logistic regression over a token's signals. */
export interface FilterHead {
  version: number;
  fitted_on: string;
  inputs: (string | { class: string })[];
  mean: number[];
  scale: number[];
  weights: number[];
  bias: number;
  /** The P(reject) at which it caught as many rejections as U-HLM on its fitting split. */
  suggested_threshold?: number;
}

/** What the verifier said when the session opened. */
export interface VerifierWelcome {
  server?: string;
  verifier_model?: string;
  max_context?: number;
  [key: string]: unknown;
}

export interface Importance {
  score: number;
  threshold: number;
  important: boolean;
}

/** Running totals, with the energy estimate and what standard HLM would have cost. */
export interface Totals {
  tokens: number;
  skipped: number;
  uploaded: number;
  accepted: number;
  resampled: number;
  /** Drafted tokens thrown away after a rejection earlier in their round. */
  discarded: number;
  rounds: number;
  bytesUp: number;
  bytesDown: number;
  /** Bits of the compressed distributions alone. */
  distBits: number;
  /** Verifier forward passes. */
  llmPasses: number;
  llmForwardTokens: number;
  /** Seconds the verifier's model spent on these rounds, as it reported them (no queue, no network). */
  llmComputeS: number;
  reconnects: number;
  replayedTokens: number;
  /** uploaded / tokens */
  uploadRate: number;
  /**
   * Estimated device energy (J): drafting + radio + idle while waiting for verdicts. An analytic
   * estimate from measured drafting and waiting times, bytes and rounds (see {@link EnergyConstants}).
   */
  energyJ: number;
  draftEnergyJ: number;
  radioEnergyJ: number;
  idleEnergyJ: number;
  /** The verifier's share: its power × (measured wait − one modelled round trip per round). */
  serverEnergyJ: number;
  /** Device + server. */
  systemEnergyJ: number;
  /** The same device estimate had every token been uploaded (standard HLM). */
  standardHlmEnergyJ: number;
  standardHlmSystemEnergyJ: number;
  standardHlmBytesUp: number;
  standardHlmBytesDown: number;
  standardHlmLlmPasses: number;
}

export interface TokenEvent {
  /** Index among the generated tokens. */
  index: number;
  /** Token id. */
  id: number;
  /** Text that became final with this token (may be empty mid-character). */
  text: string;
  kind: TokenKind;
  /** The draft's token when the verifier replaced it. */
  drafted: number | null;
  /** u in 0..1. */
  uncertainty: number;
  importance: Importance | null;
  totals: Totals;
  /** Seconds spent drafting so far, and since the generation started. */
  draftTimeS: number;
  wallTimeS: number;
  /** Set when WebGPU failed before this token and the draft model moved to WASM SIMD. */
  notice: string | null;
}

export interface Summary extends Totals {
  stopReason: StopReason;
  wallTimeS: number;
  draftTimeS: number;
  /** Seconds waiting for verdicts (network and verifier). */
  waitTimeS: number;
  tokensPerS: number;
  /** Draft tokens per second: tokens / draftTimeS. */
  draftTokensPerS: number | null;
  text: string;
  ids: number[];
  mode: Mode;
  promptTokens: number;
  /** Where the draft model ran at the end: "webgpu" or "wasm-simd". */
  draftBackend: 'webgpu' | 'wasm-simd' | null;
  /** What the run told the user (WebGPU failed, WASM SIMD took over). */
  notices: string[];
  /** The engine's summary as it reported it (snake_case). */
  raw: Record<string, unknown>;
}

export declare class HybridClient {
  /** Starts the worker, loads the model (from Cache Storage when cached) and connects (unless `connect: false`). */
  static create(options: CreateOptions): Promise<HybridClient>;
  private constructor();
  readonly info: ModelInfo | null;
  /** Where the draft model runs now: "webgpu" or "wasm-simd". */
  readonly backend: 'webgpu' | 'wasm-simd' | null;
  /** The self-check's figures on WebGPU, or why WebGPU is not used. */
  readonly backendNote: string | null;
  /** true when the model came from Cache Storage. */
  readonly cacheHit: boolean | null;
  readonly loadSeconds: number | null;
  readonly verifierUrl: string | null;
  /** The verifier's welcome (server, verifier_model, max_context), once connected. */
  readonly verifier: VerifierWelcome | null;
  readonly connected: boolean;
  readonly lastSummary: Summary | null;
  readonly draftTokensPerS: number | null;
  readonly warnings: string[];
  /** Destroys the WebGPU device (as a driver reset would) to test the fallback to WASM SIMD; false when not on WebGPU. */
  simulateGpuLoss(): Promise<boolean>;
  /** Moves the draft model to another backend between generations; resolves with the new info. */
  setBackend(backend: Backend): Promise<ModelInfo>;
  /** Connects (again) to the verifier; arguments default to those given to `create`. */
  connect(verifierUrl?: string, token?: string): Promise<void>;
  /** Yields each token once final; returns the summary. Breaking out of the loop aborts. */
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<TokenEvent, Summary, undefined>;
  /** Stops the running generation soon (it then ends with stopReason "aborted"). */
  abort(): void;
  /** Closes the verifier connection; the model stays loaded. */
  disconnect(): Promise<void>;
  /** Terminates the worker. */
  close(): void;
}

/** ws(s):// URL for a verifier URL given relative, as http(s), or not at all (this page's /ws). */
export declare function resolveVerifierUrl(url?: string | null): string;

export interface EnergyEstimate {
  energyJ: number;
  draftJ: number;
  radioJ: number;
  standardHlmEnergyJ: number;
  standardHlmBytesUp: number;
  standardHlmBytesDown: number;
  standardHlmLlmPasses: number;
}

/** The energy estimate from the engine's snake_case totals and the seconds spent drafting. */
export declare function estimateEnergy(
  totals: Record<string, number>,
  draftSeconds: number,
  constants?: Partial<EnergyConstants>,
): EnergyEstimate;

/** What standard HLM would have sent for the same tokens (snake_case totals in). */
export declare function standardHlm(
  totals: Record<string, number>,
  constants?: EnergyConstants,
): { bytesUp: number; bytesDown: number; rounds: number; llmPasses: number };

/** Joules for drafting seconds plus the given traffic (`messages` each way). */
export declare function energyJoules(
  draftSeconds: number,
  bytesUp: number,
  bytesDown: number,
  messages: number,
  constants?: EnergyConstants,
): number;
