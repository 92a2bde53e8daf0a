// Scores token features with a filter head in WebAssembly (the package's own module, in Node)
// and prints the decisions as JSON: `[[probability, upload], ...]`.
// Usage: node head_parity.mjs <wasm dir> <head.json> <features.json> <threshold>
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, headPath, featuresPath, threshold] = process.argv.slice(2);
const glue = await import(pathToFileURL(join(dir, 'hlm_web_client.js')).href);
glue.initSync({ module: readFileSync(join(dir, 'hlm_web_client_bg.wasm')) });
const out = glue.scoreWithHead(
  readFileSync(headPath, 'utf8'),
  readFileSync(featuresPath, 'utf8'),
  Number(threshold),
);
process.stdout.write(out);
