//! The admin page (`/admin/`, only with `--admin`): live counts per hub and gateway, the
//! connections, users and groups of a hub, the store's state, and a live trace of this gateway.
//!
//! The page itself is static (HTML, CSS and a little JavaScript compiled into the binary) and
//! holds no data: everything it shows comes from `/admin/api/...`, which answers only a bearer
//! token signed with an access key for the audience `/admin/` (`switchboard token --admin`
//! mints one; the page asks for it and keeps it in the tab's session storage). The answers are
//! the same cluster-wide listings as the REST extensions (`scatter::list`), so the page sees
//! every gateway; the live trace is this gateway's (`trace`) merged with every other's
//! (`Presence.Trace`).

pub mod trace;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_auth::{check_audience, Audience};
use switchboard_core::{names, Error, ErrorCode};

use crate::error::{ApiError, ApiResult};
use crate::scatter::{self, ListingKind};
use crate::{now_ms, now_secs, Shared};

/// The audience an admin token names (its path; scheme, host and port are ignored).
pub const AUDIENCE_PATH: &str = "/admin/";

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// Largest page the admin API lists.
const MAX_PAGE: usize = 500;

/// The admin routes (merged only when the admin page is enabled).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route(
            "/admin/",
            get(|| async { static_file(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/admin/admin.js",
            get(|| async { static_file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/admin/admin.css",
            get(|| async { static_file(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/admin/api/overview", get(overview))
        .route("/admin/api/hubs/{hub}/connections", get(connections))
        .route("/admin/api/hubs/{hub}/groups", get(groups))
        .route(
            "/admin/api/hubs/{hub}/connections/{connectionId}",
            get(connection),
        )
        .route("/admin/api/hubs/{hub}/users/{user}", get(user))
        .route("/admin/api/trace", get(trace_stream))
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads nothing from elsewhere and may not be framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// A request that proved an access key for the admin audience, until `expires_at` (the
/// token's `exp`, Unix seconds).
pub(crate) struct AdminCall {
    expires_at: u64,
}

impl FromRequestParts<Arc<Shared>> for AdminCall {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let refused = |e: ApiError| {
            metrics::counter!("switchboard_admin_refusals_total").increment(1);
            e
        };
        let token = crate::bearer(&parts.headers).ok_or_else(|| {
            refused(ApiError::unauthorized(
                "Authorization: Bearer <token> is required (switchboard token --admin).",
            ))
        })?;
        let claims = shared
            .keys
            .verify(token, now_secs())
            .map_err(|e| refused(e.into()))?;
        check_audience(
            &claims,
            &Audience::Rest {
                path: AUDIENCE_PATH,
                application: None,
            },
        )
        .map_err(|e| refused(e.into()))?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        Ok(AdminCall { expires_at })
    }
}

fn hub_name(hub: &str) -> ApiResult<String> {
    Ok(names::hub(hub)?)
}

#[derive(Debug, Deserialize, Default)]
struct PageQuery {
    after: Option<String>,
    /// Parsed by hand: a bad one is a 400 with an `ErrorDetail`, like every other error.
    limit: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> usize {
        self.limit
            .as_deref()
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, MAX_PAGE)
    }

    fn after(&self) -> Option<&str> {
        self.after.as_deref().filter(|a| !a.is_empty())
    }
}

async fn overview(State(shared): State<Arc<Shared>>, _: AdminCall) -> Json<Value> {
    let status = shared.store.status();
    let view = shared.store.view();
    let (nodes, stored): (Vec<Value>, Vec<Value>) = {
        let state = view.read();
        let now = state.now_ms();
        let nodes = state
            .nodes()
            .map(|n| {
                json!({
                    "node": n.node,
                    "address": n.address,
                    "incarnation": n.incarnation,
                    "leaseLeftMs": n.lease_until_ms.saturating_sub(now),
                })
            })
            .collect();
        let stored = state
            .hub_counts()
            .into_iter()
            .filter(|h| h.user_group_entries > 0)
            .map(|h| json!({ "hub": h.hub.as_ref(), "userGroupEntries": h.user_group_entries }))
            .collect();
        (nodes, stored)
    };
    let gateways: Vec<Value> = scatter::hub_counts(&shared)
        .await
        .into_iter()
        .map(|(node, hubs)| {
            let hubs: Vec<Value> = hubs
                .into_iter()
                .map(|h| {
                    json!({
                        "hub": h.hub,
                        "connections": h.connections,
                        "users": h.users,
                        "groups": h.groups,
                    })
                })
                .collect();
            json!({ "node": node, "hubs": hubs })
        })
        .collect();
    let recent: Vec<Value> = shared
        .trace
        .recent()
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    Json(json!({
        "node": shared.config.node_id,
        "advertise": shared.config.advertise,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": match shared.readiness() { Ok(()) => Value::Null, Err(why) => json!(why) },
        "connectionsHere": shared.registry.len(),
        "store": {
            "node": status.node_id,
            "leader": status.leader_id,
            "isLeader": status.is_leader,
            "term": status.term,
            "lastLogIndex": status.last_log_index,
            "committedIndex": status.committed_index,
            "appliedIndex": status.applied_index,
            "snapshotIndex": status.snapshot_index,
            "viewAppliedIndex": view.applied_index(),
            "voting": shared.store.voting(),
            "diskFailing": shared.store.disk_failing(),
        },
        "nodes": nodes,
        "gateways": gateways,
        "stored": stored,
        "recent": recent,
    }))
}

fn next(items: &[scatter::Listed], limit: usize) -> Option<String> {
    (items.len() == limit)
        .then(|| items.last().map(|l| l.key.to_string()))
        .flatten()
}

/// A page of a hub-wide listing, each item as `item` renders it, and where the next starts.
async fn hub_listing(
    shared: &Shared,
    hub: &str,
    kind: ListingKind,
    page: &PageQuery,
    item: impl Fn(&scatter::Listed) -> Value,
) -> ApiResult<Json<Value>> {
    let hub = hub_name(hub)?;
    let limit = page.limit();
    let listing = scatter::list(shared, &hub, kind, "", page.after(), limit).await;
    let value: Vec<Value> = listing.items.iter().map(item).collect();
    Ok(Json(json!({
        "value": value,
        "after": next(&listing.items, limit),
        "unanswered": listing.missing,
    })))
}

async fn connections(
    State(shared): State<Arc<Shared>>,
    _: AdminCall,
    Path(hub): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    hub_listing(
        &shared,
        &hub,
        ListingKind::HubConnections,
        &page,
        |l| json!({ "connectionId": l.key.as_ref(), "userId": l.user.as_deref(), "node": l.node }),
    )
    .await
}

async fn groups(
    State(shared): State<Arc<Shared>>,
    _: AdminCall,
    Path(hub): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    hub_listing(
        &shared,
        &hub,
        ListingKind::HubGroups,
        &page,
        |l| json!({ "group": l.key.as_ref(), "connections": l.count }),
    )
    .await
}

async fn connection(
    State(shared): State<Arc<Shared>>,
    _: AdminCall,
    Path((hub, connection)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let hub = hub_name(&hub)?;
    names::connection_id(&connection)?;
    let listing = scatter::list(
        &shared,
        &hub,
        ListingKind::ConnectionGroups,
        &connection,
        None,
        MAX_PAGE,
    )
    .await
    .connection_found()?;
    if !listing.found {
        return Err(ApiError::new(
            ErrorCode::ConnectionNotExisted,
            "The connection does not exist.",
        ));
    }
    let groups: Vec<&str> = listing.items.iter().map(|l| l.key.as_ref()).collect();
    Ok(Json(
        json!({ "connectionId": connection, "groups": groups }),
    ))
}

async fn user(
    State(shared): State<Arc<Shared>>,
    _: AdminCall,
    Path((hub, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let hub = hub_name(&hub)?;
    names::user(&user)?;
    let listing = scatter::list(
        &shared,
        &hub,
        ListingKind::UserConnections,
        &user,
        None,
        MAX_PAGE,
    )
    .await;
    let connections: Vec<Value> = listing
        .items
        .iter()
        .map(|l| json!({ "connectionId": l.key.as_ref(), "node": l.node }))
        .collect();
    shared.sync_view().await;
    let groups: Vec<Value> = shared
        .store
        .view()
        .read()
        .user_groups(&hub, &user, now_ms())
        .into_iter()
        .map(|g| {
            json!({
                "group": g.group.as_ref(),
                "expiresAtMs": g.expires_at_ms,
                "countsTowardLimit": g.counts_toward_cap,
            })
        })
        .collect();
    Ok(Json(
        json!({ "userId": user, "connections": connections, "groups": groups }),
    ))
}

/// The live trace as Server-Sent Events, this gateway's and every other's (`Presence.Trace`)
/// merged: each event's `data` is one JSON event naming its gateway (`node`); a `lagged` event
/// says how many a stream missed. Gateways that join later are not followed (reopen the page).
async fn trace_stream(State(shared): State<Arc<Shared>>, call: AdminCall) -> ApiResult<Response> {
    let here = shared.trace.follow(false).ok_or_else(|| {
        ApiError(Error::new(
            ErrorCode::ConnectionLimit,
            format!(
                "At most {} trace streams may be open at once.",
                trace::MAX_STREAMS
            ),
        ))
    })?;
    let mut streams: Vec<futures::stream::BoxStream<'static, trace::Item>> = vec![Box::pin(here)];
    streams.extend(scatter::follow_traces(&shared));
    let closed = shared.trace.closed.clone();
    // The stream ends with its token: a rotated-out key or an expired token stops watching.
    let left = Duration::from_secs(call.expires_at.saturating_sub(now_secs()));
    let ends = async move {
        tokio::select! {
            _ = closed.cancelled_owned() => {}
            _ = tokio::time::sleep(left) => {}
        }
    };
    let events = futures::stream::select_all(streams)
        .take_until(ends)
        .map(|item| {
            Ok::<_, Infallible>(match item {
                trace::Item::Event(text) => Event::default().data(text.as_ref()),
                trace::Item::Lagged(missed) => Event::default()
                    .event("lagged")
                    .data(json!({ "missed": missed }).to_string()),
            })
        });
    Ok(sse(events).into_response())
}

fn sse<S>(events: S) -> impl IntoResponse
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-cache")],
        Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}
