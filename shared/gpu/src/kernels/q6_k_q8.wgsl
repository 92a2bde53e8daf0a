// Q6_K weights x Q8_K activations (see q6_k.wgsl for the layout): per sub-block of 32,
// d_w · d_x · (sc_0 · Σ_0 + sc_1 · Σ_1) over its two halves of 16, integer sums as candle's
// vec_dot_q6k_q8k.

fn unit_dot_q(b: u32, j: u32, xu: u32) -> f32 {
    var s0 = 0i;
    var s1 = 0i;
    for (var k = 0u; k < 8u; k++) {
        let p = dot(u8x4(quad(b, j, k)) - vec4<i32>(32), xk4(xu, k));
        if (k < 4u) {
            s0 += p;
        } else {
            s1 += p;
        }
    }
    let scb = scale_at(b, j);
    return load_f16(b + 208u) * xkd(xu) * f32(i8_at(scb) * s0 + i8_at(scb + 1u) * s1);
}
