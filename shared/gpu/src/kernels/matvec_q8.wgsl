// y[row] (+)= W[row, :] · x with x quantised to 8 bits per block of 32 (quant_q8_32.wgsl): the
// integer products and the float combination of candle's CPU vec_dot for Q8_0 / Q4_0 / Q4_1 / Q5_0
// weights, so that both backends round the same way (only the order of the float sums differs).
// Also Q4_K / Q6_K weights with Q8_K activations (quant_q8_k.wgsl).
// Same structure as matvec.wgsl (ROWS rows per workgroup of 64 threads). The host prepends ROWS,
// weight_bytes.wgsl, the format's layout (its f32 file up to the "product with f32 activations"
// line: BLOCK_ELEMS, BLOCK_BYTES, UNITS_PER_BLOCK and decoding helpers) and its _q8 file, which
// defines fn unit_dot_q(b, sub, xu): unit `sub` (32 weights) of the block at byte b times unit xu
// of the quantised x (it knows its x layout).
// x_off (elements, a multiple of the activation block) selects where x starts.

struct Params {
    rows: u32,
    cols: u32,
    w_off: u32,
    x_off: u32,
    y_off: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const TPR: u32 = WG / ROWS;
var<workgroup> partial: array<f32, WG>;

fn i8x4(q: u32) -> vec4<i32> {
    return bitcast<vec4<i32>>(vec4<u32>(q << 24u, q << 16u, q << 8u, q)) >> vec4<u32>(24u);
}

fn u8x4(q: u32) -> vec4<i32> {
    return vec4<i32>(vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) & vec4<u32>(0xffu));
}

// Blocks of 32 (quant_q8_32): 10 words per block, [d, s, 8 words of q].
fn xd(xu: u32) -> f32 {
    return bitcast<f32>(xq[xu * 10u]);
}

fn xs(xu: u32) -> f32 {
    return bitcast<f32>(xq[xu * 10u + 1u]);
}

// Quantised x values 4k .. 4k + 3 of unit xu.
fn xq4(xu: u32, k: u32) -> vec4<i32> {
    return i8x4(xq[xu * 10u + 2u + k]);
}

// Blocks of 256 (quant_q8_k): 65 words per block, [d, 64 words of q]; unit xu is 8 of those words.
fn xkd(xu: u32) -> f32 {
    return bitcast<f32>(xq[(xu / 8u) * 65u]);
}

fn xk4(xu: u32, k: u32) -> vec4<i32> {
    return i8x4(xq[(xu / 8u) * 65u + 1u + (xu % 8u) * 8u + k]);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let lane = t % TPR;
    let row = (wid.y * nwg.x + wid.x) * ROWS + t / TPR;
    var acc = 0.0;
    if (row < P.rows) {
        let units = P.cols / 32u;
        let base = P.w_off + row * ((P.cols / BLOCK_ELEMS) * BLOCK_BYTES);
        for (var u = lane; u < units; u += TPR) {
            let blk = u / UNITS_PER_BLOCK;
            acc += unit_dot_q(base + blk * BLOCK_BYTES, u % UNITS_PER_BLOCK, P.x_off / 32u + u);
        }
    }
    partial[t] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < P.rows) {
        let o = P.y_off + row;
        if (P.accumulate != 0u) {
            y[o] += partial[t];
        } else {
            y[o] = partial[t];
        }
    }
}
