// Q4_0 (ggml block_q4_0, 18 bytes for 32 weights): f16 d, 16 bytes qs; weight j < 16 is the low
// nibble of qs[j], weight j + 16 its high nibble; weight = d * (q - 8).
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
const UNITS_PER_BLOCK: u32 = 1u;

// ---- the product with f32 activations (above: the block layout, shared with q4_0_q8.wgsl)

fn unit_dot(b: u32, sub: u32, xi: u32) -> f32 {
    let d = load_f16(b);
    var s = 0.0;
    for (var k = 0u; k < 4u; k++) {
        let q = load_u32(b + 2u + 4u * k);
        s += dot(u8x4(q & 0x0f0f0f0fu) - vec4<f32>(8.0), x4(xi + 4u * k));
        s += dot(u8x4((q >> 4u) & 0x0f0f0f0fu) - vec4<f32>(8.0), x4(xi + 16u + 4u * k));
    }
    return d * s;
}
