//! S3 multipart uploads recorded in the store while they run.
//!
//! S3 keeps the parts of an upload that is neither committed nor aborted —
//! and bills for them — until someone aborts it, and object_store cannot
//! list such uploads. So each upload is started through object_store's
//! [`MultipartStore`] (which names the upload's id), recorded in the store
//! (`blob_uploads`: object key, upload id, start, instance) before its
//! first part is sent, and forgotten only once it is aborted, or committed
//! and its package row written. A record older than a day belongs to an
//! instance that died mid-upload; the sweep ([`super::sweep::abandoned_uploads`])
//! aborts it. An upload whose record was never written (the instance died
//! between starting it and recording it) is left to the bucket's lifecycle
//! rule (`docs/operations.md`).

use super::{bounded, PART_STALL};
use crate::error::ApiError;
use airlift_store::{SharedStore, UploadRecord};
use chrono::Utc;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as BlobPath;
use object_store::{MultipartId, ObjectStore, PutPayload, UploadPart};
use std::sync::{Arc, Mutex, PoisonError};

/// A store that can be asked for a multipart upload's id: S3 (and, in
/// tests, object_store's in-memory store).
pub trait BucketStore: ObjectStore + MultipartStore {}

impl<T: ObjectStore + MultipartStore> BucketStore for T {}

/// Starts recorded uploads in one bucket and finds abandoned ones.
#[derive(Debug)]
pub struct RecordedUploads {
    /// The bucket, at its root (the prefix is put before keys here).
    pub(super) bucket: Arc<dyn BucketStore>,
    /// The prefix package files are kept under.
    prefix: Option<BlobPath>,
    /// Where uploads are recorded.
    pub(super) store: SharedStore,
    /// This instance's name in the records.
    instance: String,
}

impl RecordedUploads {
    /// Uploads into `bucket` under `prefix`, recorded in `store`.
    pub fn new(bucket: Arc<dyn BucketStore>, prefix: Option<BlobPath>, store: SharedStore) -> Self {
        Self {
            bucket,
            prefix,
            store,
            instance: instance_name(),
        }
    }

    /// `key`'s key in the bucket: under the prefix, as the server's
    /// `PrefixStore` puts it.
    fn bucket_key(&self, key: &BlobPath) -> BlobPath {
        match &self.prefix {
            Some(prefix) => prefix.parts().chain(key.parts()).collect(),
            None => key.clone(),
        }
    }

    /// Starts a multipart upload of `key` and records it. An upload that
    /// cannot be recorded is aborted at once.
    pub async fn start(self: &Arc<Self>, key: &BlobPath) -> Result<RecordedUpload, ApiError> {
        let path = self.bucket_key(key);
        let id = bounded(
            PART_STALL,
            "starting an upload",
            self.bucket.create_multipart(&path),
        )
        .await
        .map_err(ApiError::blob)?;
        let record = UploadRecord {
            object_key: path.to_string(),
            upload_id: id.clone(),
            blob_key: key.to_string(),
            started_at: Utc::now(),
            instance: self.instance.clone(),
        };
        let upload = RecordedUpload {
            uploads: Arc::clone(self),
            path,
            id,
            parts: Arc::default(),
            next_part: 0,
            record,
        };
        if let Err(error) = self.store.record_upload(&upload.record).await {
            upload.abort().await;
            return Err(error.into());
        }
        Ok(upload)
    }

    /// Forgets `record`; a failure is logged (the sweep will find the
    /// record and see the upload is over).
    pub(super) async fn forget(&self, record: &UploadRecord) {
        if let Err(error) = self
            .store
            .forget_upload(&record.object_key, &record.upload_id)
            .await
        {
            tracing::warn!(%error, object_key = %record.object_key, upload_id = %record.upload_id, "forgetting a finished upload's record failed; the startup sweep will");
        }
    }
}

/// One recorded multipart upload under way.
#[derive(Debug)]
pub struct RecordedUpload {
    uploads: Arc<RecordedUploads>,
    path: BlobPath,
    id: MultipartId,
    /// The stored parts' ids, by part index.
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    next_part: usize,
    record: UploadRecord,
}

impl RecordedUpload {
    /// Sends the next part; the future may run on a task of its own.
    pub fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next_part;
        self.next_part += 1;
        let (bucket, path, id) = (
            Arc::clone(&self.uploads.bucket),
            self.path.clone(),
            self.id.clone(),
        );
        let parts = Arc::clone(&self.parts);
        Box::pin(async move {
            let part = bucket.put_part(&path, &id, index, data).await?;
            let mut parts = parts.lock().unwrap_or_else(PoisonError::into_inner);
            if parts.len() <= index {
                parts.resize(index + 1, None);
            }
            parts[index] = Some(part);
            Ok(())
        })
    }

    /// Commits the upload from its parts (every one sent must be stored).
    /// The record stays until [`Self::forget`]: until the package's row is
    /// written, a crash must leave it for the sweep.
    pub async fn complete(&mut self) -> object_store::Result<()> {
        let parts: Option<Vec<PartId>> =
            std::mem::take(&mut *self.parts.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        let parts = parts.filter(|parts| parts.len() == self.next_part);
        let Some(parts) = parts else {
            return Err(object_store::Error::Generic {
                store: "blobs",
                source: "a part of the upload was never stored".into(),
            });
        };
        self.uploads
            .bucket
            .complete_multipart(&self.path, &self.id, parts)
            .await
            .map(drop)
    }

    /// Aborts the upload and forgets its record; an abort the store
    /// refuses is logged and leaves the record for the sweep.
    pub async fn abort(self) {
        let aborted = bounded(
            PART_STALL,
            "aborting an upload",
            self.uploads.bucket.abort_multipart(&self.path, &self.id),
        )
        .await;
        match aborted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.uploads.forget(&self.record).await;
            }
            Err(error) => {
                tracing::warn!(%error, key = %self.path, "aborting an unfinished upload failed; the startup sweep will try again");
            }
        }
    }

    /// Forgets the record of a committed upload whose package row is
    /// written (or whose object is deleted again).
    pub async fn forget(self) {
        self.uploads.forget(&self.record).await;
    }
}

/// This process, as the records name it: the host and the process id.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} pid {}", std::process::id())
}
