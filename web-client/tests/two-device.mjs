// The browser side of scripts/two-device.sh: the draft model in headless Chromium (the npm
// package, WASM SIMD), the verifier behind a real shaped link (`hlm link`). Runs each request of
// `hlm eval --write-requests` (the same chat prompt and loop options the native harness runs)
// in one page, a fresh session per request, and appends one JSON line per generation to --out
// (a rerun skips the task × method pairs already there).
//
//   node web-client/tests/two-device.mjs --base http://127.0.0.1:8094/ --verifier ws://127.0.0.1:P/ws \
//     --token T --requests requests.jsonl --out samples.jsonl [--threads 1]
//
// --base serves the page's files (/pkg/, /client-config.json and the draft model: a
// verifier-server with --www); --verifier is the link's URL, whose server must allow --base's
// origin. Pin the device side to its core by running this under `taskset -c 0`: Chromium's
// processes inherit it.
import { launchChromium } from './chromium.mjs';
import { readFile, appendFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
for (const need of ['base', 'verifier', 'requests', 'out']) {
  if (!args[need]) {
    console.error('usage: node two-device.mjs --base URL --verifier WS_URL [--token T] --requests FILE --out FILE [--threads N]');
    process.exit(2);
  }
}

/** JSON lines of a file ([] when it does not exist yet). */
async function jsonLines(path) {
  if (!existsSync(path)) return [];
  return (await readFile(path, 'utf8')).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

const requests = (await jsonLines(args.requests)).filter((r) => r.options);
const done = new Set((await jsonLines(args.out)).map((s) => `${s.task}\u0000${s.method}`));
const todo = requests.filter((r) => !done.has(`${r.task}\u0000${r.method}`));
if (todo.length === 0) {
  console.error(`${args.out}: done already`);
  process.exit(0);
}

const browser = await launchChromium();
try {
  const page = await browser.context.newPage();
  await page.route('**/favicon.ico', (route) => route.fulfill({ status: 204 }));
  page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page] ${e.message}`));
  // Any same-origin document will do: the package is imported into it.
  await page.goto(new URL('client-config.json', args.base).href);
  const info = await page.evaluate(async ({ threads }) => {
    const { HybridClient } = await import('/pkg/index.js');
    const config = await (await fetch('/client-config.json')).json();
    window.hlmClient = await HybridClient.create({
      draftModelUrl: config.draft_model_url,
      draftModelName: config.draft_model_name,
      backend: 'wasm',
      threads,
      connect: false,
    });
    return { backend: window.hlmClient.backend, threads: window.hlmClient.info.threads };
  }, { threads: Number(args.threads || 1) });
  console.error(`draft model loaded in the page: ${JSON.stringify(info)}`);
  for (const r of todo) {
    const result = await page.evaluate(async ({ prompt, options, verifierUrl, token }) => {
      const client = window.hlmClient;
      await client.connect(verifierUrl, token);
      const it = client.generate(prompt, { ...options, chat: false });
      let first = null;
      let step;
      while (!(step = await it.next()).done) if (first === null) first = step.value.wallTimeS;
      return { first_token_s: first, summary: step.value.raw };
    }, { prompt: r.prompt, options: r.options, verifierUrl: args.verifier, token: args.token || undefined });
    const line = { task: r.task, method: r.method, draft: 'chromium', backend: info.backend, threads: info.threads, ...result };
    await appendFile(args.out, JSON.stringify(line) + '\n');
    const s = result.summary;
    console.error(`${r.task} ${r.method}: ${s.tokens} tokens in ${s.wall_time_s.toFixed(2)} s, first after ${result.first_token_s?.toFixed(2)} s`);
  }
} finally {
  await browser.close();
}
