//! The HTTP client every upstream call goes through: one per process.
//!
//! - HTTP/1.1 with keep-alive: connections are pooled per host and reused, so a steady stream
//!   of invocations costs no handshakes.
//! - Bounded: at most [`ClientConfig::max_connections_per_host`] requests to one host at once
//!   (an HTTP/1.1 connection carries one request at a time, so this bounds the connections too;
//!   further calls wait for one, within their timeout), and at most
//!   [`ClientConfig::max_in_flight`] calls in the whole process ([`Client::reserve`] refuses
//!   beyond, and the caller answers "busy" at once instead of queueing without bound).
//! - Timed: the whole call — waiting for a connection, connecting, sending, reading the answer
//!   — has one deadline. Answers over [`MAX_ANSWER_BYTES`] are refused as soon as that is known.
//! - At most once: a call that failed is not retried (as in Azure: an invocation may have side
//!   effects). Only a request that was never written (its pooled connection had closed) is
//!   sent again, on a fresh connection.
//! - `https://` upstreams are verified against the system's trust store (`SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` are honoured), or Mozilla's roots where the system has none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::answer::{Failure, MAX_ANSWER_BYTES};
use crate::request::Request;

/// Limits and timeouts of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The deadline of one call, from the start of waiting for a connection to the last byte.
    pub timeout: Duration,
    /// How long opening a TCP connection may take (within `timeout`).
    pub connect_timeout: Duration,
    /// Calls in flight in the process at most.
    pub max_in_flight: usize,
    /// Requests (so connections) to one host at once at most.
    pub max_connections_per_host: usize,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 4096,
            max_connections_per_host: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A status and a body, read fully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for https upstreams: {0}")]
pub struct ClientError(String);

/// A place among the process's calls in flight, held for the call.
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] OwnedSemaphorePermit);

type Http = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Host entries kept before idle ones are forgotten (templates with `{hub}` in the host can
/// name any number of hosts).
const MAX_HOST_ENTRIES: usize = 1024;

/// See the module docs.
pub struct Client {
    http: Http,
    in_flight: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    config: ClientConfig,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client. Fails only if no TLS configuration can be made.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(error) => {
                tracing::debug!(%error, "no system trust store; https upstreams are verified against Mozilla's roots");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_webpki_roots(provider)
                    .map_err(|e| ClientError(e.to_string()))?
            }
        };
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        let connector = builder.https_or_http().enable_http1().wrap_connector(tcp);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_connections_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Client {
            http,
            in_flight: Arc::new(Semaphore::new(
                config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
            )),
            hosts: Mutex::new(HashMap::new()),
            config,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A place for one call, or `None` when `max_in_flight` calls are running.
    pub fn reserve(&self) -> Option<InFlight> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .ok()
            .map(InFlight)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.config
            .max_in_flight
            .saturating_sub(self.in_flight.available_permits())
    }

    /// The bound on requests to one scheme + host + port.
    fn host(&self, key: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock();
        if let Some(host) = hosts.get(key) {
            return host.clone();
        }
        let max = self.config.max_connections_per_host.max(1);
        if hosts.len() >= MAX_HOST_ENTRIES {
            hosts.retain(|_, s| s.available_permits() < max);
        }
        let host = Arc::new(Semaphore::new(max));
        hosts.insert(key.to_owned(), host.clone());
        host
    }

    /// POSTs `request` and reads the whole answer, within the timeout.
    pub async fn call(
        &self,
        _place: &InFlight,
        request: &Request<'_>,
    ) -> Result<Response, Failure> {
        let uri: http::Uri = request
            .url
            .parse()
            .map_err(|e| Failure::Unreachable(format!("the URL is invalid ({e})")))?;
        let key = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => return Err(Failure::Unreachable("the URL has no host".into())),
        };
        let mut builder = http::Request::post(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static(request.content_type));
        for (name, value) in &request.headers {
            let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) else {
                continue;
            };
            builder = builder.header(HeaderName::from_static(name), value);
        }
        let http_request = builder
            .body(Full::new(request.body.clone()))
            .map_err(|e| Failure::Unreachable(format!("the request cannot be built ({e})")))?;
        let host = self.host(&key);
        let timeout = self.config.timeout;
        let call = async move {
            let _connection = host
                .acquire_owned()
                .await
                .map_err(|_| Failure::Unreachable("the client is shutting down".into()))?;
            let response = self
                .http
                .request(http_request)
                .await
                .map_err(|e| Failure::Unreachable(describe(&e)))?;
            let status = response.status().as_u16();
            let declared = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
                return Err(Failure::TooLarge);
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Failure::TooLarge
                    } else {
                        Failure::Unreachable(format!(
                            "the answer was cut off ({})",
                            innermost(e.as_ref())
                        ))
                    }
                })?
                .to_bytes();
            Ok(Response { status, body })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Failure::TimedOut(timeout)),
        }
    }
}

/// A short reason for a failed request: "connection refused", "connection reset"...
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let inner = innermost(error);
    if error.is_connect() {
        format!("cannot connect ({inner})")
    } else {
        inner
    }
}

/// The message of the innermost cause, the one that names what actually happened.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
