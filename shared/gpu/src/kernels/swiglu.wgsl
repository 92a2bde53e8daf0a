// SwiGLU's gate, in place: g[i] = silu(g[i]) * u[i], silu(z) = z / (1 + e^-z), for i < n.
// g at g_off, u at u_off (they may be two halves of one buffer only if bound separately; here g is
// read-write and u read-only, so they are different buffers).

struct Params {
    n: u32,
    g_off: u32,
    u_off: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 64u + gid.x;
    if (i >= P.n) {
        return;
    }
    let z = g[P.g_off + i];
    g[P.g_off + i] = z / (1.0 + exp(-z)) * u[P.u_off + i];
}
