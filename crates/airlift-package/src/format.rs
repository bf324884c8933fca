//! The fixed header that opens every package file.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "AIRLIFT\0"
//!      8     2  format version, u16 big-endian (1 or 2)
//!     10     2  signature count, u16 big-endian (>= 1)
//!     12     4  manifest length in bytes, u32 big-endian (>= 1)
//!     16     L  manifest (UTF-8 JSON)
//!   16+L  72*N  signatures: key id (8 bytes) + Ed25519 signature (64 bytes)
//!               version 2 only: index length I, u32 big-endian, then the
//!               block index, I bytes (32-byte SHA-256 per block)
//!      …        payloads, stored bytes, in manifest order, nothing after
//! ```

use crate::error::Error;
use crate::limits::Limits;
use crate::manifest::{FORMAT_VERSION, MIN_FORMAT_VERSION};

/// The first eight bytes of every package.
pub const MAGIC: [u8; 8] = *b"AIRLIFT\0";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Length of one signature entry: key id + signature.
pub const SIGNATURE_ENTRY_LEN: usize = 8 + 64;

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub format_version: u16,
    pub signature_count: u16,
    pub manifest_len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&self.format_version.to_be_bytes());
        out[10..12].copy_from_slice(&self.signature_count.to_be_bytes());
        out[12..16].copy_from_slice(&self.manifest_len.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Self, Error> {
        if bytes[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let header = Header {
            format_version: u16::from_be_bytes([bytes[8], bytes[9]]),
            signature_count: u16::from_be_bytes([bytes[10], bytes[11]]),
            manifest_len: u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        };
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&header.format_version) {
            return Err(Error::UnsupportedFormat(header.format_version));
        }
        if header.signature_count == 0 {
            return Err(Error::BadHeader("the package carries no signature".into()));
        }
        if header.signature_count > limits.max_signatures {
            return Err(Error::BadHeader(format!(
                "{} signatures declared, at most {} accepted",
                header.signature_count, limits.max_signatures
            )));
        }
        if header.manifest_len == 0 || header.manifest_len > limits.max_manifest_len {
            return Err(Error::BadHeader(format!(
                "manifest length {} is outside 1..={} bytes",
                header.manifest_len, limits.max_manifest_len
            )));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let header = Header {
            format_version: 1,
            signature_count: 2,
            manifest_len: 300,
        };
        assert_eq!(
            Header::decode(&header.encode(), &Limits::default()).ok(),
            Some(header)
        );
    }

    #[test]
    fn refuses_hostile_headers() {
        let limits = Limits::default();
        let good = Header {
            format_version: 1,
            signature_count: 1,
            manifest_len: 10,
        };
        let mut bytes = good.encode();
        bytes[0] = b'X';
        assert!(matches!(
            Header::decode(&bytes, &limits),
            Err(Error::BadMagic)
        ));
        let huge = Header {
            manifest_len: u32::MAX,
            ..good
        };
        assert!(matches!(
            Header::decode(&huge.encode(), &limits),
            Err(Error::BadHeader(_))
        ));
        let unsigned = Header {
            signature_count: 0,
            ..good
        };
        assert!(matches!(
            Header::decode(&unsigned.encode(), &limits),
            Err(Error::BadHeader(_))
        ));
        let future = Header {
            format_version: 3,
            ..good
        };
        assert!(matches!(
            Header::decode(&future.encode(), &limits),
            Err(Error::UnsupportedFormat(3))
        ));
        let ancient = Header {
            format_version: 0,
            ..good
        };
        assert!(matches!(
            Header::decode(&ancient.encode(), &limits),
            Err(Error::UnsupportedFormat(0))
        ));
    }
}
