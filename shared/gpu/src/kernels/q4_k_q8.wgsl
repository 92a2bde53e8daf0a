// Q4_K weights x Q8_K activations (see q4_k.wgsl for the layout): per sub-block j of 32,
// d_x · (d_w · sc_j · Σ q·q_x − dmin_w · m_j · Σ q_x), integer sums as candle's vec_dot_q4k_q8k.

fn unit_dot_q(b: u32, j: u32, xu: u32) -> f32 {
    let sm = scale_min(b, j);
    let sc = sm.x;
    let m = sm.y;
    let qb = b + 16u + 32u * (j / 2u);
    let shift = (j & 1u) * 4u;
    var sumi = 0i;
    var bsum = 0i;
    for (var k = 0u; k < 8u; k++) {
        let xv = xk4(xu, k);
        sumi += dot(u8x4((load_u32(qb + 4u * k) >> shift) & 0x0f0f0f0fu), xv);
        bsum += dot(xv, vec4<i32>(1));
    }
    let dx = xkd(xu);
    return dx * (load_f16(b) * f32(i32(sc) * sumi) - load_f16(b + 2u) * f32(i32(m) * bsum));
}
