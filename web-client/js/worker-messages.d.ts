// The messages between the page (index.js) and the draft-model worker (worker.js): declared once
// here, used by both through JSDoc and checked by tsc (web-client/tests/typescript.rs). What the
// engine produces (events, summaries, model information, error codes) is generated from Rust.

import type {
  Backend,
  ErrorCode,
  GenerationOptions,
  ModelInfo,
  Summary,
  TokenEvent,
  VerifierWelcome,
} from './types.generated';
import type { EnergyConstantsOverrides } from './index';

/** What the engine's `generate` takes: the generation options, `chat` and energy overrides. */
export type EngineOptions = Partial<GenerationOptions> & {
  /** Wrap the prompt in the model's ChatML template (default true). */
  chat?: boolean;
  /** Overrides of the energy estimate's shipped constants, shaped like them. */
  energyConstants?: EnergyConstantsOverrides;
};

/** Where the worker is while it loads a model. */
export type LoadStage = 'downloading' | 'reading-cache' | 'caching' | 'initialising' | 'starting-backend';

/** Which request failed. */
export type Stage = 'load' | 'connect' | 'generate' | 'backend' | 'disconnect' | 'simulate-gpu-loss' | 'protocol';

/** Page → worker. `id` identifies the request; the reply echoes it. */
export type WorkerRequest =
  /** `modelUrl` absolute (resolved on the page). */
  | {
      type: 'load';
      id: number;
      modelUrl: string;
      modelName: string;
      cacheName?: string;
      backend: Backend;
      /** CPU threads asked for (the first load starts them; default: the browser's cores, at most 8). */
      threads?: number;
    }
  | { type: 'connect'; id: number; url: string; token?: string; clientName?: string }
  | { type: 'generate'; id: number; prompt: string; options: EngineOptions }
  /** Stops generation `id` (running or still queued); without id, the running one. */
  | { type: 'abort'; id?: number }
  | { type: 'disconnect'; id: number }
  | { type: 'backend'; id: number; backend: Backend }
  /** At once, like abort: it is meant to hit a running generation. */
  | { type: 'simulate-gpu-loss'; id: number };

/** Reports the worker sends while loading, without a request id. */
export type WorkerNotice =
  /** `total` is 0 when the size is unknown. */
  | { type: 'progress'; loaded: number; total: number; fromCache: boolean }
  /** `hit`: the model came from Cache Storage. */
  | { type: 'cache'; hit: boolean }
  /** e.g. cache unavailable or over quota, or the draft model left WebGPU. */
  | { type: 'warning'; message: string }
  | { type: 'status'; stage: LoadStage };

/** What `load` resolves with. */
export interface Loaded {
  info: ModelInfo;
  seconds: number;
  downloadSeconds: number;
  initSeconds: number;
  backendSeconds: number;
  bytes: number;
  fromCache: boolean;
}

/** Worker → page: the replies to requests (with their `id`) and the notices. */
export type WorkerReply =
  | WorkerNotice
  | ({ type: 'loaded'; id: number } & Loaded)
  | { type: 'connected'; id: number; url: string; welcome: VerifierWelcome }
  | { type: 'disconnected'; id: number }
  | { type: 'backend'; id: number; info: ModelInfo }
  | { type: 'gpu-loss'; id: number; lost: boolean }
  /** One per final token, in order. */
  | { type: 'token'; id: number; ev: TokenEvent }
  | { type: 'done'; id: number; summary: Summary; info: ModelInfo }
  /** `code` comes from the engine's error (or says where the worker itself failed). */
  | { type: 'error'; id?: number; stage: Stage; code: ErrorCode; message: string };
