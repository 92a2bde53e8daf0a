// Device-side energy of a hybrid generation: an ANALYTIC ESTIMATE, not a measurement.
//
// The browser cannot read a power meter, so the figure is built from quantities the client does
// measure (seconds spent drafting, bytes and messages sent and received) times typical power
// figures for a phone. It is meant for comparing filter settings with each other and with
// standard HLM on the same device, not as an absolute number: change the constants to your device
// and link, or pass your own to `estimateEnergy`.
//
//   draft compute   E_draft = draft_time_s × DEVICE_POWER_W
//   radio, up       E_up    = bits_up   / UPLINK_BPS   × UPLINK_TX_POWER_W
//   radio, down     E_down  = bits_down / DOWNLINK_BPS × DOWNLINK_RX_POWER_W
//   bits            = 8 × (frame bytes + messages × PACKET_OVERHEAD_BYTES)
//
// Standard HLM (every token uploaded, one verifier round per token) is estimated from the same
// run: the same drafting time, and the bytes the run would have taken if each of its tokens had
// been a round of its own (see `standardHlm` below).
//
// Not modelled (all of which favour sending fewer messages, i.e. make the estimate of what the
// filter saves conservative): the radio's promotion and tail energy after each transfer (for LTE
// about 1 W for seconds after the last packet, which dominates for small, frequent messages), TCP
// acknowledgements, retransmissions, the CPU and screen while waiting for the verifier, and the
// server's energy.

/** Constants of the estimate; every one can be overridden per call. */
export const ENERGY_CONSTANTS = Object.freeze({
  // Watts drawn by the device while it drafts. Published measurements of phone SoCs put a busy
  // big-core CPU cluster at roughly 3-5 W; a WebAssembly draft model keeps one or more cores
  // busy. 4 W is the middle of that range. (A laptop is 15-45 W: set it if that is your device.)
  DEVICE_POWER_W: 4,
  // Watts drawn by the radio while transmitting. LTE user-equipment uplink power measurements
  // are in the 1-2.5 W range depending on signal and rate; Wi-Fi transmit is nearer 1 W.
  UPLINK_TX_POWER_W: 1.5,
  // Watts drawn by the radio while receiving: LTE/Wi-Fi downlink reception is commonly measured
  // around 1 W.
  DOWNLINK_RX_POWER_W: 1,
  // Uplink rate in bit/s: a modest mobile uplink (median LTE uplinks are a few to ~10 Mbit/s).
  UPLINK_BPS: 5e6,
  // Downlink rate in bit/s: a modest mobile downlink.
  DOWNLINK_BPS: 20e6,
  // Bytes on the wire per message besides the counted frame: IPv4 (20) + TCP with timestamps
  // (32) + WebSocket header (2-6, masked client frames 6). TLS (wss) would add ~22 more.
  PACKET_OVERHEAD_BYTES: 60,
  // Bytes one more round frame costs besides its tokens (protocol version u16, message tag,
  // round and base varints, vector length). Measured: the README's 64-token greedy benchmark
  // sent 850 B in `always` (64 rounds) and 574 B in `uncertainty+importance` (18 rounds):
  // 276 B / 46 rounds = 6.0 B; `uncertainty` (25 rounds, 616 B) gives the same 6.0 B.
  ROUND_FRAME_BYTES: 6,
  // Bytes of one verdict frame, used only when the run had no round to measure it from
  // (README benchmark: 515 B / 64 rounds ≈ 8 B).
  VERDICT_BYTES: 8,
  // Bytes of one token entry in a round (id varint ≤ 3, verify flag, distribution tag), used
  // only when the run had no round (mode `never`).
  TOKEN_ENTRY_BYTES: 5,
});

function num(x) {
  if (typeof x === 'bigint') return Number(x);
  return typeof x === 'number' && Number.isFinite(x) ? x : 0;
}

/**
 * What standard HLM (every token uploaded) would have sent for the same tokens, estimated from
 * a run's totals (snake_case, as the engine reports them):
 * each token not already closing a round costs one more round frame (ROUND_FRAME_BYTES), each
 * skipped token would also have carried the average distribution payload of this run's uploads
 * (0 under greedy decoding), and each extra round brings one more verdict (this run's average
 * verdict size). For a run in mode `always` this returns the run's own figures.
 */
export function standardHlm(t, c = ENERGY_CONSTANTS) {
  const tokens = num(t.tokens);
  const rounds = num(t.rounds);
  const uploaded = num(t.uploaded);
  const skipped = num(t.skipped);
  const bytesUp = num(t.bytes_up);
  const bytesDown = num(t.bytes_down);
  if (rounds === 0) {
    // No round to measure from (mode `never`, or nothing final yet): protocol constants alone.
    return {
      bytesUp: tokens * (c.ROUND_FRAME_BYTES + c.TOKEN_ENTRY_BYTES),
      bytesDown: tokens * c.VERDICT_BYTES,
      rounds: tokens,
      llmPasses: tokens,
    };
  }
  const extraRounds = Math.max(0, tokens - rounds);
  const distBytesPerUpload = uploaded > 0 ? num(t.dist_bits) / 8 / uploaded : 0;
  return {
    bytesUp: Math.round(bytesUp + extraRounds * c.ROUND_FRAME_BYTES + skipped * distBytesPerUpload),
    bytesDown: Math.round(bytesDown + extraRounds * (bytesDown / rounds)),
    rounds: Math.max(tokens, rounds),
    llmPasses: Math.max(tokens, num(t.llm_forward_passes)),
  };
}

/** Joules for `draftSeconds` of drafting and the given traffic (`messages` each way). */
export function energyJoules(draftSeconds, bytesUp, bytesDown, messages, c = ENERGY_CONSTANTS) {
  const bitsUp = 8 * (bytesUp + messages * c.PACKET_OVERHEAD_BYTES);
  const bitsDown = 8 * (bytesDown + messages * c.PACKET_OVERHEAD_BYTES);
  return (
    num(draftSeconds) * c.DEVICE_POWER_W +
    (bitsUp / c.UPLINK_BPS) * c.UPLINK_TX_POWER_W +
    (bitsDown / c.DOWNLINK_BPS) * c.DOWNLINK_RX_POWER_W
  );
}

/**
 * The estimate for a run so far.
 * @param {object} totals  the engine's running totals or summary (snake_case fields)
 * @param {number} draftSeconds  seconds spent drafting (event/summary `draft_time_s`)
 * @param {object} [constants]  overrides of ENERGY_CONSTANTS
 * @returns {{energyJ:number, draftJ:number, radioJ:number, standardHlmEnergyJ:number,
 *            standardHlmBytesUp:number, standardHlmBytesDown:number, standardHlmLlmPasses:number}}
 */
export function estimateEnergy(totals, draftSeconds, constants) {
  const c = constants ? { ...ENERGY_CONSTANTS, ...constants } : ENERGY_CONSTANTS;
  const rounds = num(totals.rounds);
  const draftJ = num(draftSeconds) * c.DEVICE_POWER_W;
  const energyJ = energyJoules(draftSeconds, num(totals.bytes_up), num(totals.bytes_down), rounds, c);
  const std = standardHlm(totals, c);
  return {
    energyJ,
    draftJ,
    radioJ: energyJ - draftJ,
    standardHlmEnergyJ: energyJoules(draftSeconds, std.bytesUp, std.bytesDown, std.rounds, c),
    standardHlmBytesUp: std.bytesUp,
    standardHlmBytesDown: std.bytesDown,
    standardHlmLlmPasses: std.llmPasses,
  };
}
