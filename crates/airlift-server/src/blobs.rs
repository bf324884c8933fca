//! Package files: receiving an upload into the blob store while verifying
//! it, and serving it back with `Range`, `ETag` and `If-Range` so
//! interrupted downloads resume.
//!
//! The blob store is local disk (the default: files under the data
//! directory, served by reads that a file changed on disk cannot turn into
//! a crash: [`local`]) or an S3-compatible object store ([`s3`]: streamed
//! through the server, or offloaded: [`offload`]). Either is reached
//! through `object_store`. An upload streams into a multipart upload of
//! the blob store as it arrives while the same bytes are verified
//! ([`receive`]); it is committed only when the whole package verified and
//! aborted on any failure — so a refused or interrupted upload leaves no
//! object behind. On S3 each multipart upload is recorded in the store
//! while it runs ([`recorded`]), so that one a crash interrupted is
//! aborted later ([`sweep`]).

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as BlobPath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod local;
pub mod offload;
pub mod recorded;
pub mod s3;
pub mod sweep;
mod upload;
mod verify;

pub use upload::{receive, Committed, Pending, Received, UploadTarget};
pub use verify::VerifiedUpload;

/// Where package files are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobBackend {
    /// Files under this directory (the default, `DATA_DIR/blobs`).
    Local(PathBuf),
    /// An S3-compatible object store (boxed: its settings are large).
    S3(Box<s3::S3Config>),
}

impl BlobBackend {
    /// Whether package files are on local disk.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }
}

/// Opens the blob store. A local directory is made if missing; an S3
/// bucket is probed ([`s3::probe`]), so that a store the server cannot use
/// stops it now, with one line naming the setting to fix.
pub async fn open(backend: &BlobBackend) -> Result<Arc<dyn ObjectStore>, String> {
    match backend {
        BlobBackend::Local(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("creating the blob directory {}: {e}", dir.display()))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| format!("opening the blob directory {}: {e}", dir.display()))?;
            Ok(Arc::new(store))
        }
        BlobBackend::S3(config) => {
            let store = s3::open(config)?;
            s3::probe(store.as_ref(), config).await?;
            Ok(store)
        }
    }
}

/// Longest a download waits for the blob store's next bytes (or for its
/// answer), and a deletion for the store. A stalled store ends the one
/// download with an error; the device resumes with `Range`.
pub const STALL: Duration = Duration::from_secs(60);

/// Longest an upload into the blob store waits for any part to be stored,
/// and for the store to start or commit the upload; it is then aborted.
pub const PART_STALL: Duration = Duration::from_secs(300);

/// `work`, or an error when it takes longer than `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(object_store::Error::Generic {
            store: "blobs",
            source: format!("{what}: no answer for {} s", limit.as_secs()).into(),
        }),
    }
}

/// Deletes `key` from the blob store (waiting at most [`STALL`]); a
/// failure is logged and counted (`airlift_blob_errors_total{kind="delete"}`),
/// never returned: the object is garbage by now, and its row is gone.
pub async fn delete(blobs: &dyn ObjectStore, key: &BlobPath) {
    if let Err(error) = bounded(STALL, "deleting an object", blobs.delete(key)).await {
        metrics::counter!("airlift_blob_errors_total", "kind" => "delete").increment(1);
        tracing::warn!(%error, %key, "deleting a package's file from the blob store failed; it stays as garbage");
    }
}

/// Serves a stored package file, honouring `Range` and `If-Range`.
/// Writes nothing anywhere: resuming is as cheap as a plain read.
pub async fn serve(
    blobs: &dyn ObjectStore,
    key: &BlobPath,
    size: u64,
    sha256: &str,
    filename: &str,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = format!("\"{sha256}\"");
    let range_applies = match request.get(header::IF_RANGE) {
        None => true,
        Some(value) => value.as_bytes() == etag.as_bytes(),
    };
    let range = match request.get(header::RANGE) {
        Some(value) if range_applies => match requested_range(value, size) {
            RangeRequest::One(range) => Some(range),
            RangeRequest::Whole => None,
            RangeRequest::Unsatisfiable => return Ok(unsatisfiable(size)),
        },
        _ => None,
    };

    let options = GetOptions {
        range: range
            .as_ref()
            .map(|r| GetRange::Bounded(*r.start()..*r.end() + 1)),
        ..GetOptions::default()
    };
    let result = match bounded(STALL, "reading a package", blobs.get_opts(key, options)).await {
        Ok(result) => result,
        Err(error) => return Ok(blob_failure(&error, key)),
    };
    if result.meta.size != size {
        let error = format!(
            "the package's file holds {} bytes, its record says {size}",
            result.meta.size
        );
        return Ok(failure(BlobFailure::Mismatch, &error, key));
    }
    let body = match result.payload {
        // A local file: read in large chunks on the blocking pool.
        // object_store's generic stream reads 8 KiB per blocking task,
        // several times slower.
        GetResultPayload::File(file, _) => {
            let (start, length) = (result.range.start, result.range.end - result.range.start);
            Body::from_stream(local::chunks(file, start, length, key.clone()))
        }
        GetResultPayload::Stream(stream) => Body::from_stream(guarded(stream, key.clone())),
    };

    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    match range {
        Some(range) => {
            let (start, end) = (*range.start(), *range.end());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        None => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
    Ok(response)
}

/// A stream of the blob store's bytes that ends with an error — logged
/// and counted (`airlift_blob_errors_total{kind="interrupted"}`) — when the
/// store fails or sends nothing for [`STALL`]. Polled only when the client
/// takes more, so a slow device is not a stall.
fn guarded(
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    key: BlobPath,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Some((stream, key)), |state| async move {
        let (mut stream, key) = state?;
        let error = match tokio::time::timeout(STALL, stream.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(bytes))) => return Some((Ok(bytes), Some((stream, key)))),
            Ok(Some(Err(error))) => error.to_string(),
            Err(_) => format!("the blob store sent nothing for {} s", STALL.as_secs()),
        };
        metrics::counter!("airlift_blob_errors_total", "kind" => "interrupted").increment(1);
        tracing::warn!(%error, %key, "a download from the blob store broke off");
        Some((Err(std::io::Error::other(error)), None))
    })
}

/// What went wrong reading a package from the blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobFailure {
    /// No object under the package's key.
    Missing,
    /// The object's size is not the package's.
    Mismatch,
    /// The store cannot be reached, or is too slow.
    Unavailable,
    /// The store answered with another error.
    Failed,
}

/// The answer to a failed read: logged, counted in
/// `airlift_blob_errors_total{kind}`, and a 5xx with a code the device can
/// act on (503 with `Retry-After` for what may pass).
fn blob_failure(error: &object_store::Error, key: &BlobPath) -> Response {
    let kind = match error {
        object_store::Error::NotFound { .. } => BlobFailure::Missing,
        error if is_unreachable(error) => BlobFailure::Unavailable,
        _ => BlobFailure::Failed,
    };
    failure(kind, error, key)
}

fn failure(kind: BlobFailure, error: &dyn std::fmt::Display, key: &BlobPath) -> Response {
    let (status, code, label, message) = match kind {
        BlobFailure::Missing => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "package_file_missing",
            "missing",
            "the package's file is missing from the server's blob store; the server log says which",
        ),
        BlobFailure::Mismatch => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "package_file_mismatch",
            "mismatch",
            "the package's file in the server's blob store is not the package; the server log says which",
        ),
        BlobFailure::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "blob_store_unavailable",
            "unavailable",
            "the server's blob store is slow or unavailable; try again shortly",
        ),
        BlobFailure::Failed => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "blob_store_failed",
            "failed",
            "the server's blob store failed to read the package; the server log has the details",
        ),
    };
    metrics::counter!("airlift_blob_errors_total", "kind" => label).increment(1);
    match kind {
        BlobFailure::Missing | BlobFailure::Mismatch => tracing::error!(
            %error,
            %key,
            "a package's file is missing or damaged in the blob store: restore it, or delete the package"
        ),
        _ => tracing::error!(%error, %key, "reading a package's file from the blob store failed"),
    }
    let mut response = (
        status,
        axum::Json(airlift_protocol::ErrorBody {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response();
    if kind == BlobFailure::Unavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// Whether `error` says the store could not be reached or did not answer in
/// time (rather than that it answered with an error).
pub(crate) fn is_unreachable(error: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    if matches!(error, object_store::Error::Generic { store: "blobs", .. }) {
        return true;
    }
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| {
        // object_store's own wrapper forwards to the source transparently,
        // so the kind is not always to be found: its words are.
        let text = e.to_string();
        text.contains("error sending request")
            || text.contains("connect error")
            || e.downcast_ref::<HttpError>().is_some_and(|e| {
                matches!(
                    e.kind(),
                    HttpErrorKind::Connect
                        | HttpErrorKind::Request
                        | HttpErrorKind::Timeout
                        | HttpErrorKind::Interrupted
                )
            })
    })
}

/// What a `Range` header asks of a body of `size` bytes, as RFC 9110
/// (§14.2) has a server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RangeRequest {
    /// One satisfiable byte range: 206 with it.
    One(std::ops::RangeInclusive<u64>),
    /// The whole body, 200: the header is unreadable, of a unit other than
    /// bytes, or asks for several ranges (which a server may answer
    /// whole) — a server ignores a Range it does not understand.
    Whole,
    /// Well-formed byte ranges none of which overlaps the body: 416.
    Unsatisfiable,
}

fn requested_range(value: &HeaderValue, size: u64) -> RangeRequest {
    let Ok(text) = value.to_str() else {
        return RangeRequest::Whole;
    };
    use http_range_header::{EndPosition, StartPosition};
    let Ok(parsed) = http_range_header::parse_range_header(text) else {
        return RangeRequest::Whole;
    };
    let [only] = parsed.ranges.as_slice() else {
        return RangeRequest::Whole;
    };
    // `5-1` is no range at all (RFC 9110 §14.1.1), not one outside the body.
    if let (StartPosition::Index(first), EndPosition::Index(last)) = (only.start, only.end) {
        if last < first {
            return RangeRequest::Whole;
        }
    }
    match parsed.validate(size) {
        Ok(ranges) => ranges
            .first()
            .cloned()
            .map_or(RangeRequest::Whole, RangeRequest::One),
        Err(_) => RangeRequest::Unsatisfiable,
    }
}

fn unsatisfiable(size: u64) -> Response {
    let mut response = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        axum::Json(airlift_protocol::ErrorBody {
            code: "range_not_satisfiable".into(),
            message: format!("the requested range is outside the package's {size} bytes"),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// The blob key of a package.
pub fn package_key(id: airlift_protocol::PackageId) -> BlobPath {
    BlobPath::from(format!("packages/{id}.airlift"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_are_read_as_rfc_9110_says() {
        let read = |text: &'static str| requested_range(&HeaderValue::from_static(text), 1000);
        assert_eq!(read("bytes=0-99"), RangeRequest::One(0..=99));
        assert_eq!(read("bytes=900-"), RangeRequest::One(900..=999));
        assert_eq!(read("bytes=-10"), RangeRequest::One(990..=999));
        assert_eq!(read("bytes=990-5000"), RangeRequest::One(990..=999));
        for ignored in ["bytes=abc", "items=0-5", "bytes=5-1", "", "bytes=0-1,5-9"] {
            assert_eq!(read(ignored), RangeRequest::Whole, "{ignored:?}");
        }
        assert_eq!(read("bytes=1000-"), RangeRequest::Unsatisfiable);
        assert_eq!(read("bytes=5000-6000"), RangeRequest::Unsatisfiable);
    }
}
