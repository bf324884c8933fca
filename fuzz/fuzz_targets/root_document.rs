//! Arbitrary bytes into the trust root parser and chain verification
//! (`airlift-trust`), and into the timestamp parser.
//!
//! The first byte chooses the mode: even, the rest is a whole root envelope
//! as a server would serve it; odd, the rest is taken as the signed part,
//! wrapped and signed with the fixed key, so mutations reach the structure
//! checks and the version, threshold and expiry rules behind the signatures.
//! Either way the result is offered as the next root after a fixed first
//! root whose every role is the fixed key.

#![no_main]

use airlift_trust::{Envelope, Root, RootDocument, Timestamp};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Far in the future, so the fixed root never expires under the fuzzer.
const EXPIRES: u64 = 4_000_000_000;

fn first_root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let key = airlift_package_fuzz::signing_key();
        let public = key.public_key();
        let mut envelope = RootDocument::first(public, public, public, EXPIRES)
            .to_envelope()
            .expect("the fixed root serialises");
        envelope.sign(&key);
        Root::trust_first(&envelope.to_bytes()).expect("the fixed root is self-signed")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _ = Timestamp::peek_root_version(rest);
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(mut envelope) = Envelope::new(text.to_owned()) else {
            return;
        };
        envelope.sign(&airlift_package_fuzz::signing_key());
        envelope.to_bytes()
    };
    match first_root().update([bytes.as_slice()], 1_900_000_000) {
        Ok(root) => {
            assert!(root.version() >= first_root().version());
            let _ = root.release_trust();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    if let Ok(root) = Root::parse(&bytes) {
        // What parses keeps its signed bytes through a re-serialisation.
        let again = Root::parse(&root.envelope().to_bytes()).expect("re-serialised root parses");
        assert_eq!(again.document(), root.document());
        assert_eq!(
            again.envelope().signed_bytes(),
            root.envelope().signed_bytes()
        );
    }
});
