//! HTTP to the server under test: negotiate, group joins and the measured sends.
//!
//! Switchboard gets what an app server would send: `POST /api/hubs/{hub}/...:send?api-version=
//! 2022-06-01` with a fresh HS256 REST token per request whose audience is the request URL
//! without the port (as the .NET SDK signs it), and client tokens for negotiate. The baseline
//! and the Socket.IO server take the same JSON body at `POST /broadcast`, without auth.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::cli::Target;
use crate::error::Error;

/// The api-version of every REST call.
pub const API_VERSION: &str = "2022-06-01";

/// Who a send addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    All,
    User(String),
    Group(String),
    Connection(String),
}

/// What negotiate returned, ready to connect.
#[derive(Debug)]
pub struct Negotiated {
    pub connection_id: Option<String>,
    pub ws_url: String,
}

/// Talks HTTP to one server.
pub struct RestClient {
    http: reqwest::Client,
    target: Target,
    /// `http://host:port`, no trailing slash.
    base: String,
    /// `http://host` (no port): the audience prefix of REST tokens.
    audience_base: String,
    /// Where REST calls go, when not to `base` (another gateway of a cluster), with its
    /// audience prefix.
    rest_base: Option<(String, String)>,
    hub: String,
    key: Option<String>,
}

fn now_secs() -> u64 {
    crate::stats::now_us() / 1_000_000
}

impl RestClient {
    /// A client for the server at `base` (`http://host:port`); `key` signs Switchboard tokens.
    pub fn new(target: Target, base: &str, hub: &str, key: Option<String>) -> Result<Self, Error> {
        let mut url = Url::parse(base)
            .map_err(|e| Error::Config(format!("--url {base:?} is not a URL: {e}")))?;
        if url.scheme() != "http" {
            return Err(Error::Config(format!(
                "--url {base:?}: only http:// is supported (loopback load tests)"
            )));
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        // Cannot fail for an http URL.
        let _ = url.set_port(None);
        let audience_base = url.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(RestClient {
            http,
            target,
            base,
            audience_base,
            rest_base: None,
            hub: hub.to_owned(),
            key,
        })
    }

    /// Sends REST calls to `rest` (`http://host:port`) while clients still connect to the base
    /// URL: measures delivery across the gateways of a cluster.
    pub fn with_rest_base(mut self, rest: &str) -> Result<Self, Error> {
        let mut url = Url::parse(rest)
            .map_err(|e| Error::Config(format!("--rest-url {rest:?} is not a URL: {e}")))?;
        let base = url.as_str().trim_end_matches('/').to_owned();
        let _ = url.set_port(None);
        self.rest_base = Some((base, url.as_str().trim_end_matches('/').to_owned()));
        Ok(self)
    }

    fn key(&self) -> Result<&str, Error> {
        self.key
            .as_deref()
            .ok_or_else(|| Error::Config("an access key is needed for Switchboard".into()))
    }

    fn ws_base(&self) -> String {
        // `base` is http://...: the WebSocket URL is the same with ws://.
        format!("ws{}", self.base.trim_start_matches("http"))
    }

    /// The Socket.IO WebSocket URL.
    pub fn socketio_url(&self) -> String {
        format!("{}/socket.io/?EIO=4&transport=websocket", self.ws_base())
    }

    /// `POST /client/negotiate`, and the WebSocket URL it leads to.
    pub async fn negotiate(&self, user: Option<&str>) -> Result<Negotiated, Error> {
        let url = format!(
            "{}/client/negotiate?hub={}&negotiateVersion=1",
            self.base, self.hub
        );
        let mut req = self.http.post(&url);
        let token = if self.target == Target::Switchboard {
            let token = switchboard_auth::mint_client_token(
                self.key()?,
                &self.base,
                &self.hub,
                user,
                &Default::default(),
                now_secs(),
                3600,
            );
            req = req.bearer_auth(&token);
            Some(token)
        } else {
            None
        };
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Status {
                what: "negotiate",
                status,
                body,
            });
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Negotiate {
            connection_id: Option<String>,
            connection_token: Option<String>,
        }
        let body: Negotiate = resp.json().await?;
        let id = body
            .connection_token
            .clone()
            .or_else(|| body.connection_id.clone())
            .ok_or_else(|| Error::Protocol("negotiate returned no connection token".into()))?;
        let mut params = vec![("hub", self.hub.as_str()), ("id", id.as_str())];
        if let Some(token) = token.as_deref() {
            params.push(("access_token", token));
        }
        let ws_url = Url::parse_with_params(&format!("{}/client/", self.ws_base()), &params)
            .map_err(|e| Error::Protocol(format!("bad WebSocket URL: {e}")))?;
        Ok(Negotiated {
            connection_id: body.connection_id,
            ws_url: ws_url.into(),
        })
    }

    /// The path and query of a send.
    pub fn send_path(&self, to: &Addressee) -> String {
        if self.target != Target::Switchboard {
            return "/broadcast".to_owned();
        }
        let hub = &self.hub;
        let what = match to {
            Addressee::All => String::new(),
            Addressee::User(u) => format!("/users/{u}"),
            Addressee::Group(g) => format!("/groups/{g}"),
            Addressee::Connection(c) => format!("/connections/{c}"),
        };
        format!("/api/hubs/{hub}{what}/:send?api-version={API_VERSION}")
    }

    fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let (base, audience_base) = match &self.rest_base {
            Some((base, audience)) => (base.as_str(), audience.as_str()),
            None => (self.base.as_str(), self.audience_base.as_str()),
        };
        let mut req = self.http.request(method, format!("{base}{path_and_query}"));
        if self.target == Target::Switchboard {
            let audience = format!("{audience_base}{path_and_query}");
            let token =
                switchboard_auth::mint_rest_token(self.key()?, &audience, None, now_secs(), 3600);
            req = req.bearer_auth(token);
        }
        Ok(req)
    }

    async fn expect_success(resp: reqwest::Response, what: &'static str) -> Result<(), Error> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Status { what, status, body })
    }

    /// Sends one JSON body to `to`; Ok on any 2xx.
    pub async fn send(&self, to: &Addressee, body: String) -> Result<(), Error> {
        let resp = self
            .request(reqwest::Method::POST, &self.send_path(to))?
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Self::expect_success(resp, "send").await
    }

    /// A client's send on an HTTP transport: `POST` of hub protocol frames to its connection URL
    /// (`http://…/client/?hub=…&id=…`), over this client's connection pool.
    pub async fn client_send(&self, url: &str, frames: bytes::Bytes) -> Result<(), Error> {
        let resp = self
            .http
            .post(url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(frames)
            .send()
            .await?;
        Self::expect_success(resp, "client send").await
    }

    /// A Long Polling client ends its connection: `DELETE` of its connection URL.
    pub async fn client_delete(&self, url: &str) -> Result<(), Error> {
        let resp = self.http.delete(url).send().await?;
        Self::expect_success(resp, "client delete").await
    }

    /// `PUT /api/hubs/{hub}/groups/{group}/connections/{id}`.
    pub async fn join_group(&self, group: &str, connection_id: &str) -> Result<(), Error> {
        let path = format!(
            "/api/hubs/{}/groups/{group}/connections/{connection_id}?api-version={API_VERSION}",
            self.hub
        );
        let resp = self.request(reqwest::Method::PUT, &path)?.send().await?;
        Self::expect_success(resp, "group join").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_target() {
        let sb = RestClient::new(
            Target::Switchboard,
            "http://127.0.0.1:8080/",
            "chat",
            Some("k".into()),
        )
        .unwrap();
        assert_eq!(sb.base, "http://127.0.0.1:8080");
        assert_eq!(sb.audience_base, "http://127.0.0.1");
        assert_eq!(
            sb.send_path(&Addressee::All),
            "/api/hubs/chat/:send?api-version=2022-06-01"
        );
        assert_eq!(
            sb.send_path(&Addressee::Connection("abc.1".into())),
            "/api/hubs/chat/connections/abc.1/:send?api-version=2022-06-01"
        );
        assert_eq!(
            sb.send_path(&Addressee::User("u".into())),
            "/api/hubs/chat/users/u/:send?api-version=2022-06-01"
        );
        assert_eq!(
            sb.send_path(&Addressee::Group("g".into())),
            "/api/hubs/chat/groups/g/:send?api-version=2022-06-01"
        );
        let sio = RestClient::new(Target::Socketio, "http://127.0.0.1:3000", "chat", None).unwrap();
        assert_eq!(sio.send_path(&Addressee::All), "/broadcast");
        assert_eq!(
            sio.socketio_url(),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert!(RestClient::new(Target::Baseline, "https://x", "h", None).is_err());
    }

    #[test]
    fn rest_tokens_carry_the_audience_without_port() {
        let sb = RestClient::new(
            Target::Switchboard,
            "http://127.0.0.1:8080",
            "chat",
            Some("secret-key".into()),
        )
        .unwrap();
        let req = sb
            .request(
                reqwest::Method::POST,
                "/api/hubs/chat/:send?api-version=2022-06-01",
            )
            .unwrap()
            .build()
            .unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        let token = auth.strip_prefix("Bearer ").unwrap();
        let keys = switchboard_auth::KeySet::new(vec!["secret-key".into()]).unwrap();
        let claims = keys.verify(token, now_secs()).unwrap();
        assert_eq!(
            claims["aud"],
            "http://127.0.0.1/api/hubs/chat/:send?api-version=2022-06-01"
        );
    }
}
