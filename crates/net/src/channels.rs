//! One gRPC channel per peer address, with this process's credentials and TLS.
//!
//! A channel connects lazily and reconnects by itself after the peer went away, so a cached
//! channel stays valid for the life of the process: every client of a peer (Raft, forwarding,
//! the store API, fan-out) shares one HTTP/2 connection to it, never one per call.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::auth::AuthChannel;
use crate::ClusterSecurity;

/// A channel to a peer with this process's credentials on every call and the peer's proof
/// checked on every answer.
pub type ClusterChannel = AuthChannel;

/// Why a channel could not be created.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("invalid node address {addr:?}: {reason}")]
pub struct InvalidAddress {
    /// The address as given.
    pub addr: String,
    /// What is wrong with it.
    pub reason: String,
}

/// How channels dial and watch their peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// How long establishing the connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How often an HTTP/2 ping checks that the peer is alive, also while idle.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keep_alive_timeout: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            connect_timeout: Duration::from_secs(1),
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(5),
        }
    }
}

/// The channel cache of a process; clones share it. Channels must be created inside a Tokio
/// runtime.
#[derive(Clone)]
pub struct Channels {
    cache: Arc<Mutex<HashMap<String, ClusterChannel>>>,
    settings: ChannelSettings,
    security: ClusterSecurity,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("peers", &self.cache.lock().len())
            .field("settings", &self.settings)
            .field("security", &self.security)
            .finish()
    }
}

impl Channels {
    /// An empty cache with default settings.
    pub fn new(security: ClusterSecurity) -> Channels {
        Channels::with_settings(security, ChannelSettings::default())
    }

    /// An empty cache whose channels use `settings`.
    pub fn with_settings(security: ClusterSecurity, settings: ChannelSettings) -> Channels {
        crate::metrics::describe();
        Channels {
            cache: Arc::default(),
            settings,
            security,
        }
    }

    /// The credentials and limits these channels use.
    pub fn security(&self) -> &ClusterSecurity {
        &self.security
    }

    /// The largest message to send or accept on these channels.
    pub fn max_message_bytes(&self) -> usize {
        self.security.max_message_bytes()
    }

    /// The channel to `addr` (`host:port`; a full `http://` or `https://` URI is taken as is).
    pub fn get(&self, addr: &str) -> Result<ClusterChannel, InvalidAddress> {
        let mut cache = self.cache.lock();
        if let Some(channel) = cache.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.connect_lazy(addr)?;
        let channel = AuthChannel::new(channel, self.security.clone());
        cache.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn connect_lazy(&self, addr: &str) -> Result<Channel, InvalidAddress> {
        let invalid = |reason: String| InvalidAddress {
            addr: addr.to_owned(),
            reason,
        };
        if addr.is_empty() {
            return Err(invalid("empty".to_owned()));
        }
        let uri = match addr.split_once("://") {
            Some(("http" | "https", rest)) => format!("http://{rest}"),
            Some((scheme, _)) => return Err(invalid(format!("unsupported scheme {scheme:?}"))),
            None => format!("http://{addr}"),
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
        let endpoint = endpoint
            .connect_timeout(self.settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.settings.keep_alive_interval)
            .keep_alive_timeout(self.settings.keep_alive_timeout)
            .keep_alive_while_idle(true);
        Ok(match self.security.tls() {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(TlsConnector {
                config: tls.client_config(),
            }),
        })
    }
}

/// Dials a peer over TCP and runs the TLS handshake (mutual: this process presents its
/// certificate; the peer's must chain to the cluster CA).
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let bad =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tcp = TcpStream::connect((bare.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // Peers are authenticated by their CA, not by name (see `tls`); the name is only SNI.
            let name = ServerName::try_from(bare)
                .map_err(|_| bad("host is neither a DNS name nor an IP address"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use switchboard_auth::{ClusterIdentity, ClusterKeys};

    fn security() -> ClusterSecurity {
        ClusterSecurity::new(
            ClusterKeys::new(&["k"]).unwrap(),
            ClusterIdentity {
                node: 1,
                incarnation: 1,
            },
        )
    }

    #[tokio::test]
    async fn one_channel_per_address() {
        let channels = Channels::new(security());
        channels.get("127.0.0.1:1").unwrap();
        channels.get("127.0.0.1:1").unwrap();
        channels.get("http://127.0.0.1:2").unwrap();
        assert_eq!(channels.cache.lock().len(), 2);
        assert!(channels.get("").is_err());
        assert!(channels.get("not a host:port").is_err());
        assert!(channels.get("ftp://127.0.0.1:3").is_err());
    }
}
