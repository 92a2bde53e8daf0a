//! The WGSL compute kernels and how to bind them.
//!
//! Each kernel lives in its own `.wgsl` file under `src/kernels/`. [`Kernels`] compiles them once per
//! device; a kernel's builder method (e.g. [`Kernels::matvec`]) checks its arguments, writes its
//! parameters into a small uniform buffer, binds the buffers and returns a [`Dispatch`], which
//! [`record`] puts into a compute pass. A model builds its dispatches once at load time and records
//! all of one token's dispatches into one command encoder: one submission per token. What changes
//! from token to token (the position) is read from a [`Step`] uniform that is written once per
//! token.

use crate::{GpuContext, GpuError, Result};
use bytemuck::{Pod, Zeroable};

const MATVEC: &str = include_str!("kernels/matvec.wgsl");
const RMS_NORM: &str = include_str!("kernels/rms_norm.wgsl");
const ROPE: &str = include_str!("kernels/rope.wgsl");
const SWIGLU: &str = include_str!("kernels/swiglu.wgsl");
const ADD: &str = include_str!("kernels/add.wgsl");
const ATTENTION: &str = include_str!("kernels/attention.wgsl");
const ATTN_MEAN: &str = include_str!("kernels/attn_mean.wgsl");
const ARGMAX: &str = include_str!("kernels/argmax.wgsl");
const QUANT_Q8_32: &str = include_str!("kernels/quant_q8_32.wgsl");
const QUANT_Q8_K: &str = include_str!("kernels/quant_q8_k.wgsl");
const MATVEC_Q8: &str = include_str!("kernels/matvec_q8.wgsl");
const WEIGHT_BYTES: &str = include_str!("kernels/weight_bytes.wgsl");
const MATVEC_ROWS_LOOP: &str = include_str!("kernels/matvec_rows.wgsl");

/// Where a block format's file ends its layout (constants and decoding helpers, shared with its
/// `_q8` product) and starts its f32-activation product. WGSL has no include: the host
/// concatenates the pieces.
const LAYOUT_END: &str = "// ---- the product with f32 activations";

/// Threads per workgroup of the element-wise kernels (must match their `@workgroup_size`).
const ELEMWISE_WG: u32 = 64;
/// Rows of a matrix-vector product per 64-thread workgroup (a power of two, at most 64).
pub const MATVEC_ROWS: usize = 8;
/// Largest head dimension the attention kernel holds in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;

/// GGUF block formats the matrix-vector kernel reads as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 6] = [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
    ];

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantFormat::Q4K | QuantFormat::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes per block (ggml's `sizeof(block_…)`).
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4K => 144,
            QuantFormat::Q6K => 210,
        }
    }

    /// Bytes of a `rows × cols` matrix.
    pub fn matrix_bytes(self, rows: usize, cols: usize) -> usize {
        rows * (cols / self.block_elems()) * self.block_bytes()
    }

    fn source(self) -> &'static str {
        match self {
            QuantFormat::Q4_0 => include_str!("kernels/q4_0.wgsl"),
            QuantFormat::Q4_1 => include_str!("kernels/q4_1.wgsl"),
            QuantFormat::Q5_0 => include_str!("kernels/q5_0.wgsl"),
            QuantFormat::Q8_0 => include_str!("kernels/q8_0.wgsl"),
            QuantFormat::Q4K => include_str!("kernels/q4_k.wgsl"),
            QuantFormat::Q6K => include_str!("kernels/q6_k.wgsl"),
        }
    }

    /// The format's product with 8-bit activations (candle's CPU arithmetic), if there is one.
    fn q8_source(self) -> Option<&'static str> {
        match self {
            QuantFormat::Q4_0 => Some(include_str!("kernels/q4_0_q8.wgsl")),
            QuantFormat::Q4_1 => Some(include_str!("kernels/q4_1_q8.wgsl")),
            QuantFormat::Q5_0 => Some(include_str!("kernels/q5_0_q8.wgsl")),
            QuantFormat::Q8_0 => Some(include_str!("kernels/q8_0_q8.wgsl")),
            QuantFormat::Q4K => Some(include_str!("kernels/q4_k_q8.wgsl")),
            QuantFormat::Q6K => Some(include_str!("kernels/q6_k_q8.wgsl")),
        }
    }

    /// How candle quantises the activations for a product with this format.
    pub fn activation_quant(self) -> ActQuant {
        match self {
            QuantFormat::Q4K | QuantFormat::Q6K => ActQuant::Q8K,
            _ => ActQuant::Q8_32,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&f| f == self).unwrap_or(0)
    }
}

/// The 8-bit activation formats of candle's CPU products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActQuant {
    /// ggml's Q8_0 / Q8_1, blocks of 32 ([`Kernels::quantize`]).
    Q8_32,
    /// ggml's Q8_K, blocks of 256 ([`Kernels::quantize`]).
    Q8K,
}

impl ActQuant {
    /// Values per block.
    pub fn block(self) -> usize {
        match self {
            ActQuant::Q8_32 => 32,
            ActQuant::Q8K => 256,
        }
    }

    /// Words that `n` quantised values take (10 per block of 32, 65 per block of 256).
    pub fn words(self, n: usize) -> usize {
        match self {
            ActQuant::Q8_32 => n / 32 * 10,
            ActQuant::Q8K => n / 256 * 65,
        }
    }
}

/// Words of `n` activations quantised to [`ActQuant::Q8_32`] by [`Kernels::quantize`] (10 per block of 32).
pub fn q8_32_words(n: usize) -> usize {
    ActQuant::Q8_32.words(n)
}

/// Per-token state the kernels read: the number of positions already in the cache (the new
/// token's position).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct Step {
    pub pos: u32,
    pub _pad: [u32; 3],
}

impl Step {
    pub fn at(pos: usize) -> Self {
        Self {
            pos: pos as u32,
            _pad: [0; 3],
        }
    }
}

/// `y[y_off + r] (+)= Σ_c W[r, c] · x[x_off + c]` for `r < rows`; `W` starts at byte `w_off`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct MatvecParams {
    pub rows: u32,
    pub cols: u32,
    pub w_off: u32,
    pub x_off: u32,
    pub y_off: u32,
    /// 1: add to `y` (fused residual); 0: overwrite.
    pub accumulate: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct RmsNormParams {
    pub n: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub g_off: u32,
    pub eps: f32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct RopeParams {
    pub heads: u32,
    pub head_dim: u32,
    pub off: u32,
    /// 0: pairs `(i, i + d/2)` (halves); 1: pairs `(2i, 2i + 1)` (interleaved).
    pub style: u32,
    /// Positions in the table.
    pub max_pos: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
struct ElemParams {
    n: u32,
    a_off: u32,
    b_off: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct AttentionParams {
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Row stride of the probabilities buffer (at least the longest context).
    pub stride: u32,
    pub q_off: u32,
    pub k_off: u32,
    pub v_off: u32,
    pub out_off: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct AttnMeanParams {
    pub heads: u32,
    pub stride: u32,
    pub scale: f32,
    pub accumulate: u32,
}

/// One kernel launch, bound and ready to record.
pub struct Dispatch {
    label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
    /// Kept alive with the bind group (the kernel's parameters).
    _params: wgpu::Buffer,
}

impl Dispatch {
    /// The kernel's name (for profiles).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }
}

/// Records `dispatches` in order into one compute pass of `encoder` (WebGPU makes each dispatch's
/// writes visible to the next).
pub fn record(encoder: &mut wgpu::CommandEncoder, dispatches: &[&Dispatch]) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("hlm-gpu"),
        timestamp_writes: None,
    });
    for d in dispatches {
        d.record(&mut pass);
    }
}

/// cos and sin of the rotary angles for positions `0 .. max_pos`: `max_pos × head_dim/2` cosines
/// then as many sines, computed as the CPU engine does (`inv_freq` in f32, the angle in f64).
pub fn rope_table(head_dim: usize, theta: f32, max_pos: usize) -> Vec<f32> {
    let hh = head_dim / 2;
    let inv_freq: Vec<f32> = (0..hh)
        .map(|i| 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
        .collect();
    let mut t = vec![0f32; 2 * max_pos * hh];
    for p in 0..max_pos {
        for (i, &f) in inv_freq.iter().enumerate() {
            let a = p as f64 * f as f64;
            t[p * hh + i] = a.cos() as f32;
            t[(max_pos + p) * hh + i] = a.sin() as f32;
        }
    }
    t
}

/// The compiled kernels of one device.
pub struct Kernels {
    matvec: Vec<wgpu::ComputePipeline>,
    matvec_q8: Vec<Option<wgpu::ComputePipeline>>,
    quant_q8_32: wgpu::ComputePipeline,
    quant_q8_k: wgpu::ComputePipeline,
    rms_norm: wgpu::ComputePipeline,
    rope: wgpu::ComputePipeline,
    swiglu: wgpu::ComputePipeline,
    add: wgpu::ComputePipeline,
    attention: wgpu::ComputePipeline,
    attn_mean: wgpu::ComputePipeline,
    argmax: wgpu::ComputePipeline,
    max_groups: u32,
}

fn pipeline(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// Splits `groups` workgroups over a 2-D grid whose x side stays within the device's limit.
fn grid(groups: usize, max: u32) -> (u32, u32) {
    let groups = groups.max(1) as u64;
    let x = groups.min(max as u64);
    (x as u32, groups.div_ceil(x) as u32)
}

fn entries<'a>(buffers: &[&'a wgpu::Buffer]) -> Vec<wgpu::BindGroupEntry<'a>> {
    buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect()
}

fn invalid(msg: impl Into<String>) -> GpuError {
    GpuError::Invalid(msg.into())
}

/// `len` elements from `off` must lie within `buf` (of 4-byte elements).
fn check_range(what: &str, buf: &wgpu::Buffer, off: u32, len: usize) -> Result<()> {
    let need = (off as u64 + len as u64) * 4;
    if need > buf.size() {
        return Err(invalid(format!(
            "{what}: {len} elements at {off} exceed the buffer ({} bytes)",
            buf.size()
        )));
    }
    Ok(())
}

impl Kernels {
    /// Compiles every kernel for `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Self {
        let d = &ctx.device;
        let matvec = QuantFormat::ALL
            .iter()
            .map(|f| {
                let src = format!(
                    "const ROWS: u32 = {MATVEC_ROWS}u;\n{WEIGHT_BYTES}\n{}\n{MATVEC}\n{MATVEC_ROWS_LOOP}",
                    f.source()
                );
                pipeline(d, &format!("matvec {f:?}"), &src)
            })
            .collect();
        let matvec_q8 = QuantFormat::ALL
            .iter()
            .map(|f| {
                f.q8_source().map(|src| {
                    let layout = f.source().split(LAYOUT_END).next().unwrap_or_default();
                    let src = format!(
                        "const ROWS: u32 = {MATVEC_ROWS}u;\n{WEIGHT_BYTES}\n{layout}\n{src}\n{MATVEC_Q8}\n{MATVEC_ROWS_LOOP}"
                    );
                    pipeline(d, &format!("matvec_q8 {f:?}"), &src)
                })
            })
            .collect();
        Self {
            matvec,
            matvec_q8,
            quant_q8_32: pipeline(d, "quant_q8_32", QUANT_Q8_32),
            quant_q8_k: pipeline(d, "quant_q8_k", QUANT_Q8_K),
            rms_norm: pipeline(d, "rms_norm", RMS_NORM),
            rope: pipeline(d, "rope", ROPE),
            swiglu: pipeline(d, "swiglu", SWIGLU),
            add: pipeline(d, "add", ADD),
            attention: pipeline(d, "attention", ATTENTION),
            attn_mean: pipeline(d, "attn_mean", ATTN_MEAN),
            argmax: pipeline(d, "argmax", ARGMAX),
            max_groups: ctx.limits().max_compute_workgroups_per_dimension,
        }
    }

    fn dispatch<P: Pod>(
        &self,
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: usize,
    ) -> Dispatch {
        let pbuf = ctx.uniform(label, params);
        let mut all = vec![&pbuf];
        all.extend_from_slice(buffers);
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries(&all),
        });
        Dispatch {
            label: label.to_string(),
            pipeline: pipeline.clone(),
            bind_group,
            grid: grid(groups, self.max_groups),
            _params: pbuf,
        }
    }

    /// Quantised matrix-vector product on raw GGUF blocks (`w` holds them as stored).
    pub fn matvec(
        &self,
        ctx: &GpuContext,
        format: QuantFormat,
        w: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        p: MatvecParams,
    ) -> Result<Dispatch> {
        let (rows, cols) = (p.rows as usize, p.cols as usize);
        if cols == 0 || !cols.is_multiple_of(format.block_elems()) {
            return Err(invalid(format!(
                "{format:?} matrix with {cols} columns (blocks of {})",
                format.block_elems()
            )));
        }
        if !p.w_off.is_multiple_of(4) {
            return Err(invalid("weight offset not a multiple of 4 bytes"));
        }
        if !p.x_off.is_multiple_of(4) {
            return Err(invalid("x offset not a multiple of 4 values"));
        }
        // The kernel may read one word past a block that ends unaligned.
        let need = p.w_off as u64 + format.matrix_bytes(rows, cols) as u64;
        if need > w.size() {
            return Err(invalid(format!(
                "{format:?} {rows}x{cols} at byte {} exceeds the weight buffer ({} bytes)",
                p.w_off,
                w.size()
            )));
        }
        check_range("matvec x", x, p.x_off, cols)?;
        check_range("matvec y", y, p.y_off, rows)?;
        Ok(self.dispatch(
            ctx,
            &self.matvec[format.index()],
            "matvec",
            &p,
            &[w, x, y],
            rows.div_ceil(MATVEC_ROWS),
        ))
    }

    /// Quantises `x[x_off .. x_off + n]` as candle's CPU path does before a quantised product, for
    /// [`Kernels::matvec_q8`]: [`ActQuant::Q8_32`] (ggml's Q8_0 / Q8_1, blocks of 32) into
    /// [`q8_32_words`]`(n)` words, or [`ActQuant::Q8K`] (ggml's Q8_K, blocks of 256, before a
    /// Q4_K / Q6_K product).
    pub fn quantize(
        &self,
        ctx: &GpuContext,
        kind: ActQuant,
        x: &wgpu::Buffer,
        x_off: u32,
        xq: &wgpu::Buffer,
        n: usize,
    ) -> Result<Dispatch> {
        if n == 0 || !n.is_multiple_of(kind.block()) {
            return Err(invalid(format!("quantize {kind:?}: {n} values")));
        }
        check_range("quantize x", x, x_off, n)?;
        check_range("quantize xq", xq, 0, kind.words(n))?;
        let blocks = n / kind.block();
        let p = ElemParams {
            n: blocks as u32,
            a_off: x_off,
            ..Default::default()
        };
        let pl = match kind {
            ActQuant::Q8_32 => &self.quant_q8_32,
            ActQuant::Q8K => &self.quant_q8_k,
        };
        let groups = blocks.div_ceil(ELEMWISE_WG as usize);
        Ok(self.dispatch(ctx, pl, "quantize", &p, &[x, xq], groups))
    }

    /// [`Kernels::matvec`] on activations quantised by [`Kernels::quantize`] with the format's
    /// [`QuantFormat::activation_quant`] (`p.x_off` in elements, a multiple of its block): the
    /// integer products and float combination of candle's CPU kernels, so both backends round
    /// alike.
    pub fn matvec_q8(
        &self,
        ctx: &GpuContext,
        format: QuantFormat,
        w: &wgpu::Buffer,
        xq: &wgpu::Buffer,
        y: &wgpu::Buffer,
        p: MatvecParams,
    ) -> Result<Dispatch> {
        let pl = self.matvec_q8[format.index()]
            .as_ref()
            .ok_or_else(|| invalid(format!("no 8-bit-activation product for {format:?}")))?;
        let (rows, cols) = (p.rows as usize, p.cols as usize);
        let kind = format.activation_quant();
        if cols == 0
            || !cols.is_multiple_of(format.block_elems())
            || !(p.x_off as usize).is_multiple_of(kind.block())
        {
            return Err(invalid(format!(
                "matvec_q8 {format:?}: {cols} columns at {}",
                p.x_off
            )));
        }
        if !p.w_off.is_multiple_of(4)
            || p.w_off as u64 + format.matrix_bytes(rows, cols) as u64 > w.size()
        {
            return Err(invalid(
                "matvec_q8: weights outside the buffer or misaligned",
            ));
        }
        check_range("matvec_q8 xq", xq, 0, kind.words(p.x_off as usize + cols))?;
        check_range("matvec_q8 y", y, p.y_off, rows)?;
        Ok(self.dispatch(
            ctx,
            pl,
            "matvec_q8",
            &p,
            &[w, xq, y],
            rows.div_ceil(MATVEC_ROWS),
        ))
    }

    /// RMSNorm of `rows` rows of `p.n` values (one workgroup per row).
    pub fn rms_norm(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        gain: &wgpu::Buffer,
        y: &wgpu::Buffer,
        p: RmsNormParams,
        rows: usize,
    ) -> Result<Dispatch> {
        let n = p.n as usize;
        check_range("rms_norm x", x, p.x_off, rows * n)?;
        check_range("rms_norm y", y, p.y_off, rows * n)?;
        check_range("rms_norm gain", gain, p.g_off, n)?;
        if rows > self.max_groups as usize {
            return Err(invalid("too many rows for one rms_norm dispatch"));
        }
        Ok(self.dispatch(ctx, &self.rms_norm, "rms_norm", &p, &[x, gain, y], rows))
    }

    /// Rotary embedding in place on `p.heads` heads of `x` at the position in `step`; `table` from
    /// [`rope_table`] with `p.max_pos` positions.
    pub fn rope(
        &self,
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        table: &wgpu::Buffer,
        x: &wgpu::Buffer,
        p: RopeParams,
    ) -> Result<Dispatch> {
        if p.head_dim == 0 || !p.head_dim.is_multiple_of(2) || p.style > 1 {
            return Err(invalid("rope: odd head dimension or unknown style"));
        }
        check_range("rope x", x, p.off, (p.heads * p.head_dim) as usize)?;
        check_range("rope table", table, 0, (p.max_pos * p.head_dim) as usize)?;
        let pairs = (p.heads * p.head_dim / 2) as usize;
        Ok(self.dispatch(
            ctx,
            &self.rope,
            "rope",
            &p,
            &[step, table, x],
            pairs.div_ceil(ELEMWISE_WG as usize),
        ))
    }

    /// `g[g_off + i] = silu(g[g_off + i]) · u[u_off + i]` for `i < n`.
    pub fn swiglu(
        &self,
        ctx: &GpuContext,
        g: &wgpu::Buffer,
        g_off: u32,
        u: &wgpu::Buffer,
        u_off: u32,
        n: usize,
    ) -> Result<Dispatch> {
        self.elementwise(ctx, &self.swiglu, "swiglu", (g, g_off), (u, u_off), n)
    }

    /// `x[x_off + i] += y[y_off + i]` for `i < n` (residual or bias).
    pub fn add(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        x_off: u32,
        y: &wgpu::Buffer,
        y_off: u32,
        n: usize,
    ) -> Result<Dispatch> {
        self.elementwise(ctx, &self.add, "add", (x, x_off), (y, y_off), n)
    }

    /// One elementwise kernel over `n` elements of `a` (from `a.1`) and `b` (from `b.1`).
    fn elementwise(
        &self,
        ctx: &GpuContext,
        pl: &wgpu::ComputePipeline,
        label: &str,
        a: (&wgpu::Buffer, u32),
        b: (&wgpu::Buffer, u32),
        n: usize,
    ) -> Result<Dispatch> {
        check_range(&format!("{label} a"), a.0, a.1, n)?;
        check_range(&format!("{label} b"), b.0, b.1, n)?;
        let p = ElemParams {
            n: n as u32,
            a_off: a.1,
            b_off: b.1,
            _pad: 0,
        };
        let groups = n.div_ceil(ELEMWISE_WG as usize);
        Ok(self.dispatch(ctx, pl, label, &p, &[a.0, b.0], groups))
    }

    /// Attention of one query over the `step.pos + 1` cached positions; writes the output heads and
    /// each head's probabilities (`probs[h · stride + j]`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        q: &wgpu::Buffer,
        k_cache: &wgpu::Buffer,
        v_cache: &wgpu::Buffer,
        probs: &wgpu::Buffer,
        out: &wgpu::Buffer,
        p: AttentionParams,
    ) -> Result<Dispatch> {
        let (h, kvh, hd) = (p.heads as usize, p.kv_heads as usize, p.head_dim as usize);
        if h == 0 || kvh == 0 || !h.is_multiple_of(kvh) || hd == 0 || hd > MAX_HEAD_DIM {
            return Err(invalid(format!(
                "attention: {h} heads over {kvh} kv heads of dimension {hd}"
            )));
        }
        check_range("attention q", q, p.q_off, h * hd)?;
        check_range("attention out", out, p.out_off, h * hd)?;
        check_range("attention probs", probs, 0, h * p.stride as usize)?;
        check_range(
            "attention k",
            k_cache,
            p.k_off,
            p.stride as usize * kvh * hd,
        )?;
        check_range(
            "attention v",
            v_cache,
            p.v_off,
            p.stride as usize * kvh * hd,
        )?;
        Ok(self.dispatch(
            ctx,
            &self.attention,
            "attention",
            &p,
            &[step, q, k_cache, v_cache, probs, out],
            h,
        ))
    }

    /// `row[j] (+)= scale · Σ_h probs[h · stride + j]` for `j ≤ step.pos`.
    pub fn attn_mean(
        &self,
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        probs: &wgpu::Buffer,
        row: &wgpu::Buffer,
        p: AttnMeanParams,
    ) -> Result<Dispatch> {
        check_range("attn_mean probs", probs, 0, (p.heads * p.stride) as usize)?;
        check_range("attn_mean row", row, 0, p.stride as usize)?;
        let groups = (p.stride as usize).div_ceil(ELEMWISE_WG as usize);
        Ok(self.dispatch(
            ctx,
            &self.attn_mean,
            "attn_mean",
            &p,
            &[step, probs, row],
            groups,
        ))
    }

    /// `out[0]` = index of the largest of `x[0 .. n]`, `out[1]` = its value's bits.
    pub fn argmax(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        n: usize,
    ) -> Result<Dispatch> {
        check_range("argmax x", x, 0, n)?;
        check_range("argmax out", out, 0, 2)?;
        let p = ElemParams {
            n: n as u32,
            ..Default::default()
        };
        Ok(self.dispatch(ctx, &self.argmax, "argmax", &p, &[x, out], 1))
    }
}
