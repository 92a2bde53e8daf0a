// Browser benchmark: the draft model in headless Chromium (WASM SIMD), through www/bench.html.
//   node web-client/tests/bench.mjs --base http://127.0.0.1:8080/ [--tokens 64] [--token T]
// Runs the page twice in one fresh profile: cold (downloads the model into Cache Storage) and
// warm (from the cache), and prints one JSON object per run.
import { launchChromium } from './chromium.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
if (!args.base) {
  console.error('usage: node bench.mjs --base http://host:port/ [--tokens 64] [--token T]');
  process.exit(2);
}
const url = new URL('bench.html', args.base);
url.searchParams.set('tokens', args.tokens || '64');
if (args.token) url.searchParams.set('token', args.token);

const browser = await launchChromium();
let failed = false;
try {
  for (const run of ['cold', 'warm']) {
    const page = await browser.context.newPage();
    page.on('console', (m) => m.type() === 'error' && console.error(`[${run}] ${m.text()}`));
    await page.goto(url.href);
    await page.waitForFunction(() => window.hlmBench && (window.hlmBench.done || window.hlmBench.error), null, {
      timeout: 30 * 60 * 1000,
    });
    const r = await page.evaluate(() => window.hlmBench);
    if (r.error) {
      console.error(`[${run}] ${r.error}`);
      failed = true;
      break;
    }
    r.memory_over_file = r.info.wasm_memory_bytes / r.model_file_bytes;
    console.log(JSON.stringify({ run, ...r }));
    await page.close();
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
