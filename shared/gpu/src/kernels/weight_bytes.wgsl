// Reading the weight matrix `w` (array<u32>, declared by the product kernel that includes this
// file) byte by byte: shared by matvec.wgsl and matvec_q8.wgsl and the block formats they include.

// The 4 bytes at byte offset `b` (any alignment), little-endian.
fn load_u32(b: u32) -> u32 {
    let i = b >> 2u;
    let s = (b & 3u) * 8u;
    if (s == 0u) {
        return w[i];
    }
    return (w[i] >> s) | (w[i + 1u] << (32u - s));
}

fn load_u8(b: u32) -> u32 {
    return (w[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

// An IEEE half at an even byte offset.
fn load_f16(b: u32) -> f32 {
    return unpack2x16float((w[b >> 2u] >> ((b & 2u) * 8u)) & 0xffffu).x;
}
