// Residual or bias add, in place: x[x_off + i] += y[y_off + i] for i < n.

struct Params {
    n: u32,
    x_off: u32,
    y_off: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 64u + gid.x;
    if (i >= P.n) {
        return;
    }
    x[P.x_off + i] += y[P.y_off + i];
}
