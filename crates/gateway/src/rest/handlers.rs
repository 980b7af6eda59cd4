//! REST handlers. Each one is a few lines: validate what the route adds to [`RestCall`], then
//! route an envelope (sends, closes), change or ask the gateways' presence (connections and
//! their groups: `scatter`), or write a user-group entry to the store and bring the user's
//! current connections along.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use switchboard_core::{Error, ErrorCode};
use switchboard_membership::Command;

use super::{payload, RestCall, Surface};
use crate::dispatch::{Envelope, Payload, Recipients};
use crate::error::{ApiError, ApiResult};
use crate::{now_ms, now_secs, scatter, Shared};

type Ctx = State<Arc<Shared>>;

async fn read_payload(shared: &Shared, headers: &HeaderMap, body: Body) -> ApiResult<Arc<Payload>> {
    let bytes = payload::read_body(headers, body, shared.config.max_body_bytes).await?;
    Ok(Arc::new(Payload::new(payload::parse(headers, &bytes)?)))
}

async fn send(
    shared: &Shared,
    call: RestCall,
    recipients: Recipients,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let payload = read_payload(shared, &headers, body).await?;
    shared.dispatch(Envelope::Message {
        hub: call.hub,
        recipients,
        payload,
    });
    Ok(StatusCode::ACCEPTED)
}

/// Writes a user-group change to the store (bounded by the store timeout), then applies it
/// to the user's current connections on every gateway.
async fn durable_user_change(shared: &Arc<Shared>, command: Command) -> ApiResult<()> {
    let hub = match &command {
        Command::AddUserToGroup { hub, .. }
        | Command::RemoveUserFromGroup { hub, .. }
        | Command::RemoveUserFromAllGroups { hub, .. } => hub.clone(),
        _ => return Err(ApiError(Error::internal("not a user-group change"))),
    };
    let (_, index) = shared.write_indexed(command.clone()).await?;
    scatter::change_user(shared, &hub, command, index).await
}

async fn close(shared: &Shared, call: RestCall, recipients: Recipients) {
    let reason = call.query.reason.clone();
    shared.dispatch(Envelope::Close {
        hub: call.hub,
        recipients,
        reason,
    });
}

fn exists(found: bool, missing: ErrorCode, what: &str) -> ApiResult<StatusCode> {
    if found {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::new(missing, format!("{what} does not exist.")))
    }
}

// ----- hub -----

pub(super) async fn broadcast(
    State(shared): Ctx,
    call: RestCall,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let excluded = call.query.excluded.clone();
    send(&shared, call, Recipients::Hub { excluded }, headers, body).await
}

pub(super) async fn close_hub(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let excluded = call.query.excluded.clone();
    close(&shared, call, Recipients::Hub { excluded }).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn generate_token(State(shared): Ctx, call: RestCall) -> ApiResult<Response> {
    let minutes = match call.query.minutes_to_expire.as_deref() {
        None => 60,
        Some(m) => match m.parse::<u64>() {
            Ok(m) if (1..=60 * 24 * 365).contains(&m) => m,
            _ => {
                return Err(ApiError(
                    Error::invalid(
                        "minutesToExpire must be a whole number of minutes, at least 1.",
                    )
                    .with_target("minutesToExpire"),
                ))
            }
        },
    };
    if let Some(user) = call.query.user_id.as_deref() {
        switchboard_core::names::user(user)?;
    }
    let token = switchboard_auth::mint_client_token(
        shared.keys.primary(),
        &call.base_url,
        &call.hub,
        call.query.user_id.as_deref(),
        &switchboard_auth::Claims::new(),
        now_secs(),
        minutes * 60,
    );
    Ok(Json(json!({ "token": token })).into_response())
}

// ----- connections -----

pub(super) async fn send_to_connection(
    State(shared): Ctx,
    call: RestCall,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let connection = call.connection()?.to_string();
    send(
        &shared,
        call,
        Recipients::Connection { connection },
        headers,
        body,
    )
    .await
}

pub(super) async fn connection_exists(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let connection = call.connection()?;
    let found = scatter::connection_exists(&shared, &call.hub, &connection).await;
    exists(found, ErrorCode::ConnectionNotExisted, "The connection")
}

pub(super) async fn close_connection(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let connection = call.connection()?;
    let surface = call.surface;
    let found =
        surface == Surface::V1 || scatter::connection_exists(&shared, &call.hub, &connection).await;
    if !found && surface == Surface::Versioned {
        return Err(ApiError::new(
            ErrorCode::ConnectionNotExisted,
            "The connection does not exist.",
        ));
    }
    shared.dispatch(Envelope::Close {
        hub: call.hub,
        recipients: Recipients::Connection {
            connection: connection.to_string(),
        },
        reason: call.query.reason,
    });
    Ok(match surface {
        Surface::V1 => StatusCode::ACCEPTED,
        Surface::Versioned => StatusCode::OK,
    })
}

pub(super) async fn add_connection_to_group(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<StatusCode> {
    let (connection, group) = (call.connection()?, call.group()?);
    let command = Command::AddConnectionToGroup {
        hub: call.hub.clone(),
        group,
        connection: connection.clone(),
    };
    change_connection(
        &shared,
        &call,
        &connection,
        command,
        ErrorCode::ConnectionNotExistedError,
    )
    .await
}

/// Applies a change to one connection where it is held: 200, or `missing` when no gateway
/// holds it.
async fn change_connection(
    shared: &Shared,
    call: &RestCall,
    connection: &str,
    command: Command,
    missing: ErrorCode,
) -> ApiResult<StatusCode> {
    if scatter::change_connection(shared, &call.hub, connection, command).await? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::new(missing, "The connection does not exist."))
    }
}

pub(super) async fn remove_connection_from_group(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<StatusCode> {
    let (connection, group) = (call.connection()?, call.group()?);
    let command = Command::RemoveConnectionFromGroup {
        hub: call.hub.clone(),
        group,
        connection: connection.clone(),
    };
    change_connection(
        &shared,
        &call,
        &connection,
        command,
        ErrorCode::ConnectionNotExisted,
    )
    .await
}

pub(super) async fn remove_connection_from_all_groups(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<StatusCode> {
    let connection = call.connection()?;
    let command = Command::RemoveConnectionFromAllGroups {
        hub: call.hub.clone(),
        connection: connection.clone(),
    };
    // Not finding the connection is not an error here (as in Azure).
    scatter::change_connection(&shared, &call.hub, &connection, command).await?;
    Ok(StatusCode::OK)
}

// ----- users -----

pub(super) async fn send_to_user(
    State(shared): Ctx,
    call: RestCall,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let user = call.user()?.to_string();
    let excluded = call.query.excluded.clone();
    send(
        &shared,
        call,
        Recipients::User { user, excluded },
        headers,
        body,
    )
    .await
}

pub(super) async fn user_exists(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let user = call.user()?;
    let found = scatter::user_exists(&shared, &call.hub, &user).await;
    exists(found, ErrorCode::UserNotExisted, "The user")
}

pub(super) async fn close_user(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let user = call.user()?.to_string();
    let excluded = call.query.excluded.clone();
    close(&shared, call, Recipients::User { user, excluded }).await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn add_user_to_group(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let (user, group) = (call.user()?, call.group()?);
    let ttl_secs = match call.query.ttl.as_deref() {
        None => None,
        Some(t) => match t.parse::<i64>() {
            Ok(t) if (0..=i64::from(i32::MAX)).contains(&t) => Some(t as u32),
            _ => {
                return Err(ApiError(
                    Error::invalid("ttl must be a whole number of seconds, 0 or more.")
                        .with_target("ttl"),
                ))
            }
        },
    };
    durable_user_change(
        &shared,
        Command::AddUserToGroup {
            hub: call.hub.clone(),
            user,
            group,
            ttl_secs,
        },
    )
    .await?;
    Ok(match call.surface {
        Surface::V1 => StatusCode::ACCEPTED,
        Surface::Versioned => StatusCode::OK,
    })
}

pub(super) async fn remove_user_from_group(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<StatusCode> {
    let (user, group) = (call.user()?, call.group()?);
    durable_user_change(
        &shared,
        Command::RemoveUserFromGroup {
            hub: call.hub.clone(),
            user,
            group,
        },
    )
    .await?;
    Ok(match call.surface {
        Surface::V1 => StatusCode::ACCEPTED,
        Surface::Versioned => StatusCode::NO_CONTENT,
    })
}

pub(super) async fn remove_user_from_all_groups(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<StatusCode> {
    let user = call.user()?;
    durable_user_change(
        &shared,
        Command::RemoveUserFromAllGroups {
            hub: call.hub.clone(),
            user,
        },
    )
    .await?;
    Ok(match call.surface {
        Surface::V1 => StatusCode::OK,
        Surface::Versioned => StatusCode::NO_CONTENT,
    })
}

pub(super) async fn user_in_group(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let (user, group) = (call.user()?, call.group()?);
    shared.sync_view().await;
    let found = shared
        .store
        .view()
        .read()
        .user_in_group(&call.hub, &user, &group, now_ms());
    exists(found, ErrorCode::UserNotInGroup, "The user in the group")
}

// ----- groups -----

pub(super) async fn send_to_group(
    State(shared): Ctx,
    call: RestCall,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let group = call.group()?.to_string();
    let excluded = call.query.excluded.clone();
    send(
        &shared,
        call,
        Recipients::Group { group, excluded },
        headers,
        body,
    )
    .await
}

pub(super) async fn group_exists(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let group = call.group()?;
    let found = scatter::group_exists(&shared, &call.hub, &group).await;
    exists(found, ErrorCode::GroupNotExisted, "The group")
}

pub(super) async fn close_group(State(shared): Ctx, call: RestCall) -> ApiResult<StatusCode> {
    let group = call.group()?.to_string();
    let excluded = call.query.excluded.clone();
    close(&shared, call, Recipients::Group { group, excluded }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Largest and default page of the listings (`GET .../groups/{group}/connections` and the
/// Switchboard extensions).
const MAX_PAGE_SIZE: usize = 200;

fn parse_count(
    value: Option<&str>,
    name: &str,
    range: std::ops::RangeInclusive<usize>,
) -> ApiResult<Option<usize>> {
    match value {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError(
                Error::invalid(format!(
                    "{name} must be a whole number between {} and {}.",
                    range.start(),
                    range.end()
                ))
                .with_target(name),
            )),
        },
    }
}

/// The paging of a listing, as the 2024-12-01 group listing defines it: `maxpagesize` items
/// per page (at most [`MAX_PAGE_SIZE`]), `top` items in all, and a `continuationToken` (the
/// last key of the previous page, opaque to the caller) in each page's `nextLink`.
struct Paging {
    page_size: usize,
    top: Option<usize>,
    after: Option<String>,
}

impl Paging {
    fn parse(call: &RestCall) -> ApiResult<Paging> {
        let page_size = parse_count(
            call.query.max_page_size.as_deref(),
            "maxpagesize",
            1..=MAX_PAGE_SIZE,
        )?
        .unwrap_or(MAX_PAGE_SIZE);
        let top = parse_count(call.query.top.as_deref(), "top", 1..=usize::MAX)?;
        let after = match call.query.continuation_token.as_deref() {
            None | Some("") => None,
            Some(token) => {
                let raw = URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                Some(raw.ok_or_else(|| {
                    ApiError(
                        Error::invalid("The continuationToken is not one this service issued.")
                            .with_target("continuationToken"),
                    )
                })?)
            }
        };
        Ok(Paging {
            page_size,
            top,
            after,
        })
    }

    fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// Items on this page.
    fn limit(&self) -> usize {
        self.top.map_or(self.page_size, |t| t.min(self.page_size))
    }

    /// How many to fetch: one more than fits tells whether there is a next page.
    fn fetch(&self) -> usize {
        self.limit() + 1
    }

    /// The page's body from at most [`Paging::fetch`] items in key order: `value`, and
    /// `nextLink` when more remain (and `top` allows more).
    fn respond<T>(
        &self,
        call: &RestCall,
        mut items: Vec<T>,
        key: impl Fn(&T) -> &str,
        item: impl Fn(&T) -> serde_json::Value,
    ) -> Response {
        let limit = self.limit();
        let more = items.len() > limit;
        items.truncate(limit);
        let remaining = self.top.map(|t| t - items.len());
        let next_link = match (more, remaining, items.last()) {
            (true, None, Some(last)) | (true, Some(1..), Some(last)) => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                if let Some(app) = &call.query.application {
                    query.append_pair("application", app);
                }
                if let Some(r) = remaining {
                    query.append_pair("top", &r.to_string());
                }
                query.append_pair("maxpagesize", &self.page_size.to_string());
                query.append_pair(
                    "continuationToken",
                    &URL_SAFE_NO_PAD.encode(key(last).as_bytes()),
                );
                if let Some(v) = &call.query.api_version {
                    query.append_pair("api-version", v);
                }
                Some(format!("{}{}?{}", call.base_url, call.path, query.finish()))
            }
            _ => None,
        };
        let value: Vec<serde_json::Value> = items.iter().map(item).collect();
        let mut body = json!({ "value": value });
        if let Some(link) = next_link {
            body["nextLink"] = json!(link);
        }
        Json(body).into_response()
    }
}

fn connection_item(connection: &str, user: Option<&str>) -> serde_json::Value {
    match user {
        Some(user) => json!({ "connectionId": connection, "userId": user }),
        None => json!({ "connectionId": connection }),
    }
}

pub(super) async fn list_group_connections(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<Response> {
    let group = call.group()?;
    let paging = Paging::parse(&call)?;
    let page =
        scatter::group_page(&shared, &call.hub, &group, paging.after(), paging.fetch()).await;
    Ok(paging.respond(
        &call,
        page,
        |(c, _)| c,
        |(c, u)| connection_item(c, u.as_deref()),
    ))
}

/// A connection listing of every gateway (the Switchboard extensions).
async fn list_connections(
    shared: &Shared,
    call: &RestCall,
    kind: scatter::ListingKind,
    subject: &str,
) -> ApiResult<Response> {
    let paging = Paging::parse(call)?;
    let listing = scatter::list(
        shared,
        &call.hub,
        kind,
        subject,
        paging.after(),
        paging.fetch(),
    )
    .await
    .complete()?;
    Ok(paging.respond(
        call,
        listing.items,
        |l| &l.key,
        |l| connection_item(&l.key, l.user.as_deref()),
    ))
}

/// `GET /api/hubs/{hub}/connections` (extension): the hub's connections on every gateway.
pub(super) async fn list_hub_connections(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<Response> {
    list_connections(&shared, &call, scatter::ListingKind::HubConnections, "").await
}

/// `GET /api/hubs/{hub}/users/{user}/connections` (extension).
pub(super) async fn list_user_connections(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<Response> {
    let user = call.user()?;
    list_connections(&shared, &call, scatter::ListingKind::UserConnections, &user).await
}

/// `GET /api/hubs/{hub}/connections/{connection}/groups` (extension): 404 when no gateway
/// holds the connection, 503 when none answered that it does and one did not answer.
pub(super) async fn list_connection_groups(
    State(shared): Ctx,
    call: RestCall,
) -> ApiResult<Response> {
    let connection = call.connection()?;
    let paging = Paging::parse(&call)?;
    let listing = scatter::list(
        &shared,
        &call.hub,
        scatter::ListingKind::ConnectionGroups,
        &connection,
        paging.after(),
        paging.fetch(),
    )
    .await
    .connection_found()?;
    if !listing.found {
        return Err(ApiError::new(
            ErrorCode::ConnectionNotExisted,
            "The connection does not exist.",
        ));
    }
    Ok(paging.respond(
        &call,
        listing.items,
        |l| &l.key,
        |l| json!({ "group": l.key.as_ref() }),
    ))
}

/// `GET /api/hubs/{hub}/users/{user}/groups` (extension): the user's stored user-group
/// entries that have not expired, with each one's expiry, from the store.
pub(super) async fn list_user_groups(State(shared): Ctx, call: RestCall) -> ApiResult<Response> {
    let user = call.user()?;
    let paging = Paging::parse(&call)?;
    shared.sync_view().await;
    let entries: Vec<_> = shared
        .store
        .view()
        .read()
        .user_groups(&call.hub, &user, now_ms())
        .into_iter()
        .filter(|e| paging.after().is_none_or(|a| &*e.group > a))
        .take(paging.fetch())
        .collect();
    Ok(paging.respond(&call, entries, |e| &e.group, user_group_item))
}

fn user_group_item(entry: &switchboard_membership::UserGroupInfo) -> serde_json::Value {
    let ms = entry.expires_at_ms;
    let expires = switchboard_protocol::value::rfc3339_utc(
        i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        (ms % 1000) as u32 * 1_000_000,
    );
    json!({
        "group": entry.group.as_ref(),
        "expiresAt": expires,
        "countsTowardLimit": entry.counts_toward_cap,
    })
}
