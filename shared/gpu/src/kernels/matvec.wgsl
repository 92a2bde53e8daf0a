// y[row] (+)= dot(W[row, :], x) for a weight matrix stored as raw GGUF blocks.
//
// This driver is shared by every block format: the format's file (prepended) defines
//   BLOCK_ELEMS, BLOCK_BYTES : elements and bytes of one block,
//   UNITS_PER_BLOCK          : BLOCK_ELEMS / 32,
//   fn unit_dot(b, sub, xi)  : the dot product of the 32 weights of unit `sub` of the block at byte
//                              `b` of `w` with x[xi .. xi + 32].
// and the host prepends ROWS, the rows one workgroup computes, and weight_bytes.wgsl (load_u32,
// load_u8, load_f16 on `w`).
// A "unit" is 32 consecutive weights of a row. A workgroup of 64 threads computes ROWS rows, with
// TPR = 64 / ROWS threads per row: they take the row's units in turn (consecutive threads read
// consecutive blocks), then add their partial sums in workgroup memory (no subgroup operations, so
// it runs on every WebGPU adapter). Several rows per workgroup keep the number of workgroups (a
// fixed cost each, large on software adapters) low.
// Workgroups are numbered over a 2-D grid (wid.y * nwg.x + wid.x): an output projection has more
// rows than one dispatch dimension allows (65,535).

struct Params {
    rows: u32,
    cols: u32,
    // Byte offset of the matrix in `w` (a multiple of 4).
    w_off: u32,
    // Element offsets of x (a multiple of 4) and y in their buffers.
    x_off: u32,
    y_off: u32,
    // 1: y[row] += result (fused residual add); 0: y[row] = result.
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
// x as vec4s: x_off and every unit start are multiples of 4 (one 16-byte load per 4 values).
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

// The four bytes of `q` as signed values.
fn i8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(q << 24u, q << 16u, q << 8u, q)) >> vec4<u32>(24u));
}

// The four bytes of `q` as unsigned values.
fn u8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) & vec4<u32>(0xffu));
}

// x[i .. i + 4], i a multiple of 4.
fn x4(i: u32) -> vec4<f32> {
    return x[i >> 2u];
}

const TPR: u32 = WG / ROWS;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let lane = t % TPR;
    let row = (wid.y * nwg.x + wid.x) * ROWS + t / TPR;
    var acc = 0.0;
    if (row < P.rows) {
        let units = P.cols / 32u;
        let base = P.w_off + row * ((P.cols / BLOCK_ELEMS) * BLOCK_BYTES);
        for (var u = lane; u < units; u += TPR) {
            let blk = u / UNITS_PER_BLOCK;
            acc += unit_dot(base + blk * BLOCK_BYTES, u % UNITS_PER_BLOCK, P.x_off + u * 32u);
        }
    }
    partial[t] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < P.rows) {
        let o = P.y_off + row;
        if (P.accumulate != 0u) {
            y[o] += partial[t];
        } else {
            y[o] = partial[t];
        }
    }
}
