// Q8_0 weights x Q8_0 activations: sumi · d_w · d_x.

fn unit_dot_q(b: u32, sub: u32, xo: u32) -> f32 {
    var sumi = 0i;
    for (var k = 0u; k < 8u; k++) {
        sumi += dot(i8x4(load_u32(b + 2u + 4u * k)), xq4(xo, k));
    }
    return f32(sumi) * load_f16(b) * xd(xo);
}
