// Browser benchmark: the draft model in headless Chromium, through www/bench.html.
//   node web-client/tests/bench.mjs --base http://127.0.0.1:8080/ [--tokens 64] [--token T] [--backends wasm,webgpu] [--threads 1,2]
//   node web-client/tests/bench.mjs --base ... --pairs N --hlm target/release/hlm [--tokens 64] [--threads 1,2]
// For each backend (default: wasm), runs the page twice in one fresh profile: cold (downloads the
// model into Cache Storage) and warm (from the cache), and prints one JSON object per run. The
// webgpu runs start Chromium with --enable-unsafe-webgpu (SwiftShader's adapter on a machine
// without a GPU: the figures then show overhead, not GPU speed). --threads runs each backend
// with each thread count asked for (default: the page's own choice, the browser's cores; more
// than one needs the server's cross-origin isolation headers, which verifier-server sends).
//
// --pairs N alternates the page with native decode instead, N times per thread count: the page
// loads once (www/bench.html?hold) and decodes once per pair, then `hlm bench --draft-backends
// cpu --backends-only` decodes as many tokens natively with as many threads (through the same
// drafter the decoding loop uses, the filter's uncertainty included, as the page's figure is).
// The two halves of a pair run seconds apart, so a slow minute of a shared machine weighs on
// both; one JSON line per pair with its ratio.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { launchChromium } from './chromium.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
if (!args.base) {
  console.error('usage: node bench.mjs --base http://host:port/ [--tokens 64] [--token T] [--backends wasm,webgpu] [--threads 1,2]');
  process.exit(2);
}

/** bench.html's address asking for `backend` (and `threads`, and the server's token). */
function benchUrl(backend, threads) {
  const url = new URL('bench.html', args.base);
  url.searchParams.set('tokens', args.tokens || '64');
  url.searchParams.set('backend', backend);
  if (threads) url.searchParams.set('threads', threads);
  if (args.token) url.searchParams.set('token', args.token);
  return url;
}

/** Chromium for `backend` (WebGPU needs --enable-unsafe-webgpu). */
function launchFor(backend) {
  return launchChromium({ extraArgs: backend === 'webgpu' ? ['--enable-unsafe-webgpu'] : [] });
}

/** A new page at `url`, once bench.html is done or failed: `[page, window.hlmBench]`. */
async function openBench(browser, url, label) {
  const page = await browser.context.newPage();
  page.on('console', (m) => m.type() === 'error' && console.error(`[${label}] ${m.text()}`));
  await page.goto(url.href);
  await page.waitForFunction(() => window.hlmBench && (window.hlmBench.done || window.hlmBench.error), null, {
    timeout: 30 * 60 * 1000,
  });
  return [page, await page.evaluate(() => window.hlmBench)];
}

/** Cold and warm runs of bench.html asking for `backend` (and `threads`); false if a run failed. */
async function bench(backend, threads) {
  const browser = await launchFor(backend);
  try {
    for (const run of ['cold', 'warm']) {
      const [page, r] = await openBench(browser, benchUrl(backend, threads), `${backend} ${run}`);
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

/** Native decode of `tokens` tokens on `threads` threads, tok/s (`hlm bench`'s drafter row). */
async function nativeTokS(threads, tokens) {
  const env = { ...process.env, RAYON_NUM_THREADS: threads, CANDLE_NUM_THREADS: threads };
  const { stdout } = await promisify(execFile)(
    args.hlm,
    ['bench', '--draft-backends', 'cpu', '--backends-only', '--tokens', tokens],
    { env, maxBuffer: 1 << 20 },
  );
  const report = JSON.parse(stdout.trim().split('\n').pop());
  return report.draft_backends[0].tok_s;
}

/** `pairs` alternations of one page decode and one native decode on `threads` threads. */
async function pairs(backend, threads) {
  const tokens = args.tokens || '64';
  const url = benchUrl(backend, threads);
  url.searchParams.set('hold', '');
  const browser = await launchFor(backend);
  try {
    const [page, { error }] = await openBench(browser, url, `pairs ${threads}`);
    if (error) throw new Error(`page: ${error}`);
    // The first generation after loading (V8 may still be compiling optimised code for it):
    // printed apart, not counted in the pairs.
    const first = await page.evaluate(() => window.hlmDecode());
    console.log(JSON.stringify({ warmup: true, threads: Number(threads), page_tok_s: first.decode_tok_s }));
    for (let i = 0; i < Number(args.pairs); i++) {
      const p = await page.evaluate(() => window.hlmDecode());
      if (!p.decode_tok_s) throw new Error(`the page decoded ${p.tokens} tokens: too few for a speed`);
      const native = await nativeTokS(threads, tokens);
      console.log(JSON.stringify({
        pair: i, asked: backend, threads: Number(threads), page_tok_s: p.decode_tok_s,
        page_forward_ms: p.forward_ms_per_token, native_tok_s: native, ratio: p.decode_tok_s / native,
      }));
    }
    return true;
  } catch (e) {
    console.error(`[pairs ${threads}] ${e.message}`);
    return false;
  } finally {
    await browser.close();
  }
}

let ok = true;
if (args.pairs && !args.hlm) {
  console.error('--pairs needs --hlm PATH (the native client, for the native half of each pair)');
  process.exit(2);
}
for (const backend of (args.backends || 'wasm').split(',')) {
  for (const threads of (args.threads || '').split(',')) {
    ok = (await (args.pairs ? pairs(backend, threads || '1') : bench(backend, threads))) && ok;
  }
}
process.exit(ok ? 0 : 1);
