//! Hard bounds on trust documents, checked before anything else is done
//! with them: what comes from the network is never allowed to be large.

/// Largest root document (envelope included), in bytes.
pub const MAX_ROOT_BYTES: usize = 64 * 1024;
/// Largest timestamp document, in bytes.
pub const MAX_TIMESTAMP_BYTES: usize = 4 * 1024;
/// Most keys one root may list.
pub const MAX_KEYS: usize = 64;
/// Most members (and largest threshold) of one role.
pub const MAX_ROLE_KEYS: usize = 32;
/// Most signature entries on one document.
pub const MAX_SIGNATURES: usize = 64;
/// Most roots walked in one chain update.
pub const MAX_CHAIN: usize = 128;
/// Longest PEM text of one public key.
pub const MAX_PEM_CHARS: usize = 512;
