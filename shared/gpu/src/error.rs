//! Errors of the GPU backend.

/// What can go wrong on the GPU path. Every variant carries enough text to tell a user why the
/// backend is unavailable (the caller falls back to the CPU path with that message).
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter (no GPU, no software driver such as lavapipe, or WebGPU disabled in the browser).
    #[cfg_attr(
        not(target_arch = "wasm32"),
        error("no GPU adapter found ({0}); on Linux without a GPU install a software Vulkan driver (Debian: mesa-vulkan-drivers)")
    )]
    #[cfg_attr(
        target_arch = "wasm32",
        error(
            "this browser offers no WebGPU adapter (WebGPU switched off, or no usable GPU): {0}"
        )
    )]
    NoAdapter(String),
    /// `auto` passed over a software adapter (lavapipe, a browser's fallback adapter).
    #[error("the only adapter, {0}, is a software renderer, slower than the CPU path (ask for the GPU explicitly to use it anyway)")]
    SoftwareAdapter(String),
    /// The adapter refused a device with the limits we asked for.
    #[error("could not open a device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },
    /// A tensor does not fit in one storage binding of this adapter.
    #[error("{what} needs {bytes} bytes in one binding, the adapter allows {limit}")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    /// The device was lost (driver reset, GPU process crash, tab in the background on some
    /// browsers, or `destroy`): the caller falls back to the CPU path.
    #[error("the GPU device was lost ({0}); use the CPU path")]
    DeviceLost(String),
    /// A GPU operation failed validation or ran out of memory (reported by wgpu's error handler,
    /// which would otherwise panic).
    #[error("a GPU operation failed: {0}")]
    Device(String),
    /// Reading a buffer back failed (device lost, out of memory).
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
    /// The model cannot run on this backend (a weight format without a kernel, a context limit).
    #[error("model: {0}")]
    Model(String),
    /// Arguments that do not fit the kernel (a caller's bug or a malformed model).
    #[error("invalid kernel arguments: {0}")]
    Invalid(String),
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;
