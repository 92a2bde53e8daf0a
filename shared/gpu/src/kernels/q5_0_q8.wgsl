// Q5_0 weights x Q8_0 activations: sumi · d_w · d_x, weights q - 16 (see q5_0.wgsl).

fn unit_dot_q(b: u32, sub: u32, xo: u32) -> f32 {
    let qh = load_u32(b + 2u);
    var sumi = 0i;
    for (var k = 0u; k < 4u; k++) {
        let q = load_u32(b + 6u + 4u * k);
        let lo = (q & 0x0f0f0f0fu) | hbits(qh, 4u * k);
        let hi = ((q >> 4u) & 0x0f0f0f0fu) | hbits(qh, 16u + 4u * k);
        sumi += dot(u8x4(lo) - vec4<i32>(16), xq4(xo, k));
        sumi += dot(u8x4(hi) - vec4<i32>(16), xq4(xo, 4u + k));
    }
    return f32(sumi) * load_f16(b) * xd(xo);
}
