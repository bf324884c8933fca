//! The release trust a package must pass *now*: the newest trust root's
//! release keys and threshold, else the `--trust` keys — what uploads are
//! checked against, and what devices that took the newest root verify
//! offers with.
//!
//! A package is checked at upload, but a root published since may have
//! revoked the key that signed it; every device that took that root would
//! refuse it. So a deployment (`POST /api/v1/deployments`, the dashboard's
//! form through the same handler) and an automatic rollback check the
//! package's signatures again, here, against the current release trust.
//! The signatures are the package record's stored head (header, manifest,
//! signatures, block index — exactly the file's first bytes), so no blob
//! is read: `airlift-package`'s reader verifies it as a device would.
//!
//! ```text
//!   newest root ──release_trust()──▶ TrustSet ─┐
//!   (else --trust keys)                         ├─ check(head) ─▶ Ok | NotTrusted { wanted, carried }
//!   package record's head ─────────────────────┘
//! ```

use airlift_package::{Error as PackageError, KeyId, Limits, PackageReader, TrustSet};
use airlift_store::{Store, StoreError};

/// Where the current release trust comes from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustSource {
    /// The release role of the newest trust root, of this version.
    Root(u64),
    /// The server's `--trust` keys (it holds no root).
    Configured,
}

impl std::fmt::Display for TrustSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Root(version) => write!(f, "trust root version {version}"),
            Self::Configured => f.write_str("server's --trust keys"),
        }
    }
}

/// The keys and threshold packages must be signed with now.
#[derive(Debug, Clone)]
pub struct ReleaseTrust {
    /// The keys and threshold.
    pub keys: TrustSet,
    /// Where they come from.
    pub source: TrustSource,
}

/// Why the current release trust could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseTrustError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored newest root does not parse or names an impossible
    /// release role (it was checked when stored: corruption).
    #[error("the stored trust root {version}: {reason}")]
    BadRoot {
        /// Its version.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// The current release trust: the newest root's release role, else
/// `configured` (the `--trust` keys); `None` when the server trusts none.
pub async fn current(
    store: &dyn Store,
    configured: Option<&TrustSet>,
) -> Result<Option<ReleaseTrust>, ReleaseTrustError> {
    if let Some(latest) = store.latest_trust_root().await? {
        // Stored only after it was checked against the chain; an expired
        // newest root still names who signs releases (devices refuse
        // offers until a newer root is published, not the packages).
        let keys = airlift_trust::Root::parse(latest.document.as_bytes())
            .and_then(|root| root.release_trust())
            .map_err(|e| ReleaseTrustError::BadRoot {
                version: latest.version,
                reason: e.to_string(),
            })?;
        return Ok(Some(ReleaseTrust {
            keys,
            source: TrustSource::Root(latest.version),
        }));
    }
    Ok(configured.map(|keys| ReleaseTrust {
        keys: keys.clone(),
        source: TrustSource::Configured,
    }))
}

/// A package the current release trust does not sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotTrusted {
    /// The release keys the trust names.
    pub wanted: Vec<KeyId>,
    /// How many of them must have signed.
    pub threshold: usize,
    /// Every key the package carries a signature from.
    pub carried: Vec<KeyId>,
    /// What is wrong, when it is more than too few trusted signatures (a
    /// signature that does not verify, a head that does not parse).
    pub fault: Option<String>,
}

impl NotTrusted {
    /// The operator's explanation, for a package called `package` (its
    /// name, version and id), under `source`.
    pub fn describe(&self, package: &str, source: TrustSource) -> String {
        let list = |ids: &[KeyId]| match ids {
            [] => "none".to_owned(),
            ids => ids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let fault = self
            .fault
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        format!(
            "package {package} is not signed by the current release keys, so every device that trusts them would refuse it{fault}: the {source} wants {} signature(s) of [{}], the package carries signatures of [{}]. Sign the package again with a release key the {source} names and upload it (as a new version), then deploy that",
            self.threshold,
            list(&self.wanted),
            list(&self.carried),
        )
    }
}

/// Whether the package whose stored head is `head` is signed as `trust`
/// wants: its signatures are verified over the exact manifest bytes, as a
/// device verifies an offer.
pub fn check(head: &[u8], trust: &TrustSet) -> Result<(), NotTrusted> {
    let wanted = || trust.key_ids().collect::<Vec<_>>();
    let reader = PackageReader::open(head, Limits::default()).map_err(|e| NotTrusted {
        wanted: wanted(),
        threshold: trust.threshold(),
        carried: Vec::new(),
        fault: Some(format!("its stored head does not read: {e}")),
    })?;
    let carried: Vec<KeyId> = reader.signatures().iter().map(|s| s.key_id).collect();
    match reader.verify(trust) {
        Ok(_) => Ok(()),
        Err(PackageError::Untrusted { .. }) => Err(NotTrusted {
            wanted: wanted(),
            threshold: trust.threshold(),
            carried,
            fault: None,
        }),
        Err(other) => Err(NotTrusted {
            wanted: wanted(),
            threshold: trust.threshold(),
            carried,
            fault: Some(other.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_package::SigningKey;
    use airlift_testkit::packages::{image, PackageBuilder};

    fn head_signed_by(keys: &[&SigningKey]) -> Vec<u8> {
        let mut builder = PackageBuilder::new("rootfs", "1.0.0").device_type("pi4");
        for key in keys {
            builder = builder.signed_by(key);
        }
        let file = builder
            .image(&image("1.0.0", 4096), airlift_package::Compression::Zstd)
            .build();
        let reader = PackageReader::open(&file[..], Limits::default()).expect("opens");
        let len = usize::try_from(reader.payload_offset()).expect("small");
        file[..len].to_vec()
    }

    fn trust(keys: &[&SigningKey], threshold: usize) -> TrustSet {
        TrustSet::new(keys.iter().map(|k| k.public_key()), threshold).expect("trust set")
    }

    #[test]
    fn a_head_signed_by_enough_current_keys_passes() {
        let (old, new) = (
            SigningKey::generate().expect("key"),
            SigningKey::generate().expect("key"),
        );
        let head = head_signed_by(&[&old, &new]);
        assert_eq!(check(&head, &trust(&[&new], 1)), Ok(()));
        assert_eq!(check(&head, &trust(&[&old, &new], 2)), Ok(()));
    }

    #[test]
    fn a_head_signed_by_a_revoked_key_names_what_is_wanted_and_carried() {
        let (old, new) = (
            SigningKey::generate().expect("key"),
            SigningKey::generate().expect("key"),
        );
        let head = head_signed_by(&[&old]);
        let refused = check(&head, &trust(&[&new], 1)).expect_err("revoked");
        assert_eq!(refused.wanted, vec![new.public_key().key_id()]);
        assert_eq!(refused.carried, vec![old.public_key().key_id()]);
        assert_eq!(refused.fault, None);
        let words = refused.describe("rootfs 1.0.0", TrustSource::Root(2));
        assert!(
            words.contains("trust root version 2 wants 1 signature(s)"),
            "{words}"
        );
        assert!(
            words.contains(&new.public_key().key_id().to_string()),
            "{words}"
        );
        assert!(
            words.contains(&old.public_key().key_id().to_string()),
            "{words}"
        );
        assert!(words.contains("upload it"), "{words}");

        let one_of_two = check(&head_signed_by(&[&new]), &trust(&[&old, &new], 2));
        assert!(one_of_two.is_err(), "below the threshold");
    }

    #[test]
    fn a_damaged_head_is_not_trusted_and_says_why() {
        let key = SigningKey::generate().expect("key");
        let mut head = head_signed_by(&[&key]);
        let refused = check(&head[..10], &trust(&[&key], 1)).expect_err("truncated");
        assert!(refused.fault.is_some());
        // Flip a byte of the manifest: the trusted key's signature no
        // longer verifies.
        let middle = airlift_package::HEADER_LEN + 5;
        head[middle] ^= 0x01;
        let refused = check(&head, &trust(&[&key], 1)).expect_err("altered");
        assert!(refused.fault.is_some(), "{refused:?}");
    }
}
