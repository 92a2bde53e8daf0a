// Debian's Chromium, headless, driven by playwright-core: never a downloaded browser.
import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];

/** A persistent context in a fresh user-data dir; `close()` also removes the dir. */
export async function launchChromium({ executablePath = '/usr/bin/chromium', extraArgs = [] } = {}) {
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'hlm-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1100, height: 900 },
  });
  return {
    context,
    userDataDir,
    async close() {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}
