// The row loop both matrix-vector products share (matvec.wgsl: f32 x; matvec_q8.wgsl: 8-bit x):
// the including file binds x at binding 2 and defines fn row_unit(b, sub, u): unit `sub` (32
// weights) of the block at byte b of `w` times the row's unit u of x. The host prepends ROWS.
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
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const TPR: u32 = WG / ROWS;
var<workgroup> partial: array<f32, WG>;

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
            acc += row_unit(base + blk * BLOCK_BYTES, u % UNITS_PER_BLOCK, u);
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
