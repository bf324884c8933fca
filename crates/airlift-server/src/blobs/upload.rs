//! Receiving an upload: the request body goes, as it arrives, into a
//! multipart upload of the blob store part by part, while the same bytes
//! are hashed and verified ([`super::verify`]). The upload is committed only
//! when the whole package verified, and aborted on anything else — a
//! refused package, a client that hangs up, a body too large or stalled, a
//! store error — so no object is left behind.
//!
//! Memory is bounded: the part being filled and [`PARTS_IN_FLIGHT`] parts
//! being sent, plus the verifier's short queue; no temporary file, no
//! second pass. On local disk the multipart upload is object_store's: a
//! staging file next to the final one (`packages/<id>.airlift#<n>`),
//! written at offsets and renamed on commit. On S3 it is recorded in the
//! store while it runs ([`super::recorded`]).

use super::recorded::{RecordedUpload, RecordedUploads};
use super::verify::{VerifiedUpload, Verifier};
use super::{bounded, delete, PART_STALL};
use crate::error::ApiError;
use axum::body::Body;
use futures::StreamExt;
use object_store::path::Path as BlobPath;
use object_store::{MultipartUpload, ObjectStore, PutPayload, UploadPart};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::task::JoinSet;

/// Smallest part of a multipart upload (S3 needs at least 5 MiB for every
/// part but the last).
const MIN_PART: u64 = 8 << 20;

/// Most parts one multipart upload may have (S3's limit).
const MAX_PARTS: u64 = 10_000;

/// Parts being sent at once, per upload: four parts' memory.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Where uploads go.
#[derive(Debug, Clone)]
pub enum UploadTarget {
    /// object_store's own multipart upload (local disk: a staging file
    /// renamed on commit).
    Plain(Arc<dyn ObjectStore>),
    /// S3 multipart uploads recorded in the store while they run.
    Recorded(Arc<RecordedUploads>),
}

/// An upload received whole and verified; its file is not committed yet.
#[derive(Debug)]
pub struct Received {
    /// Bytes received.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// What verifying it yielded.
    pub verified: VerifiedUpload,
    /// Its file, to commit or abort.
    pub file: Pending,
}

/// Receives `body` into the blob store under `key` while verifying it
/// against `trust`; refuses more than `max` bytes. On success the file is
/// stored but not committed ([`Pending::commit`]); on any failure nothing
/// is left behind.
pub async fn receive(
    target: &UploadTarget,
    blobs: Arc<dyn ObjectStore>,
    key: &BlobPath,
    body: Body,
    trust: airlift_package::TrustSet,
    max: u64,
) -> Result<Received, ApiError> {
    let verifier = Verifier::start(trust);
    let file = Pending::start(target, blobs, key).await?;
    let mut intake = Intake {
        file,
        part: Vec::new(),
        part_size: part_size(max) as usize,
        in_flight: JoinSet::new(),
        hasher: Sha256::new(),
        size: 0,
        max,
    };
    let mut stream = body.into_data_stream();
    match intake.take_body(&mut stream, &verifier).await {
        Ok(()) => {}
        Err(Stop::Failed(error)) => {
            intake.abort().await;
            return Err(error);
        }
        Err(Stop::Refused) => {
            intake.abort().await;
            let error = match verifier.verdict().await {
                Err(error) => error,
                Ok(_) => ApiError::internal("the verifier stopped early yet accepted"),
            };
            // Read what the client still sends, so that it reads the
            // answer rather than a reset connection.
            intake.drain(&mut stream).await;
            return Err(error);
        }
    }
    let verified = match verifier.verdict().await {
        Ok(verified) => verified,
        Err(error) => {
            intake.abort().await;
            return Err(error);
        }
    };
    if let Err(error) = intake.flush().await {
        intake.abort().await;
        return Err(error);
    }
    Ok(Received {
        size: intake.size,
        sha256: hex::encode(intake.hasher.finalize()),
        verified,
        file: intake.file,
    })
}

/// Why taking the body stopped.
enum Stop {
    /// The verifier refused the package before its end.
    Refused,
    /// The body or the store failed.
    Failed(ApiError),
}

/// One upload's bytes on their way into the store.
struct Intake {
    file: Pending,
    /// The part being filled.
    part: Vec<u8>,
    part_size: usize,
    /// Parts being sent; dropping the set cancels them.
    in_flight: JoinSet<object_store::Result<()>>,
    hasher: Sha256,
    size: u64,
    max: u64,
}

type BodyStream = axum::body::BodyDataStream;

impl Intake {
    /// Takes the body to its end, feeding the verifier and sending parts.
    async fn take_body(&mut self, body: &mut BodyStream, verifier: &Verifier) -> Result<(), Stop> {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Stop::Failed(ApiError::bad_request(format!(
                    "reading the upload: {e}; nothing was kept"
                )))
            })?;
            self.count(chunk.len()).map_err(Stop::Failed)?;
            self.hasher.update(&chunk);
            if !verifier.feed(chunk.clone()).await {
                return Err(Stop::Refused);
            }
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                if self.part.capacity() == 0 {
                    self.part = Vec::with_capacity(self.part_size);
                }
                let take = rest.len().min(self.part_size - self.part.len());
                self.part.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.part.len() == self.part_size {
                    self.send_part().await.map_err(Stop::Failed)?;
                }
            }
        }
        Ok(())
    }

    /// Counts `len` more bytes; an error past the limit.
    fn count(&mut self, len: usize) -> Result<(), ApiError> {
        self.size += len as u64;
        if self.size > self.max {
            return Err(ApiError::TooLarge(format!(
                "package is larger than the server's limit of {} bytes (max_package_mib)",
                self.max
            )));
        }
        Ok(())
    }

    /// Sends the filled part, once fewer than [`PARTS_IN_FLIGHT`] are.
    async fn send_part(&mut self) -> Result<(), ApiError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            part_stored(&mut self.in_flight).await?;
        }
        let part = std::mem::take(&mut self.part);
        self.in_flight
            .spawn(self.file.put_part(PutPayload::from(part)));
        Ok(())
    }

    /// Sends the last part and waits until every part is stored.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if !self.part.is_empty() {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            part_stored(&mut self.in_flight).await?;
        }
        Ok(())
    }

    /// Cancels the parts in flight and aborts the upload.
    async fn abort(&mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        self.file.abort_in_place().await;
    }

    /// Reads and drops the rest of a refused body, up to the size limit.
    async fn drain(&mut self, body: &mut BodyStream) {
        while let Some(Ok(chunk)) = body.next().await {
            if self.count(chunk.len()).is_err() {
                return;
            }
        }
    }
}

/// Waits for one part in flight to be stored.
async fn part_stored(in_flight: &mut JoinSet<object_store::Result<()>>) -> Result<(), ApiError> {
    match tokio::time::timeout(PART_STALL, in_flight.join_next()).await {
        Ok(Some(Ok(stored))) => stored.map_err(ApiError::blob),
        Ok(Some(Err(join))) => Err(ApiError::internal(join)),
        Ok(None) => Ok(()),
        Err(_) => Err(ApiError::internal(format!(
            "the blob store stored no part of an upload for {} s",
            PART_STALL.as_secs()
        ))),
    }
}

/// The part size for packages of up to `max` bytes: [`MIN_PART`], or
/// larger where a package that large would need more than [`MAX_PARTS`]
/// parts. (The size is decided before the body's length is known.)
fn part_size(max: u64) -> u64 {
    let needed = max.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    needed.max(MIN_PART)
}

/// A multipart upload of either kind.
#[derive(Debug)]
enum Upload {
    Plain(Box<dyn MultipartUpload>),
    Recorded(RecordedUpload),
}

/// A package's file in the blob store, stored part by part and not yet
/// committed. Dropped unfinished, it is aborted.
#[derive(Debug)]
pub struct Pending {
    upload: Option<Upload>,
    blobs: Arc<dyn ObjectStore>,
    key: BlobPath,
}

impl Pending {
    async fn start(
        target: &UploadTarget,
        blobs: Arc<dyn ObjectStore>,
        key: &BlobPath,
    ) -> Result<Self, ApiError> {
        let upload = match target {
            UploadTarget::Plain(store) => Upload::Plain(
                bounded(PART_STALL, "starting an upload", store.put_multipart(key))
                    .await
                    .map_err(ApiError::blob)?,
            ),
            UploadTarget::Recorded(uploads) => Upload::Recorded(uploads.start(key).await?),
        };
        Ok(Self {
            upload: Some(upload),
            blobs,
            key: key.clone(),
        })
    }

    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match &mut self.upload {
            Some(Upload::Plain(upload)) => upload.put_part(data),
            Some(Upload::Recorded(upload)) => upload.put_part(data),
            None => Box::pin(async {
                Err(object_store::Error::Generic {
                    store: "blobs",
                    source: "the upload is over".into(),
                })
            }),
        }
    }

    /// Commits the file (waiting at most [`PART_STALL`]). It stays
    /// tracked until [`Committed::keep`] or [`Committed::discard`]: a
    /// commit whose package row is never written is garbage. A failed
    /// commit is aborted, and the key deleted should it have landed
    /// unbeknown.
    pub async fn commit(mut self) -> Result<Committed, ApiError> {
        let Some(mut upload) = self.upload.take() else {
            return Err(ApiError::internal("the upload is over"));
        };
        let completed = match &mut upload {
            Upload::Plain(plain) => bounded(PART_STALL, "committing an upload", plain.complete())
                .await
                .map(drop),
            Upload::Recorded(recorded) => {
                bounded(PART_STALL, "committing an upload", recorded.complete()).await
            }
        };
        if let Err(error) = completed {
            tracing::warn!(%error, key = %self.key, "committing an upload failed; it is aborted");
            abort(upload, &self.key).await;
            delete(self.blobs.as_ref(), &self.key).await;
            return Err(ApiError::blob(error));
        }
        Ok(Committed {
            blobs: Arc::clone(&self.blobs),
            key: self.key.clone(),
            record: match upload {
                Upload::Recorded(recorded) => Some(recorded),
                Upload::Plain(_) => None,
            },
        })
    }

    /// Aborts the upload: nothing of it stays in the store.
    pub async fn abort(mut self) {
        self.abort_in_place().await;
    }

    async fn abort_in_place(&mut self) {
        if let Some(upload) = self.upload.take() {
            abort(upload, &self.key).await;
        }
    }
}

/// Aborts `upload` of `key`; a failure is logged (a recorded upload stays
/// recorded for the sweep).
async fn abort(upload: Upload, key: &BlobPath) {
    match upload {
        Upload::Plain(mut upload) => {
            if let Err(error) = bounded(PART_STALL, "aborting an upload", upload.abort()).await {
                tracing::warn!(%error, %key, "aborting an unfinished blob upload failed");
            }
        }
        Upload::Recorded(upload) => upload.abort().await,
    }
}

impl Drop for Pending {
    /// A file neither committed nor aborted — its request's task was
    /// cancelled — is aborted on a task of its own.
    fn drop(&mut self) {
        if self.upload.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut pending = Pending {
            upload: self.upload.take(),
            blobs: Arc::clone(&self.blobs),
            key: self.key.clone(),
        };
        runtime.spawn(async move { pending.abort_in_place().await });
    }
}

/// A committed package file whose row is being written.
#[derive(Debug)]
#[must_use = "keep or discard a committed file"]
pub struct Committed {
    blobs: Arc<dyn ObjectStore>,
    key: BlobPath,
    record: Option<RecordedUpload>,
}

impl Committed {
    /// The package's row is written: the file is the package's.
    pub async fn keep(self) {
        if let Some(record) = self.record {
            record.forget().await;
        }
    }

    /// The package's row could not be written: the file is deleted.
    pub async fn discard(self) {
        delete(self.blobs.as_ref(), &self.key).await;
        if let Some(record) = self.record {
            record.forget().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_large_enough_for_s3_and_few_enough() {
        assert_eq!(part_size(0), MIN_PART);
        assert_eq!(part_size(16 << 30), MIN_PART, "16 GiB in 2048 parts");
        for max in [80u64 << 30, (200 << 30) + 1, 5 << 40] {
            let part = part_size(max);
            assert!(max.div_ceil(part) <= MAX_PARTS, "{max}: {part}");
            assert_eq!(part % (1 << 20), 0);
        }
    }
}
