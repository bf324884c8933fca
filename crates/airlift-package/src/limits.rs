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
    /// Largest block index (format version 2) accepted, in bytes: 32 bytes
    /// per block of every payload. It is part of the package's head, which
    /// travels in every update offer, so it is kept small.
    pub max_block_index_len: u32,
    /// Smallest block size a version 2 package may declare, in bytes.
    pub min_block_size: u32,
    /// Largest block size a version 2 package may declare, in bytes: the
    /// reader holds one block in memory while it checks it.
    pub max_block_size: u32,
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
            max_block_index_len: 1024 * 1024,
            min_block_size: 64 * 1024,
            max_block_size: 4 * 1024 * 1024,
        }
    }
}
