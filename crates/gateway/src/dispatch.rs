//! Routing a message or a close command to the connections it names.
//!
//! A message is serialized at most once per protocol ([`Payload`] caches each frame), then the
//! same `Bytes` are queued for every recipient. Recipients are resolved from two sources: the
//! local [`Registry`] (the handles, and every connection of a hub for broadcasts) and this
//! gateway's presence (`local`: which of its connections are in a group, which belong to a
//! user). This module delivers to the connections on this node; the cluster layer forwards the
//! same [`Envelope`] to other nodes that may hold recipients, where it is delivered the same way.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use switchboard_core::NodeId;
use switchboard_protocol::Protocol;

use crate::metrics::{CloseReason, GatewayMetrics};
use crate::outbound::{CloseRequest, Push, QueueLimits};
use crate::registry::{ConnectionHandle, Registry};

/// What a message carries, in the form it arrived in.
#[derive(Debug, Clone)]
pub enum PayloadSource {
    /// From a JSON REST body: the target and the raw JSON text of the arguments array.
    Json { target: String, arguments: String },
    /// From a MessagePack REST body: the target and the MessagePack bytes of the arguments
    /// array (they cross to other gateways as they are).
    MessagePack { target: String, arguments: Bytes },
    /// Frames pre-serialized by the caller for each protocol, forwarded as they are.
    Framed {
        json: Option<Bytes>,
        messagepack: Option<Bytes>,
    },
}

/// A message to clients, with its frames built lazily once per protocol.
#[derive(Debug)]
pub struct Payload {
    source: PayloadSource,
    json: OnceLock<Option<Message>>,
    messagepack: OnceLock<Option<Message>>,
}

impl Payload {
    pub fn new(source: PayloadSource) -> Self {
        Payload {
            source,
            json: OnceLock::new(),
            messagepack: OnceLock::new(),
        }
    }

    pub fn source(&self) -> &PayloadSource {
        &self.source
    }

    /// The framed message for `protocol`, or None if this payload cannot be expressed in it
    /// (a pre-serialized body without that protocol's frame).
    pub fn frame(&self, protocol: Protocol) -> Option<Message> {
        let cell = match protocol {
            Protocol::Json => &self.json,
            Protocol::MessagePack => &self.messagepack,
        };
        cell.get_or_init(|| self.build(protocol)).clone()
    }

    fn build(&self, protocol: Protocol) -> Option<Message> {
        let bytes = match (&self.source, protocol) {
            (PayloadSource::Json { target, arguments }, Protocol::Json) => Ok(
                switchboard_protocol::json_invocation_frame(target, arguments),
            ),
            (PayloadSource::Json { target, arguments }, Protocol::MessagePack) => {
                serde_json::from_str::<Vec<serde_json::Value>>(arguments)
                    .map_err(|e| e.to_string())
                    .and_then(|args| {
                        switchboard_protocol::msgpack_invocation_frame(target, &args)
                            .map_err(|e| e.to_string())
                    })
            }
            (PayloadSource::MessagePack { target, arguments }, protocol) => {
                decode_msgpack_arguments(arguments).and_then(|args| {
                    let msg = switchboard_protocol::HubMessage::Invocation {
                        invocation_id: None,
                        target: target.clone(),
                        arguments: args,
                        stream_ids: Vec::new(),
                        headers: Vec::new(),
                    };
                    switchboard_protocol::encode(protocol, &msg).map_err(|e| e.to_string())
                })
            }
            (PayloadSource::Framed { json, .. }, Protocol::Json) => {
                json.clone().ok_or_else(String::new)
            }
            (PayloadSource::Framed { messagepack, .. }, Protocol::MessagePack) => {
                messagepack.clone().ok_or_else(String::new)
            }
        };
        match bytes {
            Ok(bytes) => to_message(protocol, bytes),
            Err(e) => {
                if !e.is_empty() {
                    tracing::warn!(error = %e, protocol = protocol.name(), "cannot serialize payload for protocol");
                }
                None
            }
        }
    }
}

/// Wraps a framed message in the WebSocket message type its protocol uses.
pub fn to_message(protocol: Protocol, bytes: Bytes) -> Option<Message> {
    match protocol {
        Protocol::Json => match Utf8Bytes::try_from(bytes) {
            Ok(text) => Some(Message::Text(text)),
            Err(_) => {
                tracing::warn!("json frame is not valid utf-8; dropped");
                None
            }
        },
        Protocol::MessagePack => Some(Message::Binary(bytes)),
    }
}

fn decode_msgpack_arguments(bytes: &[u8]) -> Result<Vec<switchboard_protocol::Value>, String> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| e.to_string())?;
    match switchboard_protocol::Value::from(value) {
        switchboard_protocol::Value::Array(items) => Ok(items),
        _ => Err("arguments must be an array".into()),
    }
}

/// Who a message or close command is for, within one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    Hub {
        excluded: Vec<String>,
    },
    User {
        user: String,
        excluded: Vec<String>,
    },
    Connection {
        connection: String,
    },
    Group {
        group: String,
        excluded: Vec<String>,
    },
}

impl Recipients {
    /// Who, in a few words (the admin page's trace).
    pub fn describe(&self) -> String {
        match self {
            Recipients::Hub { .. } => "hub".to_owned(),
            Recipients::User { user, .. } => format!("user {user}"),
            Recipients::Connection { connection } => format!("connection {connection}"),
            Recipients::Group { group, .. } => format!("group {group}"),
        }
    }
}

/// An envelope as a trace event for the admin page.
pub(crate) fn describe(envelope: &Envelope) -> serde_json::Value {
    match envelope {
        Envelope::Message {
            hub,
            recipients,
            payload,
        } => {
            let (target, bytes) = match payload.source() {
                PayloadSource::Json { target, arguments } => {
                    (Some(target.as_str()), arguments.len())
                }
                PayloadSource::MessagePack { target, arguments } => {
                    (Some(target.as_str()), arguments.len())
                }
                PayloadSource::Framed { json, messagepack } => (
                    None,
                    json.as_ref()
                        .or(messagepack.as_ref())
                        .map_or(0, |b| b.len()),
                ),
            };
            serde_json::json!({
                "type": "message",
                "hub": hub.as_ref(),
                "to": recipients.describe(),
                "target": target,
                "bytes": bytes,
            })
        }
        Envelope::Close {
            hub,
            recipients,
            reason,
        } => serde_json::json!({
            "type": "close",
            "hub": hub.as_ref(),
            "to": recipients.describe(),
            "reason": reason,
        }),
    }
}

/// A routed unit: a message or a close command for some recipients of a hub.
#[derive(Debug, Clone)]
pub enum Envelope {
    Message {
        hub: Arc<str>,
        recipients: Recipients,
        payload: Arc<Payload>,
    },
    Close {
        hub: Arc<str>,
        recipients: Recipients,
        reason: Option<String>,
    },
}

/// Delivers envelopes to the connections of this node.
pub struct LocalDelivery {
    pub node: NodeId,
    pub registry: Arc<Registry>,
    pub local: Arc<crate::local::LocalPresence>,
    pub metrics: Arc<GatewayMetrics>,
    pub limits: QueueLimits,
}

fn is_excluded(excluded: &[String], id: &str) -> bool {
    excluded.iter().any(|e| e == id)
}

impl LocalDelivery {
    /// Calls `f` for every local connection matching `recipients`.
    fn for_each_recipient(
        &self,
        hub: &str,
        recipients: &Recipients,
        mut f: impl FnMut(&Arc<ConnectionHandle>),
    ) {
        match recipients {
            Recipients::Hub { excluded } => self.registry.for_each_in_hub(hub, |h| {
                if !is_excluded(excluded, &h.id) {
                    f(h)
                }
            }),
            Recipients::Connection { connection } => {
                if let Some(h) = self.registry.get(hub, connection) {
                    f(&h)
                }
            }
            Recipients::User { user, excluded } => {
                let local = self.local.read();
                for id in local.user_connections_on_node(hub, user, self.node) {
                    if !is_excluded(excluded, id) {
                        if let Some(h) = self.registry.get(hub, id) {
                            f(&h)
                        }
                    }
                }
            }
            Recipients::Group { group, excluded } => {
                let local = self.local.read();
                for id in local.group_connections_on_node(hub, group, self.node) {
                    if !is_excluded(excluded, id) {
                        if let Some(h) = self.registry.get(hub, id) {
                            f(&h)
                        }
                    }
                }
            }
        }
    }

    /// Queues the envelope for its local recipients; returns how many were reached.
    pub fn deliver(&self, envelope: &Envelope, received_at: Instant) -> usize {
        let mut reached = 0usize;
        match envelope {
            Envelope::Message {
                hub,
                recipients,
                payload,
            } => {
                let (mut slow, mut dropped) = (0u64, 0u64);
                self.for_each_recipient(hub, recipients, |h| {
                    let Some(frame) = payload.frame(h.protocol) else {
                        return;
                    };
                    match h.outbound.push(frame, self.limits) {
                        Push::Queued => reached += 1,
                        Push::Overflow => slow += 1,
                        Push::Closing => dropped += 1,
                    }
                });
                if slow > 0 {
                    self.metrics.slow_consumer_closes.increment(slow);
                    tracing::warn!(hub = %hub, connections = slow, "closing slow consumers: outbound queue full");
                }
                if slow + dropped > 0 {
                    self.metrics.queue_dropped.increment(slow + dropped);
                }
                self.metrics.recipients.record(reached as f64);
                self.metrics
                    .fanout_seconds
                    .record(received_at.elapsed().as_secs_f64());
            }
            Envelope::Close {
                hub,
                recipients,
                reason,
            } => {
                self.for_each_recipient(hub, recipients, |h| {
                    let request = CloseRequest {
                        reason: CloseReason::Api,
                        error: reason.clone(),
                        allow_reconnect: true,
                    };
                    if h.close(request) {
                        reached += 1;
                    }
                });
            }
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_builds_each_protocol_once() {
        let p = Payload::new(PayloadSource::Json {
            target: "hello".into(),
            arguments: "[1,\"a\"]".into(),
        });
        let Some(Message::Text(json)) = p.frame(Protocol::Json) else {
            panic!("json frame")
        };
        assert!(json.as_str().ends_with('\u{1e}'));
        assert!(json.as_str().contains("\"target\":\"hello\""));
        let Some(Message::Binary(mp)) = p.frame(Protocol::MessagePack) else {
            panic!("msgpack frame")
        };
        let again = p.frame(Protocol::MessagePack);
        assert_eq!(again, Some(Message::Binary(mp.clone())));
        let mut reader = switchboard_protocol::FrameReader::new(Protocol::MessagePack, 1 << 20);
        reader.push(&mp);
        let frame = reader.next_frame().expect("valid").expect("complete");
        match switchboard_protocol::decode(Protocol::MessagePack, &frame).expect("decodes") {
            switchboard_protocol::HubMessage::Invocation {
                target, arguments, ..
            } => {
                assert_eq!(target, "hello");
                assert_eq!(arguments.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn framed_payload_without_a_protocol_reaches_no_client_of_it() {
        let p = Payload::new(PayloadSource::Framed {
            json: Some(Bytes::from_static(b"{\"type\":6}\x1e")),
            messagepack: None,
        });
        assert!(p.frame(Protocol::Json).is_some());
        assert!(p.frame(Protocol::MessagePack).is_none());
    }
}
