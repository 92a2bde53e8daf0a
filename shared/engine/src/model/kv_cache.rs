//! A truncatable key/value cache: plain vectors, one pair per layer, laid out `[position][kv head][dim]`
//! so that appending is `extend_from_slice` and rolling back is `truncate`.

use super::ModelConfig;

pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct KvCache {
    layers: Vec<LayerKv>,
    width: usize,
    len: usize,
    /// Positions the cache may grow to; its buffers never reserve beyond this.
    limit: usize,
}

impl KvCache {
    pub(crate) fn new(cfg: &ModelConfig) -> Self {
        Self {
            layers: (0..cfg.layers)
                .map(|_| LayerKv {
                    k: Vec::new(),
                    v: Vec::new(),
                })
                .collect(),
            width: cfg.kv_width(),
            len: 0,
            limit: cfg.max_context,
        }
    }

    /// Bytes one position costs (keys and values, all layers, f32).
    pub fn bytes_per_position(cfg: &ModelConfig) -> usize {
        cfg.layers * 2 * cfg.kv_width() * std::mem::size_of::<f32>()
    }

    /// Caps the positions this cache reserves memory for (a server's per-session bound). Growth
    /// doubles as a vector does, but never past the cap, so a session holds at most
    /// `limit * bytes_per_position` bytes of cache.
    pub fn set_limit(&mut self, positions: usize) {
        self.limit = positions;
    }

    /// Bytes reserved (capacity, which can exceed [`KvCache::bytes`]).
    pub fn reserved_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.capacity() + l.v.capacity()) * std::mem::size_of::<f32>())
            .sum()
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every position from `len` on (no-op if the cache is shorter).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for l in &mut self.layers {
            l.k.truncate(len * self.width);
            l.v.truncate(len * self.width);
        }
        self.len = len;
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Bytes held (keys and values, all layers).
    pub fn bytes(&self) -> usize {
        self.layers.len() * 2 * self.len * self.width * std::mem::size_of::<f32>()
    }

    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32], m: usize) {
        let l = &mut self.layers[layer];
        debug_assert_eq!(k.len(), m * self.width);
        l.k.truncate(self.len * self.width);
        l.v.truncate(self.len * self.width);
        let needed = l.k.len() + k.len();
        if needed > l.k.capacity() {
            // Double, as Vec would, but not past the limit (unless this append itself needs it).
            let cap = (2 * l.k.capacity()).clamp(needed, (self.limit * self.width).max(needed));
            l.k.reserve_exact(cap - l.k.len());
            l.v.reserve_exact(cap - l.v.len());
        }
        l.k.extend_from_slice(k);
        l.v.extend_from_slice(v);
    }

    /// Keys and values of one layer, including the positions appended by the forward in progress.
    pub(crate) fn layer(&self, layer: usize) -> &LayerKv {
        &self.layers[layer]
    }

    /// Keys and values of layer `layer` for the positions held, `[position][kv head][dim]` (keys
    /// after RoPE): what a GPU backend imports after a prefill on the CPU.
    pub fn layer_kv(&self, layer: usize) -> Option<(&[f32], &[f32])> {
        let l = self.layers.get(layer)?;
        let n = self.len * self.width;
        Some((&l.k[..n], &l.v[..n]))
    }

    pub(crate) fn commit(&mut self, m: usize) {
        self.len += m;
    }
}
