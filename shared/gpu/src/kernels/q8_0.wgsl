// Q8_0 (ggml block_q8_0, 34 bytes for 32 weights): f16 d, then 32 int8 q; weight = d * q.
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
const UNITS_PER_BLOCK: u32 = 1u;

// ---- the product with f32 activations (above: the block layout, shared with q8_0_q8.wgsl)

fn unit_dot(b: u32, sub: u32, xi: u32) -> f32 {
    let d = load_f16(b);
    var s = 0.0;
    for (var k = 0u; k < 8u; k++) {
        s += dot(i8x4(load_u32(b + 2u + 4u * k)), x4(xi + 4u * k));
    }
    return d * s;
}
