//! The device is opened with the adapter's own buffer limits, buffers round-trip, and oversized
//! bindings are refused before anything is allocated. Needs a GPU adapter (CI: lavapipe).

use hlm_gpu::{GpuContext, GpuError};

fn ctx() -> GpuContext {
    GpuContext::new_blocking()
        .unwrap_or_else(|e| panic!("the wgpu tests need a GPU adapter (none found): {e}"))
}

#[test]
fn device_gets_the_adapters_buffer_limits() {
    let ctx = ctx();
    eprintln!(
        "adapter: {}; max storage binding {} B, max buffer {} B",
        ctx.describe(),
        ctx.max_binding(),
        ctx.limits().max_buffer_size
    );
    let (dev, ad) = (ctx.limits(), ctx.adapter_limits());
    assert_eq!(
        dev.max_storage_buffer_binding_size,
        ad.max_storage_buffer_binding_size
    );
    assert_eq!(dev.max_buffer_size, ad.max_buffer_size);
    let defaults = wgpu::Limits::defaults();
    assert!(dev.max_storage_buffer_binding_size >= defaults.max_storage_buffer_binding_size);
    assert!(dev.max_buffer_size >= defaults.max_buffer_size);
    // Everything else stays at the WebGPU defaults, so what runs here runs in a browser.
    assert_eq!(
        dev.max_compute_workgroup_storage_size,
        defaults.max_compute_workgroup_storage_size
    );
}

#[test]
fn buffers_round_trip_and_oversized_bindings_are_refused() {
    let ctx = ctx();
    let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let b = ctx.storage_from_f32("v", &v).unwrap();
    assert_eq!(ctx.read_f32_blocking(&b, 0, 1000).unwrap(), v);
    assert_eq!(ctx.read_f32_blocking(&b, 333, 5).unwrap(), &v[333..338]);
    // Byte lengths that are not a multiple of 4 are padded.
    let b = ctx.storage_from_bytes("odd", &[1, 0, 128, 63, 9]).unwrap();
    assert_eq!(b.size(), 8);
    assert_eq!(ctx.read_f32_blocking(&b, 0, 1).unwrap(), [1.0000001]);
    let too_many = (ctx.max_binding() / 4 + 1) as usize;
    match ctx.storage_zeroed("huge", too_many) {
        Err(GpuError::TooLarge { bytes, limit, .. }) => {
            assert!(bytes > limit);
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|_| ())),
    }
}
