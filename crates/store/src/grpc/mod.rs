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
//! Every client here dials through one [`Channels`] cache (`switchboard-net`): one lazily
//! connected HTTP/2 channel per target address, shared by every RPC to that node, with this
//! node's cluster credentials on every call. Every service here is served behind that crate's
//! authentication layer, and each handler takes the caller's proven identity from the request:
//! only voters speak Raft and only as themselves, and a gateway writes leases and connections
//! only for itself ([`store_service`]). Messages are bounded both ways by the cluster's message
//! size ([`switchboard_net::ClusterSecurity::max_message_bytes`]); the watch stream sends the
//! state in chunks below it.
//!
//! Errors cross the wire in one shape: a [`StoreError`] becomes a `tonic::Status` through the
//! cluster's one conversion (`switchboard_net::status`: the gRPC code of its error code, and
//! the exact code in metadata), and "not the leader" travels as `UNAVAILABLE` with the leader's
//! id and address in the message and in metadata ([`status_from_error`] /
//! [`error_from_status`]).

mod admin_service;
mod forwarder;
mod network;
mod raft_guard;
mod raft_service;
mod store_service;

use switchboard_core::{ErrorCode, NodeId};
pub use switchboard_net::{ChannelSettings, Channels, ClusterChannel, InvalidAddress};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;

use crate::error::StoreError;

pub use admin_service::AdminGrpcService;
pub use forwarder::GrpcForwarder;
pub use network::{GrpcNetwork, GrpcPeer};
pub use raft_service::RaftGrpcService;
pub use store_service::StoreGrpcService;

/// Metadata key of the leader's node id on a not-the-leader status.
pub const LEADER_ID_KEY: &str = "x-switchboard-leader-id";
/// Metadata key of the leader's cluster address on a not-the-leader status.
pub const LEADER_ADDR_KEY: &str = "x-switchboard-leader-addr";
/// Metadata key marking a not-the-leader status (also when the leader is unknown).
const NOT_LEADER_KEY: &str = "x-switchboard-not-leader";
/// Metadata key marking a refusal of this node's cluster credentials, relayed by a voter.
const REFUSED_KEY: &str = "x-switchboard-refused";
/// Metadata key a voter sets on a write it forwards, so the receiver never forwards it again.
pub(crate) const FORWARDED_KEY: &str = "x-switchboard-forwarded";

fn insert_ascii(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(key, value);
    }
}

/// The gRPC status a store error is answered with: the one conversion
/// ([`switchboard_net::status`]), plus where the leader is for "not the leader" and a marker
/// for a refusal (which must not be retried, though API callers see it as unavailability).
pub fn status_from_error(error: &StoreError) -> Status {
    let mut status =
        switchboard_net::status::to_status(&switchboard_core::Error::from(error.clone()));
    let metadata = status.metadata_mut();
    match error {
        StoreError::NotLeader {
            leader_id,
            leader_addr,
        } => {
            insert_ascii(metadata, NOT_LEADER_KEY, "1");
            if let Some(id) = leader_id {
                insert_ascii(metadata, LEADER_ID_KEY, &id.to_string());
            }
            if let Some(addr) = leader_addr.as_deref().filter(|a| !a.is_empty()) {
                insert_ascii(metadata, LEADER_ADDR_KEY, addr);
            }
        }
        StoreError::Refused(_) => insert_ascii(metadata, REFUSED_KEY, "1"),
        _ => {}
    }
    status
}

/// The store error a gRPC status stands for. Transport failures (the peer is down, the
/// connection broke, the deadline passed) are [`StoreError::Unavailable`], so callers retry;
/// a peer refusing this node's credentials is [`StoreError::Refused`].
pub fn error_from_status(status: &Status) -> StoreError {
    let metadata = status.metadata();
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if metadata.contains_key(NOT_LEADER_KEY) {
        return StoreError::NotLeader {
            leader_id: text(LEADER_ID_KEY).and_then(|id| id.parse::<NodeId>().ok()),
            leader_addr: text(LEADER_ADDR_KEY).filter(|a| !a.is_empty()),
        };
    }
    if metadata.contains_key(REFUSED_KEY) {
        return StoreError::Refused(status.message().to_owned());
    }
    let error = switchboard_net::status::from_status(status);
    match error.code {
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => {
            StoreError::Refused(error.message)
        }
        ErrorCode::Timeout => StoreError::Timeout(error.message),
        code if code.retryable() => StoreError::Unavailable(error.message),
        code => StoreError::Internal(format!("{code}: {}", error.message)),
    }
}

/// The read barrier's index from a `Status` reply: the commit point of a leader that has just
/// confirmed its leadership with a quorum. Every read barrier (a follower voter's, a stateless
/// gateway's) goes through here, so they agree on what counts. A follower's reply is
/// [`StoreError::NotLeader`] with its hint; a leader that could not confirm it leads is
/// unavailable: its own applied index could miss writes a newer leader acknowledged.
pub(crate) fn confirmed_read_index(
    reply: &switchboard_proto::v1::StatusReply,
) -> Result<u64, StoreError> {
    if reply.leader_id == 0 || reply.leader_id != reply.node_id {
        return Err(StoreError::NotLeader {
            leader_id: (reply.leader_id != 0).then_some(reply.leader_id),
            leader_addr: (!reply.leader_addr.is_empty()).then(|| reply.leader_addr.clone()),
        });
    }
    if reply.read_index == 0 {
        return Err(StoreError::Unavailable(format!(
            "node {} could not confirm its leadership with a quorum",
            reply.node_id
        )));
    }
    Ok(reply.read_index)
}

/// Channels with a fixed test key, for unit tests.
#[cfg(test)]
pub(crate) fn test_channels() -> Channels {
    let keys = switchboard_net::ClusterKeys::new(&["test-cluster-key"]).expect("a key");
    Channels::new(switchboard_net::ClusterSecurity::new(
        keys,
        switchboard_net::ClusterIdentity {
            node: 1,
            incarnation: 1,
        },
    ))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn a_read_barrier_takes_only_a_confirmed_leaders_commit_point() {
        use switchboard_proto::v1::StatusReply;
        let leader = StatusReply {
            node_id: 1,
            leader_id: 1,
            leader_addr: "10.0.0.1:7001".into(),
            term: 3,
            applied_index: 40,
            read_index: 42,
        };
        assert_eq!(confirmed_read_index(&leader).ok(), Some(42));
        // A leader that could not confirm it leads: not its applied index, nothing.
        let unconfirmed = StatusReply {
            read_index: 0,
            ..leader.clone()
        };
        assert!(matches!(
            confirmed_read_index(&unconfirmed),
            Err(StoreError::Unavailable(_))
        ));
        // A follower points at the leader, or says none is known.
        let follower = StatusReply {
            node_id: 2,
            ..leader.clone()
        };
        assert_eq!(
            confirmed_read_index(&follower).err(),
            Some(StoreError::NotLeader {
                leader_id: Some(1),
                leader_addr: Some("10.0.0.1:7001".into())
            })
        );
        let lost = StatusReply {
            node_id: 2,
            leader_id: 0,
            leader_addr: String::new(),
            ..leader
        };
        assert_eq!(
            confirmed_read_index(&lost).err(),
            Some(StoreError::NotLeader {
                leader_id: None,
                leader_addr: None
            })
        );
    }

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
        assert!(matches!(
            error_from_status(&Status::unauthenticated("wrong key")),
            StoreError::Refused(m) if m.contains("wrong key")
        ));
        assert!(matches!(
            error_from_status(&Status::permission_denied("not yourself")),
            StoreError::Refused(_)
        ));
        // A refusal relayed by a voter stays a refusal (not retried), and every variant comes
        // back as itself.
        let refused = StoreError::Refused("bad key".into());
        let status = status_from_error(&refused);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!error_from_status(&status).retryable());
        for error in [
            StoreError::Unavailable("u".into()),
            StoreError::Timeout("t".into()),
            refused,
            StoreError::Internal("i".into()),
        ] {
            let back = error_from_status(&status_from_error(&error));
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&error)
            );
        }
    }
}
