//! The gateway's side of the cluster: which other gateways a message must go to, the
//! conversion of envelopes to and from their wire form, and what happens to envelopes that
//! arrive from other gateways.
//!
//! Routing reads the membership view: a hub broadcast goes to the gateways holding a connection
//! of that hub, a user or group message to the gateways holding one of its connections, a
//! connection message to the gateway holding it (or, while the view has not caught up yet, to
//! the gateway its id names). The envelope carries the log index the sender's view had applied;
//! the receiver waits, briefly, until its own view has applied it too, so a membership change
//! the sender already saw is honoured on the other side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchboard_cluster::proto;
use switchboard_cluster::{Inbound, PeerInfo};
use switchboard_core::{node_of_connection_id, NodeId};
use switchboard_membership::Membership;

use crate::dispatch::{Envelope, Payload, PayloadSource, Recipients};
use crate::Shared;

/// How long an envelope from another gateway waits for this node's view to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// The other gateways that may hold a recipient of `envelope`.
pub(crate) fn route(view: &Membership, envelope: &Envelope, me: NodeId) -> Vec<PeerInfo> {
    let (hub, recipients) = match envelope {
        Envelope::Message {
            hub, recipients, ..
        }
        | Envelope::Close {
            hub, recipients, ..
        } => (hub, recipients),
    };
    let mut nodes: Vec<NodeId> = match recipients {
        Recipients::Hub { .. } => view.hub_nodes(hub).collect(),
        Recipients::User { user, .. } => view.user_nodes(hub, user).collect(),
        Recipients::Group { group, .. } => view.group_nodes(hub, group).collect(),
        Recipients::Connection { connection } => view
            .connection(hub, connection)
            .map(|c| c.node)
            .or_else(|| node_of_connection_id(connection))
            .into_iter()
            .collect(),
    };
    nodes.retain(|n| *n != me);
    nodes
        .into_iter()
        .filter_map(|n| view.node(n))
        .map(|info| PeerInfo {
            node: info.node,
            incarnation: info.incarnation,
            address: info.address.clone(),
        })
        .collect()
}

/// Every gateway the view lists, as fan-out peers.
pub(crate) fn listed_peers(view: &Membership) -> Vec<PeerInfo> {
    view.nodes()
        .map(|info| PeerInfo {
            node: info.node,
            incarnation: info.incarnation,
            address: info.address.clone(),
        })
        .collect()
}

pub(crate) fn to_wire(envelope: &Envelope, min_applied_index: u64) -> proto::Envelope {
    let (hub, recipients, body) = match envelope {
        Envelope::Message {
            hub,
            recipients,
            payload,
        } => {
            let source = match payload.source() {
                PayloadSource::Json { target, arguments } => {
                    proto::payload::Source::Json(proto::JsonInvocation {
                        target: target.clone(),
                        // Copied once here; every peer's clone then shares the bytes.
                        arguments_json: bytes::Bytes::from(arguments.clone().into_bytes()),
                    })
                }
                PayloadSource::MessagePack { target, arguments } => {
                    proto::payload::Source::Messagepack(proto::MessagePackInvocation {
                        target: target.clone(),
                        arguments: arguments.clone(),
                    })
                }
                PayloadSource::Framed { json, messagepack } => {
                    proto::payload::Source::Framed(proto::Framed {
                        json: json.clone(),
                        messagepack: messagepack.clone(),
                    })
                }
            };
            (
                hub,
                recipients,
                proto::envelope::Body::Message(proto::Payload {
                    source: Some(source),
                }),
            )
        }
        Envelope::Close {
            hub,
            recipients,
            reason,
        } => (
            hub,
            recipients,
            proto::envelope::Body::Close(proto::Close {
                reason: reason.clone(),
            }),
        ),
    };
    let (target, excluded) = match recipients {
        Recipients::Hub { excluded } => (
            proto::recipients::Target::Hub(proto::HubTarget {}),
            excluded.clone(),
        ),
        Recipients::User { user, excluded } => (
            proto::recipients::Target::User(proto::UserTarget { user: user.clone() }),
            excluded.clone(),
        ),
        Recipients::Group { group, excluded } => (
            proto::recipients::Target::Group(proto::GroupTarget {
                group: group.clone(),
            }),
            excluded.clone(),
        ),
        Recipients::Connection { connection } => (
            proto::recipients::Target::Connection(proto::ConnectionTarget {
                connection: connection.clone(),
            }),
            Vec::new(),
        ),
    };
    proto::Envelope {
        hub: hub.to_string(),
        recipients: Some(proto::Recipients {
            target: Some(target),
            excluded,
        }),
        body: Some(body),
        min_applied_index,
        sent_at_micros: 0,
    }
}

/// Why an envelope from another gateway could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("malformed envelope from a peer: {0}")]
pub(crate) struct WireError(&'static str);

pub(crate) fn from_wire(envelope: proto::Envelope) -> Result<Envelope, WireError> {
    let recipients = envelope.recipients.ok_or(WireError("no recipients"))?;
    let excluded = recipients.excluded;
    let recipients = match recipients.target.ok_or(WireError("no target"))? {
        proto::recipients::Target::Hub(_) => Recipients::Hub { excluded },
        proto::recipients::Target::User(u) => Recipients::User {
            user: u.user,
            excluded,
        },
        proto::recipients::Target::Group(g) => Recipients::Group {
            group: g.group,
            excluded,
        },
        proto::recipients::Target::Connection(c) => Recipients::Connection {
            connection: c.connection,
        },
    };
    let hub: Arc<str> = envelope.hub.into();
    match envelope.body.ok_or(WireError("no body"))? {
        proto::envelope::Body::Close(close) => Ok(Envelope::Close {
            hub,
            recipients,
            reason: close.reason,
        }),
        proto::envelope::Body::Message(payload) => {
            let source = match payload.source.ok_or(WireError("no payload"))? {
                proto::payload::Source::Json(j) => PayloadSource::Json {
                    target: j.target,
                    arguments: String::from_utf8(j.arguments_json.to_vec())
                        .map_err(|_| WireError("arguments are not UTF-8"))?,
                },
                proto::payload::Source::Messagepack(m) => PayloadSource::MessagePack {
                    target: m.target,
                    arguments: m.arguments,
                },
                proto::payload::Source::Framed(f) => PayloadSource::Framed {
                    json: f.json,
                    messagepack: f.messagepack,
                },
            };
            Ok(Envelope::Message {
                hub,
                recipients,
                payload: Arc::new(Payload::new(source)),
            })
        }
    }
}

/// Delivers envelopes from other gateways to this gateway's connections.
pub(crate) struct PeerInbound {
    pub(crate) shared: Weak<Shared>,
    /// The view's applied index when a catch-up wait last timed out (`u64::MAX`: none). While
    /// the view has not moved since, envelopes are delivered without waiting again: a stalled
    /// view must not slow every link down to one envelope per wait.
    stalled_at: AtomicU64,
}

impl PeerInbound {
    pub(crate) fn new(shared: Weak<Shared>) -> Self {
        PeerInbound {
            shared,
            stalled_at: AtomicU64::new(u64::MAX),
        }
    }
}

#[async_trait]
impl Inbound for PeerInbound {
    async fn deliver(&self, from: NodeId, envelope: proto::Envelope) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let received = Instant::now();
        let min_index = envelope.min_applied_index;
        let envelope = match from_wire(envelope) {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(peer = from, %error, "dropping an envelope");
                return;
            }
        };
        let view = shared.store.view();
        let applied = view.applied_index();
        if applied < min_index
            && applied != self.stalled_at.load(Ordering::Relaxed)
            && !view.wait_applied(min_index, CATCH_UP_WAIT).await
        {
            let applied = view.applied_index();
            self.stalled_at.store(applied, Ordering::Relaxed);
            tracing::warn!(
                peer = from,
                min_index,
                applied,
                "this gateway's view is not catching up; delivering with it as it is"
            );
        }
        shared.delivery.deliver(&envelope, received);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn envelopes_survive_the_wire() {
        let cases = vec![
            Envelope::Message {
                hub: "chat".into(),
                recipients: Recipients::Group {
                    group: "g".into(),
                    excluded: vec!["x".into()],
                },
                payload: Arc::new(Payload::new(PayloadSource::Json {
                    target: "t".into(),
                    arguments: "[1]".into(),
                })),
            },
            Envelope::Message {
                hub: "chat".into(),
                recipients: Recipients::User {
                    user: "u".into(),
                    excluded: vec![],
                },
                payload: Arc::new(Payload::new(PayloadSource::Framed {
                    json: Some(Bytes::from_static(b"{}\x1e")),
                    messagepack: None,
                })),
            },
            Envelope::Close {
                hub: "chat".into(),
                recipients: Recipients::Connection {
                    connection: "c.1".into(),
                },
                reason: Some("bye".into()),
            },
            Envelope::Close {
                hub: "h".into(),
                recipients: Recipients::Hub {
                    excluded: vec!["a".into(), "b".into()],
                },
                reason: None,
            },
        ];
        for envelope in cases {
            let wire = to_wire(&envelope, 7);
            assert_eq!(wire.min_applied_index, 7);
            let back = from_wire(wire).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{envelope:?}"));
        }
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert!(from_wire(proto::Envelope::default()).is_err());
    }
}
