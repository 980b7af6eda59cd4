//! A real HTTP upstream (an app server in serverless mode) for the tests: it records every
//! request and answers the way the test tells it to, possibly after waiting on a gate.
//!
//! It checks signatures the way the Azure Functions SignalR extension does
//! ([`signature_valid`]): independently of the product's own code, so a test compares
//! Switchboard against the contract rather than against itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify};

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path and query, as sent (`/api/chat/messages/echo?code=k`).
    pub path: String,
    /// Header names in lower case. A repeated header's values are joined with `,`.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn category(&self) -> &str {
        self.header("x-asrs-category").unwrap_or_default()
    }

    pub fn event(&self) -> &str {
        self.header("x-asrs-event").unwrap_or_default()
    }

    pub fn connection_id(&self) -> &str {
        self.header("x-asrs-connection-id").unwrap_or_default()
    }

    /// The body as JSON (connection events and JSON clients' invocations).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: Bytes::new(),
        }
    }

    pub fn no_content() -> Reply {
        Reply::status(204)
    }

    /// 200 with `body` (for an invocation: the framed completion).
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
        }
    }

    /// A framed JSON completion of `invocation_id` with `result`.
    pub fn json_result(invocation_id: &str, result: serde_json::Value) -> Reply {
        let message =
            serde_json::json!({"type": 3, "invocationId": invocation_id, "result": result});
        Reply::ok(format!("{message}\u{1e}"))
    }
}

/// How the upstream answers a request.
pub type Handler = Arc<dyn Fn(Recorded) -> BoxFuture<'static, Reply> + Send + Sync>;

/// Wraps a synchronous answer rule as a [`Handler`].
pub fn answer(rule: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(move |request| {
        let reply = rule(&request);
        Box::pin(async move { reply })
    })
}

#[derive(Default)]
struct Inbox {
    requests: Vec<Recorded>,
}

/// A running upstream; see the module docs. Stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts on a free port of 127.0.0.1, answering with `handler`.
    pub async fn start(handler: Handler) -> anyhow::Result<Upstream> {
        Self::start_on("127.0.0.1:0".parse()?, handler).await
    }

    pub async fn start_on(addr: SocketAddr, handler: Handler) -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the test upstream on {addr}"))?;
        let addr = listener.local_addr()?;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let notify = Arc::new(Notify::new());
        let (inbox2, notify2) = (inbox.clone(), notify.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (inbox, notify, handler) = (inbox2.clone(), notify2.clone(), handler.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (inbox, notify, handler) =
                                (inbox.clone(), notify.clone(), handler.clone());
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let mut headers: HashMap<String, String> = HashMap::new();
                                for (name, value) in &parts.headers {
                                    let value =
                                        String::from_utf8_lossy(value.as_bytes()).into_owned();
                                    headers
                                        .entry(name.as_str().to_owned())
                                        .and_modify(|v| {
                                            v.push(',');
                                            v.push_str(&value);
                                        })
                                        .or_insert(value);
                                }
                                let recorded = Recorded {
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.as_str().to_owned())
                                        .unwrap_or_default(),
                                    headers,
                                    body,
                                };
                                inbox.lock().await.requests.push(recorded.clone());
                                notify.notify_waiters();
                                let reply = handler(recorded).await;
                                let response = hyper::Response::builder()
                                    .status(reply.status)
                                    .body(Full::new(reply.body))
                                    .unwrap_or_default();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Upstream {
            addr,
            inbox,
            notify,
            task,
        })
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub async fn requests(&self) -> Vec<Recorded> {
        self.inbox.lock().await.requests.clone()
    }

    /// The requests so far that match `pred`.
    pub async fn matching(&self, pred: impl Fn(&Recorded) -> bool) -> Vec<Recorded> {
        self.inbox
            .lock()
            .await
            .requests
            .iter()
            .filter(|r| pred(r))
            .cloned()
            .collect()
    }

    /// Waits until `count` requests match `pred`; returns them.
    pub async fn wait_for_n(
        &self,
        count: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&Recorded) -> bool,
    ) -> anyhow::Result<Vec<Recorded>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            let found = self.matching(&pred).await;
            if found.len() >= count {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "the upstream got {} of {count} requests for {what} within {within:?}",
                    found.len()
                );
            }
        }
    }

    /// Waits for the first request that matches `pred`.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Recorded) -> bool,
    ) -> anyhow::Result<Recorded> {
        let mut found = self.wait_for_n(1, within, what, pred).await?;
        Ok(found.remove(0))
    }

    /// Waits for the connection event `event` (`connected`/`disconnected`) of `connection_id`.
    pub async fn wait_connection_event(
        &self,
        connection_id: &str,
        event: &str,
    ) -> anyhow::Result<Recorded> {
        let what = format!("{event} of {connection_id}");
        self.wait_for(Duration::from_secs(20), &what, |r| {
            r.category() == "connections"
                && r.event() == event
                && r.connection_id() == connection_id
        })
        .await
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gate handlers wait on: closed until [`Gate::open`].
#[derive(Clone, Default)]
pub struct Gate {
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            open: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Whether `header` (an `X-ASRS-Signature` value) carries a valid signature of `connection_id`
/// for any of `keys`: the Azure Functions extension's rule (entries separated by commas,
/// `sha256=` + hex compared ignoring case).
pub fn signature_valid(header: &str, connection_id: &str, keys: &[&str]) -> bool {
    keys.iter().any(|key| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
            return false;
        };
        mac.update(connection_id.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let expected = format!("sha256={hex}");
        header
            .split(',')
            .any(|entry| entry.trim().eq_ignore_ascii_case(&expected))
    })
}

/// A free TCP port on 127.0.0.1 that nothing listens on (for "the upstream is down").
pub fn closed_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
