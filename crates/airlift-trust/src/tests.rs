//! Unit and property tests of roots, chains and timestamps.

use crate::limits::{MAX_KEYS, MAX_ROOT_BYTES};
use crate::{
    Envelope, FreshnessCheck, RoleName, Root, RootDocument, Timestamp, TimestampDocument,
    TrustError, TIMESTAMP_TYPE,
};
use airlift_package::{Sha256Digest, SigningKey};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;
const LATER: u64 = NOW + 86_400 * 365;

fn key() -> SigningKey {
    SigningKey::generate().expect("random")
}

struct Keys {
    root: SigningKey,
    release: SigningKey,
    online: SigningKey,
}

fn keys() -> Keys {
    Keys {
        root: key(),
        release: key(),
        online: key(),
    }
}

fn signed(document: &RootDocument, signers: &[&SigningKey]) -> Vec<u8> {
    let mut envelope = document.to_envelope().expect("envelope");
    for signer in signers {
        envelope.sign(signer);
    }
    envelope.to_bytes()
}

fn first(keys: &Keys) -> (RootDocument, Root) {
    let document = RootDocument::first(
        keys.root.public_key(),
        keys.release.public_key(),
        keys.online.public_key(),
        LATER,
    );
    let root = Root::trust_first(&signed(&document, &[&keys.root])).expect("first root");
    (document, root)
}

#[test]
fn a_first_root_must_be_signed_by_its_own_root_keys() {
    let keys = keys();
    let document = RootDocument::first(
        keys.root.public_key(),
        keys.release.public_key(),
        keys.online.public_key(),
        LATER,
    );
    assert!(matches!(
        Root::trust_first(&signed(&document, &[])),
        Err(TrustError::Threshold { valid: 0, .. })
    ));
    assert!(matches!(
        Root::trust_first(&signed(&document, &[&keys.release])),
        Err(TrustError::Threshold { valid: 0, .. })
    ));
    let root = Root::trust_first(&signed(&document, &[&keys.root])).expect("trusted");
    assert_eq!(root.version(), 1);
    assert_eq!(root.document(), &document);
}

#[test]
fn a_rotated_root_needs_the_old_and_the_new_root_keys() {
    let keys = keys();
    let (document, root) = first(&keys);
    let new_root_key = key();
    let mut next = document.next(LATER);
    next.revoke_key(RoleName::Root, &keys.root.public_key().key_id());
    next.add_key(RoleName::Root, &new_root_key.public_key());

    let only_new = signed(&next, &[&new_root_key]);
    assert!(matches!(
        root.update([only_new.as_slice()], NOW),
        Err(TrustError::Threshold {
            root_version: 1,
            ..
        })
    ));
    let only_old = signed(&next, &[&keys.root]);
    assert!(matches!(
        root.update([only_old.as_slice()], NOW),
        Err(TrustError::Threshold {
            root_version: 2,
            ..
        })
    ));
    let both = signed(&next, &[&keys.root, &new_root_key]);
    let updated = root.update([both.as_slice()], NOW).expect("rotated");
    assert_eq!(updated.version(), 2);

    // Root 3 needs only root 2's keys; the old root key counts for nothing.
    let third = next.next(LATER);
    let by_old = signed(&third, &[&keys.root]);
    assert!(updated.update([by_old.as_slice()], NOW).is_err());
    let by_new = signed(&third, &[&new_root_key]);
    assert_eq!(
        root.update([both.as_slice(), by_new.as_slice()], NOW)
            .expect("chain")
            .version(),
        3
    );
}

#[test]
fn versions_must_follow_one_by_one() {
    let keys = keys();
    let (document, root) = first(&keys);
    let mut skipping = document.next(LATER);
    skipping.version = 3;
    let bytes = signed(&skipping, &[&keys.root]);
    assert!(matches!(
        root.update([bytes.as_slice()], NOW),
        Err(TrustError::NotNextVersion { current: 1, got: 3 })
    ));
    // The same or an older version is skipped: the chain may be served whole.
    let same = signed(&document, &[&keys.root]);
    assert_eq!(
        root.update([same.as_slice()], NOW).expect("same").version(),
        1
    );
}

#[test]
fn only_the_newest_root_must_be_unexpired() {
    let keys = keys();
    let (document, root) = first(&keys);
    let mut expired = document.next(NOW - 1);
    let expired_bytes = signed(&expired, &[&keys.root]);
    assert!(matches!(
        root.update([expired_bytes.as_slice()], NOW),
        Err(TrustError::Expired { .. })
    ));
    expired.expires = NOW - 1;
    let current = signed(&expired.next(LATER), &[&keys.root]);
    let updated = root
        .update([expired_bytes.as_slice(), current.as_slice()], NOW)
        .expect("expired root in the middle is fine");
    assert_eq!(updated.version(), 3);
    assert!(root.check_not_expired(LATER).is_err());
}

#[test]
fn a_revoked_release_key_is_no_longer_trusted() {
    let keys = keys();
    let (document, root) = first(&keys);
    let replacement = key();
    let mut next = document.next(LATER);
    next.add_key(RoleName::Release, &replacement.public_key());
    assert!(next.revoke_key(RoleName::Release, &keys.release.public_key().key_id()));
    assert!(!next
        .keys
        .contains_key(&keys.release.public_key().key_id().to_string()));
    let updated = root
        .update([signed(&next, &[&keys.root]).as_slice()], NOW)
        .expect("rotated");
    let trusted: Vec<_> = updated.release_trust().expect("trust").key_ids().collect();
    assert_eq!(trusted, vec![replacement.public_key().key_id()]);
}

#[test]
fn one_stolen_root_key_below_threshold_cannot_sign_a_root() {
    let keys = keys();
    let (mut document, _) = first(&keys);
    let (second, third) = (key(), key());
    document.add_key(RoleName::Root, &second.public_key());
    document.add_key(RoleName::Root, &third.public_key());
    document.set_threshold(RoleName::Root, 2);
    let root = Root::trust_first(&signed(&document, &[&keys.root, &second])).expect("2 of 3");
    let mut evil = document.next(LATER);
    evil.add_key(RoleName::Release, &key().public_key());
    let by_one = signed(&evil, &[&third, &third]);
    assert!(matches!(
        root.update([by_one.as_slice()], NOW),
        Err(TrustError::Threshold {
            valid: 1,
            threshold: 2,
            ..
        })
    ));
}

#[test]
fn altered_signed_bytes_break_the_signatures() {
    let keys = keys();
    let (document, _) = first(&keys);
    let bytes = signed(&document, &[&keys.root]);
    let text = String::from_utf8(bytes).expect("utf-8");
    let altered = text.replacen("\"version\":1", "\"version\":01", 1);
    assert!(Root::trust_first(altered.as_bytes()).is_err());
    let reformatted = text.replacen("\"version\":1", "\"version\": 1", 1);
    assert!(matches!(
        Root::trust_first(reformatted.as_bytes()),
        Err(TrustError::Threshold { .. })
    ));
}

#[test]
fn malformed_and_oversized_roots_are_refused() {
    assert!(matches!(
        Root::parse(&vec![b' '; MAX_ROOT_BYTES + 1]),
        Err(TrustError::TooLarge { .. })
    ));
    assert!(matches!(
        Root::parse(b"{}"),
        Err(TrustError::Malformed { .. })
    ));
    let keys = keys();
    let (mut document, _) = first(&keys);
    document.set_threshold(RoleName::Release, 2);
    assert!(matches!(
        Root::parse(&signed(&document, &[])),
        Err(TrustError::BadRole {
            role: "release",
            ..
        })
    ));
    let (mut document, _) = first(&keys);
    let root_id = keys.root.public_key().key_id().to_string();
    let release_pem = document.keys[&keys.release.public_key().key_id().to_string()].clone();
    document.keys.insert(root_id, release_pem);
    assert!(matches!(
        Root::parse(&signed(&document, &[])),
        Err(TrustError::BadKey { .. })
    ));
    let (mut document, _) = first(&keys);
    for _ in 0..=MAX_KEYS {
        document.add_key(RoleName::Release, &key().public_key());
    }
    assert!(matches!(
        Root::parse(&signed(&document, &[])),
        Err(TrustError::TooMany { .. })
    ));
    let unknown_field = String::from_utf8(signed(&first(&keys).0, &[]))
        .expect("utf-8")
        .replacen("{\"type\"", "{\"extra\":1,\"type\"", 1);
    assert!(Root::parse(unknown_field.as_bytes()).is_err());
}

fn timestamp(online: &SigningKey, version: u64, expires: u64, covers: Sha256Digest) -> Vec<u8> {
    TimestampDocument {
        kind: TIMESTAMP_TYPE.into(),
        version,
        expires,
        root_version: 1,
        security_version: 5,
        covers,
    }
    .sign(online)
    .expect("signed")
}

#[test]
fn timestamps_must_be_signed_fresh_in_order_and_cover_the_offer() {
    let keys = keys();
    let (_, root) = first(&keys);
    let offer = Sha256Digest::of(b"offer");
    let check = |last_seen, covered: &Sha256Digest, bytes: &[u8]| {
        Timestamp::verify(
            bytes,
            FreshnessCheck {
                root: &root,
                now: NOW,
                last_seen,
                covered,
            },
        )
    };
    let good = timestamp(&keys.online, 10, NOW + 60, offer);
    let verified = check(Some(10), &offer, &good).expect("fresh");
    assert_eq!(verified.version(), 10);
    assert!(verified.admits_security_version(5).is_ok());
    assert!(matches!(
        verified.admits_security_version(6),
        Err(TrustError::SecurityVersionAhead {
            package: 6,
            latest: 5
        })
    ));
    assert!(matches!(
        check(Some(11), &offer, &good),
        Err(TrustError::Rollback { seen: 11, got: 10 })
    ));
    assert!(matches!(
        check(None, &offer, &timestamp(&keys.online, 10, NOW, offer)),
        Err(TrustError::Expired { .. })
    ));
    assert!(matches!(
        check(None, &Sha256Digest::of(b"other"), &good),
        Err(TrustError::WrongCover { .. })
    ));
    assert!(matches!(
        check(None, &offer, &timestamp(&keys.release, 10, NOW + 60, offer)),
        Err(TrustError::Threshold {
            role: "timestamp",
            ..
        })
    ));
    let mut newer_root = TimestampDocument {
        kind: TIMESTAMP_TYPE.into(),
        version: 1,
        expires: NOW + 60,
        root_version: 2,
        security_version: 0,
        covers: offer,
    };
    let bytes = newer_root.sign(&keys.online).expect("signed");
    assert_eq!(Timestamp::peek_root_version(&bytes).expect("peek"), 2);
    assert!(matches!(
        check(None, &offer, &bytes),
        Err(TrustError::NeedsNewerRoot { needed: 2, have: 1 })
    ));
    newer_root.kind = "airlift-root".into();
    assert!(Timestamp::peek_root_version(&newer_root.sign(&keys.online).expect("signed")).is_err());
}

#[test]
fn an_envelope_keeps_one_signature_per_key() {
    let signer = key();
    let mut envelope = Envelope::new("{\"a\":1}".into()).expect("json");
    envelope.sign(&signer);
    envelope.sign(&signer);
    assert_eq!(envelope.signatures().len(), 1);
    assert!(Envelope::new("not json".into()).is_err());
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Root::parse(&bytes);
        let _ = Timestamp::peek_root_version(&bytes);
    }

    #[test]
    fn a_document_survives_its_envelope(
        version in 1u64..u64::MAX,
        expires in any::<u64>(),
        reset in proptest::option::of(any::<u64>()),
    ) {
        let keys = keys();
        let (mut document, _) = first(&keys);
        document.version = version;
        document.expires = expires;
        document.security_version_reset = reset;
        let bytes = signed(&document, &[&keys.root]);
        let parsed = Root::parse(&bytes).expect("parses");
        prop_assert_eq!(parsed.document(), &document);
        prop_assert_eq!(parsed.envelope().to_bytes(), bytes);
    }
}
