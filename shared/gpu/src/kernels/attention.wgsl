// Attention of one query (the newest token) over the n = pos + 1 cached positions, grouped-query:
// head h reads key/value head h / (heads / kv_heads). One workgroup per head:
//   1. s_j = q_h . k_j / sqrt(head_dim), written to probs[h * stride + j], with a running max;
//   2. e_j = exp(s_j - max), written back, with a running sum;
//   3. p_j = e_j / sum (the probabilities, kept for the importance filter);
//   4. out_h[d] = sum_j p_j v_j[d], one thread per dimension d.
// Keys and values: row j of the cache holds kv_heads * head_dim values, at k_off / v_off.
// The number of positions comes from `step` (pos = positions before this token).

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    // Row stride of probs (the longest context).
    stride: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
}

struct Step {
    pos: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> S: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;
// The head's query (head_dim <= 256).
var<workgroup> qs: array<f32, 256>;

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.x;
    let n = S.pos + 1u;
    let hd = P.head_dim;
    let kvw = P.kv_heads * hd;
    let kvh = h / (P.heads / P.kv_heads);
    let qb = P.q_off + h * hd;
    let pb = h * P.stride;
    let scale = 1.0 / sqrt(f32(hd));

    for (var i = t; i < hd; i += WG) {
        qs[i] = q[qb + i];
    }
    workgroupBarrier();

    var m = -0x1.fffffep+127f; // -f32::MAX, in hex: a decimal spelling may round past it (Tint refuses)
    for (var j = t; j < n; j += WG) {
        let kb = P.k_off + j * kvw + kvh * hd;
        var d = 0.0;
        for (var i = 0u; i < hd; i++) {
            d += qs[i] * kc[kb + i];
        }
        let s = d * scale;
        probs[pb + j] = s;
        m = max(m, s);
    }
    m = reduce_max(t, m);

    // Each thread reads back only what it wrote, so no barrier on `probs` is needed until step 4.
    var sum = 0.0;
    for (var j = t; j < n; j += WG) {
        let e = exp(probs[pb + j] - m);
        probs[pb + j] = e;
        sum += e;
    }
    sum = reduce_sum(t, sum);
    let inv = 1.0 / sum;
    for (var j = t; j < n; j += WG) {
        probs[pb + j] *= inv;
    }
    storageBarrier();

    for (var i = t; i < hd; i += WG) {
        var o = 0.0;
        for (var j = 0u; j < n; j++) {
            o += probs[pb + j] * vc[P.v_off + j * kvw + kvh * hd + i];
        }
        out[P.out_off + h * hd + i] = o;
    }
}
