// Q6_K weights x Q8_K activations (see q6_k.wgsl for the layout): per sub-block of 32,
// d_w · d_x · (sc_0 · Σ_0 + sc_1 · Σ_1) over its two halves of 16, integer sums as candle's
// vec_dot_q6k_q8k.
const BLOCK_ELEMS: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
const UNITS_PER_BLOCK: u32 = 8u;

fn i8_at(b: u32) -> i32 {
    return bitcast<i32>(load_u8(b) << 24u) >> 24u;
}

fn unit_dot_q(b: u32, j: u32, xu: u32) -> f32 {
    let n = j / 4u;
    let r = j % 4u;
    let qlb = b + 64u * n + 32u * (r & 1u);
    let qhb = b + 128u + 32u * n;
    let nsh = (r >> 1u) * 4u;
    let hsh = 2u * r;
    var s0 = 0i;
    var s1 = 0i;
    for (var k = 0u; k < 8u; k++) {
        let ql = (load_u32(qlb + 4u * k) >> nsh) & 0x0f0f0f0fu;
        let qh = ((load_u32(qhb + 4u * k) >> hsh) & 0x03030303u) << 4u;
        let p = dot(u8x4(ql | qh) - vec4<i32>(32), xk4(xu, k));
        if (k < 4u) {
            s0 += p;
        } else {
            s1 += p;
        }
    }
    let scb = b + 192u + 8u * n + 2u * r;
    return load_f16(b + 208u) * xkd(xu) * f32(i8_at(scb) * s0 + i8_at(scb + 1u) * s1);
}
