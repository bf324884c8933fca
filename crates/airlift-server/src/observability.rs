//! `/healthz`, `/readyz`, `/metrics`, and the request counter behind them.

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process-wide Prometheus recorder (one per process, however many
/// servers a test starts).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ])
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Routes for probes and metrics.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", content_type = "text/plain", body = String, example = "ok\n")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Longest a readiness check waits for any one dependency, so the probe
/// itself answers within a second when one hangs.
const READY_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// What `/readyz` found, one entry per dependency.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, or `unavailable` when the database or the blob store fails.
    pub status: &'static str,
    /// The database answered a query.
    pub database: Check,
    /// The blob store answered a lookup.
    pub blobs: Check,
    /// The store's change feed is listening. When it is not, this instance
    /// still serves correctly, only without its caches (slower), so it
    /// stays ready.
    pub change_feed: Check,
}

/// One dependency's state.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn of<E: std::fmt::Display>(
        result: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) -> Self {
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!(
                "no answer within {} ms",
                READY_CHECK_TIMEOUT.as_millis()
            )),
        };
        Self {
            status: if error.is_none() { "ok" } else { "failed" },
            error,
        }
    }

    fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The process can serve: the database and the blob store answer (each
/// within 800 ms); says also whether the change feed listens.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready", body = Readiness), (status = 503, description = "The database or the blob store does not answer", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = tokio::time::timeout(READY_CHECK_TIMEOUT, async {
        state.store().count_api_tokens().await.map(drop)
    });
    let blobs = tokio::time::timeout(READY_CHECK_TIMEOUT, async {
        // A key that never exists: "not found" is an answer.
        match state.blobs().head(&"readyz-probe".into()).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    });
    let (database, blobs) = tokio::join!(database, blobs);
    let (database, blobs) = (Check::of(database), Check::of(blobs));
    let change_feed = if state.caches().listening() {
        Check::of::<String>(Ok(Ok(())))
    } else {
        Check::of(Ok(Err("interrupted: reconnecting")))
    };
    let ready = database.ok() && blobs.ok();
    let readiness = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database,
        blobs,
        change_feed,
    };
    if !ready {
        tracing::warn!(?readiness, "readiness check failed");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics, text format 0.0.4", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are disabled", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = state.metrics() else {
        return (StatusCode::NOT_FOUND, "metrics are disabled\n").into_response();
    };
    if let Ok(deployments) = state.store().list_deployments().await {
        for status in airlift_protocol::state::DeploymentStatus::ALL {
            let count = deployments.iter().filter(|d| d.status == *status).count();
            metrics::gauge!("airlift_deployments", "status" => status.as_str()).set(count as f64);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
        .into_response()
}

/// Counts requests and their latency by route template (never the raw path:
/// ids would explode the label set) and status class.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let (counter, histogram) = REQUEST_METRICS.handles(
        &method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status,
    );
    counter.increment(1);
    histogram.record(started.elapsed().as_secs_f64());
    response
}

/// Handles of the request metrics per (method, route, status class): looked
/// up in the registry once, so a request costs no label allocation.
static REQUEST_METRICS: RequestMetrics = RequestMetrics(std::sync::RwLock::new(Vec::new()));

type MetricKey = (axum::http::Method, String, &'static str);

struct RequestMetrics(std::sync::RwLock<Vec<(MetricKey, metrics::Counter, metrics::Histogram)>>);

impl RequestMetrics {
    fn handles(
        &self,
        method: &axum::http::Method,
        route: &str,
        status: &'static str,
    ) -> (metrics::Counter, metrics::Histogram) {
        let find = |entries: &[(MetricKey, metrics::Counter, metrics::Histogram)]| {
            entries
                .iter()
                .find(|((m, r, s), _, _)| m == method && r == route && *s == status)
                .map(|(_, c, h)| (c.clone(), h.clone()))
        };
        if let Some(found) = self.0.read().ok().and_then(|entries| find(&entries)) {
            return found;
        }
        let counter = metrics::counter!("airlift_http_requests_total", "method" => method.as_str().to_owned(), "route" => route.to_owned(), "status" => status);
        let histogram = metrics::histogram!("airlift_http_request_duration_seconds", "method" => method.as_str().to_owned(), "route" => route.to_owned());
        if let Ok(mut entries) = self.0.write() {
            // Routes are the router's, so the list stays small.
            if find(&entries).is_none() && entries.len() < 512 {
                entries.push((
                    (method.clone(), route.to_owned(), status),
                    counter.clone(),
                    histogram.clone(),
                ));
            }
        }
        (counter, histogram)
    }
}
