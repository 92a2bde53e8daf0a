// The page's own WebAssembly module (the single-thread build of the npm package) decoding in
// Node, without a browser: the draft model from a verifier-server with --www, the same prompt and
// timings as www/bench.html (www/bench-measure.js), mode `never`. It tells the page's module apart from the browser around it, and
// `node --prof` on it gives a profile by WebAssembly function (`node --prof-process`).
//
//   node --experimental-websocket web-client/tests/node-decode.mjs --base http://127.0.0.1:8093/ \
//     [--tokens 64] [--runs 2] [--wasm www/pkg/wasm]
//
// Prints one JSON line per run: the forward's milliseconds per token (mean over the tokens after
// the first, median and best of the steps) and the loop's own work per token. Node 20 has a
// WebSocket only behind --experimental-websocket; the engine connects to the server's /ws (mode
// `never` uploads nothing, but the loop wants a verifier).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PROMPT, splitMs } from '../../www/bench-measure.js';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
if (!args.base || typeof WebSocket === 'undefined') {
  console.error(
    'usage: node --experimental-websocket node-decode.mjs --base http://host:port/ [--tokens 64] [--runs 2] [--wasm DIR]',
  );
  process.exit(2);
}
const dir = resolve(args.wasm || new URL('../../www/pkg/wasm', import.meta.url).pathname);
const glue = await import(pathToFileURL(`${dir}/hlm_web_client.js`).href);
glue.initSync({ module: readFileSync(`${dir}/hlm_web_client_bg.wasm`) });

const config = await (await fetch(new URL('client-config.json', args.base))).json();
const response = await fetch(new URL(config.draft_model_url, args.base));
if (!response.ok) throw new Error(`draft model download: ${response.status}`);
const bytes = new Uint8Array(await response.arrayBuffer());
const engine = glue.Engine.load(bytes, config.draft_model_name);
const ws = new URL('ws', args.base);
ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
await engine.connect(ws.href, null, 'node-decode');

for (let run = 0; run < Number(args.runs || 2); run++) {
  const events = [];
  await engine.generate(PROMPT, { maxTokens: Number(args.tokens || 64), mode: 'never' }, (e) => events.push(e));
  if (events.length < 2) throw new Error(`only ${events.length} tokens generated`);
  const { forward_ms_per_token, loop_ms_per_token } = splitMs(events);
  // Events that drafted no token of their own carry no forward time.
  const steps = events
    .slice(1)
    .map((e, i) => (e.draftForwardS - events[i].draftForwardS) * 1000)
    .filter((ms) => ms > 0)
    .sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      run,
      tokens: events.length,
      forward_ms_per_token,
      forward_ms_median: steps[steps.length >> 1],
      forward_ms_best: steps[0],
      loop_ms_per_token,
    }),
  );
}
engine.free();
