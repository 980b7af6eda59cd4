//! The data-plane REST API, both surfaces side by side.
//!
//! Every route is registered under `/api/v1` (the legacy surface, no `api-version`) and under
//! `/api` (the 2022-06-01+ surface, `api-version` required). The handlers are shared; where the
//! two surfaces answer with different status codes the handler asks [`Surface`]. Each request
//! passes through [`RestCall`], which authenticates it (JWT signed with an access key, audience =
//! the request path), validates the hub/application names and parses the query string, so
//! handlers only see valid input. The operations themselves are one table (`api`), from which
//! both the router and the OpenAPI document are built.

pub(crate) mod api;
mod handlers;
mod payload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::Router;
use switchboard_auth::{check_audience, Audience, Claims};
use switchboard_core::{names, ErrorCode};
use switchboard_membership::Name;

use crate::error::{ApiError, ApiResult};
use crate::{now_secs, Shared};

/// Which REST surface a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/api/v1/...`
    V1,
    /// `/api/...?api-version=2022-06-01` and later.
    Versioned,
}

/// API versions accepted on the versioned surface.
pub const API_VERSIONS: [&str; 4] = ["2022-06-01", "2022-11-01", "2023-07-01", "2024-12-01"];

/// The parsed query string of a REST call (only the parameters the API defines).
#[derive(Debug, Default)]
pub struct RestQuery {
    pub excluded: Vec<String>,
    pub reason: Option<String>,
    pub ttl: Option<String>,
    pub application: Option<String>,
    /// `application` appeared more than once (ambiguous: refused).
    pub application_repeated: bool,
    pub api_version: Option<String>,
    pub max_page_size: Option<String>,
    pub top: Option<String>,
    pub continuation_token: Option<String>,
    pub user_id: Option<String>,
    pub minutes_to_expire: Option<String>,
}

impl RestQuery {
    fn parse(raw: Option<&str>) -> RestQuery {
        let mut q = RestQuery::default();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "excluded" => q.excluded.push(v),
                "reason" => q.reason = Some(v),
                "ttl" => q.ttl = Some(v),
                "application" => {
                    q.application_repeated |= q.application.is_some();
                    q.application = Some(v);
                }
                "api-version" => q.api_version = Some(v),
                "maxpagesize" | "maxPageSize" => q.max_page_size = Some(v),
                "top" => q.top = Some(v),
                "continuationToken" => q.continuation_token = Some(v),
                "userId" => q.user_id = Some(v),
                "minutesToExpire" => q.minutes_to_expire = Some(v),
                _ => {}
            }
        }
        q
    }
}

/// An authenticated, validated REST call: see the module docs.
pub struct RestCall {
    pub surface: Surface,
    /// The internal hub name: lower-cased, prefixed with the application if one was given.
    pub hub: Name,
    /// The request path as received (for links).
    pub path: String,
    params: HashMap<String, String>,
    pub query: RestQuery,
    /// `scheme://host[:port]` as the caller addressed us (for links and minted tokens).
    pub base_url: String,
    pub claims: Claims,
}

impl RestCall {
    /// A path parameter, already percent-decoded.
    fn param(&self, name: &str) -> ApiResult<&str> {
        self.params.get(name).map(String::as_str).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                format!("route has no '{name}' parameter"),
            )
        })
    }

    pub fn group(&self) -> ApiResult<Name> {
        let group = self.param("group")?;
        names::group(group)?;
        Ok(group.into())
    }

    pub fn user(&self) -> ApiResult<Name> {
        let user = self.param("user")?;
        names::user(user)?;
        Ok(user.into())
    }

    pub fn connection(&self) -> ApiResult<Name> {
        let id = self.param("connectionId")?;
        names::connection_id(id)?;
        Ok(id.into())
    }
}

fn base_url(parts: &Parts) -> String {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

impl FromRequestParts<Arc<Shared>> for RestCall {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path().to_owned();
        let surface = if path.starts_with("/api/v1/") {
            Surface::V1
        } else {
            Surface::Versioned
        };
        let query = RestQuery::parse(parts.uri.query());

        let token = crate::bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("Authorization: Bearer <token> is required."))?;
        let claims = shared.keys.verify(token, now_secs())?;
        if query.application_repeated {
            return Err(ApiError(
                switchboard_core::Error::invalid("The application query parameter is repeated.")
                    .with_target("application"),
            ));
        }
        check_audience(
            &claims,
            &Audience::Rest {
                path: &path,
                application: query.application.as_deref(),
            },
        )?;

        if surface == Surface::Versioned {
            match query.api_version.as_deref() {
                Some(v) if API_VERSIONS.contains(&v) => {}
                Some(v) => {
                    return Err(ApiError(
                        switchboard_core::Error::invalid(format!(
                            "Unsupported api-version '{v}'. Supported: {}.",
                            API_VERSIONS.join(", ")
                        ))
                        .with_target("api-version"),
                    ))
                }
                None => {
                    return Err(ApiError(
                        switchboard_core::Error::invalid(
                            "The api-version query parameter is required.",
                        )
                        .with_target("api-version"),
                    ))
                }
            }
        }

        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, shared)
            .await
            .map_err(|e| ApiError::invalid(format!("Invalid path: {e}")))?;
        let hub_param = params.get("hub").map(String::as_str).unwrap_or("");
        let hub = names::prefixed_hub(query.application.as_deref(), hub_param)?;
        Ok(RestCall {
            surface,
            hub: hub.into(),
            path,
            params,
            query,
            base_url: base_url(parts),
            claims,
        })
    }
}

/// Every operation of [`api::operations`] under both surfaces, and the OpenAPI document.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    let mut by_path: Vec<(&str, MethodRouter<Arc<Shared>>)> = Vec::new();
    for op in api::operations() {
        let handler = (op.handler)();
        match by_path.iter_mut().find(|(p, _)| *p == op.path) {
            Some((_, router)) => *router = std::mem::take(router).merge(handler),
            None => by_path.push((op.path, handler)),
        }
    }
    let mut r = Router::new()
        .without_v07_checks()
        .route("/api/openapi.json", get(api::serve_document));
    for (path, method_router) in by_path {
        r = r
            .route(&format!("/api/v1{path}"), method_router.clone())
            .route(&format!("/api{path}"), method_router);
    }
    r
}

pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("No route for {method} {}.", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}.", uri.path()),
    )
}

/// Counts and times every HTTP request by matched route (never the raw path) and status.
///
/// A tower layer with its own small future rather than an `axum::middleware::from_fn`: every
/// request in service carries it, and an idle Long Polling client's poll is in service for up
/// to 90 s. The `from_fn` form kept about 1.3 KiB per request (its boxed async block, the
/// middleware's `Next` and two route strings), this keeps the route's shared name, the method
/// and the start time beside the inner future.
///
/// With the admin page on, REST calls (`/api/...` but health and the OpenAPI document) also
/// go to its live trace.
#[derive(Clone, Default)]
pub(crate) struct TrackHttpLayer {
    pub(crate) trace: Option<Arc<crate::admin::trace::Trace>>,
}

impl<S> tower::Layer<S> for TrackHttpLayer {
    type Service = TrackHttp<S>;

    fn layer(&self, inner: S) -> TrackHttp<S> {
        TrackHttp {
            inner,
            trace: self.trace.clone(),
        }
    }
}

/// See [`TrackHttpLayer`].
#[derive(Clone)]
pub(crate) struct TrackHttp<S> {
    inner: S,
    trace: Option<Arc<crate::admin::trace::Trace>>,
}

impl<S> tower::Service<Request> for TrackHttp<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let trace = self.trace.clone().filter(|_| {
            route.as_ref().is_some_and(|r| {
                let r = r.as_str();
                r.starts_with("/api/") && !r.ends_with("/health") && r != "/api/openapi.json"
            })
        });
        Tracked {
            inner: self.inner.call(request),
            start: Instant::now(),
            route,
            method,
            trace,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request in service, counted and timed when its response is ready.
    pub(crate) struct Tracked<F> {
        #[pin]
        inner: F,
        start: Instant,
        route: Option<MatchedPath>,
        method: Method,
        trace: Option<Arc<crate::admin::trace::Trace>>,
    }
}

impl<F, E> std::future::Future for Tracked<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let route = this
                .route
                .as_ref()
                .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
            let status = response.status().as_u16().to_string();
            metrics::counter!("switchboard_http_requests_total", "route" => route.clone(), "method" => this.method.as_str().to_owned(), "status" => status)
                .increment(1);
            let elapsed = this.start.elapsed();
            if let Some(trace) = this.trace.as_ref() {
                trace.emit(|| {
                    serde_json::json!({
                        "type": "rest",
                        "method": this.method.as_str(),
                        "route": route,
                        "status": response.status().as_u16(),
                        "ms": elapsed.as_millis() as u64,
                    })
                });
            }
            metrics::histogram!("switchboard_http_request_duration_seconds", "route" => route)
                .record(elapsed.as_secs_f64());
        }
        std::task::Poll::Ready(result)
    }
}
