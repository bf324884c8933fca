//! Why a root, a timestamp or a chain of roots was refused.

use airlift_package::KeyId;

/// Why a trust document was refused. Every variant names what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The document is larger than the limit for its kind.
    #[error("the {kind} document is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// `root` or `timestamp`.
        kind: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON of the expected shape.
    #[error("the {kind} document does not parse: {reason}")]
    Malformed {
        /// `root` or `timestamp`.
        kind: &'static str,
        /// What serde said, shortened.
        reason: String,
    },
    /// Too many keys, signatures, role members or roots in one update.
    #[error("{what}: {count} is over the limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A key entry's id is not the id of its public key, or its PEM is bad.
    #[error("key {id}: {reason}")]
    BadKey {
        /// The id as written.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A role's threshold cannot be met, or it names an unknown key.
    #[error("the {role} role: {reason}")]
    BadRole {
        /// `root`, `release` or `timestamp`.
        role: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Fewer distinct valid signatures from a role than its threshold.
    #[error("{what} carries {valid} valid signature(s) from the {role} keys of root version {root_version}, {threshold} needed; sign it with more of those keys (`airlift root sign`)")]
    Threshold {
        /// What was being verified (`root version 3`, `timestamp`).
        what: String,
        /// The role whose keys count.
        role: &'static str,
        /// The root version naming that role.
        root_version: u64,
        /// Distinct valid signatures found.
        valid: usize,
        /// Signatures needed.
        threshold: usize,
    },
    /// A root whose version is not the next one.
    #[error("root version {got} cannot follow root version {current}: each new root must be exactly the next version")]
    NotNextVersion {
        /// The version the device holds.
        current: u64,
        /// The version offered.
        got: u64,
    },
    /// The newest root, or a timestamp, has expired.
    #[error("the {what} expired at {expires} (unix seconds; now {now}); the operator must publish a new one")]
    Expired {
        /// `root version 3`, `timestamp version 9`.
        what: String,
        /// When it expired.
        expires: u64,
        /// The clock it was checked against.
        now: u64,
    },
    /// A timestamp older than one already seen: a replay or a rollback.
    #[error("timestamp version {got} is older than version {seen} already seen: a stale or replayed offer")]
    Rollback {
        /// The version seen before.
        seen: u64,
        /// The version offered now.
        got: u64,
    },
    /// The timestamp covers something else than what came with it.
    #[error(
        "the timestamp covers {covered}, not the offer it came with ({actual}): a spliced offer"
    )]
    WrongCover {
        /// The digest the timestamp names.
        covered: String,
        /// The digest of what came with it.
        actual: String,
    },
    /// The timestamp was signed under a newer root than the one given.
    #[error("the timestamp was signed under root version {needed} but root version {have} is trusted: fetch the newer roots first")]
    NeedsNewerRoot {
        /// The root version the timestamp names.
        needed: u64,
        /// The root version in hand.
        have: u64,
    },
    /// A package whose security version is above what the server vouches for.
    #[error("the package's security version {package} is above the latest the server vouches for ({latest}): a fast-forward refused")]
    SecurityVersionAhead {
        /// The package's security version.
        package: u64,
        /// The timestamp's security version.
        latest: u64,
    },
    /// A signature entry names a key id that is not 16 hex digits, or its signature is not 64 bytes of hex.
    #[error("signature entry {index}: {reason}")]
    BadSignatureEntry {
        /// Its position in the list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing key is not part of the role it signs for.
    #[error("key {0} is not among the keys of this document's roles; add it first")]
    UnknownSigner(KeyId),
}

impl TrustError {
    pub(crate) fn malformed(kind: &'static str, error: impl std::fmt::Display) -> Self {
        let reason: String = error.to_string().chars().take(200).collect();
        Self::Malformed { kind, reason }
    }
}
