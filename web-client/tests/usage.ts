// A typed use of the npm package, as an application would write it: tsc --strict must accept it
// (web-client/tests/typescript.rs). Never run.

import { HybridClient, HybridError } from '../js/index.js';
import type { ErrorCode, GenerateOptions, Summary, TokenEvent } from '../js/index.js';

/** Every error code has a hint: adding a code in Rust makes this fail until it has one. */
const HINTS: Record<ErrorCode, string> = {
  unreachable: 'is the verifier running?',
  'wrong-token': 'check the access token',
  'model-mismatch': 'serve a matching model pair',
  overloaded: 'try again in a moment',
  'origin-not-allowed': 'allow this origin on the verifier',
  'load-failed': 'check the model URL',
  'worker-failed': 'the WebAssembly client could not start',
  busy: 'wait for the running generation',
  'not-connected': 'connect first',
  closed: 'create a new client',
  'bad-option': 'check the options',
  error: '',
};

export async function demo(out: { append(text: string): void }): Promise<Summary | null> {
  let client: HybridClient;
  try {
    client = await HybridClient.create({
      draftModelUrl: '/models/draft.gguf',
      verifierUrl: 'ws://127.0.0.1:8080/ws',
      energyConstants: { device: { compute_power_w: 15 } },
      onProgress: (r) => {
        if (r.type === 'progress') out.append(`${r.loaded}/${r.total}`);
      },
    });
  } catch (e) {
    if (e instanceof HybridError) out.append(`${e.message} (${HINTS[e.code]})`);
    return null;
  }
  const options: GenerateOptions = { maxTokens: 32, mode: 'uncertainty', stop: '\n\n', chat: true };
  const it = client.generate('Write a binary search in Rust', options);
  for (;;) {
    const step = await it.next();
    if (step.done) {
      const s: Summary = step.value;
      out.append(`${s.tokens} tokens, ${s.uploaded} uploaded, ${s.energyJ.toFixed(2)} J on ${s.draftBackend}`);
      out.append(`stop: ${s.stopReason}, engine: ${s.raw.stop_reason}`);
      return s;
    }
    const ev: TokenEvent = step.value;
    out.append(ev.kind === 'skipped' ? ev.text : `[${ev.text}]`);
    if (ev.importance?.important) out.append(`(${ev.totals.uploadRate})`);
  }
}
