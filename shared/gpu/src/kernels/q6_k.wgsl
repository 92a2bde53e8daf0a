// Q6_K (ggml block_q6_K, 210 bytes for 256 weights): 128 bytes ql (low 4 bits), 64 bytes qh (high
// 2 bits), 16 int8 scales (one per 16 weights), f16 d. Weights come in two halves of 128; in half n,
// quarter r (32 weights, element l): q = nibble (r / 2) of ql[64 n + 32 (r % 2) + l] | bits 2r..2r+1
// of qh[32 n + l] << 4, scale sc[8 n + 2 r + l / 16]; weight = d * sc * (q - 32).
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
const UNITS_PER_BLOCK: u32 = 8u;

fn i8_at(b: u32) -> f32 {
    return f32(bitcast<i32>(load_u8(b) << 24u) >> 24u);
}

fn unit_dot(b: u32, j: u32, xi: u32) -> f32 {
    let n = j / 4u;
    let r = j % 4u;
    let qlb = b + 64u * n + 32u * (r & 1u);
    let qhb = b + 128u + 32u * n;
    let nsh = (r >> 1u) * 4u;
    let hsh = 2u * r;
    var s0 = 0.0;
    var s1 = 0.0;
    for (var k = 0u; k < 8u; k++) {
        let ql = (load_u32(qlb + 4u * k) >> nsh) & 0x0f0f0f0fu;
        let qh = ((load_u32(qhb + 4u * k) >> hsh) & 0x03030303u) << 4u;
        let p = dot(u8x4(ql | qh) - vec4<f32>(32.0), x4(xi + 4u * k));
        if (k < 4u) {
            s0 += p;
        } else {
            s1 += p;
        }
    }
    let scb = b + 192u + 8u * n + 2u * r;
    return load_f16(b + 208u) * (i8_at(scb) * s0 + i8_at(scb + 1u) * s1);
}
