//! Negotiate (negotiateVersion 1, and 0 for clients that send none) and the WebSocket upgrade.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use switchboard_auth::{check_audience, is_v0_connection_id, user_id, Audience, ConnectionTicket};
use switchboard_core::{names, new_connection_id, Error, ErrorCode};

use super::socket::ClientSocket;
use super::{http, relay};
use crate::error::{ApiError, ApiResult};
use crate::{now_secs, Shared};
use switchboard_cluster::proto::RelayTarget;

/// The parameters of a client request we care about.
struct ClientQuery {
    hub: String,
    id: Option<String>,
    access_token: Option<String>,
    /// `negotiateVersion`: absent (or unparsable, as ASP.NET Core treats it) means 0.
    negotiate_version: u32,
    /// `useStatefulReconnect=true` on negotiate.
    stateful_reconnect: bool,
}

fn parse_client_query(raw: Option<&str>) -> ApiResult<ClientQuery> {
    let mut hubs = Vec::new();
    let mut id = None;
    let mut access_token = None;
    let mut negotiate_version = 0;
    let mut stateful_reconnect = false;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "negotiateVersion" => negotiate_version = v.parse().unwrap_or(0),
            "useStatefulReconnect" => stateful_reconnect = v.eq_ignore_ascii_case("true"),
            "hub" => hubs.push(v.into_owned()),
            "id" => id = Some(v.into_owned()),
            // Like ASP.NET Core, the last access_token wins.
            "access_token" => access_token = Some(v.into_owned()),
            _ => {}
        }
    }
    let hub = match hubs.as_slice() {
        [hub] => names::hub(hub)?,
        [] => return Err(ApiError::invalid("The 'hub' query parameter is required.")),
        _ => {
            return Err(ApiError::invalid(
                "Only one 'hub' query parameter is allowed.",
            ))
        }
    };
    Ok(ClientQuery {
        hub,
        id,
        access_token,
        negotiate_version,
        stateful_reconnect,
    })
}

/// The bearer token of a client request: the `Authorization` header, else `access_token`.
fn bearer<'a>(headers: &'a HeaderMap, query: &'a ClientQuery) -> Option<&'a str> {
    crate::bearer(headers).or(query.access_token.as_deref())
}

fn verify_client_token(
    shared: &Shared,
    token: Option<&str>,
    hub: &str,
) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
    let token = token.ok_or_else(|| {
        ApiError::unauthorized(
            "An access token is required (Authorization: Bearer or access_token).",
        )
    })?;
    let claims = shared.keys.verify(token, now_secs())?;
    check_audience(&claims, &Audience::Client { hub })?;
    Ok(claims)
}

/// For a version-0 connection id: the user of the request's valid access token (`Some(None)`
/// for an anonymous one), which its MAC is checked against before other gateways are asked
/// about it; `None` when the request has no valid token (or `id` is not of version 0).
fn v0_user(
    shared: &Shared,
    headers: &HeaderMap,
    query: &ClientQuery,
    id: &str,
) -> Option<Option<String>> {
    if !is_v0_connection_id(id) {
        return None;
    }
    let claims = verify_client_token(shared, bearer(headers, query), &query.hub).ok()?;
    Some(user_id(&claims))
}

/// Claims that describe the token rather than the user; not carried into the ticket.
const TOKEN_CLAIMS: [&str; 5] = ["aud", "exp", "iat", "nbf", "iss"];

pub(super) async fn negotiate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = parse_client_query(raw.as_deref())?;
    let mut claims = verify_client_token(&shared, bearer(&headers, &query), &query.hub)?;
    if !shared.is_accepting() {
        return Err(ApiError(Error::unavailable(
            "This gateway is not accepting connections right now; try again.",
        )));
    }
    if shared.connection_slots.available_permits() == 0 {
        shared.metrics.refused_limit.increment(1);
        return Err(connection_limit());
    }
    let user = user_id(&claims);
    let expires_at = now_secs() + shared.config.connection_token_lifetime.as_secs();
    let transports = json!([
        { "transport": "WebSockets", "transferFormats": ["Text", "Binary"] },
        { "transport": "ServerSentEvents", "transferFormats": ["Text"] },
        { "transport": "LongPolling", "transferFormats": ["Text", "Binary"] }
    ]);
    if query.negotiate_version == 0 {
        // Version 0: no connection token; the client connects with the connection id, which
        // therefore proves what a ticket proves (see `switchboard_auth::v0`).
        let connection_id = shared.keys.mint_v0_connection_id(
            &query.hub,
            user.as_deref(),
            shared.config.node_id,
            expires_at,
        );
        shared.metrics.negotiated_v0.increment(1);
        return Ok(Json(json!({
            "negotiateVersion": 0,
            "connectionId": connection_id,
            "availableTransports": transports,
        }))
        .into_response());
    }
    claims.retain(|k, _| !TOKEN_CLAIMS.contains(&k.as_str()));
    let connection_id = new_connection_id(shared.config.node_id);
    let ticket = ConnectionTicket {
        hub: query.hub,
        connection_id: connection_id.clone(),
        user_id: user,
        claims,
        expires_at,
        stateful_reconnect: query.stateful_reconnect
            && !shared.config.stateful_reconnect_window.is_zero(),
    };
    let token = shared.keys.mint_ticket(&ticket);
    shared.metrics.negotiated_v1.increment(1);
    // Versions above 1 are answered with 1, the highest this server speaks.
    let mut body = json!({
        "negotiateVersion": 1,
        "connectionId": connection_id,
        "connectionToken": token,
        "availableTransports": transports,
    });
    if ticket.stateful_reconnect {
        body["useStatefulReconnect"] = json!(true);
    }
    Ok(Json(body).into_response())
}

/// The connection a connect request's `id` names: a version-1 ticket, or a version-0
/// connection id, which needs the access token presented again (the claims come from it).
fn connection_ticket(
    shared: &Shared,
    headers: &HeaderMap,
    query: &ClientQuery,
    id: &str,
) -> ApiResult<ConnectionTicket> {
    let not_accepted = |e: &dyn std::fmt::Display| {
        ApiError::new(
            ErrorCode::RouteNotFound,
            format!("Connection token not accepted ({e}); negotiate again."),
        )
    };
    if !is_v0_connection_id(id) {
        let ticket = shared
            .keys
            .verify_ticket(id, now_secs())
            .map_err(|e| not_accepted(&e))?;
        if ticket.hub != query.hub {
            return Err(ApiError::new(
                ErrorCode::RouteNotFound,
                "The connection token was issued for another hub.",
            ));
        }
        // An access token presented again on connect must still be valid and for the same user.
        if let Some(token) = bearer(headers, query) {
            let claims = verify_client_token(shared, Some(token), &query.hub)?;
            if user_id(&claims) != ticket.user_id {
                return Err(ApiError::unauthorized(
                    "The access token names another user than the connection token.",
                ));
            }
        }
        return Ok(ticket);
    }
    let mut claims = verify_client_token(shared, bearer(headers, query), &query.hub)?;
    let user = user_id(&claims);
    let expires_at = shared
        .keys
        .verify_v0_connection_id(id, &query.hub, user.as_deref(), now_secs())
        .map_err(|e| not_accepted(&e))?;
    claims.retain(|k, _| !TOKEN_CLAIMS.contains(&k.as_str()));
    Ok(ConnectionTicket {
        hub: query.hub.clone(),
        connection_id: id.to_owned(),
        user_id: user,
        claims,
        expires_at,
        // Version 0 predates stateful reconnect.
        stateful_reconnect: false,
    })
}

/// The connect request's extracted WebSocket upgrade (an error when it is not one).
type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// `GET /client/`: a WebSocket, an SSE stream, or a Long Polling poll.
///
/// Not an `async fn`: an idle Long Polling client's poll — the most numerous request a gateway
/// holds — waits in a future of its own ([`poll`], about 200 bytes) instead of inside
/// [`connect_any`]'s (about 1.2 KiB), which everything else goes through.
pub(super) fn connect(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    upgrade: Upgrade,
) -> impl std::future::Future<Output = ApiResult<Response>> + Send {
    use futures::future::Either;
    let parsed = parse_client_query(raw.as_deref());
    if upgrade.is_err() && !wants_sse(&headers) {
        if let Ok(query) = &parsed {
            let pipe = query.id.as_deref().and_then(|id| shared.pipes.get(id));
            if let Some(pipe) = pipe.filter(|p| p.kind == http::Kind::LongPolling) {
                if let Err(error) = check_pipe_request(&shared, &headers, query, &pipe) {
                    return Either::Left(Either::Left(std::future::ready(Err(error))));
                }
                // What the request brought (its headers, its query with both tokens) is
                // dropped here, before the wait.
                return Either::Left(Either::Right(async move { Ok(poll(&shared, &pipe).await) }));
            }
        }
    }
    Either::Right(Box::pin(connect_any(
        shared, peer, headers, parsed, raw, upgrade,
    )))
}

/// Every connect request but a poll of a Long Polling connection open here; `parsed` is its
/// query, parsed by [`connect`].
async fn connect_any(
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    headers: HeaderMap,
    parsed: ApiResult<ClientQuery>,
    raw: Option<String>,
    upgrade: Upgrade,
) -> ApiResult<Response> {
    let query = parsed?;
    let Some(id) = query.id.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "No connection token ('id'): call /client/negotiate first.",
        ));
    };
    let upgrade = match upgrade {
        Ok(upgrade) => Some(upgrade),
        Err(_) if headers.contains_key(axum::http::header::UPGRADE) => {
            return Err(ApiError::invalid("Invalid WebSocket upgrade request."));
        }
        // Not a WebSocket: Server-Sent Events or Long Polling.
        Err(_) => None,
    };
    if upgrade.is_none() {
        // A poll (or a second SSE stream) of a connection open here.
        if let Some(pipe) = shared.pipes.get(id) {
            check_pipe_request(&shared, &headers, &query, &pipe)?;
            if pipe.kind == http::Kind::LongPolling && !wants_sse(&headers) {
                // Only when the pipe appeared after `connect` looked (a race): `connect` serves
                // polls of open pipes in a small future of its own. Free what the request
                // brought (its headers, its query with both tokens) before waiting.
                drop((headers, query, raw, upgrade));
                return Ok(poll(&shared, &pipe).await);
            }
            shared.metrics.refused_in_use.increment(1);
            return Err(ApiError::new(ErrorCode::ConnectionInUse, http::IN_USE));
        }
        // A poll of a connection another gateway holds.
        if !wants_sse(&headers) {
            // Held elsewhere (or not yet registered there): that gateway answers the poll.
            // When none holds it, this is the first GET of a new connection.
            let addresses = relay::holders(
                &shared,
                &query.hub,
                id,
                v0_user(&shared, &headers, &query, id),
            );
            if !addresses.is_empty() {
                let target = relay_target(&headers, &query, id);
                let answer = Box::pin(relay::relay_any(
                    &shared,
                    &addresses,
                    relay::Kind::Poll,
                    target,
                    bytes::Bytes::new(),
                ))
                .await;
                if !answer.as_ref().is_err_and(relay::nobody_holds) {
                    return answer;
                }
            }
        }
    }
    // A stateful connection's client coming back on a new WebSocket.
    let upgrade = match (upgrade, shared.resumable.get(id)) {
        (Some(upgrade), Some(slot)) => return resume(&shared, &headers, &query, slot, upgrade),
        (upgrade, _) => upgrade,
    };
    // A stateful connection another gateway holds: its client's new socket is relayed there.
    let holder = match &upgrade {
        Some(_) => relay::stateful_holder(&shared, &query.hub, id).await,
        None => None,
    };
    let upgrade = match (upgrade, holder) {
        (Some(upgrade), Some(address)) => {
            let target = relay_target(&headers, &query, id);
            let shared = shared.clone();
            return Ok(sized(&shared, upgrade)
                .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
                .on_upgrade(move |socket| relay::pump_resume(shared, address, target, socket)));
        }
        (upgrade, _) => upgrade,
    };
    if shared.resumable.has_ended(id) {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "This connection has ended; negotiate again.",
        ));
    }
    let ticket = connection_ticket(&shared, &headers, &query, id)?;
    if !shared.is_accepting() {
        return Err(ApiError(Error::unavailable(
            "This gateway is not accepting connections right now; try again.",
        )));
    }
    // A connection token opens one connection: a second transport is refused, the first
    // keeps working, on this gateway or any other (the issuer remembers used tokens).
    if shared.registry.contains(&ticket.hub, &ticket.connection_id) {
        shared.metrics.refused_in_use.increment(1);
        return Err(ApiError::new(ErrorCode::ConnectionInUse, http::IN_USE));
    }
    let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
        shared.metrics.refused_limit.increment(1);
        return Err(connection_limit());
    };
    // Claimed once the connection can be taken, so a refusal above leaves the token usable.
    match crate::scatter::claim(&shared, &ticket.connection_id, ticket.expires_at).await {
        Ok(()) => {}
        Err(crate::scatter::ClaimRefused::Used) => {
            shared.metrics.refused_in_use.increment(1);
            return Err(ApiError::new(ErrorCode::ConnectionInUse, http::IN_USE));
        }
        Err(crate::scatter::ClaimRefused::Unavailable(error)) => return Err(error),
    }
    let Some(upgrade) = upgrade else {
        let kind = if wants_sse(&headers) {
            http::Kind::ServerSentEvents
        } else {
            http::Kind::LongPolling
        };
        return open_http(shared, peer, raw, id, ticket, slot, kind);
    };
    let upgrade = sized(&shared, upgrade);
    let shared2 = shared.clone();
    let token_id = id.to_owned();
    let token = shared.tracker.token();
    // The upstream sees the query the client connected with (X-ASRS-Client-Query).
    let query = match &shared.upstream {
        Some(_) => raw.unwrap_or_default(),
        None => String::new(),
    };
    shared.metrics.transport("websockets");
    Ok(upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let opening = super::Opening {
                ticket,
                query,
                token_id,
            };
            // The connection runs in a task of its own rather than inside the upgrade's task,
            // which would keep the upgrade's state beside it for the connection's lifetime:
            // 1,664 bytes per connection against 1,152 (`-Zprint-type-sizes`).
            tokio::spawn(super::run_connection(
                ClientSocket::Ws(socket),
                shared2,
                opening,
                peer,
                token,
                slot,
            ));
            std::future::ready(())
        }))
}

/// Whether a reconnect for `slot` may resume it: the same hub and, if an access token is
/// presented, a valid one for the same user (also for reconnects relayed from other gateways).
pub(super) fn resume_allowed(
    shared: &Shared,
    hub: &str,
    token: Option<&str>,
    slot: &super::resume::Slot,
) -> ApiResult<()> {
    if *slot.hub != *hub {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "No connection with that id on this hub.",
        ));
    }
    if let Some(token) = token {
        let claims = verify_client_token(shared, Some(token), hub)?;
        if user_id(&claims).as_deref() != slot.user.as_deref() {
            return Err(ApiError::unauthorized(
                "The access token names another user than the connection.",
            ));
        }
    }
    Ok(())
}

/// The upgrade with this gateway's WebSocket buffer sizes and limits.
fn sized(shared: &Shared, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    let config = &shared.config;
    upgrade
        .read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(config.ws_write_buffer)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
}

/// A stateful connection's client reconnecting: its new socket goes to the connection's task
/// (see `resume`). No new handshake, no new registration: the connection never closed.
fn resume(
    shared: &Shared,
    headers: &HeaderMap,
    query: &ClientQuery,
    slot: Arc<super::resume::Slot>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    resume_allowed(shared, &query.hub, bearer(headers, query), &slot)?;
    Ok(sized(shared, upgrade)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move { slot.deposit(ClientSocket::Ws(socket)) }))
}

/// Whether a GET asks for Server-Sent Events.
fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Starts an SSE or Long Polling connection: its task, and the answer to its first request
/// (the event stream, or Long Polling's immediate 200).
fn open_http(
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    raw: Option<String>,
    id: &str,
    ticket: ConnectionTicket,
    slot: tokio::sync::OwnedSemaphorePermit,
    kind: http::Kind,
) -> ApiResult<Response> {
    let Some(transport) = shared.pipes.open(
        id,
        kind,
        &ticket.hub,
        ticket.user_id.as_deref(),
        shared.config.client_timeout,
    ) else {
        shared.metrics.refused_in_use.increment(1);
        return Err(ApiError::new(ErrorCode::ConnectionInUse, http::IN_USE));
    };
    let pipe = transport.pipe().clone();
    let query = match &shared.upstream {
        Some(_) => raw.unwrap_or_default(),
        None => String::new(),
    };
    let token = shared.tracker.token();
    shared.metrics.transport(kind.as_str());
    let opening = super::Opening {
        ticket,
        query,
        token_id: id.to_owned(),
    };
    tokio::spawn(super::run_connection(
        transport,
        shared.clone(),
        opening,
        peer,
        token,
        slot,
    ));
    let response = match kind {
        http::Kind::ServerSentEvents => Response::builder()
            .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
            .header(axum::http::header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no")
            .body(axum::body::Body::from_stream(http::SseBody::new(pipe))),
        http::Kind::LongPolling => Response::builder()
            .header(axum::http::header::CACHE_CONTROL, "no-cache")
            .body(axum::body::Body::empty()),
    };
    response.map_err(|e| ApiError(Error::internal(format!("building the response: {e}"))))
}

/// A later request of an HTTP-transport connection: for the same hub, and, if it presents an
/// access token (Long Polling clients do on every request), a valid one for the same user —
/// so a connection lives no longer than its tokens, as on Azure.
fn check_pipe_request(
    shared: &Shared,
    headers: &HeaderMap,
    query: &ClientQuery,
    pipe: &http::Pipe,
) -> ApiResult<()> {
    pipe_request_allowed(shared, &query.hub, bearer(headers, query), pipe)
}

/// [`check_pipe_request`] for a hub and the access token presented (also for relayed requests).
pub(super) fn pipe_request_allowed(
    shared: &Shared,
    hub: &str,
    token: Option<&str>,
    pipe: &http::Pipe,
) -> ApiResult<()> {
    if *pipe.hub != *hub {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "No connection with that id on this hub.",
        ));
    }
    if pipe.needs_token && token.is_none() {
        return Err(ApiError::unauthorized(
            "An access token is required (Authorization: Bearer or access_token).",
        ));
    }
    if let Some(token) = token {
        let claims = verify_client_token(shared, Some(token), hub)?;
        if user_id(&claims).as_deref() != pipe.user.as_deref() {
            return Err(ApiError::unauthorized(
                "The access token names another user than the connection.",
            ));
        }
    }
    Ok(())
}

/// Where a send or a DELETE goes: a pipe here, or the gateway holding the connection.
enum Found {
    Here(Arc<http::Pipe>),
    Elsewhere {
        addresses: relay::Holders,
        target: RelayTarget,
    },
}

fn find_pipe(shared: &Shared, headers: &HeaderMap, raw: Option<&str>) -> ApiResult<Found> {
    let query = parse_client_query(raw)?;
    let id = query.id.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::RouteNotFound,
            "No connection token ('id'): call /client/negotiate first.",
        )
    })?;
    if let Some(pipe) = shared.pipes.get(id) {
        check_pipe_request(shared, headers, &query, &pipe)?;
        return Ok(Found::Here(pipe));
    }
    let addresses = relay::holders(shared, &query.hub, id, v0_user(shared, headers, &query, id));
    if addresses.is_empty() {
        return Err(ApiError::new(ErrorCode::RouteNotFound, http::NOT_FOUND));
    }
    Ok(Found::Elsewhere {
        addresses,
        target: relay_target(headers, &query, id),
    })
}

fn relay_target(headers: &HeaderMap, query: &ClientQuery, id: &str) -> RelayTarget {
    RelayTarget {
        hub: query.hub.clone(),
        id: id.to_owned(),
        access_token: bearer(headers, query).unwrap_or_default().to_owned(),
    }
}

/// A Long Polling poll.
async fn poll(shared: &Shared, pipe: &Arc<http::Pipe>) -> Response {
    let outcome = pipe.poll(http::POLL_TIMEOUT).await;
    shared.metrics.long_poll(&outcome);
    match outcome {
        http::Polled::Data(data) => Response::builder()
            .header(axum::http::header::CACHE_CONTROL, "no-cache")
            .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
            .body(axum::body::Body::from(data))
            .unwrap_or_default(),
        http::Polled::Empty => StatusCode::OK.into_response(),
        http::Polled::Closed => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `POST /client/?hub=…&id=…`: a send of an SSE or Long Polling connection.
pub(super) async fn send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let found = find_pipe(&shared, &headers, raw.as_deref())?;
    let body = axum::body::to_bytes(body, http::MAX_SEND_BYTES)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, http::SEND_TOO_LARGE))?;
    let pipe = match found {
        Found::Here(pipe) => pipe,
        Found::Elsewhere { addresses, target } => {
            return Box::pin(relay::relay_any(
                &shared,
                &addresses,
                relay::Kind::Send,
                target,
                body,
            ))
            .await
        }
    };
    match pipe.send(body, shared.config.client_timeout).await {
        http::Sent::Queued => Ok(StatusCode::OK.into_response()),
        http::Sent::Closed => Err(ApiError::new(ErrorCode::RouteNotFound, http::NOT_FOUND)),
        http::Sent::Busy => Err(ApiError(Error::unavailable(http::NOT_READING))),
    }
}

/// `DELETE /client/?hub=…&id=…`: a Long Polling client ends its connection.
pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let pipe = match find_pipe(&shared, &headers, raw.as_deref())? {
        Found::Here(pipe) => pipe,
        Found::Elsewhere { addresses, target } => {
            return Box::pin(relay::relay_any(
                &shared,
                &addresses,
                relay::Kind::Close,
                target,
                bytes::Bytes::new(),
            ))
            .await
        }
    };
    if pipe.kind != http::Kind::LongPolling {
        return Err(ApiError::invalid(http::NOT_LONG_POLLING));
    }
    pipe.close_by_client();
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Azure's answer when the connection quota is reached.
fn connection_limit() -> ApiError {
    ApiError::new(
        ErrorCode::ConnectionLimit,
        "Connection count reaches limit.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_hub_is_rejected() {
        assert!(parse_client_query(Some("hub=a&hub=b")).is_err());
        assert!(parse_client_query(Some("id=x")).is_err());
        let q =
            parse_client_query(Some("hub=Chat&id=t&access_token=1&access_token=2")).expect("valid");
        assert_eq!(q.hub, "chat");
        assert_eq!(q.access_token.as_deref(), Some("2"));
    }
}
