//! Verifying an upload while it arrives: the bytes of the request body are
//! handed, in order and as they come, to `airlift-package`'s streaming
//! reader on a blocking thread, which checks the signatures over the
//! manifest, every payload's stored digest and that nothing follows the
//! last payload — the same checks as reading the file back, over exactly
//! the bytes that go into the blob store, and without a second pass.
//!
//! A bounded queue lies between the body and the thread, so a verifier
//! that falls behind slows the upload down instead of holding its bytes.

use crate::error::ApiError;
use airlift_package::{Limits, Manifest, PackageReader, TrustSet};
use bytes::{Buf, Bytes};
use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;
use tokio::sync::mpsc;

/// Chunks of the body queued for the verifier (hyper hands over at most a
/// few hundred KiB at a time, so a few MiB at most).
const QUEUE: usize = 32;

/// What verifying an uploaded package yields.
#[derive(Debug)]
pub struct VerifiedUpload {
    /// The verified manifest.
    pub manifest: Manifest,
    /// Header + manifest + signatures.
    pub head: Vec<u8>,
    /// Trusted key ids that signed it.
    pub signed_by: Vec<String>,
}

/// A package being verified on a blocking thread, fed the upload's bytes.
#[derive(Debug)]
pub struct Verifier {
    to_thread: mpsc::Sender<Bytes>,
    verdict: tokio::task::JoinHandle<Result<VerifiedUpload, ApiError>>,
}

impl Verifier {
    /// Starts verifying against `trust`; the package is then fed with
    /// [`Self::feed`] and judged by [`Self::verdict`].
    pub fn start(trust: TrustSet) -> Self {
        let (to_thread, from_body) = mpsc::channel(QUEUE);
        let verdict = tokio::task::spawn_blocking(move || verify_fed(from_body, &trust));
        Self { to_thread, verdict }
    }

    /// Hands the next bytes over, waiting while the queue is full. `false`
    /// when the verifier has stopped: it refused the package, and
    /// [`Self::verdict`] says why.
    pub async fn feed(&self, bytes: Bytes) -> bool {
        self.to_thread.send(bytes).await.is_ok()
    }

    /// Ends the package (the body is complete) and waits for the verdict:
    /// the verified package, or why it is refused (422).
    pub async fn verdict(self) -> Result<VerifiedUpload, ApiError> {
        drop(self.to_thread);
        self.verdict.await.map_err(ApiError::internal)?
    }
}

/// The bytes fed to the verifier as a `Read`: blocks for the next chunk,
/// and says end-of-file once the body is complete. Keeps a copy of what it
/// hands out while `head` is `Some`.
struct Feed {
    from_body: mpsc::Receiver<Bytes>,
    current: Bytes,
    head: Rc<RefCell<Option<Vec<u8>>>>,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.from_body.blocking_recv() {
                Some(bytes) => self.current = bytes,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        if let Some(head) = self.head.borrow_mut().as_mut() {
            head.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// Verifies the package fed through `from_body` completely: signatures
/// against `trust`, every payload's stored digest, nothing after the end.
fn verify_fed(
    from_body: mpsc::Receiver<Bytes>,
    trust: &TrustSet,
) -> Result<VerifiedUpload, ApiError> {
    // The head is recorded while the reader reads it (header, manifest
    // and signatures, which `Limits` bound), and no further.
    let recording = Rc::new(RefCell::new(Some(Vec::new())));
    let feed = Feed {
        from_body,
        current: Bytes::new(),
        head: Rc::clone(&recording),
    };
    let reader = PackageReader::open(feed, Limits::default()).map_err(refused)?;
    let head = recording.borrow_mut().take().unwrap_or_default();
    if head.len() as u64 != reader.payload_offset() {
        return Err(ApiError::internal(format!(
            "the package's head is {} bytes, {} were recorded",
            reader.payload_offset(),
            head.len()
        )));
    }
    let package = reader.verify(trust).map_err(refused)?;
    let manifest = package.manifest().clone();
    let signed_by = manifest
        .signed_by()
        .iter()
        .map(ToString::to_string)
        .collect();
    package.finish().map_err(refused)?;
    Ok(VerifiedUpload {
        manifest: manifest.into_inner(),
        head,
        signed_by,
    })
}

fn refused(error: airlift_package::Error) -> ApiError {
    ApiError::Unprocessable("package_refused", format!("package refused: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_testkit::packages::{image, PackageBuilder, Signer};

    async fn verify_in_chunks(
        file: &[u8],
        trust: &TrustSet,
        chunk: usize,
    ) -> Result<VerifiedUpload, ApiError> {
        let verifier = Verifier::start(trust.clone());
        for piece in file.chunks(chunk) {
            if !verifier.feed(Bytes::copy_from_slice(piece)).await {
                break;
            }
        }
        verifier.verdict().await
    }

    fn package(signer: &Signer) -> Vec<u8> {
        PackageBuilder::new("os", "1.0.0")
            .signed_by(signer.key())
            .device_type("pi4")
            .image(&image("1.0.0", 200_000), airlift_package::Compression::None)
            .build()
    }

    fn trust(signer: &Signer) -> TrustSet {
        TrustSet::new(vec![signer.key().public_key()], 1).expect("trust")
    }

    #[tokio::test]
    async fn a_package_fed_in_any_pieces_is_verified_with_its_head() {
        let signer = Signer::new();
        let file = package(&signer);
        for chunk in [1, 7, 4096, file.len()] {
            let verified = verify_in_chunks(&file, &trust(&signer), chunk)
                .await
                .expect("verified");
            assert_eq!(verified.manifest.name, "os");
            let reader = PackageReader::open(&file[..], Limits::default()).expect("open");
            let head_len = reader.payload_offset() as usize;
            assert_eq!(verified.head, file[..head_len], "chunks of {chunk}");
            assert_eq!(verified.signed_by.len(), 1);
        }
    }

    #[tokio::test]
    async fn altered_cut_extended_or_untrusted_packages_are_refused() {
        let signer = Signer::new();
        let file = package(&signer);
        let mut altered = file.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let cut = file[..file.len() - 1].to_vec();
        let mut extended = file.clone();
        extended.push(0);
        let stranger = trust(&Signer::new());
        for (what, bytes, trust) in [
            ("altered", altered, trust(&signer)),
            ("cut", cut, trust(&signer)),
            ("extended", extended, trust(&signer)),
            ("untrusted", file.clone(), stranger),
        ] {
            let error = verify_in_chunks(&bytes, &trust, 65_536)
                .await
                .expect_err(what);
            assert_eq!(error.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        }
    }

    #[tokio::test]
    async fn a_refusal_stops_the_feed_early() {
        let signer = Signer::new();
        let file = package(&signer);
        let verifier = Verifier::start(trust(&Signer::new()));
        let mut fed = 0;
        for piece in file.chunks(1024) {
            if !verifier.feed(Bytes::copy_from_slice(piece)).await {
                break;
            }
            fed += piece.len();
        }
        assert!(fed < file.len(), "refused before the end: {fed}");
        let error = verifier.verdict().await.expect_err("untrusted");
        assert!(error.to_string().contains("package refused"), "{error}");
    }
}
