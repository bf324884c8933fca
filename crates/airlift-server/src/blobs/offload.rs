//! Downloads served by the object store rather than the server: with
//! package files in S3 (and `--blob-offload` not `off`), a device's
//! download is answered `307 Temporary Redirect` to a presigned GET URL of
//! the package's object, valid for `--blob-url-expiry`; the device fetches
//! the bytes (and resumes with `Range`) from the store, or from a CDN in
//! front of it (`--download-base-url`), and comes back for a fresh URL
//! when one has expired. The server's CPU per downloaded byte is then
//! near zero: it checks the request, looks the object up and signs.
//!
//! A presigned URL is a credential for one object until it expires: it is
//! sent only to the device the download was offered to, never logged, and
//! never cached (`Cache-Control: no-store`).

use super::s3::S3Config;
use super::{bounded, BlobFailure, STALL};
use crate::error::ApiError;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use object_store::aws::AmazonS3;
use object_store::path::Path as BlobPath;
use object_store::signer::Signer;
use object_store::ObjectStore;
use std::time::Duration;

/// How long a presigned URL stays valid unless configured.
pub const DEFAULT_URL_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// The longest a presigned URL may stay valid: S3 refuses longer
/// (SigV4's `X-Amz-Expires` is at most 604 800 s).
pub const MAX_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest: one second. Anything under a minute only suits tests (a
/// device reconnecting after a stall then needs a new URL each time).
pub const MIN_URL_EXPIRY: Duration = Duration::from_secs(1);

/// How device downloads are handed to the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadConfig {
    /// How long each presigned URL stays valid.
    pub expiry: Duration,
    /// A CDN in front of the bucket that serves the presigned URLs instead.
    pub base_url: Option<BaseUrl>,
}

impl Default for OffloadConfig {
    fn default() -> Self {
        Self {
            expiry: DEFAULT_URL_EXPIRY,
            base_url: None,
        }
    }
}

/// Reads `--blob-url-expiry`: a number of seconds (`900`) or a duration as
/// humantime writes it (`90s`, `15m`, `2h`, `7d`, `1h 30m`), between
/// [`MIN_URL_EXPIRY`] and [`MAX_URL_EXPIRY`].
pub fn parse_url_expiry(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("blob_url_expiry {text:?} (AIRLIFT_BLOB_URL_EXPIRY, --blob-url-expiry): {why}")
    };
    let trimmed = text.trim();
    let expiry = match trimmed.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(trimmed)
            .map_err(|e| bad(&format!("{e}: expected seconds or a duration such as 15m")))?,
    };
    if !(MIN_URL_EXPIRY..=MAX_URL_EXPIRY).contains(&expiry) {
        return Err(bad(
            "must be between 1 second and 7 days (S3's limit for a presigned URL)",
        ));
    }
    Ok(expiry)
}

/// `--download-base-url`: the scheme, host, port and optional path prefix
/// of a CDN in front of the bucket. A presigned URL keeps its path and
/// query and gets these instead of the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `scheme://host[:port]`.
    origin: String,
    /// `""`, or a path prefix without a trailing slash (`/airlift`).
    prefix: String,
}

impl BaseUrl {
    /// Parses `http(s)://HOST[:PORT][/PREFIX]`; no query, no fragment, no
    /// user name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("download_base_url {text:?} (AIRLIFT_DOWNLOAD_BASE_URL, --download-base-url): {why}; expected http(s)://HOST[:PORT][/PREFIX]")
        };
        let uri: Uri = text.trim().parse().map_err(|e| bad(&format!("{e}")))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            _ => return Err(bad("not an http(s) URL")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(bad("a host without a user name"));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(bad("no query or fragment"));
        }
        Ok(Self {
            origin: format!("{scheme}://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `signed` with its scheme, host and port replaced by this base's,
    /// and this base's path prefix put before its path; the path and the
    /// query (the signature) are kept as they are.
    pub fn rewrite(&self, signed: &str) -> Result<String, String> {
        let uri: Uri = signed
            .parse()
            .map_err(|e| format!("a presigned URL that does not parse: {e}"))?;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(format!("{}{}{path_and_query}", self.origin, self.prefix))
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin, self.prefix)
    }
}

/// Signs presigned GET URLs of package files. `Debug` shows no secret.
pub struct Offload {
    /// The client at the bucket's root: keys are signed whole, prefix
    /// included (the server's store is a `PrefixStore` around its own
    /// client, which signs nothing).
    signer: AmazonS3,
    prefix: Option<BlobPath>,
    config: OffloadConfig,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Offload {
    /// The signer for `config`'s bucket, when its downloads are offloaded.
    /// Makes no request.
    pub fn new(config: &S3Config) -> Result<Option<Self>, String> {
        let Some(offload) = &config.offload else {
            return Ok(None);
        };
        Ok(Some(Self {
            signer: super::s3::client(config)?,
            prefix: config.prefix.clone(),
            config: offload.clone(),
        }))
    }

    /// The presigned GET URL of `key` (a key of the server's store, under
    /// its prefix), through the CDN if there is one.
    pub async fn url(&self, key: &BlobPath) -> object_store::Result<String> {
        let full: BlobPath = match &self.prefix {
            Some(prefix) => prefix.parts().chain(key.parts()).collect(),
            None => key.clone(),
        };
        // Signing may fetch credentials (an instance role): bounded.
        let signed = bounded(
            STALL,
            "signing a download URL",
            self.signer
                .signed_url(Method::GET, &full, self.config.expiry),
        )
        .await?;
        match &self.config.base_url {
            None => Ok(signed.to_string()),
            Some(base) => {
                base.rewrite(signed.as_str())
                    .map_err(|source| object_store::Error::Generic {
                        store: "blobs",
                        source: source.into(),
                    })
            }
        }
    }
}

/// Sends a device to the object store for the package file at `key`:
/// once the object is found there at the package's `size`, `307` to its
/// presigned URL, `Cache-Control: no-store`, no body; counted in
/// `airlift_downloads_offloaded_total`. A missing or different object is
/// the same 5xx as when the server streams it.
pub async fn redirect(
    blobs: &dyn ObjectStore,
    offload: &Offload,
    key: &BlobPath,
    size: u64,
) -> Result<Response, ApiError> {
    let meta = match bounded(STALL, "looking up a package", blobs.head(key)).await {
        Ok(meta) => meta,
        Err(error) => return Ok(super::blob_failure(&error, key)),
    };
    if meta.size != size {
        let error = format!(
            "the package's file holds {} bytes, its record says {size}",
            meta.size
        );
        return Ok(super::failure(BlobFailure::Mismatch, &error, key));
    }
    let url = match offload.url(key).await {
        Ok(url) => url,
        Err(error) => return Ok(super::failure(BlobFailure::Failed, &error, key)),
    };
    let location = HeaderValue::from_str(&url)
        .map_err(|_| ApiError::internal("a presigned URL that is no header value"))?;
    metrics::counter!("airlift_downloads_offloaded_total").increment(1);
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_units_and_stays_within_s3s_bounds() {
        assert_eq!(parse_url_expiry("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_url_expiry("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_url_expiry(" 15m "), Ok(DEFAULT_URL_EXPIRY));
        assert_eq!(parse_url_expiry("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_url_expiry("7d"), Ok(MAX_URL_EXPIRY));
        assert_eq!(parse_url_expiry("1s"), Ok(MIN_URL_EXPIRY));
        assert_eq!(parse_url_expiry("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_url_expiry("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in [
            "0",
            "0s",
            "8d",
            "604801",
            "soon",
            "",
            "-5m",
            "99999999999999999999d",
        ] {
            let error = parse_url_expiry(bad).expect_err(bad);
            assert!(error.contains("--blob-url-expiry"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_base_url_replaces_scheme_host_and_port_and_keeps_path_and_query() {
        let signed = "http://127.0.0.1:9000/bucket/fleet/packages/p.airlift?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=key%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=abc";
        let (_, path_and_query) = signed.split_at("http://127.0.0.1:9000".len());

        let cdn = BaseUrl::parse("https://cdn.example.com").expect("valid");
        assert_eq!(
            cdn.rewrite(signed).expect("rewritten"),
            format!("https://cdn.example.com{path_and_query}")
        );
        let trailing = BaseUrl::parse("https://cdn.example.com:8443/").expect("valid");
        assert_eq!(
            trailing.rewrite(signed).expect("rewritten"),
            format!("https://cdn.example.com:8443{path_and_query}")
        );
        let prefixed = BaseUrl::parse("http://edge.example.net/airlift/").expect("valid");
        assert_eq!(prefixed.to_string(), "http://edge.example.net/airlift");
        assert_eq!(
            prefixed.rewrite(signed).expect("rewritten"),
            format!("http://edge.example.net/airlift{path_and_query}")
        );
        assert!(BaseUrl::parse("https://cdn.example.com")
            .expect("valid")
            .rewrite("not a url at all")
            .is_err());
    }

    #[test]
    fn a_base_url_is_an_http_origin_with_at_most_a_path() {
        for bad in [
            "cdn.example.com",
            "ftp://cdn.example.com",
            "https://cdn.example.com/?token=1",
            "https://user@cdn.example.com",
            "https://cdn.example.com/#x",
            "/relative",
            "",
        ] {
            let error = BaseUrl::parse(bad).expect_err(bad);
            assert!(error.contains("--download-base-url"), "{bad}: {error}");
        }
    }
}
