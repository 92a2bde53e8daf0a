// Q6_K (ggml block_q6_K, 210 bytes for 256 weights): 128 bytes ql (low 4 bits), 64 bytes qh (high
// 2 bits), 16 int8 scales (one per 16 weights), f16 d. Weights come in two halves of 128; in half n,
// quarter r (32 weights, element l): q = nibble (r / 2) of ql[64 n + 32 (r % 2) + l] | bits 2r..2r+1
// of qh[32 n + l] << 4, scale sc[8 n + 2 r + l / 16]; weight = d * sc * (q - 32).
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
const UNITS_PER_BLOCK: u32 = 8u;

// The int8 at byte b.
fn i8_at(b: u32) -> i32 {
    return bitcast<i32>(load_u8(b) << 24u) >> 24u;
}

// Weights 4k .. 4k+3 of sub-block j (32 weights) of the block at byte b, as four bytes 0..63
// (subtract 32 for the signed value).
fn quad(b: u32, j: u32, k: u32) -> u32 {
    let n = j / 4u;
    let r = j % 4u;
    let ql = (load_u32(b + 64u * n + 32u * (r & 1u) + 4u * k) >> ((r >> 1u) * 4u)) & 0x0f0f0f0fu;
    let qh = ((load_u32(b + 128u + 32u * n + 4u * k) >> (2u * r)) & 0x03030303u) << 4u;
    return ql | qh;
}

// Byte of sub-block j's first scale (its second follows).
fn scale_at(b: u32, j: u32) -> u32 {
    return b + 192u + 8u * (j / 4u) + 2u * (j % 4u);
}

// ---- the product with f32 activations (above: the block layout, shared with q6_k_q8.wgsl)

fn unit_dot(b: u32, j: u32, xi: u32) -> f32 {
    var s0 = 0.0;
    var s1 = 0.0;
    for (var k = 0u; k < 8u; k++) {
        let p = dot(u8x4(quad(b, j, k)) - vec4<f32>(32.0), x4(xi + 4u * k));
        if (k < 4u) {
            s0 += p;
        } else {
            s1 += p;
        }
    }
    let scb = scale_at(b, j);
    return load_f16(b + 208u) * (f32(i8_at(scb)) * s0 + f32(i8_at(scb + 1u)) * s1);
}
