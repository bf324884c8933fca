//! The signed trust root and the freshness of offers (`docs/trust.md`).
//!
//! With `trust_root` in `agent.toml` the agent trusts exactly the release
//! keys (and threshold) of its *current* root: the configured first root,
//! or the newest one it took since, kept in `<data_dir>/root.json`. Each
//! offer must come with the server's timestamp: when it names a newer
//! root, the agent fetches the roots it lacks, takes them only along an
//! unbroken chain (each signed by a threshold of the previous root's root
//! keys and of its own), and stores the newest atomically. The timestamp
//! must then verify against the current root's timestamp keys, not have
//! expired, not be older than the last one taken (kept in
//! `<data_dir>/timestamp.json`), cover the offered package head, and vouch
//! for the package's security version. Without `trust_root`, `trusted_keys`
//! is the trust set and offers are not checked for freshness.

use super::{io_error, Agent, AgentError, DataDir};
use crate::client::ClientError;
use crate::machine::{Decline, Event};
use airlift_package::{Sha256Digest, TrustSet};
use airlift_protocol::device::UpdateOffer;
use airlift_protocol::DeploymentId;
use airlift_trust::{FreshnessCheck, Root, Timestamp, TrustError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How often the agent asks for newer roots without an offer naming one:
/// a device must take a root that lowers its security version before the
/// server judges it against a new deployment.
const ROOTS_ASKED_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Most root answers fetched for one offer: a device can be
/// `MAX_ROOTS_PER_ANSWER` times this many versions behind and catch up.
const MAX_ROOT_FETCHES: usize = 8;

/// What the agent remembers of timestamps.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SeenTimestamp {
    version: u64,
}

impl DataDir {
    /// The newest root the agent took after its configured one.
    pub fn root_path(&self) -> PathBuf {
        self.root().join("root.json")
    }

    /// The version of the last timestamp taken.
    pub fn timestamp_path(&self) -> PathBuf {
        self.root().join("timestamp.json")
    }

    fn last_timestamp(&self) -> Option<u64> {
        let bytes = std::fs::read(self.timestamp_path()).ok()?;
        serde_json::from_slice::<SeenTimestamp>(&bytes)
            .ok()
            .map(|seen| seen.version)
    }

    fn save_timestamp(&self, version: u64) -> Result<(), AgentError> {
        let path = self.timestamp_path();
        let bytes = serde_json::to_vec(&SeenTimestamp { version })
            .map_err(|e| AgentError::Setup(format!("encoding the timestamp record: {e}")))?;
        crate::boot::atomic_write(&path, &bytes).map_err(io_error("saving", &path))
    }

    fn save_root(&self, root: &Root) -> Result<(), AgentError> {
        let path = self.root_path();
        crate::boot::atomic_write(&path, &root.envelope().to_bytes())
            .map_err(io_error("saving", &path))
    }
}

/// The current root: the configured one, or the newer one stored in the
/// data directory. A stored root that does not read is set aside (logged):
/// the configured root is older, and the server's chain brings the device
/// back up to date at the next offer.
pub(super) fn load_root(configured: &Path, data: &DataDir) -> Result<Root, AgentError> {
    let bytes =
        std::fs::read(configured).map_err(io_error("reading the trust root", configured))?;
    let first = Root::trust_first(&bytes)
        .map_err(|e| AgentError::Setup(format!("trust_root {}: {e}", configured.display())))?;
    let stored = match std::fs::read(data.root_path()) {
        Ok(bytes) => match Root::trust_first(&bytes) {
            Ok(root) => Some(root),
            Err(error) => {
                tracing::error!(%error, "the stored trust root does not read; starting from the configured one");
                None
            }
        },
        Err(_) => None,
    };
    Ok(match stored {
        Some(stored) if stored.version() > first.version() => stored,
        _ => first,
    })
}

/// The release keys a root trusts, as the package reader wants them.
pub(super) fn release_trust(root: &Root) -> Result<TrustSet, AgentError> {
    root.release_trust()
        .map_err(|e| AgentError::Setup(format!("the trust root: {e}")))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What freshness says about an offer.
pub(super) enum Gate {
    /// Go on (with the verified timestamp, when a root is configured).
    Pass(Option<Timestamp>),
    /// Leave the offer for the next check-in: the roots could not be fetched.
    Later,
    /// Refuse it, reporting this reason to the server.
    Refused(String),
}

/// Refuses a package above the security version the timestamp vouches for.
pub(super) fn within_timestamp(
    timestamp: Option<&Timestamp>,
    manifest: &airlift_package::Manifest,
) -> Result<(), String> {
    match timestamp {
        Some(timestamp) => timestamp
            .admits_security_version(manifest.security_version)
            .map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Why an offer was not taken on freshness grounds.
enum Stale {
    /// Refused: reported to the server with this reason.
    Refused(String),
    /// The roots could not be fetched now; the offer is left for the next
    /// check-in rather than refused.
    Unreachable(String),
}

impl Agent {
    /// Checks the freshness of an offer before it is vetted.
    pub(super) fn gate_offer(&mut self, offer: &UpdateOffer) -> Gate {
        let head = match STANDARD.decode(offer.signed_manifest.as_bytes()) {
            Ok(head) => head,
            // `vet` refuses it with the reason.
            Err(_) => return Gate::Pass(None),
        };
        match self.check_freshness(offer.timestamp.as_deref(), &head) {
            Ok(timestamp) => Gate::Pass(timestamp),
            Err(Stale::Refused(reason)) => Gate::Refused(reason),
            Err(Stale::Unreachable(reason)) => {
                tracing::warn!(deployment_id = %offer.deployment_id, %reason, "offer left for the next check-in");
                Gate::Later
            }
        }
    }

    /// Declines an offer, reported to the server as `failure` with `reason`.
    pub(super) fn refuse_offer(
        &mut self,
        deployment_id: DeploymentId,
        reason: String,
    ) -> Result<(), AgentError> {
        tracing::warn!(%deployment_id, %reason, "offer refused");
        self.feed(Event::OfferDeclined {
            deployment_id,
            decline: Decline::Refused { reason },
        })
    }

    /// Checks an offer's timestamp against the current root (taking newer
    /// roots first when it names one) and returns the verified timestamp;
    /// `None` when the agent runs on `trusted_keys` alone.
    fn check_freshness(
        &mut self,
        timestamp: Option<&str>,
        head: &[u8],
    ) -> Result<Option<Timestamp>, Stale> {
        let Some(root) = self.root.as_ref() else {
            return Ok(None);
        };
        let Some(timestamp) = timestamp else {
            return Err(Stale::Refused(
                "the offer carries no timestamp, and this device's trust root requires one: give the server its --timestamp-key".into(),
            ));
        };
        let needed = Timestamp::peek_root_version(timestamp.as_bytes())
            .map_err(|e| Stale::Refused(e.to_string()))?;
        if needed > root.version() {
            self.update_root(needed)?;
        }
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| Stale::Refused("no trust root".into()))?;
        let now = now();
        root.check_not_expired(now)
            .map_err(|e| Stale::Refused(e.to_string()))?;
        Timestamp::verify(
            timestamp.as_bytes(),
            FreshnessCheck {
                root,
                now,
                last_seen: self.data.last_timestamp(),
                covered: &Sha256Digest::of(head),
            },
        )
        .map(Some)
        .map_err(|e| Stale::Refused(e.to_string()))
    }

    /// At the start and then hourly, asks for roots newer than the current
    /// one and takes them; a failure is logged, and tried again next time.
    pub(super) fn refresh_roots(&mut self) {
        if self.root.is_none()
            || self
                .roots_asked_at
                .is_some_and(|at| at.elapsed() < ROOTS_ASKED_EVERY)
        {
            return;
        }
        self.roots_asked_at = Some(std::time::Instant::now());
        if let Err(Stale::Refused(reason) | Stale::Unreachable(reason)) = self.take_newer_roots() {
            tracing::warn!(%reason, "no newer trust root taken");
        }
    }

    /// Remembers a timestamp the agent acted on, so an older one is refused.
    pub(super) fn remember_timestamp(&self, timestamp: &Timestamp) -> Result<(), AgentError> {
        if self.data.last_timestamp() < Some(timestamp.version()) {
            self.data.save_timestamp(timestamp.version())?;
        }
        Ok(())
    }

    /// Fetches and takes the roots up to `needed`, one answer at a time.
    fn update_root(&mut self, needed: u64) -> Result<(), Stale> {
        for _ in 0..MAX_ROOT_FETCHES {
            let have = self.root.as_ref().map_or(u64::MAX, Root::version);
            if have >= needed {
                return Ok(());
            }
            if !self.take_newer_roots()? {
                return Err(Stale::Refused(format!(
                    "the timestamp names root version {needed}, but the server has none after version {have}"
                )));
            }
        }
        Ok(())
    }

    /// One answer of newer roots, walked along the chain and taken;
    /// whether there was a newer one.
    fn take_newer_roots(&mut self) -> Result<bool, Stale> {
        let Some(current) = self.root.clone() else {
            return Ok(false);
        };
        let answer = self
            .client
            .trust_roots(current.version())
            .map_err(|e| match e {
                ClientError::Permanent { .. } => {
                    Stale::Refused(format!("fetching trust roots: {e}"))
                }
                _ => Stale::Unreachable(format!("fetching trust roots: {e}")),
            })?;
        let mut next = current.clone();
        let mut reset: Option<u64> = None;
        for bytes in &answer.roots {
            let candidate = Root::parse(bytes.as_bytes()).map_err(refused)?;
            if candidate.version() <= next.version() {
                continue;
            }
            next = next.next_from(bytes.as_bytes()).map_err(refused)?;
            if let Some(floor) = next.document().security_version_reset {
                reset = Some(reset.map_or(floor, |r| r.min(floor)));
            }
        }
        if next.version() == current.version() {
            return Ok(false);
        }
        self.take_root(next, reset)
            .map_err(|e| Stale::Refused(e.to_string()))?;
        Ok(true)
    }

    /// Stores `root` as the current one and trusts its release keys; lowers
    /// the installed security version when a root on the way said so.
    fn take_root(&mut self, root: Root, reset: Option<u64>) -> Result<(), AgentError> {
        let trust = release_trust(&root)?;
        if let Some(floor) = reset {
            self.reset_security_version(floor)?;
        }
        self.data.save_root(&root)?;
        tracing::info!(
            version = root.version(),
            "took a new trust root; trusting its release keys"
        );
        self.trust = trust;
        self.root = Some(root);
        Ok(())
    }

    /// The recovery from a fast-forward: a root may lower the security
    /// version floor, explicitly, never raise it.
    fn reset_security_version(&self, floor: u64) -> Result<(), AgentError> {
        let store = self.data.installed_store();
        let mut record = store
            .load()
            .map_err(|e| AgentError::Setup(format!("the installed record: {e}")))?;
        if record.security_version > floor {
            tracing::warn!(
                from = record.security_version,
                to = floor,
                "the trust root lowers the security version"
            );
            record.security_version = floor;
            store
                .save(&record, record.generation)
                .map_err(|e| AgentError::Setup(e.to_string()))?;
        }
        Ok(())
    }
}

fn refused(error: TrustError) -> Stale {
    Stale::Refused(format!("a trust root from the server: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_package::SigningKey;
    use airlift_trust::RootDocument;

    fn signed(document: &RootDocument, key: &SigningKey) -> Vec<u8> {
        let mut envelope = document.to_envelope().expect("envelope");
        envelope.sign(key);
        envelope.to_bytes()
    }

    #[test]
    fn the_newer_of_the_configured_and_the_stored_root_is_current() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(io_error("creating", Path::new("tmp")))?;
        let data = DataDir::new(dir.path().join("data"));
        std::fs::create_dir_all(data.root()).map_err(io_error("creating", data.root()))?;
        let key = SigningKey::generate().expect("key");
        let first = RootDocument::first(
            key.public_key(),
            key.public_key(),
            key.public_key(),
            4_000_000_000,
        );
        let configured = dir.path().join("root.json");
        std::fs::write(&configured, signed(&first, &key))
            .map_err(io_error("writing", &configured))?;
        assert_eq!(load_root(&configured, &data)?.version(), 1);

        let second = Root::parse(&signed(&first.next(4_000_000_000), &key)).expect("root 2");
        data.save_root(&second)?;
        assert_eq!(load_root(&configured, &data)?.version(), 2);

        // A damaged stored root is set aside, not trusted and not fatal.
        std::fs::write(data.root_path(), b"{\"signed\":")
            .map_err(io_error("writing", Path::new("root")))?;
        assert_eq!(load_root(&configured, &data)?.version(), 1);
        // An unsigned configured root is refused outright.
        std::fs::write(
            &configured,
            first.to_envelope().expect("envelope").to_bytes(),
        )
        .map_err(io_error("writing", &configured))?;
        assert!(load_root(&configured, &data).is_err());
        Ok(())
    }

    #[test]
    fn a_trust_root_stands_in_for_trusted_keys_in_the_config() {
        let config = |trust: &str| {
            format!(
                "server_url = \"http://127.0.0.1:8080\"\ndata_dir = \"/var/lib/airlift\"\n\
                 device_type = \"acme-gw\"\nidentity = {{ serial = \"SN1\" }}\n{trust}\n\
                 [boot]\nbackend = \"grub\"\ngrubenv = \"/boot/grub/grubenv\"\n"
            )
        };
        let path = Path::new("agent.toml");
        let parsed = crate::config::AgentConfig::parse(
            &config("trust_root = \"/etc/airlift/root.json\""),
            path,
        )
        .expect("a root alone is enough");
        assert_eq!(
            parsed.trust_root.as_deref(),
            Some(Path::new("/etc/airlift/root.json"))
        );
        assert!(parsed.trusted_keys.is_empty());
        let neither = crate::config::AgentConfig::parse(&config(""), path).expect_err("no trust");
        assert!(neither.to_string().contains("trust_root"), "{neither}");
    }

    #[test]
    fn the_last_timestamp_is_kept_and_read_back() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(io_error("creating", Path::new("tmp")))?;
        let data = DataDir::new(dir.path());
        assert_eq!(data.last_timestamp(), None);
        data.save_timestamp(42)?;
        assert_eq!(data.last_timestamp(), Some(42));
        Ok(())
    }
}
