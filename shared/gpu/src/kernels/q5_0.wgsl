// Q5_0 (ggml block_q5_0, 22 bytes for 32 weights): f16 d, u32 qh (the fifth bits), 16 bytes qs;
// weight j < 16 = low nibble of qs[j] | bit j of qh << 4, weight j + 16 = high nibble of qs[j] |
// bit j + 16 of qh << 4; weight = d * (q - 16).
const BLOCK_ELEMS: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
const UNITS_PER_BLOCK: u32 = 1u;

// Bits k..k+3 of `h` moved to bit 4 of each byte.
fn hbits(h: u32, k: u32) -> u32 {
    let v = h >> k;
    return ((v & 1u) << 4u) | ((v & 2u) << 11u) | ((v & 4u) << 18u) | ((v & 8u) << 25u);
}

// ---- the product with f32 activations (above: the block layout, shared with q5_0_q8.wgsl)

fn unit_dot(b: u32, sub: u32, xi: u32) -> f32 {
    let d = load_f16(b);
    let qh = load_u32(b + 2u);
    var s = 0.0;
    for (var k = 0u; k < 4u; k++) {
        let q = load_u32(b + 6u + 4u * k);
        let lo = (q & 0x0f0f0f0fu) | hbits(qh, 4u * k);
        let hi = ((q >> 4u) & 0x0f0f0f0fu) | hbits(qh, 16u + 4u * k);
        s += dot(u8x4(lo) - vec4<f32>(16.0), x4(xi + 4u * k));
        s += dot(u8x4(hi) - vec4<f32>(16.0), x4(xi + 16u + 4u * k));
    }
    return d * s;
}
