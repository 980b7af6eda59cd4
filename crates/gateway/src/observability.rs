//! `/api/health` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus text), shared by
//! the gateway and by a store voter's small HTTP listener.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// Whether the process is ready for traffic; `Err` says why not.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// The three routes (liveness answers without a token, as the server SDK expects; so do the
/// others, which carry no client data).
pub fn router<S: Clone + Send + Sync + 'static>(
    ready: ReadyCheck,
    prometheus: Option<PrometheusHandle>,
) -> Router<S> {
    let health = || async { StatusCode::OK };
    let readyz = move || {
        let ready = ready.clone();
        async move {
            match ready() {
                Ok(()) => (StatusCode::OK, "ready"),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
            }
        }
    };
    // Merged into routers with `:action` paths, which opt out of axum's 0.7-syntax checks.
    Router::new()
        .without_v07_checks()
        .route("/api/health", get(health).head(health))
        .route("/api/v1/health", get(health).head(health))
        .route("/readyz", get(readyz.clone()).head(readyz))
        .route(
            "/metrics",
            get(move || {
                let prometheus = prometheus.clone();
                async move { render(prometheus.as_ref()) }
            }),
        )
}

fn render(prometheus: Option<&PrometheusHandle>) -> Response {
    match prometheus {
        Some(handle) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}
