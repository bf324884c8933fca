//! Hard limits that keep a hostile package from exhausting a device.

/// Upper bounds the reader enforces before it trusts anything in a package.
///
/// The defaults suit a device; a server may raise `max_payload_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_len: u32,
    /// Most signatures accepted on one manifest.
    pub max_signatures: u16,
    /// Most payloads in one package.
    pub max_payloads: usize,
    /// Largest stored or installed size of a single payload, in bytes.
    pub max_payload_size: u64,
    /// Longest payload target, in bytes.
    pub max_target_len: usize,
    /// Largest zstd window (log2 bytes) the decoder will allocate; a frame
    /// asking for more is refused instead of exhausting a small device.
    pub max_zstd_window_log: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_len: 1024 * 1024,
            max_signatures: 16,
            max_payloads: 256,
            max_payload_size: 64 * 1024 * 1024 * 1024,
            max_target_len: 4096,
            max_zstd_window_log: 24,
        }
    }
}
