//! Accepting connections, and bounding what one connection may hold.
//!
//! A server that faces a fleet faces hostile and broken clients too: a
//! socket that never finishes its request head, an upload that stops
//! half-way, a download whose reader stopped reading. Each of those holds a
//! file descriptor (and, for a download, its read buffers) for as long as it
//! lasts, so each is bounded here, on plain HTTP and on HTTPS alike:
//!
//! - **idle**: waiting for a request head — a new connection's first, or
//!   the next one on a kept-alive connection — lasts at most
//!   [`ConnectionLimits::idle_timeout`], after which the connection is
//!   closed (hyper's header-read timeout, which runs from the moment the
//!   server waits for a head, not from its first byte; for HTTPS it bounds
//!   the TLS handshake too);
//! - **body**: a request body that sends nothing for
//!   [`ConnectionLimits::body_timeout`] fails (`tower_http`'s per-frame body
//!   timeout), so a stalled upload frees its spool file;
//! - **write**: a write to the client that makes no progress for
//!   [`ConnectionLimits::write_timeout`] closes the connection, so a download
//!   or an event stream nobody reads lets go of its resources;
//! - **count**: at most [`ConnectionLimits::max_connections`] are open; one
//!   more is accepted and closed at once (the client sees a reset and
//!   retries), instead of the process running out of descriptors and
//!   refusing everyone, probes included.
//!
//! With a fleet CA (`--client-ca`, `docs/mtls.md`) the TLS handshake asks
//! every client for a certificate: one that is presented must verify
//! against that CA, or the handshake fails; none at all is fine here (the
//! management API, the dashboard and the probes take tokens). A verified
//! certificate's key and name go with every request on that connection
//! ([`PeerCertificate`](crate::device_api::peer::PeerCertificate) in its
//! extensions), for the device API to decide with.
//!
//! Only HTTP/1.1 is spoken (devices, the CLI and browsers all speak it), so
//! every one of these limits applies to every connection. Each is counted in
//! `/metrics` (`airlift_connections_*`).

use crate::device_api::peer::PeerCertificate;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower::Service;
use tower_http::timeout::TimeoutBody;

/// The bounds on one connection and on how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most device API requests (not downloads or push streams) served at
    /// once; see `device_api::shed`.
    pub max_device_requests: usize,
    /// Longest wait for a request head (and for a TLS handshake).
    pub idle_timeout: Duration,
    /// Longest silence inside a request body.
    pub body_timeout: Duration,
    /// Longest a write to the client may make no progress.
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    /// The defaults: 30 s to send a request head, 30 s of silence in a body,
    /// 60 s for a stalled write, and as many connections as the process may
    /// open files, less a reserve for the database, the blobs and the spool
    /// (see [`raise_open_file_limit`]), at most 10 000.
    pub fn defaults(open_file_limit: u64) -> Self {
        Self {
            max_connections: default_max_connections(open_file_limit),
            max_device_requests: 128,
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Descriptors kept free for everything that is not a client connection.
const RESERVED_FILES: u64 = 256;

/// The connection limit a file limit allows.
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let usable = open_file_limit.saturating_sub(RESERVED_FILES).max(16);
    usable.min(10_000) as usize
}

/// Raises this process's soft limit on open files to its hard limit: a
/// server wants every descriptor it may have. Left as it is when it cannot
/// be raised.
pub fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(%error, "cannot raise the open file limit");
        }
    }
}

/// This process's soft limit on open files.
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Makes TLS connections out of accepted TCP ones; `None` for plain HTTP.
pub type Tls = Option<tokio_rustls::TlsAcceptor>;

/// Serves `router` on `listener` within `limits` until `shutdown` resolves,
/// then waits (at most 30 s) for the requests in flight.
pub async fn serve_connections(
    listener: TcpListener,
    tls: Tls,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: neither ends the server.
                    metrics::counter!("airlift_connection_accept_errors_total").increment(1);
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("airlift_connections_refused_total", "reason" => "limit")
                .increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let router = router.clone();
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let _slot = slot;
            metrics::gauge!("airlift_connections_open").increment(1.0);
            metrics::counter!("airlift_connections_total").increment(1);
            let mut stream = TimeoutStream::new(stream);
            stream.set_write_timeout(Some(limits.write_timeout));
            let stream: Pin<Box<TimeoutStream<TcpStream>>> = Box::pin(stream);
            let mut certificate = None;
            let transport: Box<dyn TransportBox> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(limits.idle_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            certificate = peer_certificate(tls.get_ref().1);
                            Box::new(tls)
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            metrics::gauge!("airlift_connections_open").decrement(1.0);
                            return;
                        }
                        Err(_) => {
                            count_timeout("tls_handshake");
                            metrics::gauge!("airlift_connections_open").decrement(1.0);
                            return;
                        }
                    }
                }
            };
            let service = hyper::service::service_fn(move |request| {
                handle(
                    router.clone(),
                    peer,
                    certificate.clone(),
                    limits.body_timeout,
                    request,
                )
            });
            let connection = http.serve_connection(TokioIo::new(transport), service);
            if let Err(error) = watcher.watch(connection).await {
                classify(&error, peer);
            }
            metrics::gauge!("airlift_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("connections still open 30 s after shutdown began; closing them");
        }
    }
    Ok(())
}

/// The client certificate rustls verified on `connection`, if one was
/// presented.
fn peer_certificate(connection: &rustls::ServerConnection) -> Option<Arc<PeerCertificate>> {
    let leaf = connection.peer_certificates()?.first()?;
    match PeerCertificate::from_der(leaf) {
        Some(certificate) => Some(Arc::new(certificate)),
        None => {
            tracing::warn!("a client certificate verified by rustls could not be read; ignored");
            None
        }
    }
}

/// One request, with the peer's address (and verified certificate) for
/// the handlers and its body bounded by `body_timeout`.
async fn handle(
    mut router: Router,
    peer: SocketAddr,
    certificate: Option<Arc<PeerCertificate>>,
    body_timeout: Duration,
    request: hyper::Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    if let Some(certificate) = certificate {
        parts.extensions.insert(certificate);
    }
    let body = axum::body::Body::new(TimeoutBody::new(body_timeout, body));
    router
        .call(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Counts a connection that ended in an error, by why.
fn classify(error: &hyper::Error, peer: SocketAddr) {
    if error.is_timeout() {
        count_timeout("idle");
    } else if io_kind(error) == Some(std::io::ErrorKind::TimedOut) {
        count_timeout("write");
    } else {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

fn count_timeout(kind: &'static str) {
    metrics::counter!("airlift_connection_timeouts_total", "kind" => kind).increment(1);
}

fn io_kind(error: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = inner.source();
    }
    None
}

/// A connection's transport, TCP or TLS over TCP, boxed so that both
/// share one path.
trait TransportBox: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TransportBox for T {}

/// Why a TLS certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The TLS acceptor `config` asks for: `None` for plain HTTP.
pub fn acceptor_for(config: &crate::Config) -> Result<Tls, TlsError> {
    let Some((cert, key)) = &config.tls else {
        return Ok(None);
    };
    tls_acceptor_with_clients(cert, key, config.client_auth.client_ca.as_deref()).map(Some)
}

/// A TLS acceptor for the PEM certificate chain at `cert` and private key at
/// `key`, offering HTTP/1.1 by ALPN.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    tls_acceptor_with_clients(cert, key, None)
}

/// [`tls_acceptor`], asking clients for a certificate issued by one of the
/// CAs in the PEM file `client_ca` when it is given: a presented one that
/// does not verify (another CA, expired, not for client authentication)
/// fails the handshake; a client that presents none is served.
pub fn tls_acceptor_with_clients(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("reading private key {}: {e}", key.display())))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| {
        TlsError(format!(
            "certificate {} and key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Verifies client certificates against the CAs in `path`, offering
/// client authentication without requiring it.
fn client_verifier(
    path: &std::path::Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let cas = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading client CA {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("client CA {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError(format!(
            "{} holds no PEM certificate: give the fleet CA's certificate to --client-ca",
            path.display()
        )));
    }
    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError(format!("client CA {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_descriptors_for_the_rest() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(1_048_576), 10_000);
        assert_eq!(default_max_connections(100), 16, "never zero");
    }
}
