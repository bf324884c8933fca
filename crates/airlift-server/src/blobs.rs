//! Package files: spooling an upload while hashing it, verifying it, moving
//! it into the blob store, and serving it back with `Range`, `ETag` and
//! `If-Range` so interrupted downloads resume.

use crate::error::ApiError;
use airlift_package::{Limits, Manifest, PackageReader, TrustSet};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as BlobPath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek};
use std::path::Path;
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod mapped;
pub mod sweep;

/// Read size when serving a package from local disk.
const FILE_CHUNK: usize = 1 << 20;

/// An upload written to a temporary file.
#[derive(Debug)]
pub struct Spooled {
    /// The file; deleted when dropped.
    pub path: TempPath,
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
}

/// Writes `body` to a temporary file in `dir`, hashing it; refuses more
/// than `max` bytes. Never holds the whole body in memory.
pub async fn spool(body: Body, dir: &Path, max: u64) -> Result<Spooled, ApiError> {
    tokio::fs::create_dir_all(dir).await.map_err(ApiError::io)?;
    let dir = dir.to_owned();
    // Named so that a sweep can tell an abandoned one (blobs::sweep).
    let temp = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new()
            .prefix(sweep::SPOOL_PREFIX)
            .suffix(sweep::SPOOL_SUFFIX)
            .tempfile_in(dir)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::io)?;
    let (file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("reading the upload: {e}; nothing was kept"))
        })?;
        size += chunk.len() as u64;
        if size > max {
            return Err(ApiError::TooLarge(format!(
                "package is larger than the server's limit of {max} bytes (max_package_mib)"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::io)?;
    }
    file.flush().await.map_err(ApiError::io)?;
    Ok(Spooled {
        path,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

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

/// Verifies a spooled package completely: signatures against `trust`, every
/// payload's stored digest, nothing after the end. Runs on a blocking thread.
pub async fn verify(path: &Path, trust: &TrustSet) -> Result<VerifiedUpload, ApiError> {
    let path = path.to_owned();
    let trust = trust.clone();
    tokio::task::spawn_blocking(move || verify_blocking(&path, &trust))
        .await
        .map_err(ApiError::internal)?
}

fn verify_blocking(path: &Path, trust: &TrustSet) -> Result<VerifiedUpload, ApiError> {
    let open = || std::fs::File::open(path).map(|f| std::io::BufReader::with_capacity(1 << 20, f));
    let limits = Limits::default();
    let reader =
        PackageReader::open(open().map_err(ApiError::internal)?, limits).map_err(refused)?;
    let head_len = reader.payload_offset();
    let package = reader.verify(trust).map_err(refused)?;
    let manifest = package.manifest().clone();
    let signed_by = manifest
        .signed_by()
        .iter()
        .map(ToString::to_string)
        .collect();
    package.finish().map_err(refused)?;

    let mut head = Vec::with_capacity(head_len as usize);
    open()
        .map_err(ApiError::internal)?
        .take(head_len)
        .read_to_end(&mut head)
        .map_err(ApiError::internal)?;
    Ok(VerifiedUpload {
        manifest: manifest.into_inner(),
        head,
        signed_by,
    })
}

fn refused(error: airlift_package::Error) -> ApiError {
    ApiError::Unprocessable("package_refused", format!("package refused: {error}"))
}

/// Copies a local file into the blob store under `key`, in parts. On
/// failure the unfinished upload is aborted, so no part stays behind.
pub async fn put_file(
    blobs: &dyn ObjectStore,
    key: &BlobPath,
    path: &Path,
) -> Result<(), ApiError> {
    let upload = blobs.put_multipart(key).await.map_err(ApiError::blob)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    match copy_into(&mut writer, path).await {
        Ok(()) => writer.finish().await.map(drop).map_err(ApiError::blob),
        Err(error) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, %key, "aborting an unfinished blob upload failed");
            }
            Err(error)
        }
    }
}

async fn copy_into(writer: &mut WriteMultipart, path: &Path) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::open(path).await.map_err(ApiError::io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(ApiError::io)?;
        if n == 0 {
            return Ok(());
        }
        writer.wait_for_capacity(4).await.map_err(ApiError::blob)?;
        writer.write(&buf[..n]);
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
    let result = blobs
        .get_opts(key, options)
        .await
        .map_err(ApiError::internal)?;
    let body = match result.payload {
        // A local file: send it from memory maps (one copy fewer than
        // reading it), or in large reads where it cannot be mapped.
        // object_store's generic stream reads 8 KiB per blocking task,
        // several times slower.
        GetResultPayload::File(file, path) => {
            let (start, length) = (result.range.start, result.range.end - result.range.start);
            match mapped::windows(file, start, length) {
                Ok(windows) => Body::from_stream(windows),
                Err((error, _)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ApiError::internal(format!("{}: {error}", path.display())));
                }
                Err((error, file)) => {
                    tracing::debug!(%error, path = %path.display(), "cannot map the package file; reading it");
                    Body::from_stream(file_chunks(file, start, length))
                }
            }
        }
        GetResultPayload::Stream(stream) => {
            Body::from_stream(stream.map_err(std::io::Error::other))
        }
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

/// Where a file cannot be mapped: streams `length` bytes of `file` from
/// `start` in chunks of up to [`FILE_CHUNK`], each read on a blocking thread
/// straight into the buffer that is sent (no second copy), and the next
/// chunk read while the current one is being written to the socket.
///
/// One read is in flight at a time and it holds a blocking thread only for
/// that read, so a fleet downloading at once cannot exhaust the pool.
/// Buffers are no larger than what is left to send: a small package costs
/// its size, not a megabyte, per download.
fn file_chunks(
    file: std::fs::File,
    start: u64,
    length: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    type Read = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Bytes)>>;
    fn read_next(mut file: std::fs::File, seek_to: Option<u64>, remaining: u64) -> Read {
        tokio::task::spawn_blocking(move || {
            if let Some(offset) = seek_to {
                file.seek(std::io::SeekFrom::Start(offset))?;
            }
            let want = remaining.min(FILE_CHUNK as u64);
            // Capacity without zeroing: read_to_end fills it directly.
            let mut buffer = Vec::with_capacity(want as usize);
            (&mut file).take(want).read_to_end(&mut buffer)?;
            if (buffer.len() as u64) < want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "package file is shorter than its recorded size",
                ));
            }
            Ok((file, Bytes::from(buffer)))
        })
    }
    let first = (length > 0).then(|| read_next(file, Some(start), length));
    futures::stream::try_unfold((first, length), |(read, remaining)| async move {
        let Some(read) = read else {
            return Ok(None);
        };
        let (file, chunk) = read.await.map_err(std::io::Error::other)??;
        let remaining = remaining - chunk.len() as u64;
        // Start the next read now, while this chunk goes out.
        let next = (remaining > 0).then(|| read_next(file, None, remaining));
        Ok(Some((chunk, (next, remaining))))
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

    async fn collect(file: std::fs::File, start: u64, length: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunks = std::pin::pin!(file_chunks(file, start, length));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            assert!(
                chunk.len() <= FILE_CHUNK,
                "a chunk is never larger than FILE_CHUNK"
            );
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

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

    #[tokio::test]
    async fn file_chunks_stream_exactly_the_range_asked_for() {
        let bytes: Vec<u8> = (0..(FILE_CHUNK * 2 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let temp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(temp.path(), &bytes).expect("write");
        let open = || std::fs::File::open(temp.path()).expect("open");

        let whole = collect(open(), 0, bytes.len() as u64).await.expect("whole");
        assert_eq!(whole, bytes);
        let tail = collect(open(), 1_000_001, (bytes.len() - 1_000_001) as u64)
            .await
            .expect("tail");
        assert_eq!(tail, bytes[1_000_001..]);
        let middle = collect(open(), 7, 10).await.expect("middle");
        assert_eq!(middle, bytes[7..17]);
        assert!(collect(open(), 5, 0).await.expect("empty").is_empty());
    }

    #[tokio::test]
    async fn a_file_shorter_than_recorded_ends_the_stream_with_an_error() {
        let temp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(temp.path(), vec![1u8; 100]).expect("write");
        let file = std::fs::File::open(temp.path()).expect("open");
        let error = collect(file, 50, 100).await.expect_err("short file");
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
