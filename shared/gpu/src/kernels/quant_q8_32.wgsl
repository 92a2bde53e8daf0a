// Quantises activations as candle's CPU path does before a product with Q8_0 / Q4_0 / Q4_1 / Q5_0
// weights (ggml quantize_row_q8_0 / q8_1): per block of 32, d = amax / 127, q = round(x / d)
// (halves away from zero, with 1 / d in f32), d kept as an f16, and for Q8_1 s = f16(f16(Σq) · d).
// Output per block, 10 words: [d, s (f32 bits of the f16 values), 8 words of 4 int8 q].
// One thread per block; blocks of x start at x_off.

struct Params {
    blocks: u32,
    x_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;

fn to_f16(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

fn round_away(v: f32) -> f32 {
    let t = trunc(v);
    return select(t, t + sign(v), abs(v - t) >= 0.5);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = gid.y * nwg.x * 64u + gid.x;
    if (blk >= P.blocks) {
        return;
    }
    let xb = P.x_off + blk * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[xb + i]));
    }
    let d = amax / 127.0;
    var id = 0.0;
    if (d != 0.0) {
        id = 1.0 / d;
    }
    let o = blk * 10u;
    var sum = 0i;
    for (var k = 0u; k < 8u; k++) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            let q = i32(round_away(x[xb + 4u * k + j] * id));
            sum += q;
            word |= (bitcast<u32>(q) & 0xffu) << (8u * j);
        }
        xq[o + 2u + k] = word;
    }
    let dh = to_f16(d);
    xq[o] = bitcast<u32>(dh);
    xq[o + 1u] = bitcast<u32>(to_f16(to_f16(f32(sum)) * dh));
}
