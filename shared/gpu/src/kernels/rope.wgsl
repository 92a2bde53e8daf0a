// Rotary position embedding, in place, on `heads` consecutive heads of `head_dim` values starting
// at element `off` of x (q and k can be rotated by one dispatch when they are adjacent).
// One invocation per pair of dimensions: pair i of a head at position p is rotated by the angle
// whose cos / sin are table[p * hh + i] / table[(max_pos + p) * hh + i], hh = head_dim / 2
// (computed on the CPU in f64 as the CPU engine does: the GPU evaluates no cos / sin of large angles,
// where GPU precision is poor, and both sides use the same rounded values).
// style 0 ("halves", NeoX): pairs (i, i + hh); style 1 ("interleaved", GGUF Llama): (2i, 2i + 1).
// The position is read from `step` (the number of positions already in the cache).

struct Params {
    heads: u32,
    head_dim: u32,
    off: u32,
    style: u32,
    max_pos: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    pos: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hh = P.head_dim / 2u;
    let idx = gid.x;
    if (idx >= P.heads * hh) {
        return;
    }
    let h = idx / hh;
    let i = idx % hh;
    let c = table[S.pos * hh + i];
    let s = table[(P.max_pos + S.pos) * hh + i];
    var a: u32;
    var b: u32;
    if (P.style == 0u) {
        a = i;
        b = i + hh;
    } else {
        a = 2u * i;
        b = 2u * i + 1u;
    }
    let base = P.off + h * P.head_dim;
    let x0 = x[base + a];
    let x1 = x[base + b];
    x[base + a] = x0 * c - x1 * s;
    x[base + b] = x0 * s + x1 * c;
}
