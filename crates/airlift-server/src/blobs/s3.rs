//! Package files in an S3-compatible object store: the settings
//! (`--blob-url s3://BUCKET[/PREFIX]` and the other `--blob-*` flags, or the
//! usual AWS variables), the client made from them, and the probe at
//! startup that stops the server with one line naming the setting to fix.
//!
//! One client serves every request. Its requests have no overall time
//! limit — a download streams from the store at the pace of the device,
//! which may take hours — so each caller bounds what it waits for instead:
//! a stall in a download ([`super::STALL`]), an upload's parts
//! ([`super::PART_STALL`]), the probe ([`PROBE_TIMEOUT`]).

use crate::config::Secret;
use axum::http::Uri;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as BlobPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest the startup probe waits for the bucket to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest opening a connection to the store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The region when none is given, as the AWS tools assume.
const DEFAULT_REGION: &str = "us-east-1";

/// The S3 settings as configuration holds them, before validation.
#[derive(Debug, Clone, Copy)]
pub struct S3Settings<'a> {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: &'a str,
    /// `http(s)://HOST[:PORT]`, for a store other than AWS.
    pub endpoint: Option<&'a str>,
    /// The region requests are signed for.
    pub region: Option<&'a str>,
    /// Name the bucket in the path rather than in the host name.
    pub path_style: bool,
    /// Static credentials: the key id…
    pub access_key_id: Option<&'a str>,
    /// …its secret…
    pub secret_access_key: Option<&'a Secret>,
    /// …and a session token, for temporary ones.
    pub session_token: Option<&'a Secret>,
}

/// Where in S3 package files are kept, and how to reach it. `Debug` shows
/// no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Keys are kept under this prefix; `None`: at the bucket's root.
    pub prefix: Option<BlobPath>,
    /// The store's endpoint, without a trailing slash; `None`: AWS.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// `http://HOST/BUCKET/KEY` rather than `http://BUCKET.HOST/KEY`.
    pub path_style: bool,
    /// Static credentials; `None`: the environment's (a web identity, or
    /// the instance's role from the metadata service).
    pub credentials: Option<S3Credentials>,
    /// Devices download from the store through presigned URLs (the
    /// default); `None`: the server streams package files itself
    /// (`--blob-offload off`).
    pub offload: Option<super::offload::OffloadConfig>,
}

/// Static S3 credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<Secret>,
}

impl S3Config {
    /// Validates the settings; an error names the setting to fix and its
    /// variable.
    pub fn new(raw: S3Settings<'_>) -> Result<Self, String> {
        let (bucket, prefix) = parse_url(raw.url)?;
        let endpoint = raw
            .endpoint
            .filter(|e| !e.is_empty())
            .map(|e| parse_endpoint(e, raw.path_style))
            .transpose()?;
        let region = raw
            .region
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_REGION)
            .to_owned();
        let secret = raw.secret_access_key.filter(|s| !s.expose().is_empty());
        let session_token = raw.session_token.filter(|s| !s.expose().is_empty());
        let credentials = match (raw.access_key_id.filter(|k| !k.is_empty()), secret) {
            (Some(id), Some(secret)) => Some(S3Credentials {
                access_key_id: id.to_owned(),
                secret_access_key: secret.clone(),
                session_token: session_token.cloned(),
            }),
            (None, None) if session_token.is_none() => None,
            (None, None) => {
                return Err("blob_session_token (AWS_SESSION_TOKEN) needs blob_access_key_id (AWS_ACCESS_KEY_ID) and blob_secret_access_key (AWS_SECRET_ACCESS_KEY)".into())
            }
            _ => {
                return Err("blob_access_key_id (AWS_ACCESS_KEY_ID) and blob_secret_access_key (AWS_SECRET_ACCESS_KEY) go together: set both, or neither to use the instance's role".into())
            }
        };
        Ok(Self {
            bucket,
            prefix,
            endpoint,
            region,
            path_style: raw.path_style,
            credentials,
            offload: Some(super::offload::OffloadConfig::default()),
        })
    }

    /// `s3://BUCKET[/PREFIX]`, for messages.
    pub fn url(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("s3://{}/{prefix}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }

    /// Where requests go, for messages.
    fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 in {}", self.region))
    }

    /// The endpoint object_store is given: with the bucket in the host name
    /// unless path-style (object_store expects it there, then).
    fn client_endpoint(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?;
        if self.path_style {
            return Some(endpoint.to_owned());
        }
        let (scheme, host) = endpoint.split_once("://")?;
        Some(format!("{scheme}://{}.{host}", self.bucket))
    }
}

fn parse_url(url: &str) -> Result<(String, Option<BlobPath>), String> {
    let bad = |why: &str| {
        format!("blob_url {url:?} (AIRLIFT_BLOB_URL, --blob-url): {why}; expected s3://BUCKET[/PREFIX], or no blob_url for the data directory")
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid_bucket {
        return Err(bad(
            "a bucket name is 3 to 63 letters, digits, dots and hyphens",
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = match prefix {
        "" => None,
        prefix => Some(BlobPath::parse(prefix).map_err(|e| bad(&e.to_string()))?),
    };
    Ok((bucket.to_owned(), prefix))
}

fn parse_endpoint(endpoint: &str, path_style: bool) -> Result<String, String> {
    let bad = |why: &str| {
        format!("blob_endpoint {endpoint:?} (AWS_ENDPOINT_URL, --blob-endpoint): {why}")
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| bad(&format!("{e}; expected http(s)://HOST[:PORT]")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("expected http(s)://HOST[:PORT]"));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("expected http(s)://HOST[:PORT]"))?;
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("expected no path: the bucket goes in blob_url"));
    }
    if !path_style && host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(bad(
            "an address cannot carry the bucket in its host name; set blob_path_style (AIRLIFT_BLOB_PATH_STYLE=true, --blob-path-style)",
        ));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

/// The client for `config`, under its prefix. Makes no request.
pub fn open(config: &S3Config) -> Result<Arc<dyn ObjectStore>, String> {
    let store = client(config)?;
    Ok(match &config.prefix {
        Some(prefix) => Arc::new(PrefixStore::new(store, prefix.clone())),
        None => Arc::new(store),
    })
}

/// Multipart uploads into the bucket of `config`, recorded in `store` while
/// they run ([`super::recorded`]). Makes no request.
pub fn recorded_uploads(
    config: &S3Config,
    store: airlift_store::SharedStore,
) -> Result<super::recorded::RecordedUploads, String> {
    Ok(super::recorded::RecordedUploads::new(
        Arc::new(client(config)?),
        config.prefix.clone(),
        store,
    ))
}

/// The client for `config`, at the bucket's root. Makes no request.
pub(super) fn client(config: &S3Config) -> Result<AmazonS3, String> {
    let mut options = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(CONNECT_TIMEOUT);
    if config
        .endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
    {
        options = options.with_allow_http(true);
    }
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_client_options(options)
        // A failed request is tried again a few times, for a short while:
        // a device or an operator is waiting for it.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        });
    if let Some(endpoint) = config.client_endpoint() {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(credentials) = &config.credentials {
        builder = builder
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key.expose());
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token.expose());
        }
    }
    builder
        .build()
        .map_err(|e| format!("blob store {}: {e}", config.url()))
}

/// Lists the bucket (one page, within [`PROBE_TIMEOUT`]), so that wrong
/// credentials, a missing bucket or an unreachable endpoint stop the server
/// at startup rather than fail the first upload. The error is one line that
/// names the setting to fix.
pub async fn probe(store: &dyn ObjectStore, config: &S3Config) -> Result<(), String> {
    let first = tokio::time::timeout(PROBE_TIMEOUT, async {
        store.list(None).next().await.transpose()
    })
    .await;
    match first {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(explain(&error, config)),
        Err(_) => Err(format!(
            "the S3 endpoint {} did not answer within {} s: check AWS_ENDPOINT_URL (--blob-endpoint) and the network",
            config.endpoint_name(),
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Says which setting an error of the probe points at.
fn explain(error: &object_store::Error, config: &S3Config) -> String {
    let chain: Vec<&(dyn std::error::Error + 'static)> =
        std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .collect();
    let text = chain
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    let (status, code) = (status_code(&text), error_code(&text).unwrap_or_default());
    // No HTTP answer at all: the request never reached a server.
    let unreachable = super::is_unreachable(error) || (status.is_none() && code.is_empty());
    let (bucket, url, endpoint) = (&config.bucket, config.url(), config.endpoint_name());
    if unreachable {
        let reason = chain.last().map(ToString::to_string).unwrap_or_default();
        let fix = if config.endpoint.is_some() {
            "check AWS_ENDPOINT_URL (--blob-endpoint) and the network"
        } else {
            "check AWS_REGION (--blob-region) and the network"
        };
        return format!("cannot reach the S3 endpoint {endpoint} ({reason}): {fix}");
    }
    let said = match (status, code) {
        (Some(status), "") => format!("{status}"),
        (Some(status), code) => format!("{status} {code}"),
        (None, code) => code.to_owned(),
    };
    if matches!(code, "InvalidAccessKeyId" | "NotSignedUp") {
        return format!("S3 at {endpoint} does not know the access key id ({said}): check AWS_ACCESS_KEY_ID (--blob-access-key-id)");
    }
    if code == "SignatureDoesNotMatch" {
        return format!("S3 at {endpoint} refused the request's signature ({said}): check AWS_SECRET_ACCESS_KEY (--blob-secret-access-key)");
    }
    if code == "AuthorizationHeaderMalformed"
        || code == "PermanentRedirect"
        || text.contains("incorrectly configured region")
    {
        return format!("S3 at {endpoint} expects another region for bucket {bucket} ({said}): check AWS_REGION (--blob-region)");
    }
    if code == "NoSuchBucket" || status == Some(404) {
        return format!("the bucket of {url} does not exist at {endpoint} ({said}): check AIRLIFT_BLOB_URL (--blob-url)");
    }
    if matches!(status, Some(401 | 403)) {
        let whose = if config.credentials.is_some() {
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (--blob-access-key-id, --blob-secret-access-key)"
        } else {
            "no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set and the instance's role was refused: set them"
        };
        return format!(
            "S3 at {endpoint} refused access to bucket {bucket} ({said}): {whose}, and that they may list, read, write and delete in it"
        );
    }
    format!("the S3 bucket of {url} at {endpoint} failed a listing ({said}): check AIRLIFT_BLOB_URL (--blob-url) and AWS_ENDPOINT_URL (--blob-endpoint)")
}

/// The HTTP status in object_store's "status code: 403 Forbidden".
fn status_code(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("status code: ")?;
    after.get(..3)?.parse().ok()
}

/// The S3 error code in a response body, `<Code>…</Code>`.
fn error_code(text: &str) -> Option<&str> {
    let (_, after) = text.split_once("<Code>")?;
    let (code, _) = after.split_once("</Code>")?;
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> S3Settings<'_> {
        S3Settings {
            url,
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }

    #[test]
    fn urls_name_a_bucket_and_maybe_a_prefix() {
        let config = S3Config::new(settings("s3://packages")).expect("valid");
        assert_eq!((config.bucket.as_str(), config.prefix), ("packages", None));
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.credentials, None);
        let config = S3Config::new(settings("s3://packages/fleet/prod/")).expect("valid");
        assert_eq!(config.prefix, Some(BlobPath::from("fleet/prod")));
        assert_eq!(config.url(), "s3://packages/fleet/prod");
        for bad in [
            "packages",
            "file:///srv/blobs",
            "s3://",
            "s3://ab",
            "s3://bad bucket/x",
            "s3://bucket/a//b",
        ] {
            let error = S3Config::new(settings(bad)).expect_err(bad);
            assert!(error.contains("AIRLIFT_BLOB_URL"), "{bad}: {error}");
        }
    }

    #[test]
    fn endpoints_are_checked_and_addressing_is_explicit() {
        let with = |endpoint: &'static str, path_style: bool| {
            S3Config::new(S3Settings {
                endpoint: Some(endpoint),
                path_style,
                ..settings("s3://packages/p")
            })
        };
        let path = with("http://127.0.0.1:9000/", true).expect("valid");
        assert_eq!(path.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(
            path.client_endpoint().as_deref(),
            Some("http://127.0.0.1:9000")
        );
        let virtual_hosted = with("https://s3.example.com", false).expect("valid");
        assert_eq!(
            virtual_hosted.client_endpoint().as_deref(),
            Some("https://packages.s3.example.com")
        );
        let ip = with("http://127.0.0.1:9000", false).expect_err("an address");
        assert!(ip.contains("AIRLIFT_BLOB_PATH_STYLE"), "{ip}");
        for bad in ["ftp://host", "host:9000", "http://host/bucket"] {
            let error = with(bad, true).expect_err(bad);
            assert!(error.contains("AWS_ENDPOINT_URL"), "{bad}: {error}");
        }
    }

    #[test]
    fn credentials_go_in_pairs_and_never_show() {
        let Ok(secret) = "wJalrXUtnFEMI-very-secret".parse::<Secret>();
        let config = S3Config::new(S3Settings {
            access_key_id: Some("AKIDEXAMPLE"),
            secret_access_key: Some(&secret),
            ..settings("s3://packages")
        })
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
        assert!(!shown.contains("very-secret"), "{shown}");
        let half = S3Config::new(S3Settings {
            access_key_id: Some("AKIDEXAMPLE"),
            ..settings("s3://packages")
        })
        .expect_err("no secret");
        assert!(half.contains("AWS_SECRET_ACCESS_KEY"), "{half}");
    }

    #[test]
    fn status_and_code_are_read_from_object_stores_messages() {
        let text = "Generic S3 error: Error performing GET http://x/b?list-type=2 in 2ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>m</Message></Error>";
        assert_eq!(status_code(text), Some(403));
        assert_eq!(error_code(text), Some("InvalidAccessKeyId"));
        assert_eq!(status_code("connection refused"), None);
        assert_eq!(error_code("no body"), None);
    }
}
