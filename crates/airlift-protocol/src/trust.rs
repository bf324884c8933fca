//! Trust roots on the wire (`docs/trust.md`): the device endpoint that
//! hands out the roots newer than the one a device holds, and the
//! management API's upload answer. Root documents travel as the exact text
//! of their signed envelopes, never re-serialised, so their signatures hold.

use serde::{Deserialize, Serialize};

/// `GET` with `?after=N`: the roots after version N, oldest first.
pub const TRUST_ROOTS_PATH: &str = "/api/device/v1/trust/roots";

/// Most roots one answer carries; a device far behind asks again.
pub const MAX_ROOTS_PER_ANSWER: usize = 16;

/// The device's question: which root it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RootsQuery {
    /// The version of the root the device holds.
    pub after: u64,
}

/// The roots after the device's, oldest first (at most
/// [`MAX_ROOTS_PER_ANSWER`]), each the exact text of its signed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrustRoots {
    /// Root envelopes (JSON text), version after version.
    pub roots: Vec<String>,
    /// The newest version the server holds (0 when it holds none).
    pub latest: u64,
}

/// A root the server stored, as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredRoot {
    /// Its version.
    pub version: u64,
    /// When it expires, unix seconds.
    pub expires: u64,
    /// SHA-256 of its envelope, hex.
    pub sha256: String,
}
