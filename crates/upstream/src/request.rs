//! What is sent to the upstream for one event of one connection.
//!
//! The headers that describe the connection (`X-ASRS-Connection-Id`, `-Hub`, `-User-Id`,
//! `-User-Claims`, `-Client-Query`, `-Signature`) are the same for every event of it, so they
//! are computed once when the connection opens ([`Connection::new`]); an event adds only
//! `X-ASRS-Category` and `X-ASRS-Event` and its body.
//!
//! Every header value is made safe here: control characters (CR and LF above all: a claim or a
//! method name must never start a header of its own) are replaced by `?`. Bytes above ASCII are
//! kept as UTF-8, which HTTP carries as opaque octets.

use std::borrow::Cow;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use switchboard_protocol::Protocol;

use crate::settings::Settings;

/// The two kinds of upstream events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// `connected` and `disconnected`.
    Connections,
    /// Hub method invocations; the event is the method name.
    Messages,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Connections => "connections",
            Category::Messages => "messages",
        }
    }
}

/// One client event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The client's handshake completed.
    Connected,
    /// The connection ended, with an error if it ended because of one.
    Disconnected { error: Option<&'a str> },
    /// An invocation: `body` is the client's message exactly as it encoded it, without framing.
    Message { target: &'a str, body: Bytes },
}

impl Event<'_> {
    pub fn category(&self) -> Category {
        match self {
            Event::Connected | Event::Disconnected { .. } => Category::Connections,
            Event::Message { .. } => Category::Messages,
        }
    }

    /// The `{event}` value: `connected`, `disconnected` or the invocation's target.
    pub fn name(&self) -> &str {
        match self {
            Event::Connected => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::Message { target, .. } => target,
        }
    }
}

/// The body of the connected event: message type 10 of Azure's serverless protocol.
const CONNECTED_BODY: &[u8] = b"{\"type\":10}";
/// The message type of the disconnected event.
const CLOSE_CONNECTION_TYPE: u8 = 11;

pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/x-msgpack";

/// The headers every event of a connection carries, in the order [`Connection`] keeps them.
const CONNECTION_HEADERS: [&str; 6] = [
    "x-asrs-connection-id",
    "x-asrs-hub",
    "x-asrs-user-id",
    "x-asrs-user-claims",
    "x-asrs-client-query",
    "x-asrs-signature",
];

/// One connection as the upstream sees it.
///
/// Its headers are computed once and kept in one allocation (one per connection for as long as
/// it lives, so it is kept small): `text` holds the values of [`CONNECTION_HEADERS`] one after
/// another and `ends[i]` is where value `i` ends. An empty user id means there is none.
#[derive(Debug, Clone)]
pub struct Connection {
    text: Box<str>,
    ends: [u32; 6],
    pub protocol: Protocol,
}

/// One request, ready to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub url: String,
    pub category: Category,
    /// Every header, the connection's and the event's.
    pub headers: Vec<(&'static str, Cow<'a, str>)>,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Connection {
    /// `claims` are the client token's claims (minus the token's own: `aud`, `exp`...); `query`
    /// is the query string of the client's connect request; `keys` are every access key.
    pub fn new(
        id: &str,
        hub: &str,
        user: Option<&str>,
        claims: &Map<String, Value>,
        query: &str,
        keys: &[String],
        protocol: Protocol,
    ) -> Connection {
        let query = if query.is_empty() || query.starts_with('?') {
            Cow::Borrowed(query)
        } else {
            Cow::Owned(format!("?{query}"))
        };
        let values = [
            safe(id),
            safe(hub),
            safe(user.unwrap_or_default()),
            safe(&claims_header(claims)),
            safe(&query),
            signature(keys, id),
        ];
        let mut text = String::with_capacity(values.iter().map(String::len).sum());
        let mut ends = [0u32; 6];
        for (end, value) in ends.iter_mut().zip(&values) {
            text.push_str(value);
            // Every value comes from a bounded request (the query, the token's claims), far
            // below 4 GiB; saturate rather than wrap if that ever changed.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Connection {
            text: text.into_boxed_str(),
            ends,
            protocol,
        }
    }

    /// Value `i` of [`CONNECTION_HEADERS`].
    fn value(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// The connection id.
    pub fn id(&self) -> &str {
        self.value(0)
    }

    /// The hub the connection belongs to.
    pub fn hub(&self) -> &str {
        self.value(1)
    }

    /// The headers every event of this connection carries (no user id when it has none).
    fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        CONNECTION_HEADERS
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, self.value(i)))
            .filter(|(name, value)| *name != "x-asrs-user-id" || !value.is_empty())
    }

    /// The request for `event`, or `None` when no template matches it.
    pub fn request<'a>(&'a self, settings: &Settings, event: &'a Event<'a>) -> Option<Request<'a>> {
        let category = event.category();
        let name = event.name();
        let template = settings.find(self.hub(), category.as_str(), name)?;
        let url = template.url.expand(self.hub(), category.as_str(), name);
        let (content_type, body) = match event {
            Event::Connected => (JSON, Bytes::from_static(CONNECTED_BODY)),
            Event::Disconnected { error } => (JSON, disconnected_body(*error)),
            Event::Message { body, .. } => (
                match self.protocol {
                    Protocol::Json => JSON,
                    Protocol::MessagePack => MSGPACK,
                },
                body.clone(),
            ),
        };
        let mut headers: Vec<(&'static str, Cow<'a, str>)> =
            Vec::with_capacity(CONNECTION_HEADERS.len() + 2);
        headers.extend(self.headers().map(|(k, v)| (k, Cow::Borrowed(v))));
        headers.push(("x-asrs-category", Cow::Borrowed(category.as_str())));
        let name = if name.chars().any(char::is_control) {
            Cow::Owned(safe(name))
        } else {
            Cow::Borrowed(name)
        };
        headers.push(("x-asrs-event", name));
        Some(Request {
            url,
            category,
            headers,
            content_type,
            body,
        })
    }
}

/// `{"type":11}`, plus `"error"` when the connection ended with one.
fn disconnected_body(error: Option<&str>) -> Bytes {
    let mut body = Map::new();
    body.insert("type".into(), Value::from(CLOSE_CONNECTION_TYPE));
    if let Some(error) = error {
        body.insert("error".into(), Value::from(error));
    }
    Bytes::from(Value::Object(body).to_string())
}

/// `sha256=<hex HMAC-SHA256(key, connection id)>` for every key, comma-separated, so an app
/// that knows any one of the keys (during a rotation: the old or the new) accepts the request.
pub fn signature(keys: &[String], connection_id: &str) -> String {
    let mut out = String::with_capacity(keys.len() * 72);
    for key in keys {
        if !out.is_empty() {
            out.push(',');
        }
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
            continue;
        };
        mac.update(connection_id.as_bytes());
        out.push_str("sha256=");
        for byte in mac.finalize().into_bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out
}

/// The claims as .NET prints them: `type: value` joined by `, `. An array claim is one claim
/// per element (as the JWT handler maps it); strings are unquoted, other values are JSON.
pub fn claims_header(claims: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut push = |name: &str, value: &Value| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str(": ");
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
    };
    for (name, value) in claims {
        match value {
            Value::Null => {}
            Value::Array(items) => items.iter().for_each(|item| push(name, item)),
            other => push(name, other),
        }
    }
    out
}

/// `value` with every control character (and DEL) replaced by `?`: safe as a header value.
pub fn safe(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Template;
    use proptest::prelude::*;

    #[test]
    fn signature_matches_the_functions_extension() {
        // The vectors the Azure Functions SignalR extension checks its validator against.
        let keys = [
            "7aab239577fd4f24bc919802fb629f5f".to_owned(),
            "a5f2815d0d0c4b00bd27e832432f91ab".to_owned(),
        ];
        assert_eq!(
            signature(&keys, "0f9c97a2f0bf4706afe87a14e0797b11"),
            "sha256=7767effcb3946f3e1de039df4b986ef02c110b1469d02c0a06f41b3b727ab561,\
             sha256=d4aefb65547a00a9881fa8ac8bd03d0faf77af9da5205d45c6e57cbda4377760"
        );
        assert_eq!(signature(&[], "x"), "");
    }

    #[test]
    fn claims_print_like_dotnet() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"asrs.s.uid":"alice","role":["admin","ops"],"n":5,"ok":true,"gone":null,"o":{"a":1}}"#,
        )
        .expect("json");
        assert_eq!(
            claims_header(&claims),
            "asrs.s.uid: alice, n: 5, o: {\"a\":1}, ok: true, role: admin, role: ops"
        );
        assert_eq!(claims_header(&Map::new()), "");
    }

    fn settings() -> Settings {
        Settings::new(vec![Template::any(
            "http://up/api/{hub}/{category}/{event}?code=k",
        )
        .expect("valid")])
    }

    #[test]
    fn requests_carry_every_header_and_body() {
        let claims: Map<String, Value> = serde_json::from_str(r#"{"sub":"bob"}"#).expect("json");
        let conn = Connection::new(
            "c1",
            "chat",
            Some("bob"),
            &claims,
            "hub=chat&x=1",
            &["k1".to_owned(), "k2".to_owned()],
            Protocol::Json,
        );
        let settings = settings();
        let event = Event::Connected;
        let req = conn.request(&settings, &event).expect("matches");
        assert_eq!(req.url, "http://up/api/chat/connections/connected?code=k");
        assert_eq!(req.content_type, JSON);
        assert_eq!(&req.body[..], b"{\"type\":10}");
        let find = |r: &Request<'_>, name: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(find(&req, "x-asrs-connection-id").as_deref(), Some("c1"));
        assert_eq!(find(&req, "x-asrs-hub").as_deref(), Some("chat"));
        assert_eq!(find(&req, "x-asrs-user-id").as_deref(), Some("bob"));
        assert_eq!(
            find(&req, "x-asrs-user-claims").as_deref(),
            Some("sub: bob")
        );
        assert_eq!(
            find(&req, "x-asrs-client-query").as_deref(),
            Some("?hub=chat&x=1")
        );
        assert_eq!(
            find(&req, "x-asrs-category").as_deref(),
            Some("connections")
        );
        assert_eq!(find(&req, "x-asrs-event").as_deref(), Some("connected"));
        let sig = find(&req, "x-asrs-signature").expect("signed");
        assert_eq!(sig, signature(&["k1".into(), "k2".into()], "c1"));
        assert_eq!(sig.matches("sha256=").count(), 2);

        let gone = Event::Disconnected {
            error: Some("bye \"now\""),
        };
        let req = conn.request(&settings, &gone).expect("matches");
        let body: Value = serde_json::from_slice(&req.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"type": 11, "error": "bye \"now\""})
        );
        let clean = Event::Disconnected { error: None };
        assert_eq!(
            &conn.request(&settings, &clean).expect("m").body[..],
            b"{\"type\":11}"
        );

        let anonymous = Connection::new(
            "c2",
            "chat",
            None,
            &Map::new(),
            "",
            &[],
            Protocol::MessagePack,
        );
        let call = Event::Message {
            target: "Send/It",
            body: Bytes::from_static(b"\x96\x01"),
        };
        let req = anonymous.request(&settings, &call).expect("matches");
        assert_eq!(req.url, "http://up/api/chat/messages/Send%2FIt?code=k");
        assert_eq!(req.content_type, MSGPACK);
        assert_eq!(&req.body[..], b"\x96\x01");
        assert!(find(&req, "x-asrs-user-id").is_none(), "no user, no header");
        assert_eq!(find(&req, "x-asrs-event").as_deref(), Some("Send/It"));

        let none = Settings::default();
        assert!(conn.request(&none, &call).is_none());
    }

    proptest! {
        /// Whatever a client puts in its claims, query or method name, no header value holds a
        /// control character.
        #[test]
        fn header_values_are_always_safe(user in "\\PC*[\r\n\t\u{0}]?\\PC*", claim in ".*", target in ".*", query in ".*") {
            let mut claims = Map::new();
            claims.insert(claim.clone(), Value::from(claim.clone()));
            let conn = Connection::new("id", "hub", Some(&user), &claims, &query, &["k".into()], Protocol::Json);
            let settings = settings();
            let event = Event::Message { target: &target, body: Bytes::new() };
            let req = conn.request(&settings, &event).expect("matches");
            for (_, value) in &req.headers {
                prop_assert!(!value.chars().any(char::is_control), "{value:?}");
            }
        }
    }
}
