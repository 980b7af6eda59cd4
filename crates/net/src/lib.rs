//! The cluster plane's transport: every gRPC hop between Switchboard processes goes through here.
//!
//! An internal port is a public port to anything on the same network, so nothing on the cluster
//! listener acts for a caller that has not proved a cluster key:
//! - **Credentials** ([`auth`]): every call and stream carries a short-lived token
//!   ([`switchboard_auth::cluster`]) naming the node and incarnation it comes from; a layer on
//!   the cluster listener checks it before any handler runs and hands the handler the proven
//!   [`ClusterIdentity`], so handlers can insist that a node acts only as itself. Answers carry
//!   the answering node's proof, which the calling channel checks.
//! - **Channels** ([`channels`]): one lazily connected HTTP/2 channel per peer address, shared by
//!   every client in the process, with the credentials attached and, when configured, mutual TLS.
//! - **Listener** ([`server`]): the accept loop of the cluster port — a cap on connections, TLS
//!   handshakes with a deadline, and connections that never authenticate closed after a while.
//! - **TLS** ([`tls`]): PEM loading, certificates and CAs re-read when their files change, and
//!   the rustls configurations for mutual TLS (cluster) and server-only TLS (the public listener).
//!
//! Everything is configured by one [`ClusterSecurity`], built by the binary from its flags and
//! shared by every client and server of the process.

pub mod auth;
pub mod channels;
mod metrics;
pub mod server;
pub mod status;
pub mod tls;

use std::sync::Arc;

use parking_lot::Mutex;

pub use switchboard_auth::{ClusterAuthError, ClusterIdentity, ClusterKeys};

pub use auth::{
    peer_identity, refuse_identity, reply_identity, AuthChannel, ClusterAuthLayer,
    AUTH_METADATA_KEY, REPLY_METADATA_KEY,
};
pub use channels::{ChannelSettings, Channels, ClusterChannel, InvalidAddress};
pub use server::{incoming, server_builder, ClusterConn, ClusterConnInfo, ListenerLimits};
pub use tls::{ClusterTls, ServerTls, TlsError, TlsFiles, TlsMaterial};

/// The default bound on one gRPC message between nodes, each way.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// The smallest bound accepted: a fan-out envelope carries a REST body of up to 1 MB in two
/// encodings.
pub const MIN_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How this process proves itself to its peers and checks theirs.
#[derive(Clone)]
pub struct ClusterSecurity {
    inner: Arc<Inner>,
}

struct Inner {
    keys: ClusterKeys,
    identity: ClusterIdentity,
    tls: Option<ClusterTls>,
    max_message_bytes: usize,
    /// The token this process sends, and when it was minted (ms).
    token: Mutex<Option<(u64, http::HeaderValue)>>,
}

impl std::fmt::Debug for ClusterSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecurity")
            .field("identity", &self.inner.identity)
            .field("keys", &self.inner.keys)
            .field("tls", &self.inner.tls.is_some())
            .field("max_message_bytes", &self.inner.max_message_bytes)
            .finish()
    }
}

impl ClusterSecurity {
    /// Credentials for `identity`, signed with (and checked against) `keys`, without TLS.
    pub fn new(keys: ClusterKeys, identity: ClusterIdentity) -> ClusterSecurity {
        ClusterSecurity::with(keys, identity, None, DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// Credentials plus mutual TLS (`tls`) and a message bound other than the default.
    pub fn with(
        keys: ClusterKeys,
        identity: ClusterIdentity,
        tls: Option<ClusterTls>,
        max_message_bytes: usize,
    ) -> ClusterSecurity {
        ClusterSecurity {
            inner: Arc::new(Inner {
                keys,
                identity,
                tls,
                max_message_bytes,
                token: Mutex::new(None),
            }),
        }
    }

    /// Who this process is on the cluster plane.
    pub fn identity(&self) -> ClusterIdentity {
        self.inner.identity
    }

    /// The largest gRPC message this process sends or accepts.
    pub fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes
    }

    /// The TLS configurations, if the cluster plane uses TLS.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.inner.tls.as_ref()
    }

    /// Checks a peer's token; see [`ClusterKeys::verify`].
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<ClusterIdentity, ClusterAuthError> {
        self.inner.keys.verify(token, now_ms)
    }

    /// The token to send now (minted again once it is older than the refresh interval).
    pub(crate) fn token(&self, now_ms: u64) -> http::HeaderValue {
        let mut cached = self.inner.token.lock();
        if let Some((minted, value)) = cached.as_ref() {
            let age = now_ms.saturating_sub(*minted);
            if age < switchboard_auth::cluster::CLUSTER_TOKEN_REFRESH_MS && now_ms >= *minted {
                return value.clone();
            }
        }
        let token = self.inner.keys.mint(self.inner.identity, now_ms);
        // The token is ASCII by construction (digits, dots, base64url).
        let value = http::HeaderValue::try_from(token)
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
        *cached = Some((now_ms, value.clone()));
        value
    }

    /// The proof, for a reply, that this process answers the call that carried `token`.
    pub(crate) fn reply_proof(&self, token: &str) -> String {
        self.inner.keys.reply_proof(self.inner.identity, token)
    }

    /// The identity of the node whose reply to our `token` carried `proof`.
    pub(crate) fn verify_reply(
        &self,
        proof: &str,
        token: &str,
    ) -> Result<ClusterIdentity, ClusterAuthError> {
        self.inner.keys.verify_reply(proof, token)
    }

    /// The tower layer that checks credentials on every call to this process's cluster
    /// listener.
    pub fn server_layer(&self) -> ClusterAuthLayer {
        ClusterAuthLayer::new(self.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_reused_then_refreshed() {
        let keys = ClusterKeys::new(&["k"]).unwrap();
        let security = ClusterSecurity::new(
            keys.clone(),
            ClusterIdentity {
                node: 4,
                incarnation: 9,
            },
        );
        let t0 = 1_800_000_000_000;
        let first = security.token(t0);
        assert_eq!(security.token(t0 + 1000), first);
        let refresh = switchboard_auth::cluster::CLUSTER_TOKEN_REFRESH_MS;
        let later = security.token(t0 + refresh);
        assert_ne!(later, first);
        let id = keys.verify(later.to_str().unwrap(), t0 + refresh).unwrap();
        assert_eq!((id.node, id.incarnation), (4, 9));
        // A clock that went backwards gets a fresh token too.
        assert_ne!(security.token(t0), later);
    }
}
