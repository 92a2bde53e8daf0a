// Q4_1 weights x Q8_1 activations: sumi · d_w · d_x + m_w · s_x.

fn unit_dot_q(b: u32, sub: u32, xo: u32) -> f32 {
    var sumi = 0i;
    for (var k = 0u; k < 4u; k++) {
        let q = load_u32(b + 4u + 4u * k);
        sumi += dot(u8x4(q & 0x0f0f0f0fu), xq4(xo, k));
        sumi += dot(u8x4((q >> 4u) & 0x0f0f0f0fu), xq4(xo, 4u + k));
    }
    return f32(sumi) * load_f16(b) * xd(xo) + load_f16(b + 2u) * xs(xo);
}
