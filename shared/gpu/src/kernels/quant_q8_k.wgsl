// Quantises activations as candle's CPU path does before a product with Q4_K / Q6_K weights
// (quantize_row_q8K): per block of 256, with max the first value of largest magnitude,
// iscale = -127 / max, q = clamp(round(iscale · x), -128, 127) (halves away from zero), d = 1 / iscale
// (an f32). Output per block, 65 words: [d, 64 words of 4 int8 q]. One thread per block.

struct Params {
    blocks: u32,
    x_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;

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
    let xb = P.x_off + blk * 256u;
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = x[xb + i];
        if (amax < abs(v)) {
            amax = abs(v);
            mx = v;
        }
    }
    let o = blk * 65u;
    if (amax == 0.0) {
        for (var k = 0u; k < 65u; k++) {
            xq[o + k] = 0u;
        }
        return;
    }
    let iscale = -127.0 / mx;
    for (var k = 0u; k < 64u; k++) {
        var word = 0u;
        for (var j = 0u; j < 4u; j++) {
            let q = i32(clamp(round_away(iscale * x[xb + 4u * k + j]), -128.0, 127.0));
            word |= (bitcast<u32>(q) & 0xffu) << (8u * j);
        }
        xq[o + 1u + k] = word;
    }
    xq[o] = bitcast<u32>(1.0 / iscale);
}
