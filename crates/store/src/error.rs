//! Errors of the store and their place in the shared error-code taxonomy.
//!
//! The gateway never inspects openraft or redb errors: everything it can see is a
//! [`StoreError`], and `From<StoreError> for switchboard_core::Error` decides the HTTP status and
//! whether a retry may help.

use switchboard_core::throttle::{now_ms, Throttle};
use switchboard_core::{ErrorCode, NodeId};

/// Every failed call reports its fault: the log gets one line per 10 s (with the count left out).
static STOPPED_LOG: Throttle = Throttle::new(10_000);
static FAULT_LOG: Throttle = Throttle::new(10_000);

/// Why a store operation failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot serve the request now: no leader, or shutting down. A retry may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write's deadline passed before it was applied here: it may still be applied. Every
    /// timer a write runs under (the caller's wait, the entry's commit, the replica catching up)
    /// gives this same answer, so what the client sees does not depend on which fired first.
    #[error("store timeout: {0}")]
    Timeout(String),
    /// This node is not the Raft leader and no forwarder took the write; `leader_id` and
    /// `leader_addr` say where the leader is, when known.
    #[error("this node is not the store leader (leader: {})", leader_hint(*.leader_id, .leader_addr.as_deref()))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// A peer refused this node's cluster credentials (wrong or missing key, a node acting for
    /// another), or did not prove it is a cluster node. A configuration fault, not the caller's:
    /// API callers see it as unavailability.
    #[error("refused by the cluster: {0}")]
    Refused(String),
    /// The configuration is invalid or does not match the data directory.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// An operator's request that cannot be done as asked (a voter change naming a node that
    /// is not a voter, removing the last voter).
    #[error("{0}")]
    Rejected(String),
    /// The disk or the data on it failed (open, read, decode).
    #[error("store storage error: {0}")]
    Storage(String),
    /// A bug or an unexpected failure inside the store.
    #[error("store internal error: {0}")]
    Internal(String),
}

fn leader_hint(id: Option<NodeId>, addr: Option<&str>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) if !addr.is_empty() => format!("node {id} at {addr}"),
        (Some(id), _) => format!("node {id}"),
        (None, _) => "unknown".to_owned(),
    }
}

impl StoreError {
    /// Raft stopped for good (openraft's fatal error: a storage error it was given, a panic in
    /// its core, shutdown). The cause goes to the log; the error says only that the store stopped,
    /// since the cause may name paths inside the data directory.
    pub fn stopped(fatal: &impl std::fmt::Display) -> StoreError {
        if let Some(suppressed) = STOPPED_LOG.allow(now_ms()) {
            tracing::error!(cause = %fatal, suppressed, "raft has stopped");
        }
        StoreError::Unavailable("the store on this node has stopped; see its log".to_owned())
    }

    /// What a client is told: faults inside the node (a configuration that does not match the
    /// disk, a storage failure, a bug) are reported without their detail, which may name paths
    /// and belongs in the node's log.
    pub fn public_message(&self) -> String {
        match self {
            StoreError::Config(_) | StoreError::Storage(_) | StoreError::Internal(_) => {
                "the store failed on this node; see its log".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The shared error code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable(_) | StoreError::NotLeader { .. } | StoreError::Refused(_) => {
                ErrorCode::Unavailable
            }
            StoreError::Timeout(_) => ErrorCode::Timeout,
            StoreError::Rejected(_) => ErrorCode::InvalidArgument,
            StoreError::Config(_) | StoreError::Storage(_) | StoreError::Internal(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// Whether the same request may succeed if retried (a refusal will not: it needs the
    /// configuration fixed).
    pub fn retryable(&self) -> bool {
        !matches!(self, StoreError::Refused(_)) && self.code().retryable()
    }
}

impl From<StoreError> for switchboard_core::Error {
    fn from(error: StoreError) -> Self {
        if matches!(
            error,
            StoreError::Config(_) | StoreError::Storage(_) | StoreError::Internal(_)
        ) {
            if let Some(suppressed) = FAULT_LOG.allow(now_ms()) {
                tracing::error!(%error, suppressed, "store fault answered as an internal error");
            }
        }
        switchboard_core::Error::new(error.code(), error.public_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailability_maps_to_a_retryable_503() {
        let not_leader = StoreError::NotLeader {
            leader_id: Some(3),
            leader_addr: Some("10.0.0.3:7000".into()),
        };
        let core: switchboard_core::Error = not_leader.clone().into();
        assert_eq!(core.code, ErrorCode::Unavailable);
        assert_eq!(core.code.http_status(), 503);
        assert!(
            core.message.contains("node 3 at 10.0.0.3:7000"),
            "{}",
            core.message
        );
        assert!(not_leader.retryable());

        let core: switchboard_core::Error = StoreError::Unavailable("no leader".into()).into();
        assert_eq!(core.code, ErrorCode::Unavailable);
    }

    #[test]
    fn a_timeout_is_a_retryable_504() {
        let timeout = StoreError::Timeout("not applied within 5000 ms".into());
        assert!(timeout.retryable());
        let core: switchboard_core::Error = timeout.into();
        assert_eq!(core.code, ErrorCode::Timeout);
        assert_eq!(core.code.http_status(), 504);
    }

    #[test]
    fn faults_map_to_internal() {
        for error in [
            StoreError::Config("x".into()),
            StoreError::Storage("x".into()),
            StoreError::Internal("x".into()),
        ] {
            assert!(!error.retryable());
            let core: switchboard_core::Error = error.into();
            assert_eq!(core.code, ErrorCode::Internal);
        }
    }

    #[test]
    fn a_client_never_sees_the_detail_of_a_fault_inside_the_node() {
        for error in [
            StoreError::Storage("open /var/lib/switchboard/raft/log.redb: denied".into()),
            StoreError::Internal("read /data/snapshots/current.snap".into()),
            StoreError::Config("the data directory /data belongs to node 2".into()),
            StoreError::stopped(&"snapshot write /data/snapshots/current.snap.tmp: full"),
        ] {
            let core: switchboard_core::Error = error.into();
            assert!(!core.message.contains('/'), "{}", core.message);
        }
    }

    #[test]
    fn unknown_leader_is_said_plainly() {
        let e = StoreError::NotLeader {
            leader_id: None,
            leader_addr: None,
        };
        assert!(e.to_string().contains("unknown"));
    }
}
