//! The gateway's side of the cluster: which other gateways a message must go to, the
//! conversion of envelopes to and from their wire form, and what happens to envelopes that
//! arrive from other gateways.
//!
//! No gateway knows another's connections (see `local`), so a message for a hub, a user, a
//! group or a connection held elsewhere goes to every gateway the store lists that serves the
//! hub (`interest`), and each delivers it to the recipients it holds; a message for a
//! connection held here goes nowhere else. One link per pair of gateways and one queue per peer
//! keep per-sender order. An arriving envelope is delivered at once, by the memberships the
//! receiving gateway holds now: a change it answered for was applied before it answered (one
//! it has not answered for yet, being retried, reaches it later).

use std::sync::{Arc, Weak};
use std::time::Instant;

use async_trait::async_trait;
use switchboard_cluster::proto;
use switchboard_cluster::{Inbound, PeerInfo};
use switchboard_core::NodeId;
use switchboard_membership::Membership;

use crate::dispatch::{Envelope, Payload, PayloadSource, Recipients};
use crate::Shared;

/// The other gateways that may hold a recipient of `envelope`.
pub(crate) fn route(shared: &Shared, envelope: &Envelope) -> Vec<PeerInfo> {
    let (hub, recipients) = match envelope {
        Envelope::Message {
            hub, recipients, ..
        }
        | Envelope::Close {
            hub, recipients, ..
        } => (hub, recipients),
    };
    if let Recipients::Connection { connection } = recipients {
        if shared.local.read().connection(hub, connection).is_some() {
            return Vec::new();
        }
    }
    crate::scatter::peers_for(shared, hub)
        .into_iter()
        .map(|p| PeerInfo {
            node: p.node,
            incarnation: p.incarnation,
            address: p.address,
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

pub(crate) fn to_wire(envelope: &Envelope) -> proto::Envelope {
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
        min_applied_index: 0,
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
}

impl PeerInbound {
    pub(crate) fn new(shared: Weak<Shared>) -> Self {
        PeerInbound { shared }
    }
}

#[async_trait]
impl Inbound for PeerInbound {
    async fn deliver(&self, from: NodeId, envelope: proto::Envelope) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let received = Instant::now();
        match from_wire(envelope) {
            Ok(envelope) => {
                shared.delivery.deliver(&envelope, received);
            }
            Err(error) => tracing::warn!(peer = from, %error, "dropping an envelope"),
        }
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
            let wire = to_wire(&envelope);
            let back = from_wire(wire).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{envelope:?}"));
        }
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert!(from_wire(proto::Envelope::default()).is_err());
    }
}
