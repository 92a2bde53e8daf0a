// Greedy token: out = (index, value) of the largest of x[0 .. n] (lowest index on ties, 0 when no
// value exceeds -inf, NaN never wins: as hlm_core::argmax), in one workgroup. Lets a greedy draft
// step read back 8 bytes instead of the logits when neither the filter nor sampling needs them.
// No infinity appears as a constant: browsers' WGSL compilers refuse one (Tint: "value -inf cannot
// be represented as 'f32'"); a thread holds no index until it sees a value ≥ -f32::MAX.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -0x1.fffffep+127f; // -f32::MAX
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
    var bv = LOWEST;
    var bi = NONE;
    for (var i = t; i < P.n; i += WG) {
        let v = x[i];
        if (v > bv || (bi == NONE && v >= LOWEST)) {
            bv = v;
            bi = i;
        }
    }
    best_v[t] = bv;
    best_i[t] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let ov = best_v[t + s];
            let oi = best_i[t + s];
            if (ov > best_v[t] || (ov == best_v[t] && oi < best_i[t])) {
                best_v[t] = ov;
                best_i[t] = oi;
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        out[0] = select(best_i[0], 0u, best_i[0] == NONE);
        out[1] = bitcast<u32>(best_v[0]);
    }
}
