//! The root document: which keys may sign roots, releases and timestamps,
//! and how many of each; versioned, with an expiry, and chained so that a
//! device only ever moves from root N to root N+1 (as TUF's root role).

use crate::envelope::Envelope;
use crate::error::TrustError;
use crate::limits::{MAX_CHAIN, MAX_KEYS, MAX_PEM_CHARS, MAX_ROLE_KEYS, MAX_ROOT_BYTES};
use airlift_package::{KeyId, PublicKey, SigningKey, TrustSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The `type` of a root document.
pub const ROOT_TYPE: &str = "airlift-root";

/// A role: the key ids whose signatures count, and how many are needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// Key ids (16 hex digits) of the keys in this role.
    pub key_ids: Vec<String>,
    /// Distinct valid signatures needed (1 ≤ threshold ≤ key count).
    pub threshold: usize,
}

/// The three roles a root names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    /// Signs roots.
    Root,
    /// Signs packages.
    Release,
    /// The server's online key(s) signing timestamps.
    Timestamp,
}

impl RoleName {
    /// The role's name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Release => "release",
            Self::Timestamp => "timestamp",
        }
    }
}

/// The signed part of a root, as written in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDocument {
    /// Always `airlift-root`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first root, then exactly one more each time.
    pub version: u64,
    /// Unix seconds after which this root, if it is the newest, is refused.
    pub expires: u64,
    /// Every key the roles name: key id → SPKI PEM public key.
    pub keys: BTreeMap<String, String>,
    /// Who signs roots.
    pub root: RoleKeys,
    /// Who signs packages.
    pub release: RoleKeys,
    /// The server's online key(s) that sign timestamps.
    pub timestamp: RoleKeys,
    /// Recovery from a fast-forward: a device taking this root lowers the
    /// security version it holds to this value if it holds a higher one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_version_reset: Option<u64>,
}

impl RootDocument {
    /// A first root (version 1) with one key in each role.
    pub fn first(root: PublicKey, release: PublicKey, timestamp: PublicKey, expires: u64) -> Self {
        let mut document = Self {
            kind: ROOT_TYPE.into(),
            version: 1,
            expires,
            keys: BTreeMap::new(),
            root: RoleKeys {
                key_ids: Vec::new(),
                threshold: 1,
            },
            release: RoleKeys {
                key_ids: Vec::new(),
                threshold: 1,
            },
            timestamp: RoleKeys {
                key_ids: Vec::new(),
                threshold: 1,
            },
            security_version_reset: None,
        };
        for (role, key) in [
            (RoleName::Root, root),
            (RoleName::Release, release),
            (RoleName::Timestamp, timestamp),
        ] {
            document.add_key(role, &key);
        }
        document
    }

    /// The role by name.
    pub fn role(&self, role: RoleName) -> &RoleKeys {
        match role {
            RoleName::Root => &self.root,
            RoleName::Release => &self.release,
            RoleName::Timestamp => &self.timestamp,
        }
    }

    fn role_mut(&mut self, role: RoleName) -> &mut RoleKeys {
        match role {
            RoleName::Root => &mut self.root,
            RoleName::Release => &mut self.release,
            RoleName::Timestamp => &mut self.timestamp,
        }
    }

    /// Adds `key` to `role` (and to the key list); adding it twice is a no-op.
    pub fn add_key(&mut self, role: RoleName, key: &PublicKey) {
        let id = key.key_id().to_string();
        // A PEM of a valid key always encodes.
        self.keys
            .insert(id.clone(), key.to_pem().unwrap_or_default());
        let members = &mut self.role_mut(role).key_ids;
        if !members.contains(&id) {
            members.push(id);
        }
    }

    /// Removes key `id` from `role`, and from the key list when no role
    /// names it any more. Returns whether the role named it.
    pub fn revoke_key(&mut self, role: RoleName, id: &KeyId) -> bool {
        let id = id.to_string();
        let members = &mut self.role_mut(role).key_ids;
        let before = members.len();
        members.retain(|k| *k != id);
        let removed = members.len() != before;
        let still_named = [RoleName::Root, RoleName::Release, RoleName::Timestamp]
            .iter()
            .any(|r| self.role(*r).key_ids.contains(&id));
        if !still_named {
            self.keys.remove(&id);
        }
        removed
    }

    /// Sets `role`'s threshold.
    pub fn set_threshold(&mut self, role: RoleName, threshold: usize) {
        self.role_mut(role).threshold = threshold;
    }

    /// The next root: the same keys and roles, version + 1, a new expiry, no reset.
    pub fn next(&self, expires: u64) -> Self {
        Self {
            version: self.version.saturating_add(1),
            expires,
            security_version_reset: None,
            ..self.clone()
        }
    }

    /// This document, unsigned, in an envelope ready for signatures.
    pub fn to_envelope(&self) -> Result<Envelope, TrustError> {
        let text = serde_json::to_string(self).map_err(|e| TrustError::malformed("root", e))?;
        Envelope::new(text)
    }
}

/// A root whose structure is checked and whose keys are parsed; which
/// signatures it carries is checked by [`Root::trust_first`] and
/// [`Root::update`].
#[derive(Debug, Clone)]
pub struct Root {
    document: RootDocument,
    envelope: Envelope,
    keys: BTreeMap<KeyId, PublicKey>,
    roles: [BTreeSet<KeyId>; 3],
}

fn role_index(role: RoleName) -> usize {
    match role {
        RoleName::Root => 0,
        RoleName::Release => 1,
        RoleName::Timestamp => 2,
    }
}

impl Root {
    /// Parses a root envelope and checks its structure (not its signatures).
    pub fn parse(bytes: &[u8]) -> Result<Self, TrustError> {
        let envelope = Envelope::parse(bytes, "root", MAX_ROOT_BYTES)?;
        let document: RootDocument = serde_json::from_slice(envelope.signed_bytes())
            .map_err(|e| TrustError::malformed("root", e))?;
        if document.kind != ROOT_TYPE {
            return Err(TrustError::malformed(
                "root",
                format!("type is {:?}, not {ROOT_TYPE:?}", document.kind),
            ));
        }
        if document.version == 0 {
            return Err(TrustError::malformed(
                "root",
                "version 0: versions start at 1",
            ));
        }
        let keys = parse_keys(&document.keys)?;
        let roles = [RoleName::Root, RoleName::Release, RoleName::Timestamp]
            .map(|role| parse_role(role, document.role(role), &keys));
        let [root, release, timestamp] = roles;
        Ok(Self {
            roles: [root?, release?, timestamp?],
            document,
            envelope,
            keys,
        })
    }

    /// Trusts a first root given out of band (the device's configuration):
    /// it must carry a threshold of its own root keys' signatures. Its
    /// expiry is not checked here: a device shipped with an old root still
    /// updates from it to a current one.
    pub fn trust_first(bytes: &[u8]) -> Result<Self, TrustError> {
        let root = Self::parse(bytes)?;
        root.check_signed_by(&root, RoleName::Root)?;
        Ok(root)
    }

    /// Takes one newer root: exactly the next version, signed by a
    /// threshold of this root's root keys and of its own. Expiry is not
    /// checked (see [`Root::update`]).
    pub fn next_from(&self, bytes: &[u8]) -> Result<Self, TrustError> {
        let next = Self::parse(bytes)?;
        if Some(next.version()) != self.version().checked_add(1) {
            return Err(TrustError::NotNextVersion {
                current: self.version(),
                got: next.version(),
            });
        }
        next.check_signed_by(self, RoleName::Root)?;
        next.check_signed_by(&next, RoleName::Root)?;
        Ok(next)
    }

    /// Walks `newer` roots (in order, older ones skipped) from this one and
    /// returns the newest, which must not have expired at `now`. Returns
    /// this root unchanged when there is nothing newer — and then it too
    /// must not have expired.
    pub fn update<'a>(
        &self,
        newer: impl IntoIterator<Item = &'a [u8]>,
        now: u64,
    ) -> Result<Self, TrustError> {
        let mut current = self.clone();
        for (count, bytes) in newer.into_iter().enumerate() {
            if count >= MAX_CHAIN {
                return Err(TrustError::TooMany {
                    what: "roots in one update",
                    count: count + 1,
                    limit: MAX_CHAIN,
                });
            }
            // A server may hand out the whole chain; roots the device
            // already holds are skipped, not taken again.
            if Self::parse(bytes)?.version() <= current.version() {
                continue;
            }
            current = current.next_from(bytes)?;
        }
        current.check_not_expired(now)?;
        Ok(current)
    }

    /// Refuses a root whose expiry has passed.
    pub fn check_not_expired(&self, now: u64) -> Result<(), TrustError> {
        if now >= self.document.expires {
            return Err(TrustError::Expired {
                what: format!("root version {}", self.version()),
                expires: self.document.expires,
                now,
            });
        }
        Ok(())
    }

    /// Checks this root carries a threshold of `signer`'s `role` signatures.
    fn check_signed_by(&self, signer: &Root, role: RoleName) -> Result<(), TrustError> {
        signer.check_threshold(
            &self.envelope,
            role,
            &format!("root version {}", self.version()),
        )
    }

    /// Checks `envelope` carries a threshold of this root's `role` keys.
    pub(crate) fn check_threshold(
        &self,
        envelope: &Envelope,
        role: RoleName,
        what: &str,
    ) -> Result<(), TrustError> {
        let valid = envelope.valid_signers(&self.keys, &self.roles[role_index(role)])?;
        let threshold = self.document.role(role).threshold;
        if valid.len() < threshold {
            return Err(TrustError::Threshold {
                what: what.to_owned(),
                role: role.as_str(),
                root_version: self.version(),
                valid: valid.len(),
                threshold,
            });
        }
        Ok(())
    }

    /// The root's version.
    pub fn version(&self) -> u64 {
        self.document.version
    }

    /// The signed part.
    pub fn document(&self) -> &RootDocument {
        &self.document
    }

    /// The envelope, byte for byte as parsed.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The keys of `role`.
    pub fn role_keys(&self, role: RoleName) -> impl Iterator<Item = PublicKey> + '_ {
        self.roles[role_index(role)]
            .iter()
            .filter_map(|id| self.keys.get(id).copied())
    }

    /// The package signers this root trusts: exactly its release keys and threshold.
    pub fn release_trust(&self) -> Result<TrustSet, TrustError> {
        TrustSet::new(
            self.role_keys(RoleName::Release),
            self.document.release.threshold,
        )
        .map_err(|e| TrustError::BadRole {
            role: "release",
            reason: e.to_string(),
        })
    }

    /// Whether `key` may sign for this root (is in any role).
    pub fn knows(&self, key: &SigningKey) -> bool {
        self.keys.contains_key(&key.public_key().key_id())
    }
}

fn parse_keys(keys: &BTreeMap<String, String>) -> Result<BTreeMap<KeyId, PublicKey>, TrustError> {
    if keys.len() > MAX_KEYS {
        return Err(TrustError::TooMany {
            what: "keys",
            count: keys.len(),
            limit: MAX_KEYS,
        });
    }
    let mut parsed = BTreeMap::new();
    for (id, pem) in keys {
        let bad = |reason: String| TrustError::BadKey {
            id: id.chars().take(40).collect(),
            reason,
        };
        if pem.len() > MAX_PEM_CHARS {
            return Err(bad(format!("its PEM is over {MAX_PEM_CHARS} characters")));
        }
        let key_id: KeyId = id
            .parse()
            .map_err(|e: airlift_package::KeyError| bad(e.to_string()))?;
        let key = PublicKey::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        if key.key_id() != key_id {
            return Err(bad(format!("the key's id is {}", key.key_id())));
        }
        parsed.insert(key_id, key);
    }
    Ok(parsed)
}

fn parse_role(
    role: RoleName,
    keys: &RoleKeys,
    known: &BTreeMap<KeyId, PublicKey>,
) -> Result<BTreeSet<KeyId>, TrustError> {
    let bad = |reason: String| TrustError::BadRole {
        role: role.as_str(),
        reason,
    };
    if keys.key_ids.len() > MAX_ROLE_KEYS {
        return Err(TrustError::TooMany {
            what: "keys in one role",
            count: keys.key_ids.len(),
            limit: MAX_ROLE_KEYS,
        });
    }
    let mut members = BTreeSet::new();
    for id in &keys.key_ids {
        let key_id: KeyId = id
            .parse()
            .map_err(|e: airlift_package::KeyError| bad(e.to_string()))?;
        if !known.contains_key(&key_id) {
            return Err(bad(format!("key {key_id} is not in the root's key list")));
        }
        if !members.insert(key_id) {
            return Err(bad(format!("key {key_id} is listed twice")));
        }
    }
    if keys.threshold == 0 || keys.threshold > members.len() {
        return Err(bad(format!(
            "a threshold of {} cannot be met with {} key(s)",
            keys.threshold,
            members.len()
        )));
    }
    Ok(members)
}
