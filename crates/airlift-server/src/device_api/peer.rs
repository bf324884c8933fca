//! The client certificate a TLS connection presented, as the device API
//! sees it: the SHA-256 of its SubjectPublicKeyInfo (the device's identity,
//! see `certificate.rs`) and its subject's common name (for people).
//!
//! The accept loop (`listen.rs`) makes one per connection, after rustls
//! verified the chain against the fleet CA and the peer proved it holds
//! the key (CertificateVerify), and puts it in every request's
//! extensions; nothing a client sends can put one there.
//!
//! Reading the two fields needs only a walk over the certificate's DER
//! structure, bounded by the certificate's length, so no X.509 library is
//! pulled in for it.

use airlift_package::Sha256Digest;

/// Longest common name kept (X.520 allows 64 characters; some CAs are
/// generous).
const MAX_COMMON_NAME: usize = 1024;

/// A verified peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// SHA-256 of the DER SubjectPublicKeyInfo: what `openssl x509 -pubkey
    /// -noout -in device.pem | openssl pkey -pubin -outform der | sha256sum`
    /// prints.
    pub spki_sha256: Sha256Digest,
    /// The DER SubjectPublicKeyInfo itself.
    pub spki_der: Vec<u8>,
    /// The subject's first common name, empty when it has none.
    pub subject_cn: String,
}

impl PeerCertificate {
    /// Reads an X.509 certificate's key and subject; `None` when it is not
    /// one (rustls verified it already, so that does not happen in
    /// practice).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (certificate, _) = expect(der, SEQUENCE)?;
        let (tbs, _) = expect(certificate.value, SEQUENCE)?;
        let mut rest = tbs.value;
        // version [0] EXPLICIT, absent for v1
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest)?.1;
        }
        let (_serial, rest) = expect(rest, INTEGER)?;
        let (_signature, rest) = expect(rest, SEQUENCE)?;
        let (_issuer, rest) = expect(rest, SEQUENCE)?;
        let (_validity, rest) = expect(rest, SEQUENCE)?;
        let (subject, rest) = expect(rest, SEQUENCE)?;
        let (spki, _) = expect(rest, SEQUENCE)?;
        Some(Self {
            spki_sha256: Sha256Digest::of(spki.whole),
            spki_der: spki.whole.to_vec(),
            subject_cn: common_name(subject.value).unwrap_or_default(),
        })
    }

    /// The key as PEM ("PUBLIC KEY"), as device records show keys.
    pub fn public_key_pem(&self) -> String {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.spki_der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }
}

const INTEGER: u8 = 0x02;
const OBJECT_IDENTIFIER: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: its contents, and all its bytes (tag and length too).
struct Element<'a> {
    value: &'a [u8],
    whole: &'a [u8],
}

/// The element at the start of `input` if its tag is `tag`, and what
/// follows it.
fn expect(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
    let (found, element, rest) = tlv(input).map(|(t, rest)| (t.0, t.1, rest))?;
    (found == tag).then_some((element, rest))
}

/// The element at the start of `input` — `((tag, element), rest)` — in
/// definite-length DER with at most four length bytes.
#[allow(clippy::type_complexity)]
fn tlv(input: &[u8]) -> Option<((u8, Element<'_>), &[u8])> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, mut after_length) = after_tag.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_length.len() < count {
            return None;
        }
        let (bytes, rest) = after_length.split_at(count);
        after_length = rest;
        bytes
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte))
    };
    if after_length.len() < length {
        return None;
    }
    let header = input.len() - after_length.len();
    let (value, rest) = after_length.split_at(length);
    let whole = input.get(..header + length)?;
    Some(((tag, Element { value, whole }), rest))
}

/// The first common name in a Name's RDN sequence, if it is text.
fn common_name(mut rdns: &[u8]) -> Option<String> {
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attributes = set.value;
        while !attributes.is_empty() {
            let (attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = expect(attribute.value, OBJECT_IDENTIFIER)?;
            if oid.value != COMMON_NAME {
                continue;
            }
            let ((tag, text), _) = tlv(value)?;
            // UTF8String, PrintableString, TeletexString (as Latin-1 is
            // rare, taken as UTF-8), IA5String
            if ![0x0c, 0x13, 0x14, 0x16].contains(&tag) || text.value.len() > MAX_COMMON_NAME {
                return None;
            }
            return std::str::from_utf8(text.value).ok().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: Option<&str>) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["device".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Fleet");
        if let Some(name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
        }
        let cert = params.self_signed(&key).expect("certificate");
        (cert, key)
    }

    #[test]
    fn the_key_digest_and_common_name_are_read() {
        let (cert, key) = certificate(Some("device-0042"));
        let peer = PeerCertificate::from_der(cert.der()).expect("a certificate");
        assert_eq!(peer.spki_sha256, Sha256Digest::of(&key.public_key_der()));
        assert_eq!(peer.subject_cn, "device-0042");
        assert!(peer
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn a_subject_without_a_common_name_reads_as_empty() {
        let (cert, _) = certificate(None);
        let peer = PeerCertificate::from_der(cert.der()).expect("a certificate");
        assert_eq!(peer.subject_cn, "");
    }

    #[test]
    fn truncated_or_foreign_bytes_are_not_a_certificate() {
        let (cert, _) = certificate(Some("x"));
        let der = cert.der().to_vec();
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(PeerCertificate::from_der(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            PeerCertificate::from_der(&[0x30, 0x85, 1, 2, 3, 4, 5]),
            None
        );
        assert_eq!(
            PeerCertificate::from_der(b"-----BEGIN CERTIFICATE-----"),
            None
        );
    }
}
