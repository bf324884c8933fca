//! Multipart uploads into the blob store that are under way: the records
//! ([`UploadRecord`]) and the SQL of their [`Store`](crate::Store) methods,
//! written once for both backends as inherent methods of the store, which
//! the `Store` impl of [`impl_store!`](super::impl_store) calls. The macro
//! is expanded inside `impl_store!`, so it sees that macro's imports.
//!
//! The server records an S3 multipart upload before it sends the first
//! part and forgets it once the upload is committed or aborted; a record
//! that stays longer than a day belongs to an instance that died, and the
//! server's sweep aborts the upload.

use chrono::{DateTime, Utc};

/// A multipart upload into the blob store, as recorded while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The object's key in the bucket, the prefix included.
    pub object_key: String,
    /// The store's id of the upload (S3's `UploadId`).
    pub upload_id: String,
    /// The key the package's row will hold (`PackageRecord::blob_key`).
    pub blob_key: String,
    /// When the upload was started.
    pub started_at: DateTime<Utc>,
    /// Which server instance started it, for operators.
    pub instance: String,
}

/// A recorded upload older than asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleUpload {
    /// The upload.
    pub upload: UploadRecord,
    /// Whether a package row holds its blob key: the upload was committed
    /// and its row written, only the record's removal was lost. Its object
    /// is the package's file and must stay.
    pub package_stored: bool,
}

/// Recorded uploads, for `$store` on `$db`.
macro_rules! sql_uploads {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            async fn record_upload(&self, upload: &$crate::UploadRecord) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO blob_uploads \
                     (object_key, upload_id, blob_key, started_at, instance) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(upload.object_key.as_str())
                .bind(upload.upload_id.as_str())
                .bind(upload.blob_key.as_str())
                .bind(millis(upload.started_at))
                .bind(upload.instance.as_str())
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    classify(
                        e,
                        &format!("upload {} of {}", upload.upload_id, upload.object_key),
                        "",
                    )
                })?;
                Ok(())
            }

            async fn forget_upload(&self, object_key: &str, upload_id: &str) -> StoreResult<bool> {
                let result = sqlx::query::<$db>(
                    "DELETE FROM blob_uploads WHERE object_key = $1 AND upload_id = $2",
                )
                .bind(object_key)
                .bind(upload_id)
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn stale_uploads(
                &self,
                before: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::StaleUpload>> {
                let rows = sqlx::query_as::<$db, (String, String, String, i64, String, bool)>(
                    "SELECT u.object_key, u.upload_id, u.blob_key, u.started_at, u.instance, \
                     EXISTS (SELECT 1 FROM packages p WHERE p.blob_key = u.blob_key) \
                     FROM blob_uploads u WHERE u.started_at < $1 \
                     ORDER BY u.started_at, u.object_key, u.upload_id LIMIT $2",
                )
                .bind(millis(before))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(
                        |(object_key, upload_id, blob_key, started_at, instance, stored)| {
                            Ok($crate::StaleUpload {
                                upload: $crate::UploadRecord {
                                    object_key,
                                    upload_id,
                                    blob_key,
                                    started_at: $crate::codec::time("started_at", started_at)?,
                                    instance,
                                },
                                package_stored: stored,
                            })
                        },
                    )
                    .collect()
            }
        }
    };
}

pub(crate) use sql_uploads;
