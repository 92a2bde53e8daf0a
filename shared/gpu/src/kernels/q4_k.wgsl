// Q4_K (ggml block_q4_K, 144 bytes for 256 weights): f16 d, f16 dmin, 12 bytes of packed 6-bit
// scales and mins (8 of each), 128 bytes qs. Sub-block j (32 weights) has scale sc_j and min m_j
// (get_scale_min_k4); its weights are the low (j even) or high (j odd) nibbles of qs[32 (j / 2) ..
// 32 (j / 2) + 32]; weight = d * sc_j * q - dmin * m_j.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
const UNITS_PER_BLOCK: u32 = 8u;

// (sc_j, m_j) of sub-block j of the block at byte b: ggml's get_scale_min_k4.
fn scale_min(b: u32, j: u32) -> vec2<u32> {
    let sb = b + 4u;
    if (j < 4u) {
        return vec2<u32>(load_u8(sb + j) & 63u, load_u8(sb + j + 4u) & 63u);
    }
    return vec2<u32>(
        (load_u8(sb + j + 4u) & 0xfu) | ((load_u8(sb + j - 4u) >> 6u) << 4u),
        (load_u8(sb + j + 4u) >> 4u) | ((load_u8(sb + j) >> 6u) << 4u),
    );
}

// ---- the product with f32 activations (above: the block layout, shared with q4_k_q8.wgsl)

fn unit_dot(b: u32, j: u32, xi: u32) -> f32 {
    let d = load_f16(b);
    let dmin = load_f16(b + 2u);
    let sm = scale_min(b, j);
    let sc = sm.x;
    let m = sm.y;
    let qb = b + 16u + 32u * (j / 2u);
    let shift = (j & 1u) * 4u;
    var s = 0.0;
    var sx = 0.0;
    for (var k = 0u; k < 8u; k++) {
        let xv = x4(xi + 4u * k);
        s += dot(u8x4((load_u32(qb + 4u * k) >> shift) & 0x0f0f0f0fu), xv);
        sx += dot(xv, vec4<f32>(1.0));
    }
    return d * f32(sc) * s - dmin * f32(m) * sx;
}
