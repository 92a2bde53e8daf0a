// Types of hybrid-llm-web. What the engine reports (token events, the summary, model information,
// error codes, the generation options) is generated from the Rust types into
// types.generated.d.ts and re-exported here; this file declares the JavaScript API around them.

import type {
  Backend,
  DraftBackend,
  EnergyConstants,
  ErrorCode,
  FilterMode,
  GenerationOptions,
  ModelInfo,
  Summary,
  TokenEvent,
  TokenKind,
  UncertaintyEstimate,
  VerifierWelcome,
} from './types.generated';
import type { LoadStage } from './worker-messages';

export type * from './types.generated';

export declare const VERSION: string;

/** Filter modes: `auto` (default) = the learned head shipped for the pair, else U-HLM; `learned` = a fitted head; `uncertainty` = U-HLM; `uncertainty+importance` = the seed's attention rule; `always` = standard HLM; `never` = draft alone. */
export type Mode = FilterMode;
export declare const MODES: readonly Mode[];
export declare const UNCERTAINTY: readonly UncertaintyEstimate[];
export declare const KINDS: readonly TokenKind[];
export declare const BACKENDS: readonly Backend[];

export declare class HybridError extends Error {
  readonly name: 'HybridError';
  /** What kind of failure: handle errors by it, not by their message. */
  readonly code: ErrorCode;
  /** The engine's own message, when it was reworded. */
  readonly raw?: string;
  constructor(message: string, code: ErrorCode, raw?: string);
}

/** Reports passed to `onProgress` while the client starts. */
export type ProgressReport =
  | { type: 'status'; stage: LoadStage }
  /** `total` is 0 when the server sent no Content-Length. */
  | { type: 'progress'; loaded: number; total: number; fromCache: boolean }
  | { type: 'cache'; hit: boolean }
  | { type: 'warning'; message: string }
  | { type: 'loaded'; info: ModelInfo; seconds: number; fromCache: boolean; bytes: number }
  | { type: 'connected'; url: string; verifier: VerifierWelcome | null };

/** Deep-partial overrides of {@link EnergyConstants}; an unknown field is an error. */
export type EnergyConstantsOverrides = {
  [K in keyof EnergyConstants]?: EnergyConstants[K] extends object
    ? { [L in keyof EnergyConstants[K]]?: EnergyConstants[K][L] extends object ? Partial<EnergyConstants[K][L]> : EnergyConstants[K][L] }
    : EnergyConstants[K];
};

export interface CreateOptions {
  /** URL of the draft model's GGUF file (relative URLs resolve against the page). */
  draftModelUrl: string;
  /** The draft model's name, its file name without `.gguf` (reported by `info.name`): mode `auto` finds the filter head shipped for the draft and verifier pair by it. */
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
  /**
   * CPU threads the draft model's WebAssembly runs on (default: the browser's cores, at most 8;
   * 1: one thread). More than one needs a cross-origin isolated page, served with
   * `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp`;
   * elsewhere the draft runs on one thread and a warning says why. `info.threads` says how many run.
   */
  threads?: number;
  /** Name this client gives the verifier (default "hybrid-llm-web/0.1.0"). */
  clientName?: string;
  /** Overrides of the energy estimate's constants, e.g. `{ device: { compute_power_w: 15 } }`. */
  energyConstants?: EnergyConstantsOverrides;
}

/**
 * Options of a generation: the engine's `GenerationOptions` (see their documentation in
 * types.generated.d.ts), every one optional, a single stop string allowed, and `chat`.
 */
export type GenerateOptions = Partial<Omit<GenerationOptions, 'stop'>> & {
  /**
   * Stop string(s): the generation ends once its final text contains one; the text is cut before
   * it (stopReason "stop-string"). Text that may begin a stop string is held back until it cannot.
   */
  stop?: string | string[];
  /** Wrap the prompt in the model's ChatML template (default true). */
  chat?: boolean;
};

export declare class HybridClient {
  /** Starts the worker, loads the model (from Cache Storage when cached) and connects (unless `connect: false`). */
  static create(options: CreateOptions): Promise<HybridClient>;
  private constructor();
  readonly info: ModelInfo | null;
  /** Where the draft model runs now: "webgpu" or "wasm-simd". */
  readonly backend: DraftBackend | null;
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
