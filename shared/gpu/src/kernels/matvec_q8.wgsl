// y[row] (+)= W[row, :] · x with x quantised to 8 bits per block of 32 (quant_q8_32.wgsl): the
// integer products and the float combination of candle's CPU vec_dot for Q8_0 / Q4_0 / Q4_1 / Q5_0
// weights, so that both backends round the same way (only the order of the float sums differs).
// Also Q4_K / Q6_K weights with Q8_K activations (quant_q8_k.wgsl).
// Same structure as matvec.wgsl. The host prepends ROWS, weight_bytes.wgsl, the format's layout (its f32 file up to the "product with f32 activations"
// line: BLOCK_ELEMS, BLOCK_BYTES, UNITS_PER_BLOCK and decoding helpers) and its _q8 file, which
// defines fn unit_dot_q(b, sub, xu): unit `sub` (32 weights) of the block at byte b times unit xu
// of the quantised x (it knows its x layout).
// x_off (elements, a multiple of the activation block) selects where x starts. The host appends
// matvec_rows.wgsl (the parameters, the other bindings and the row loop, which calls
// row_unit).

@group(0) @binding(2) var<storage, read> xq: array<u32>;

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

// Unit u of the row times the quantised x (x_off is in elements, a multiple of 32).
fn row_unit(b: u32, sub: u32, u: u32) -> f32 {
    return unit_dot_q(b, sub, P.x_off / 32u + u);
}
