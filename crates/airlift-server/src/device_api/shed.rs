//! Load shedding for the device API's short requests (authentication,
//! check-ins, status reports).
//!
//! An instance that takes more requests than its cores and database can
//! answer does not get faster by queueing them: every queued request ages
//! until the whole queue times out at the client and nothing is answered
//! (seen in the million-device bench: 2 548 of 3 300 check-ins/s answered
//! with a p99 of 9 s and thousands of broken connections). Past a bound on
//! the requests in flight, one more is answered `503` with `Retry-After` at
//! once, at the cost of a few microseconds, and the agent tries again later;
//! those in flight keep a bounded latency. Downloads and push streams are
//! long by nature and bounded by the connection limits instead.

use airlift_protocol::ErrorBody;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Seconds a shed device is told to wait before it tries again.
const RETRY_AFTER_SECS: u64 = 5;

/// The requests in flight, as permits.
#[derive(Debug, Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    /// At most `limit` at once.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit.max(1))))
    }
}

/// Serves the request if a permit is free, else sheds it.
pub async fn shed(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.0.try_acquire() else {
        // Counted, not logged: under overload a line per shed request
        // would cost more than the answer.
        metrics::counter!("airlift_device_requests_shed_total").increment(1);
        return shed_response();
    };
    next.run(request).await
}

fn shed_response() -> Response {
    let body = ErrorBody {
        code: "overloaded".to_owned(),
        message: "the server is at its limit of device requests in flight; try again after \
                  Retry-After seconds"
            .to_owned(),
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_the_limit_is_answered_503_at_once_and_one_within_it_is_served() {
        let in_flight = InFlight::new(1);
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let entered = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let release = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    let (entered, release) = (entered.clone(), release.clone());
                    async move {
                        if let Some(tx) = entered.lock().expect("lock").take() {
                            let _ = tx.send(());
                        }
                        if let Some(rx) = release.lock().await.take() {
                            let _ = rx.await;
                        }
                        "done"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(in_flight, shed));
        let get = |app: Router| async move {
            app.oneshot(Request::get("/slow").body(Body::empty()).expect("request"))
                .await
                .expect("answered")
        };
        let first = tokio::spawn(get(app.clone()));
        entered_rx.await.expect("the first request is in flight");
        let shed = get(app.clone()).await;
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            shed.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from(RETRY_AFTER_SECS))
        );
        release_tx.send(()).expect("released");
        assert_eq!(first.await.expect("joined").status(), StatusCode::OK);
        // The permit came back with the first request's end.
        assert_eq!(get(app).await.status(), StatusCode::OK);
    }
}
