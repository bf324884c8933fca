//! Airlift's trust root and freshness, modelled on The Update Framework.
//!
//! A **root** ([`RootDocument`] in an [`Envelope`]) names three roles — the
//! keys that sign roots, the release keys that sign packages, and the
//! server's online timestamp keys — each with a threshold, a version and an
//! expiry. A device is given its first root out of band and moves from
//! root N to N+1 only when N+1 is signed by a threshold of N's root keys
//! *and* of its own ([`Root::update`]); rotating or revoking a release key
//! is a new root. A **timestamp** ([`TimestampDocument`]) is signed by the
//! online key for each offer, expires soon, only moves forward, and names
//! the latest security version the server knows ([`Timestamp::verify`]).
//!
//! Pure: bytes in, values out — no I/O, no clock (the caller passes `now`
//! in unix seconds), no async. Every document is bounded ([`limits`]).
//!
//! ```
//! use airlift_package::SigningKey;
//! use airlift_trust::{Root, RootDocument};
//!
//! let root_key = SigningKey::generate()?;
//! let release = SigningKey::generate()?;
//! let online = SigningKey::generate()?;
//! let document = RootDocument::first(
//!     root_key.public_key(), release.public_key(), online.public_key(), 2_000_000_000);
//! let mut envelope = document.to_envelope()?;
//! envelope.sign(&root_key);
//! let root = Root::trust_first(&envelope.to_bytes())?;
//! assert_eq!(root.release_trust()?.threshold(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod envelope;
mod error;
pub mod limits;
mod root;
mod timestamp;

pub use envelope::{Envelope, SignatureEntry};
pub use error::TrustError;
pub use root::{RoleKeys, RoleName, Root, RootDocument, ROOT_TYPE};
pub use timestamp::{FreshnessCheck, Timestamp, TimestampDocument, TIMESTAMP_TYPE};

#[cfg(test)]
mod tests;
