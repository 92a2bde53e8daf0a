// RMSNorm, one row per workgroup: y = x / sqrt(mean(x^2) + eps) * g.
// Row r of x starts at x_off + r * n; of y at y_off + r * n; g (n weights) at g_off.

struct Params {
    n: u32,
    x_off: u32,
    y_off: u32,
    g_off: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let xr = P.x_off + wid.x * P.n;
    let yr = P.y_off + wid.x * P.n;
    var ss = 0.0;
    for (var i = t; i < P.n; i += WG) {
        let v = x[xr + i];
        ss += v * v;
    }
    partial[t] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(partial[0] / f32(P.n) + P.eps);
    for (var i = t; i < P.n; i += WG) {
        y[yr + i] = x[xr + i] * scale * g[P.g_off + i];
    }
}
