//! The REST API as one table of operations: the router is built from it ([`super::routes`]) and
//! so is the OpenAPI 3.1 document served at `/api/openapi.json` ([`document`]). An operation
//! cannot be served without being documented, nor documented without being served, and its
//! documented statuses come from the same entry as the handler that answers them.
//!
//! Each operation is registered twice, under the legacy surface (`/api/v1`, no `api-version`)
//! and the versioned one (`/api`, `api-version` required); where the two answer with different
//! success statuses the entry names both. The errors every operation can answer (bad input,
//! a token that does not prove a key, the edge's limits, a store that cannot be reached) are
//! documented on every operation, each with the `ErrorDetail` body; `404`s carry the
//! `x-ms-error-code` header the server SDK needs.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, post, put, MethodRouter};
use serde_json::{json, Map, Value};
use switchboard_core::ErrorCode;

use super::{handlers, API_VERSIONS};
use crate::Shared;

/// An HTTP method of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Head,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Head => "head",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }
}

/// A query parameter an operation takes (beyond `api-version` and `application`, which every
/// operation takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    Excluded,
    Reason,
    Ttl,
    MaxPageSize,
    Top,
    ContinuationToken,
    UserId,
    MinutesToExpire,
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Nothing,
    Token,
    Connections,
    Groups,
    UserGroups,
}

/// One operation of the REST API.
pub(crate) struct Operation {
    pub(crate) verb: Verb,
    /// The path below the surface's prefix (`/hubs/{hub}/...`).
    pub(crate) path: &'static str,
    pub(crate) id: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) tag: &'static str,
    pub(crate) query: &'static [Query],
    /// Takes a message body (a send).
    pub(crate) body: bool,
    /// The success status on `/api/v1` and on `/api`.
    pub(crate) ok: (u16, u16),
    pub(crate) answer: Answer,
    /// The "does not exist" the operation answers with, if any (404).
    pub(crate) missing: Option<ErrorCode>,
    /// Writes to the store (and so may answer 503 or 504 when it cannot be reached).
    pub(crate) writes: bool,
    /// The first `api-version` that defines it, or `None` for a Switchboard extension.
    pub(crate) since: Option<&'static str>,
    pub(crate) handler: fn() -> MethodRouter<Arc<Shared>>,
}

const PAGING: &[Query] = &[Query::MaxPageSize, Query::Top, Query::ContinuationToken];
const SEND: &[Query] = &[Query::Excluded];
const CLOSE: &[Query] = &[Query::Excluded, Query::Reason];

/// Every REST operation. Order is the document's.
pub(crate) fn operations() -> &'static [Operation] {
    use handlers::*;
    use ErrorCode as E;
    const V1: Option<&str> = Some("2022-06-01");
    static OPERATIONS: OnceLock<Vec<Operation>> = OnceLock::new();
    let op = |verb, path, id, summary, tag, handler| Operation {
        verb,
        path,
        id,
        summary,
        tag,
        query: &[],
        body: false,
        ok: (200, 200),
        answer: Answer::Nothing,
        missing: None,
        writes: false,
        since: V1,
        handler,
    };
    OPERATIONS.get_or_init(|| {
        vec![
            // ----- hub -----
            Operation {
                query: SEND,
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}", "broadcast", "Send a message to every connection of the hub.", "Hub", || post(broadcast))
            },
            Operation {
                query: SEND,
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/:send", "broadcastSend", "Send a message to every connection of the hub.", "Hub", || post(broadcast))
            },
            Operation {
                query: CLOSE,
                ok: (204, 204),
                ..op(Verb::Post, "/hubs/{hub}/:closeConnections", "closeHubConnections", "Close every connection of the hub.", "Hub", || post(close_hub))
            },
            Operation {
                query: &[Query::UserId, Query::MinutesToExpire],
                answer: Answer::Token,
                since: Some("2022-11-01"),
                ..op(Verb::Post, "/hubs/{hub}/:generateToken", "generateClientToken", "Mint a client access token for the hub.", "Hub", || post(generate_token))
            },
            // ----- connections -----
            Operation {
                query: PAGING,
                answer: Answer::Connections,
                since: None,
                ..op(Verb::Get, "/hubs/{hub}/connections", "listHubConnections", "List the hub's connections on every gateway, by id.", "Switchboard extensions", || get(list_hub_connections))
            },
            Operation {
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/connections/{connectionId}", "sendToConnection", "Send a message to one connection.", "Connections", || post(send_to_connection))
            },
            Operation {
                missing: Some(E::ConnectionNotExisted),
                ..op(Verb::Get, "/hubs/{hub}/connections/{connectionId}", "connectionExists", "Whether the connection exists.", "Connections", || get(connection_exists))
            },
            Operation {
                missing: Some(E::ConnectionNotExisted),
                ..op(Verb::Head, "/hubs/{hub}/connections/{connectionId}", "connectionExistsHead", "Whether the connection exists.", "Connections", || head(connection_exists))
            },
            Operation {
                query: &[Query::Reason],
                ok: (202, 200),
                missing: Some(E::ConnectionNotExisted),
                ..op(Verb::Delete, "/hubs/{hub}/connections/{connectionId}", "closeConnection", "Close the connection (the versioned surface answers 404 when it does not exist).", "Connections", || delete(close_connection))
            },
            Operation {
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/connections/{connectionId}/:send", "sendToConnectionSend", "Send a message to one connection.", "Connections", || post(send_to_connection))
            },
            Operation {
                ..op(Verb::Delete, "/hubs/{hub}/connections/{connectionId}/groups", "removeConnectionFromAllGroups", "Remove the connection from every group.", "Connections", || delete(remove_connection_from_all_groups))
            },
            Operation {
                query: PAGING,
                answer: Answer::Groups,
                missing: Some(E::ConnectionNotExisted),
                since: None,
                ..op(Verb::Get, "/hubs/{hub}/connections/{connectionId}/groups", "listConnectionGroups", "List the connection's groups, by name.", "Switchboard extensions", || get(list_connection_groups))
            },
            Operation {
                missing: Some(E::ConnectionNotExistedError),
                ..op(Verb::Put, "/hubs/{hub}/connections/{connectionId}/groups/{group}", "addConnectionToGroupByConnection", "Add the connection to the group.", "Connections", || put(add_connection_to_group))
            },
            Operation {
                missing: Some(E::ConnectionNotExisted),
                ..op(Verb::Delete, "/hubs/{hub}/connections/{connectionId}/groups/{group}", "removeConnectionFromGroupByConnection", "Remove the connection from the group.", "Connections", || delete(remove_connection_from_group))
            },
            // ----- users -----
            Operation {
                query: SEND,
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/users/{user}", "sendToUser", "Send a message to every connection of the user.", "Users", || post(send_to_user))
            },
            Operation {
                missing: Some(E::UserNotExisted),
                ..op(Verb::Get, "/hubs/{hub}/users/{user}", "userExists", "Whether the user has a connection.", "Users", || get(user_exists))
            },
            Operation {
                missing: Some(E::UserNotExisted),
                ..op(Verb::Head, "/hubs/{hub}/users/{user}", "userExistsHead", "Whether the user has a connection.", "Users", || head(user_exists))
            },
            Operation {
                query: SEND,
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/users/{user}/:send", "sendToUserSend", "Send a message to every connection of the user.", "Users", || post(send_to_user))
            },
            Operation {
                query: CLOSE,
                ok: (204, 204),
                ..op(Verb::Post, "/hubs/{hub}/users/{user}/:closeConnections", "closeUserConnections", "Close every connection of the user.", "Users", || post(close_user))
            },
            Operation {
                query: PAGING,
                answer: Answer::Connections,
                since: None,
                ..op(Verb::Get, "/hubs/{hub}/users/{user}/connections", "listUserConnections", "List the user's connections on every gateway, by id.", "Switchboard extensions", || get(list_user_connections))
            },
            Operation {
                ok: (200, 204),
                writes: true,
                ..op(Verb::Delete, "/hubs/{hub}/users/{user}/groups", "removeUserFromAllGroups", "Remove the user from every group.", "Users", || delete(remove_user_from_all_groups))
            },
            Operation {
                query: PAGING,
                answer: Answer::UserGroups,
                since: None,
                ..op(Verb::Get, "/hubs/{hub}/users/{user}/groups", "listUserGroups", "List the user's stored groups with their expiry, by name.", "Switchboard extensions", || get(list_user_groups))
            },
            Operation {
                query: &[Query::Ttl],
                ok: (202, 200),
                writes: true,
                ..op(Verb::Put, "/hubs/{hub}/users/{user}/groups/{group}", "addUserToGroupByUser", "Add the user to the group (a year without ttl; ttl=0: only the current connections).", "Users", || put(add_user_to_group))
            },
            Operation {
                ok: (202, 204),
                writes: true,
                ..op(Verb::Delete, "/hubs/{hub}/users/{user}/groups/{group}", "removeUserFromGroupByUser", "Remove the user from the group.", "Users", || delete(remove_user_from_group))
            },
            Operation {
                missing: Some(E::UserNotInGroup),
                ..op(Verb::Get, "/hubs/{hub}/users/{user}/groups/{group}", "userInGroupByUser", "Whether the user has a stored entry for the group.", "Users", || get(user_in_group))
            },
            Operation {
                missing: Some(E::UserNotInGroup),
                ..op(Verb::Head, "/hubs/{hub}/users/{user}/groups/{group}", "userInGroupByUserHead", "Whether the user has a stored entry for the group.", "Users", || head(user_in_group))
            },
            // ----- groups -----
            Operation {
                query: SEND,
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/groups/{group}", "sendToGroup", "Send a message to every connection in the group.", "Groups", || post(send_to_group))
            },
            Operation {
                missing: Some(E::GroupNotExisted),
                ..op(Verb::Get, "/hubs/{hub}/groups/{group}", "groupExists", "Whether the group has a connection.", "Groups", || get(group_exists))
            },
            Operation {
                missing: Some(E::GroupNotExisted),
                ..op(Verb::Head, "/hubs/{hub}/groups/{group}", "groupExistsHead", "Whether the group has a connection.", "Groups", || head(group_exists))
            },
            Operation {
                query: SEND,
                body: true,
                ok: (202, 202),
                ..op(Verb::Post, "/hubs/{hub}/groups/{group}/:send", "sendToGroupSend", "Send a message to every connection in the group.", "Groups", || post(send_to_group))
            },
            Operation {
                query: CLOSE,
                ok: (204, 204),
                ..op(Verb::Post, "/hubs/{hub}/groups/{group}/:closeConnections", "closeGroupConnections", "Close every connection in the group.", "Groups", || post(close_group))
            },
            Operation {
                query: PAGING,
                answer: Answer::Connections,
                since: Some("2024-12-01"),
                ..op(Verb::Get, "/hubs/{hub}/groups/{group}/connections", "listGroupConnections", "List the group's connections on every gateway, by id.", "Groups", || get(list_group_connections))
            },
            Operation {
                missing: Some(E::ConnectionNotExistedError),
                ..op(Verb::Put, "/hubs/{hub}/groups/{group}/connections/{connectionId}", "addConnectionToGroup", "Add the connection to the group.", "Groups", || put(add_connection_to_group))
            },
            Operation {
                missing: Some(E::ConnectionNotExisted),
                ..op(Verb::Delete, "/hubs/{hub}/groups/{group}/connections/{connectionId}", "removeConnectionFromGroup", "Remove the connection from the group.", "Groups", || delete(remove_connection_from_group))
            },
            Operation {
                query: &[Query::Ttl],
                ok: (202, 200),
                writes: true,
                ..op(Verb::Put, "/hubs/{hub}/groups/{group}/users/{user}", "addUserToGroup", "Add the user to the group (a year without ttl; ttl=0: only the current connections).", "Groups", || put(add_user_to_group))
            },
            Operation {
                ok: (202, 204),
                writes: true,
                ..op(Verb::Delete, "/hubs/{hub}/groups/{group}/users/{user}", "removeUserFromGroup", "Remove the user from the group.", "Groups", || delete(remove_user_from_group))
            },
            Operation {
                missing: Some(E::UserNotInGroup),
                ..op(Verb::Get, "/hubs/{hub}/groups/{group}/users/{user}", "userInGroup", "Whether the user has a stored entry for the group.", "Groups", || get(user_in_group))
            },
            Operation {
                missing: Some(E::UserNotInGroup),
                ..op(Verb::Head, "/hubs/{hub}/groups/{group}/users/{user}", "userInGroupHead", "Whether the user has a stored entry for the group.", "Groups", || head(user_in_group))
            },
        ]
    })
}

/// The OpenAPI document, built once.
pub(crate) fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// `GET /api/openapi.json`.
pub(crate) async fn serve_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::Json(document()),
    )
        .into_response()
}

/// The hub and application name rule (`names::hub`).
const HUB_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}$";

fn path_parameter(name: &str) -> Value {
    let schema = match name {
        "hub" => json!({ "type": "string", "pattern": HUB_PATTERN }),
        "group" => json!({ "type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"\S" }),
        "user" | "connectionId" => json!({ "type": "string", "minLength": 1, "maxLength": 1024 }),
        _ => json!({ "type": "string" }),
    };
    let description = match name {
        "hub" => "The hub (case-insensitive).",
        "group" => "The group: 1 to 1024 characters, not all white space.",
        "user" => "The user id.",
        "connectionId" => "The connection id.",
        _ => "",
    };
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

fn query_parameter(query: Query) -> Value {
    let (name, description, schema) = match query {
        Query::Excluded => (
            "excluded",
            "Connection ids not to send to (repeatable).",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        Query::Reason => (
            "reason",
            "The reason the clients are told.",
            json!({ "type": "string" }),
        ),
        Query::Ttl => (
            "ttl",
            "Seconds the user stays in the group (0: only the user's current connections join).",
            json!({ "type": "integer", "minimum": 0, "maximum": i32::MAX }),
        ),
        Query::MaxPageSize => (
            "maxpagesize",
            "Items per page.",
            json!({ "type": "integer", "minimum": 1, "maximum": 200, "default": 200 }),
        ),
        Query::Top => (
            "top",
            "Items in all, over every page.",
            json!({ "type": "integer", "minimum": 1 }),
        ),
        Query::ContinuationToken => (
            "continuationToken",
            "Where the next page starts (from the previous page's nextLink).",
            json!({ "type": "string" }),
        ),
        Query::UserId => (
            "userId",
            "The user the token names.",
            json!({ "type": "string", "minLength": 1, "maxLength": 1024 }),
        ),
        Query::MinutesToExpire => (
            "minutesToExpire",
            "The token's lifetime in minutes.",
            json!({ "type": "integer", "minimum": 1, "maximum": 525_600, "default": 60 }),
        ),
    };
    let mut p = json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema });
    if query == Query::Excluded {
        p["style"] = json!("form");
        p["explode"] = json!(true);
    }
    p
}

fn error_response(description: &str, with_code_header: bool) -> Value {
    let mut r = json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorDetail" } } },
    });
    if with_code_header {
        r["headers"] = json!({ "x-ms-error-code": { "$ref": "#/components/headers/ErrorCode" } });
    }
    r
}

fn success_response(status: u16, answer: Answer, verb: Verb) -> Value {
    let schema = match answer {
        Answer::Nothing => None,
        Answer::Token => Some("TokenResponse"),
        Answer::Connections => Some("ConnectionPage"),
        Answer::Groups => Some("GroupPage"),
        Answer::UserGroups => Some("UserGroupPage"),
    };
    let description = match status {
        200 => "Done.",
        202 => "Accepted: routed to every gateway that may hold a recipient.",
        204 => "Done; no content.",
        _ => "Success.",
    };
    match schema {
        Some(name) if verb != Verb::Head => json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } },
        }),
        _ => json!({ "description": description }),
    }
}

fn operation(op: &Operation, versioned: bool) -> Value {
    let mut parameters: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(path_parameter)
        .collect();
    if versioned {
        parameters.push(json!({
            "name": "api-version", "in": "query", "required": true,
            "description": "The API version.",
            "schema": { "type": "string", "enum": API_VERSIONS },
        }));
    }
    parameters.push(json!({
        "name": "application", "in": "query", "required": false,
        "description": "Prefixes the hub (`application_hub`).",
        "schema": { "type": "string", "pattern": HUB_PATTERN },
    }));
    parameters.extend(op.query.iter().copied().map(query_parameter));

    let ok = if versioned { op.ok.1 } else { op.ok.0 };
    let mut responses = Map::new();
    responses.insert(ok.to_string(), success_response(ok, op.answer, op.verb));
    let head = op.verb == Verb::Head;
    let error = |description: &str, header: bool| {
        if head {
            let mut r = json!({ "description": description });
            if header {
                r["headers"] =
                    json!({ "x-ms-error-code": { "$ref": "#/components/headers/ErrorCode" } });
            }
            r
        } else {
            error_response(description, header)
        }
    };
    responses.insert(
        "400".into(),
        error("A name, a parameter or the body is not valid.", false),
    );
    responses.insert(
        "401".into(),
        error(
            "No token, or one that no access key signed for this path.",
            false,
        ),
    );
    let deletes_missing = op.verb == Verb::Delete && op.ok.0 != op.ok.1;
    if let Some(code) = op.missing {
        if versioned || !deletes_missing {
            let header = code.x_ms_error_code().unwrap_or_default();
            responses.insert(
                "404".into(),
                error(
                    &format!("Does not exist (`x-ms-error-code: {header}`)."),
                    true,
                ),
            );
        }
    }
    responses.insert(
        "408".into(),
        error("The request was not received in time.", false),
    );
    if op.body {
        responses.insert("413".into(), error("The body is over 1 MB.", false));
    }
    responses.insert("414".into(), error("The request line is too long.", false));
    responses.insert("431".into(), error("The headers are too large.", false));
    let unavailable = if op.writes {
        "The store cannot take the write now (retry)."
    } else {
        "Not every gateway could be asked, or the store cannot be read now (retry)."
    };
    responses.insert(
        "500".into(),
        error("Something failed inside the service (see its log).", false),
    );
    responses.insert("503".into(), error(unavailable, false));
    if op.writes {
        responses.insert(
            "504".into(),
            error(
                "The store did not confirm the write in time; it may still apply.",
                false,
            ),
        );
    }

    let mut description = match op.since {
        Some(v) => format!("Defined since api-version {v}."),
        None => "A Switchboard extension (not in Azure SignalR Service).".to_owned(),
    };
    if !versioned {
        description.push_str(" Legacy surface: no api-version.");
    }
    let mut out = json!({
        "operationId": if versioned { op.id.to_owned() } else { format!("{}V1", op.id) },
        "summary": op.summary,
        "description": description,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": responses,
    });
    if op.body {
        out["requestBody"] = json!({
            "required": true,
            "content": {
                "application/json": { "schema": { "$ref": "#/components/schemas/PayloadMessage" } },
                "application/octet-stream": {
                    "schema": { "type": "string", "contentMediaType": "application/octet-stream" },
                },
            },
        });
    }
    out
}

fn build() -> Value {
    let mut paths = Map::new();
    for (prefix, versioned) in [("/api", true), ("/api/v1", false)] {
        for op in operations() {
            let path = format!("{prefix}{}", op.path);
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            entry[op.verb.as_str()] = operation(op, versioned);
        }
    }
    let health = json!({
        "operationId": "health",
        "summary": "Liveness: 200 while the process serves.",
        "tags": ["Health"],
        "security": [],
        "responses": { "200": { "description": "Alive." } },
    });
    let mut head_health = health.clone();
    head_health["operationId"] = json!("healthHead");
    paths.insert(
        "/api/health".into(),
        json!({ "get": health, "head": head_health }),
    );
    paths.insert(
        "/api/openapi.json".into(),
        json!({
            "get": {
                "operationId": "openApiDocument",
                "summary": "This document.",
                "tags": ["Health"],
                "security": [],
                "responses": { "200": {
                    "description": "The OpenAPI 3.1 document of the REST API.",
                    "content": { "application/json": { "schema": { "type": "object" } } },
                } },
            }
        }),
    );

    let codes: Vec<&str> = ErrorCode::ALL
        .iter()
        .filter_map(|c| c.x_ms_error_code())
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The data-plane REST API of Azure SignalR Service as Switchboard serves it: \
                the legacy surface (/api/v1) and the versioned one (/api, api-version), plus \
                Switchboard's membership queries (tagged 'Switchboard extensions'). Every call \
                needs a JWT signed (HS256 or HS512) with an access key whose audience is the \
                request URL (scheme, host, port and query are ignored).",
            "license": { "name": "MIT", "identifier": "MIT" },
        },
        "servers": [{ "url": "/" }],
        "security": [{ "AccessKeyToken": [] }],
        "tags": [
            { "name": "Hub" }, { "name": "Connections" }, { "name": "Users" },
            { "name": "Groups" },
            { "name": "Switchboard extensions", "description": "Membership queries beyond Azure SignalR Service, answered for the whole cluster." },
            { "name": "Health" },
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "AccessKeyToken": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A JWT signed with an access key, audience = the request URL.",
                },
            },
            "headers": {
                "ErrorCode": {
                    "description": "What does not exist.",
                    "schema": { "type": "string", "enum": codes },
                },
            },
            "schemas": {
                "ErrorDetail": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "target": { "type": "string" },
                    },
                },
                "PayloadMessage": {
                    "type": "object",
                    "description": "A hub method invocation (field names in any letter case).",
                    "required": ["target"],
                    "properties": {
                        "target": { "type": "string", "minLength": 1 },
                        "arguments": { "type": "array" },
                    },
                },
                "TokenResponse": {
                    "type": "object",
                    "required": ["token"],
                    "properties": { "token": { "type": "string" } },
                },
                "ConnectionPage": page_schema(json!({
                    "type": "object",
                    "required": ["connectionId"],
                    "properties": {
                        "connectionId": { "type": "string" },
                        "userId": { "type": "string" },
                    },
                })),
                "GroupPage": page_schema(json!({
                    "type": "object",
                    "required": ["group"],
                    "properties": { "group": { "type": "string" } },
                })),
                "UserGroupPage": page_schema(json!({
                    "type": "object",
                    "required": ["group", "expiresAt", "countsTowardLimit"],
                    "properties": {
                        "group": { "type": "string" },
                        "expiresAt": { "type": "string", "format": "date-time" },
                        "countsTowardLimit": {
                            "type": "boolean",
                            "description": "Added without a TTL: one of the user's 100 capped groups.",
                        },
                    },
                })),
            },
        },
    })
}

fn page_schema(item: Value) -> Value {
    json!({
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": { "type": "array", "items": item },
            "nextLink": { "type": "string", "description": "The next page, when there is one." },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_documented_once_on_each_surface() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut ids = std::collections::HashSet::new();
        for op in operations() {
            for (prefix, suffix) in [("/api", ""), ("/api/v1", "V1")] {
                let entry = &paths[&format!("{prefix}{}", op.path)][op.verb.as_str()];
                assert_eq!(entry["operationId"], json!(format!("{}{suffix}", op.id)));
                assert!(ids.insert(format!("{}{suffix}", op.id)), "{} twice", op.id);
                let params = entry["parameters"].as_array().expect("parameters");
                for segment in op.path.split('/') {
                    if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    {
                        assert!(
                            params
                                .iter()
                                .any(|p| p["name"] == json!(name) && p["in"] == json!("path")),
                            "{} documents {name}",
                            op.id
                        );
                    }
                }
                let has_version = params.iter().any(|p| p["name"] == json!("api-version"));
                assert_eq!(has_version, suffix.is_empty(), "{}", op.id);
            }
        }
        let operations_in_doc: usize = paths
            .values()
            .map(|p| p.as_object().map_or(0, Map::len))
            .sum();
        assert_eq!(operations_in_doc, operations().len() * 2 + 3);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut stack = vec![doc];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("a local reference");
                        assert!(doc.pointer(pointer).is_some(), "{r} resolves");
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
    }
}
