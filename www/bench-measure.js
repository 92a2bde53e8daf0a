// What www/bench.html decodes and how it reads the timings, shared with
// web-client/tests/node-decode.mjs (the same module under Node), so both measure the same thing.

/** The prompt every decode benchmark generates from. */
export const PROMPT = 'Write a Python function that checks whether a string is a palindrome.';

/** Decode speed from a generation's events: tokens after the first over the drafting time they
 * took. */
export function decodeTokS(events) {
  if (events.length < 2) return null;
  const dt = events[events.length - 1].draftTimeS - events[0].draftTimeS;
  return dt > 0 ? (events.length - 1) / dt : null;
}

/** Milliseconds per token after the first: in the draft model's forward passes, and in the loop's
 * own work around them (the filter, sampling). */
export function splitMs(events) {
  if (events.length < 2) return { forward_ms_per_token: null, loop_ms_per_token: null };
  const [a, b] = [events[0], events[events.length - 1]];
  const n = events.length - 1;
  const forward = ((b.draftForwardS - a.draftForwardS) * 1000) / n;
  return { forward_ms_per_token: forward, loop_ms_per_token: ((b.draftTimeS - a.draftTimeS) * 1000) / n - forward };
}
