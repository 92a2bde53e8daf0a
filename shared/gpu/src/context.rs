//! The device: adapter selection with its own limits, buffer helpers, and read-back.

use crate::{GpuError, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use wgpu::util::DeviceExt;

/// An open device and its queue, with the limits the adapter granted.
///
/// The device is opened with the adapter's own `max_storage_buffer_binding_size` and
/// `max_buffer_size` (WebGPU's defaults, 128 MiB / 256 MiB, are smaller than a 0.5B model's output
/// projection on many adapters); everything else stays at the WebGPU defaults so that what runs
/// natively also runs in a browser.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    adapter_limits: wgpu::Limits,
    /// Set by the device-lost callback: why the device was lost.
    lost: Arc<Mutex<Option<String>>>,
    /// The first error wgpu reported outside an error scope (instead of its default panic).
    error: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Picks the preferred adapter (a real GPU first; on a machine without one, a software one such
    /// as lavapipe) and opens a device on it.
    pub async fn new() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let have = adapter.limits();
        let required_limits = wgpu::Limits {
            max_storage_buffer_binding_size: have.max_storage_buffer_binding_size,
            max_buffer_size: have.max_buffer_size,
            ..wgpu::Limits::defaults()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("hlm-gpu"),
                required_limits,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let limits = device.limits();
        let lost = Arc::new(Mutex::new(None));
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        // Errors outside an error scope would panic in wgpu's default handler; keep the first one
        // and report it from the next call instead.
        let error = Arc::new(Mutex::new(None));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        Ok(Self {
            device,
            queue,
            info,
            limits,
            adapter_limits: have,
            lost,
            error,
        })
    }

    /// [`GpuContext::new`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// [`GpuError::DeviceLost`] if the device was lost, [`GpuError::Device`] if an operation
    /// failed since the device was opened.
    pub fn check_device(&self) -> Result<()> {
        if let Some(why) = self.lost() {
            return Err(GpuError::DeviceLost(why));
        }
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(e) => Err(GpuError::Device(e)),
            None => Ok(()),
        }
    }

    /// The adapter's name, driver and backend, for logs and the "which backend runs" display.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// A one-line description: `"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, software)"`; browsers
    /// often keep the adapter's name to themselves (`"unnamed adapter (BrowserWebGpu, software)"`).
    pub fn describe(&self) -> String {
        let name = if self.info.name.trim().is_empty() {
            "unnamed adapter"
        } else {
            self.info.name.trim()
        };
        let kind = match self.info.device_type {
            wgpu::DeviceType::Cpu => "software",
            wgpu::DeviceType::DiscreteGpu => "discrete GPU",
            wgpu::DeviceType::IntegratedGpu => "integrated GPU",
            wgpu::DeviceType::VirtualGpu => "virtual GPU",
            wgpu::DeviceType::Other => "GPU",
        };
        format!("{name} ({:?}, {kind})", self.info.backend)
    }

    /// The device's limits (as granted at [`GpuContext::new`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// What the adapter offered (the device got its buffer limits, the WebGPU defaults otherwise).
    pub fn adapter_limits(&self) -> &wgpu::Limits {
        &self.adapter_limits
    }

    /// Largest storage binding, bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// A storage buffer holding `bytes` (padded to a multiple of 4), readable by kernels and
    /// copyable.
    pub fn storage_from_bytes(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        self.check_binding(label, bytes.len() as u64)?;
        let contents: std::borrow::Cow<[u8]> = if bytes.len().is_multiple_of(4) && !bytes.is_empty()
        {
            bytes.into()
        } else {
            let mut v = bytes.to_vec();
            v.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
            v.into()
        };
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            }))
    }

    /// [`GpuContext::storage_from_bytes`] for `f32` values.
    pub fn storage_from_f32(&self, label: &str, values: &[f32]) -> Result<wgpu::Buffer> {
        self.storage_from_bytes(label, bytemuck::cast_slice(values))
    }

    /// A zeroed storage buffer of `len` `f32`s.
    pub fn storage_zeroed(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let size = (len.max(1) * 4) as u64;
        self.check_binding(label, size)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding() {
            return Err(GpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit: self.max_binding(),
            });
        }
        Ok(())
    }

    /// Copies `len` `f32`s at element `offset` of `src` into a staging buffer in `encoder`; the
    /// returned [`Readback`] maps it once the encoder has been submitted.
    pub fn copy_for_readback(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Readback {
        let size = (len.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if len > 0 {
            encoder.copy_buffer_to_buffer(src, (offset * 4) as u64, &staging, 0, size);
        }
        Readback { staging, len }
    }

    /// Reads `len` `f32`s at element `offset` of `src` (one submission of its own).
    pub async fn read_f32(
        &self,
        src: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<f32>> {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        let rb = self.copy_for_readback(&mut enc, src, offset, len);
        self.queue.submit([enc.finish()]);
        rb.read(self).await
    }

    /// [`GpuContext::read_f32`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(
        &self,
        src: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(src, offset, len))
    }
}

/// A staging buffer filled by a submitted copy; [`Readback::read`] maps it and returns its values.
pub struct Readback {
    staging: wgpu::Buffer,
    len: usize,
}

impl Readback {
    /// Waits for the copy and returns the values (natively this polls the device; in a browser the
    /// mapping resolves on the event loop).
    pub async fn read(self, ctx: &GpuContext) -> Result<Vec<f32>> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let slot = Arc::new(Mutex::new(MapState::default()));
        let cb_slot = slot.clone();
        self.staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let mut s = cb_slot.lock().unwrap_or_else(|e| e.into_inner());
            s.result = Some(r.map_err(|e| e.to_string()));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        let failed = |e: String| match ctx.check_device() {
            Err(err) => err,
            Ok(()) => GpuError::Readback(e),
        };
        #[cfg(not(target_arch = "wasm32"))]
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| failed(e.to_string()))?;
        MapFuture(slot).await.map_err(failed)?;
        let values = {
            let view = self
                .staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..self.len].to_vec()
        };
        self.staging.unmap();
        Ok(values)
    }
}

#[derive(Default)]
struct MapState {
    result: Option<std::result::Result<(), String>>,
    waker: Option<Waker>,
}

/// Resolves when the `map_async` callback has run.
struct MapFuture(Arc<Mutex<MapState>>);

impl Future for MapFuture {
    type Output = std::result::Result<(), String>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
