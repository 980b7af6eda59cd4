//! The store over gRPC: Raft between voters, and the store API for gateways and forwarding.
//!
//! A multi-voter store needs two conversations, kept as separate services on each voter's
//! cluster address:
//! - the proto `Raft` service carries openraft's vote, append and snapshot RPCs between voters
//!   ([`GrpcNetwork`] is the client side, [`RaftGrpcService`] the server side);
//! - the proto `Store` service ([`StoreGrpcService`]) lets a follower hand writes to the leader
//!   ([`GrpcForwarder`]) and lets a stateless gateway write, read the leader and follow the
//!   applied state through a watch stream ([`crate::remote::RemoteStore`]).
//!
//! Every client here dials through one [`Channels`] cache: one lazily connected HTTP/2 channel
//! per target address, shared by every RPC to that node, never a connection per call.
//!
//! Errors cross the wire in one shape: a [`StoreError`] becomes a `tonic::Status` whose code is
//! [`switchboard_core::ErrorCode::grpc_code`] of the error, and "not the leader" travels as
//! `UNAVAILABLE` with the leader's id and address in the message and in metadata
//! ([`status_from_error`] / [`error_from_status`]).

mod forwarder;
mod network;
mod raft_service;
mod store_service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard_core::NodeId;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::StoreError;

pub use forwarder::GrpcForwarder;
pub use network::{GrpcNetwork, GrpcPeer};
pub use raft_service::RaftGrpcService;
pub use store_service::StoreGrpcService;

/// The largest gRPC message the store sends or accepts: a watch snapshot carries the whole
/// membership state, and an append can carry many large batches.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Metadata key of the leader's node id on a not-the-leader status.
pub const LEADER_ID_KEY: &str = "x-switchboard-leader-id";
/// Metadata key of the leader's cluster address on a not-the-leader status.
pub const LEADER_ADDR_KEY: &str = "x-switchboard-leader-addr";
/// Metadata key marking a not-the-leader status (also when the leader is unknown).
const NOT_LEADER_KEY: &str = "x-switchboard-not-leader";
/// Metadata key a voter sets on a write it forwards, so the receiver never forwards it again.
pub(crate) const FORWARDED_KEY: &str = "x-switchboard-forwarded";

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
    /// How long establishing the TCP connection may take.
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

/// One gRPC channel per peer address, created on first use and reused by every call.
///
/// A channel connects lazily and reconnects by itself after the peer went away, so a cached
/// channel stays valid for the life of the process. Clones share the cache. Channels must be
/// created inside a Tokio runtime.
#[derive(Clone, Default)]
pub struct Channels {
    cache: Arc<Mutex<HashMap<String, Channel>>>,
    settings: ChannelSettings,
}

impl Channels {
    /// An empty cache with default settings.
    pub fn new() -> Channels {
        Channels::default()
    }

    /// An empty cache whose channels use `settings`.
    pub fn with_settings(settings: ChannelSettings) -> Channels {
        Channels {
            cache: Arc::default(),
            settings,
        }
    }

    /// The channel to `addr` (`host:port`, dialed as `http://host:port`; a full `http://` URI is
    /// taken as is).
    pub fn get(&self, addr: &str) -> Result<Channel, InvalidAddress> {
        let mut cache = self.cache.lock();
        if let Some(channel) = cache.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.endpoint(addr)?.connect_lazy();
        cache.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, InvalidAddress> {
        let invalid = |reason: String| InvalidAddress {
            addr: addr.to_owned(),
            reason,
        };
        if addr.is_empty() {
            return Err(invalid("empty".to_owned()));
        }
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| invalid(e.to_string()))?;
        Ok(endpoint
            .connect_timeout(self.settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.settings.keep_alive_interval)
            .keep_alive_timeout(self.settings.keep_alive_timeout)
            .keep_alive_while_idle(true))
    }
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("peers", &self.cache.lock().len())
            .field("settings", &self.settings)
            .finish()
    }
}

fn insert_ascii(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(key, value);
    }
}

/// The gRPC status a store error is answered with.
pub fn status_from_error(error: &StoreError) -> Status {
    let code = Code::from_i32(error.code().grpc_code());
    let mut status = Status::new(code, error.to_string());
    if let StoreError::NotLeader {
        leader_id,
        leader_addr,
    } = error
    {
        let metadata = status.metadata_mut();
        insert_ascii(metadata, NOT_LEADER_KEY, "1");
        if let Some(id) = leader_id {
            insert_ascii(metadata, LEADER_ID_KEY, &id.to_string());
        }
        if let Some(addr) = leader_addr.as_deref().filter(|a| !a.is_empty()) {
            insert_ascii(metadata, LEADER_ADDR_KEY, addr);
        }
    }
    status
}

/// The store error a gRPC status stands for. Transport failures (the peer is down, the
/// connection broke, the deadline passed) are [`StoreError::Unavailable`], so callers retry.
pub fn error_from_status(status: &Status) -> StoreError {
    let metadata = status.metadata();
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match status.code() {
        Code::Unavailable if metadata.contains_key(NOT_LEADER_KEY) => StoreError::NotLeader {
            leader_id: text(LEADER_ID_KEY).and_then(|id| id.parse::<NodeId>().ok()),
            leader_addr: text(LEADER_ADDR_KEY).filter(|a| !a.is_empty()),
        },
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::ResourceExhausted => StoreError::Unavailable(status.message().to_owned()),
        code => StoreError::Internal(format!("{code:?}: {}", status.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_round_trips_with_its_hint() {
        for error in [
            StoreError::NotLeader {
                leader_id: Some(3),
                leader_addr: Some("10.0.0.3:7001".into()),
            },
            StoreError::NotLeader {
                leader_id: Some(2),
                leader_addr: None,
            },
            StoreError::NotLeader {
                leader_id: None,
                leader_addr: None,
            },
        ] {
            let status = status_from_error(&error);
            assert_eq!(status.code(), Code::Unavailable);
            assert_eq!(error_from_status(&status), error);
        }
    }

    #[test]
    fn codes_follow_the_shared_taxonomy() {
        let status = status_from_error(&StoreError::Unavailable("electing".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(matches!(
            error_from_status(&status),
            StoreError::Unavailable(m) if m.contains("electing")
        ));
        let status = status_from_error(&StoreError::Internal("bug".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(matches!(
            error_from_status(&status),
            StoreError::Internal(_)
        ));
        assert!(error_from_status(&Status::deadline_exceeded("slow")).retryable());
        assert!(!error_from_status(&Status::invalid_argument("bad")).retryable());
    }

    #[tokio::test]
    async fn one_channel_per_address() {
        let channels = Channels::new();
        channels.get("127.0.0.1:1").unwrap();
        channels.get("127.0.0.1:1").unwrap();
        channels.get("http://127.0.0.1:2").unwrap();
        assert_eq!(channels.cache.lock().len(), 2);
        assert!(channels.get("").is_err());
        assert!(channels.get("not a host:port").is_err());
    }
}
