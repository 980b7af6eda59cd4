//! Audience (`aud`) rules and user-id resolution for verified access tokens.
//!
//! The SDKs and samples disagree on the exact `aud` string (the .NET SDK drops the port and adds
//! `?api-version=...`, the docs drop the query, the JS sample keeps the port), so the check is
//! lenient about everything but what names the resource: scheme, host, port, trailing slash and
//! unrelated query parameters are ignored. What must match:
//! - the path, compared case-insensitively after percent-decoding everything but `%2F`, `%3F`,
//!   `%23` and `%25` (so an encoded `/` inside a name can never make a token for
//!   `users/u/groups/g` open `users/u%2Fgroups%2Fg`, a different resource);
//! - for REST, the `application` query parameter: the one in the `aud` (the .NET SDK puts it
//!   there) must equal the request's, and an `aud` without one opens only requests without one;
//! - for clients, the `hub` query parameter (which carries the application prefix).
//!
//! So a client token (`/client/?hub=...`) can never call the REST API, and a REST token opens only
//! the one path of the one application it names.

use serde_json::Value;

use crate::error::{shorten, AuthError};
use crate::jwt::Claims;
use crate::uri::{normalize_path, path_and_query, query_values};

/// What a request needs the token's audience to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// REST: the aud's path must equal the request path (e.g. `/api/v1/hubs/chat/users/u1` or
    /// `/api/hubs/chat/:send`), and its `application` parameter the request's. Pass the raw
    /// (still percent-encoded) request path; a query part, if included, is ignored.
    Rest {
        /// The request path, as received.
        path: &'a str,
        /// The request's `application` query parameter, if it has one.
        application: Option<&'a str>,
    },
    /// Client connection or negotiate: the aud's path must be `/client` (trailing slash optional)
    /// and its `hub` query parameter must equal `hub` (case-insensitive; `hub` carries the
    /// application prefix, `app_hub`, when there is one).
    Client {
        /// The (possibly application-prefixed) hub.
        hub: &'a str,
    },
    /// App-server connection (service protocol): like `Client` but with path `/server`.
    Server {
        /// The (possibly application-prefixed) hub.
        hub: &'a str,
    },
}

impl Audience<'_> {
    /// A readable form of what is expected, for error messages.
    fn describe(&self) -> String {
        match self {
            Audience::Rest { path, application } => {
                let p = normalize_path(path);
                let p = if p.is_empty() { "/".to_string() } else { p };
                match application {
                    Some(app) => format!("{p}?application={}", app.to_lowercase()),
                    None => p,
                }
            }
            Audience::Client { hub } => format!("/client/?hub={}", hub.to_lowercase()),
            Audience::Server { hub } => format!("/server/?hub={}", hub.to_lowercase()),
        }
    }

    /// Whether one `aud` value satisfies this audience.
    fn matches(&self, aud: &str) -> bool {
        let Some((aud_path, aud_query)) = path_and_query(aud) else {
            return false;
        };
        let aud_path = normalize_path(aud_path);
        let (want_path, hub) = match self {
            Audience::Rest { path, application } => {
                if aud_path != normalize_path(path) {
                    return false;
                }
                // At most one application parameter: a repeated one is ambiguous.
                return match (
                    query_values(aud_query, "application").as_slice(),
                    application,
                ) {
                    ([], None) => true,
                    ([only], Some(want)) => only.to_lowercase() == want.to_lowercase(),
                    _ => false,
                };
            }
            Audience::Client { hub } => ("/client", hub),
            Audience::Server { hub } => ("/server", hub),
        };
        if aud_path != want_path {
            return false;
        }
        // Exactly one hub parameter: a repeated one is ambiguous.
        match query_values(aud_query, "hub").as_slice() {
            [only] => only.to_lowercase() == hub.to_lowercase(),
            _ => false,
        }
    }
}

/// Checks the `aud` claim (required; a string or an array of which any element may match).
pub fn check_audience(claims: &Claims, expected: &Audience<'_>) -> Result<(), AuthError> {
    let values: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if values.is_empty() {
        return Err(AuthError::MissingAudience);
    }
    if values.iter().any(|aud| expected.matches(aud)) {
        return Ok(());
    }
    Err(AuthError::AudienceMismatch {
        expected: expected.describe(),
        found: shorten(&values.join(", "), 256),
    })
}

/// The first string of claim `name`: the claim itself if it is a string, else the first string in
/// it if it is an array (repeated claim types are merged into arrays).
pub fn claim_str<'c>(claims: &'c Claims, name: &str) -> Option<&'c str> {
    match claims.get(name)? {
        Value::String(s) => Some(s),
        Value::Array(items) => items.iter().find_map(Value::as_str),
        _ => None,
    }
}

/// The user id: `asrs.s.uid`, else `nameid`, else `sub` (an empty value counts as absent).
pub fn user_id(claims: &Claims) -> Option<String> {
    ["asrs.s.uid", "nameid", "sub"]
        .iter()
        .filter_map(|name| claim_str(claims, name))
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn aud(v: Value) -> Claims {
        let mut c = Claims::new();
        c.insert("aud".to_string(), v);
        c
    }

    fn rest_ok(a: &str, path: &str) -> bool {
        rest_app_ok(a, path, None)
    }

    fn rest_app_ok(a: &str, path: &str, application: Option<&str>) -> bool {
        check_audience(&aud(json!(a)), &Audience::Rest { path, application }).is_ok()
    }

    fn client_ok(a: &str, hub: &str) -> bool {
        check_audience(&aud(json!(a)), &Audience::Client { hub }).is_ok()
    }

    #[test]
    fn rest_forms_the_sdks_and_docs_produce() {
        let send = "/api/hubs/chat/:send";
        // .NET Management SDK: no port, api-version (and application) in the query.
        assert!(rest_ok(
            "https://sb.example.com/api/hubs/chat/:send?api-version=2022-06-01",
            send
        ));
        assert!(rest_app_ok(
            "http://localhost/api/hubs/chat/:send?application=x&api-version=2022-06-01",
            send,
            Some("X")
        ));
        // Docs: the request URL without trailing slash or query.
        assert!(rest_ok(
            "https://example.service.signalr.net/api/v1/hubs/myhub",
            "/api/v1/hubs/myhub"
        ));
        // JS sample: endpoint from the connection string, with port.
        assert!(rest_ok(
            "http://localhost:8080/api/v1/hubs/chat/users/u1",
            "/api/v1/hubs/chat/users/u1"
        ));
        // Trailing slash on either side, scheme and host ignored.
        assert!(rest_ok(
            "wss://other-host:1/api/v1/hubs/chat/",
            "/api/v1/hubs/chat"
        ));
        assert!(rest_ok("https://h/api/v1/hubs/chat", "/api/v1/hubs/chat/"));
        // A bare path is accepted too.
        assert!(rest_ok("/api/v1/hubs/chat", "/api/v1/hubs/chat"));
        // Case-insensitive.
        assert!(rest_ok("https://H/API/V1/Hubs/Chat", "/api/v1/hubs/chat"));
        // A query in the request path is ignored.
        assert!(rest_ok(
            "https://h/api/hubs/chat/:send",
            "/api/hubs/chat/:send?api-version=2024-12-01"
        ));
    }

    #[test]
    fn rest_paths_are_percent_decoded_within_segments() {
        // Uri.EscapeDataString in the SDK vs a request path encoded differently.
        let req = "/api/hubs/chat/users/a%20b/groups/g%2F1";
        assert!(rest_ok(
            "https://h/api/hubs/chat/users/a%20b/groups/g%2f1?api-version=2022-06-01",
            req
        ));
        assert!(rest_ok(
            "https://h/api/hubs/chat/users/a b/groups/g%2F1",
            req
        ));
        assert!(rest_ok(
            "https://h/api/hubs/chat/users/%C3%A9",
            "/api/hubs/chat/users/%c3%a9"
        ));
        assert!(rest_ok(
            "https://h/api/hubs/chat/users/%C3%89",
            "/api/hubs/chat/users/%c3%a9"
        ));
        assert!(rest_ok(
            "https://h/api/hubs/chat/users/%61",
            "/api/hubs/chat/users/a"
        ));
        assert!(!rest_ok("https://h/api/hubs/chat/users/a%20c", req));
    }

    #[test]
    fn an_encoded_slash_is_not_a_segment_boundary() {
        // A token for user u in group g does not open send-to-user "u/groups/g", nor back.
        assert!(!rest_ok(
            "https://h/api/hubs/chat/users/u/groups/g",
            "/api/hubs/chat/users/u%2Fgroups%2Fg"
        ));
        assert!(!rest_ok(
            "https://h/api/hubs/chat/users/u%2Fgroups%2Fg",
            "/api/hubs/chat/users/u/groups/g"
        ));
        assert!(!rest_ok(
            "https://h/api/hubs/chat/users/a%3Fb",
            "/api/hubs/chat/users/a?b"
        ));
        assert!(!rest_ok(
            "https://h/api/hubs/chat/users/a%2541",
            "/api/hubs/chat/users/aA"
        ));
        assert!(rest_ok(
            "https://h/api/hubs/chat/users/u%2fgroups%2fg",
            "/api/hubs/chat/users/u%2Fgroups%2Fg"
        ));
    }

    #[test]
    fn the_application_must_match() {
        let path = "/api/hubs/chat/:send";
        let app1 = "https://h/api/hubs/chat/:send?application=app1&api-version=2022-06-01";
        assert!(rest_app_ok(app1, path, Some("app1")));
        assert!(rest_app_ok(app1, path, Some("APP1")));
        assert!(!rest_app_ok(app1, path, Some("app2")));
        assert!(!rest_app_ok(app1, path, None));
        // No application in the aud opens only requests without one.
        assert!(!rest_app_ok(
            "https://h/api/hubs/chat/:send",
            path,
            Some("app1")
        ));
        // Repeated: ambiguous.
        assert!(!rest_app_ok(
            "https://h/api/hubs/chat/:send?application=app1&application=app1",
            path,
            Some("app1")
        ));
        let err = check_audience(
            &aud(json!(app1)),
            &Audience::Rest {
                path,
                application: Some("App2"),
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, AuthError::AudienceMismatch { expected, .. } if expected == "/api/hubs/chat/:send?application=app2"),
            "{err:?}"
        );
    }

    #[test]
    fn rest_negative_cases() {
        // A client token can never call REST.
        assert!(!rest_ok("https://h/client/?hub=chat", "/api/v1/hubs/chat"));
        // A REST token for another path.
        assert!(!rest_ok(
            "https://h/api/v1/hubs/chat/users/u1",
            "/api/v1/hubs/chat/users/u2"
        ));
        assert!(!rest_ok(
            "https://h/api/v1/hubs/chat",
            "/api/v1/hubs/chat/users/u1"
        ));
        assert!(!rest_ok("https://h/api/v1/hubs/other", "/api/v1/hubs/chat"));
        assert!(!rest_ok("https://h/api/hubs/chat", "/api/v1/hubs/chat"));
        // The path must be in the path, not in the query.
        assert!(!rest_ok(
            "https://h/?p=/api/v1/hubs/chat",
            "/api/v1/hubs/chat"
        ));
        // Not a URI and not a path.
        assert!(!rest_ok("h/api/v1/hubs/chat", "/api/v1/hubs/chat"));
        assert!(!rest_ok("", "/api/v1/hubs/chat"));
    }

    #[test]
    fn client_forms() {
        // .NET SDK: no port, prefixed and lower-cased hub.
        assert!(client_ok("https://sb.example.com/client/?hub=chat", "chat"));
        assert!(client_ok(
            "https://sb.example.com/client/?hub=app_chat",
            "App_Chat"
        ));
        // JS sample: with port.
        assert!(client_ok("http://localhost:8080/client/?hub=Chat", "chat"));
        // No trailing slash, other query parameters, encoded hub.
        assert!(client_ok("http://h/client?hub=chat", "chat"));
        assert!(client_ok(
            "http://h/client/?asrs.op=%2Fx&hub=chat&asrs_request_id=1",
            "chat"
        ));
        assert!(client_ok("http://h/client/?HUB=ch%5Bat%5D", "ch[at]"));
    }

    #[test]
    fn client_negative_cases() {
        // Another hub, or another application's hub.
        assert!(!client_ok("http://h/client/?hub=chat", "other"));
        assert!(!client_ok("http://h/client/?hub=app_chat", "chat"));
        assert!(!client_ok("http://h/client/?hub=chat", "app_chat"));
        // No hub, repeated hub, hub elsewhere.
        assert!(!client_ok("http://h/client/", "chat"));
        assert!(!client_ok("http://h/client/?hub=chat&hub=other", "chat"));
        assert!(!client_ok("http://h/client/?hub=chat&hub=chat", "chat"));
        assert!(!client_ok("http://h/client/x?hub=chat", "chat"));
        // A REST or server token is not a client token.
        assert!(!client_ok("http://h/api/v1/hubs/chat", "chat"));
        assert!(!client_ok("http://h/server/?hub=chat", "chat"));
    }

    #[test]
    fn server_audience() {
        let c = aud(json!("https://h/server/?hub=app_chat"));
        assert!(check_audience(&c, &Audience::Server { hub: "app_chat" }).is_ok());
        assert!(check_audience(&c, &Audience::Client { hub: "app_chat" }).is_err());
    }

    #[test]
    fn aud_arrays_match_any_element() {
        let c = aud(json!([
            "https://h/api/v1/hubs/chat",
            5,
            "https://h/client/?hub=chat"
        ]));
        assert!(check_audience(&c, &Audience::Client { hub: "chat" }).is_ok());
        assert!(check_audience(
            &c,
            &Audience::Rest {
                path: "/api/v1/hubs/chat",
                application: None,
            }
        )
        .is_ok());
        assert!(check_audience(&c, &Audience::Client { hub: "x" }).is_err());
    }

    #[test]
    fn aud_is_required() {
        for c in [
            Claims::new(),
            aud(json!(null)),
            aud(json!([])),
            aud(json!(42)),
            aud(json!([1])),
        ] {
            assert_eq!(
                check_audience(&c, &Audience::Client { hub: "chat" }),
                Err(AuthError::MissingAudience)
            );
        }
    }

    #[test]
    fn mismatch_names_both_sides() {
        let err = check_audience(
            &aud(json!("https://h/client/?hub=chat")),
            &Audience::Rest {
                path: "/api/v1/hubs/Chat/",
                application: None,
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            AuthError::AudienceMismatch {
                expected: "/api/v1/hubs/chat".to_string(),
                found: "https://h/client/?hub=chat".to_string(),
            }
        );
        let err = check_audience(
            &aud(json!("x".repeat(1000))),
            &Audience::Client { hub: "Chat" },
        )
        .unwrap_err();
        let AuthError::AudienceMismatch { expected, found } = err else {
            panic!("wrong error");
        };
        assert_eq!(expected, "/client/?hub=chat");
        assert!(found.len() < 300);
    }

    #[test]
    fn user_id_precedence() {
        let c = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        assert_eq!(
            user_id(&c(json!({"asrs.s.uid": "a", "nameid": "b", "sub": "c"}))),
            Some("a".to_string())
        );
        assert_eq!(
            user_id(&c(json!({"nameid": "b", "sub": "c"}))),
            Some("b".to_string())
        );
        assert_eq!(user_id(&c(json!({"sub": "c"}))), Some("c".to_string()));
        assert_eq!(
            user_id(&c(
                json!({"asrs.s.uid": "", "nameid": ["", "b2"], "sub": "c"})
            )),
            Some("c".to_string())
        );
        assert_eq!(
            user_id(&c(json!({"nameid": [1, "n1", "n2"]}))),
            Some("n1".to_string())
        );
        assert_eq!(user_id(&c(json!({"nameid": 5, "role": "x"}))), None);
        assert_eq!(user_id(&Claims::new()), None);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(a in ".{0,200}", path in ".{0,60}", hub in ".{0,20}") {
            let c = aud(json!(a));
            let _ = check_audience(&c, &Audience::Rest { path: &path, application: None });
            let _ = check_audience(&c, &Audience::Rest { path: &path, application: Some(&hub) });
            let _ = check_audience(&c, &Audience::Client { hub: &hub });
        }

        #[test]
        fn any_host_and_port_with_the_same_path_matches(
            scheme in "(http|https|ws|wss)",
            host in "[a-z0-9.-]{1,20}",
            port in proptest::option::of(1u16..),
            segments in proptest::collection::vec("[A-Za-z0-9 _%/:.-]{1,12}", 1..5),
            query in proptest::option::of("[a-z-]{1,10}=[0-9-]{1,10}"),
        ) {
            let path: String = segments.iter().map(|s| format!("/{}", crate::uri::percent_encode(s))).collect();
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            let a = format!("{scheme}://{host}{port}{path}{query}");
            prop_assert!(rest_ok(&a, &path));
            prop_assert!(rest_ok(&a, &path.to_uppercase()));
            let longer = format!("{path}/extra");
            prop_assert!(!rest_ok(&a, &longer));
        }

        #[test]
        fn client_hub_must_match(hub in "[A-Za-z][A-Za-z0-9_`,.\\[\\]]{0,20}", other in "[A-Za-z][A-Za-z0-9_]{0,20}") {
            let a = format!("https://h/client/?hub={}", crate::uri::percent_encode(&hub));
            prop_assert!(client_ok(&a, &hub));
            prop_assert_eq!(client_ok(&a, &other), hub.to_lowercase() == other.to_lowercase());
        }
    }
}
