// Browser benchmark: the draft model in headless Chromium, through www/bench.html.
//   node web-client/tests/bench.mjs --base http://127.0.0.1:8080/ [--tokens 64] [--token T] [--backends wasm,webgpu] [--threads 1,2]
// For each backend (default: wasm), runs the page twice in one fresh profile: cold (downloads the
// model into Cache Storage) and warm (from the cache), and prints one JSON object per run. The
// webgpu runs start Chromium with --enable-unsafe-webgpu (SwiftShader's adapter on a machine
// without a GPU: the figures then show overhead, not GPU speed). --threads runs each backend
// with each thread count asked for (default: the page's own choice, the browser's cores; more
// than one needs the server's cross-origin isolation headers, which verifier-server sends).
import { launchChromium } from './chromium.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
if (!args.base) {
  console.error('usage: node bench.mjs --base http://host:port/ [--tokens 64] [--token T] [--backends wasm,webgpu] [--threads 1,2]');
  process.exit(2);
}

/** Cold and warm runs of bench.html asking for `backend` (and `threads`); false if a run failed. */
async function bench(backend, threads) {
  const url = new URL('bench.html', args.base);
  url.searchParams.set('tokens', args.tokens || '64');
  url.searchParams.set('backend', backend);
  if (threads) url.searchParams.set('threads', threads);
  if (args.token) url.searchParams.set('token', args.token);
  const browser = await launchChromium({ extraArgs: backend === 'webgpu' ? ['--enable-unsafe-webgpu'] : [] });
  try {
    for (const run of ['cold', 'warm']) {
      const page = await browser.context.newPage();
      page.on('console', (m) => m.type() === 'error' && console.error(`[${backend} ${run}] ${m.text()}`));
      await page.goto(url.href);
      await page.waitForFunction(() => window.hlmBench && (window.hlmBench.done || window.hlmBench.error), null, {
        timeout: 30 * 60 * 1000,
      });
      const r = await page.evaluate(() => window.hlmBench);
      if (r.error) {
        console.error(`[${backend} ${run}] ${r.error}`);
        return false;
      }
      r.memory_over_file = r.info.wasm_memory_bytes / r.model_file_bytes;
      console.log(JSON.stringify({ run, asked: backend, asked_threads: threads || null, ...r }));
      await page.close();
    }
    return true;
  } finally {
    await browser.close();
  }
}

let ok = true;
for (const backend of (args.backends || 'wasm').split(',')) {
  for (const threads of (args.threads || '').split(',')) ok = (await bench(backend, threads)) && ok;
}
process.exit(ok ? 0 : 1);
