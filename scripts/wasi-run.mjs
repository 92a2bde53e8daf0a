// Runs a wasm32-wasip1 program under WASI: cargo's runner for the kernels' tests built for
// WebAssembly (scripts/test-wasm-kernels.sh).
//   node scripts/wasi-run.mjs FILE.wasm [ARGS...]             # Node's own WASI
//   node scripts/wasi-run.mjs --chromium FILE.wasm [ARGS...]  # in a page of Debian's Chromium
// The Chromium mode is for instructions Node's engine lacks or gets wrong: Node 20 has relaxed
// SIMD only behind a flag, and its `i32x4.relaxed_dot_i8x16_i7x16_add_s` returns twice the dot
// product without the addend, where Chromium computes it as specified. The page gets a minimal
// WASI of its own (arguments, clock, random bytes, stdout/stderr, exit; no files).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const argv = process.argv.slice(2);
const inChromium = argv[0] === "--chromium";
const [file, ...args] = inChromium ? argv.slice(1) : argv;
const bytes = await readFile(file);
const run = inChromium ? runInChromium : runInNode;
process.exit(await run(bytes, [file, ...args]));

async function runInNode(bytes, argv) {
  const wasi = new WASI({
    version: "preview1",
    args: argv,
    env: process.env,
    preopens: { "/": "/" },
    returnOnExit: true,
  });
  const module = await WebAssembly.compile(bytes);
  const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  return wasi.start(instance);
}

async function runInChromium(bytes, argv) {
  const { launchChromium } = await import("../web-client/tests/chromium.mjs");
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    // What the program prints reaches this process as it goes.
    await page.exposeFunction("wasiWrite", (fd, text) => (fd === 2 ? process.stderr : process.stdout).write(text));
    return await page.evaluate(startWasi, { base64: bytes.toString("base64"), argv });
  } finally {
    await browser.close();
  }
}

/** Runs in the page: instantiates the program with a minimal WASI preview 1, returns its exit code. */
async function startWasi({ base64, argv }) {
  const ERRNO_BADF = 8, ERRNO_NOSYS = 52;
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const encoded = argv.map((a) => new TextEncoder().encode(a + "\0"));
  let memory;
  const view = () => new DataView(memory.buffer);
  class Exit { constructor(code) { this.code = code; } }
  const wasi = {
    args_sizes_get(count, size) {
      view().setUint32(count, encoded.length, true);
      view().setUint32(size, encoded.reduce((n, a) => n + a.length, 0), true);
      return 0;
    },
    args_get(ptrs, buf) {
      for (const [i, a] of encoded.entries()) {
        view().setUint32(ptrs + 4 * i, buf, true);
        new Uint8Array(memory.buffer, buf, a.length).set(a);
        buf += a.length;
      }
      return 0;
    },
    environ_sizes_get(count, size) {
      view().setUint32(count, 0, true);
      view().setUint32(size, 0, true);
      return 0;
    },
    environ_get: () => 0,
    clock_time_get(_id, _precision, out) {
      view().setBigUint64(out, BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6)), true);
      return 0;
    },
    random_get(buf, len) {
      for (let at = 0; at < len; at += 65536) {
        crypto.getRandomValues(new Uint8Array(memory.buffer, buf + at, Math.min(65536, len - at)));
      }
      return 0;
    },
    fd_write(fd, iovs, count, written) {
      if (fd !== 1 && fd !== 2) return ERRNO_BADF;
      let n = 0, text = "";
      for (let i = 0; i < count; i++) {
        const ptr = view().getUint32(iovs + 8 * i, true), len = view().getUint32(iovs + 8 * i + 4, true);
        text += new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len));
        n += len;
      }
      window.wasiWrite(fd, text);
      view().setUint32(written, n, true);
      return 0;
    },
    fd_fdstat_get(fd, out) {
      if (fd > 2) return ERRNO_BADF;
      new Uint8Array(memory.buffer, out, 24).fill(0);
      view().setUint8(out, 2); // a character device
      return 0;
    },
    fd_prestat_get: () => ERRNO_BADF, // no directories
    proc_exit(code) { throw new Exit(code); },
    sched_yield: () => 0,
  };
  const imports = new Proxy(wasi, { get: (t, name) => t[name] ?? (() => ERRNO_NOSYS) });
  const { instance } = await WebAssembly.instantiate(bytes, { wasi_snapshot_preview1: imports });
  memory = instance.exports.memory;
  try {
    instance.exports._start();
    return 0;
  } catch (e) {
    if (e instanceof Exit) return e.code;
    window.wasiWrite(2, `wasi-run: the program trapped: ${e}\n`);
    return 134;
  }
}
