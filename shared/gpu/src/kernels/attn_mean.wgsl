// The attention row the importance filter reads: row[j] (+)= scale * sum_h probs[h * stride + j]
// for j < n = pos + 1. With scale = 1 / (heads * layers) and accumulate set for every captured layer
// but the first, row ends as the mean over heads and layers.

struct Params {
    heads: u32,
    stride: u32,
    scale: f32,
    accumulate: u32,
}

struct Step {
    pos: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> row: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.y * nwg.x * 64u + gid.x;
    if (j > S.pos) {
        return;
    }
    var s = 0.0;
    for (var h = 0u; h < P.heads; h++) {
        s += probs[h * P.stride + j];
    }
    if (P.accumulate != 0u) {
        row[j] += P.scale * s;
    } else {
        row[j] = P.scale * s;
    }
}
