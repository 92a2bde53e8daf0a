// y[row] (+)= dot(W[row, :], x) for a weight matrix stored as raw GGUF blocks and x in f32.
//
// Shared by every block format: the format's file (prepended) defines
//   BLOCK_ELEMS, BLOCK_BYTES : elements and bytes of one block,
//   UNITS_PER_BLOCK          : BLOCK_ELEMS / 32,
//   fn unit_dot(b, sub, xi)  : the dot product of the 32 weights of unit `sub` of the block at byte
//                              `b` of `w` with x[xi .. xi + 32].
// The host prepends ROWS and weight_bytes.wgsl (load_u32, load_u8, load_f16 on `w`) and appends
// matvec_rows.wgsl (the parameters, the other bindings and the row loop, which calls row_unit).

// x as vec4s: x_off and every unit start are multiples of 4 (one 16-byte load per 4 values).
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;

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

// Unit u of the row times x (x_off is in elements).
fn row_unit(b: u32, sub: u32, u: u32) -> f32 {
    return unit_dot(b, sub, P.x_off + u * 32u);
}
