//! Cross-node fan-out: messages for connections held by other gateways travel over long-lived
//! gRPC streams.
//!
//! Every pair of gateways shares one bidirectional `Fanout.Link` stream, dialed by the node with
//! the lower id and reused for every message in both directions; it is re-dialed with backoff
//! when it breaks. Each peer has one bounded outbound queue: a message is queued (never blocking
//! the caller) or dropped and counted when the queue is full. Frames from one node reach another
//! in the order they were queued, and the receiving side hands them to an [`Inbound`] handler one
//! at a time, so per-sender order holds across nodes.
//!
//! This crate knows nothing of hubs or connections: it moves `proto::Envelope`s between node ids.
//! The gateway decides which peers may hold recipients and what to do with what arrives.
//!
//! Layout: [`fanout`] (the peer table, sending, the gRPC service and the link loops) and
//! `metrics` (per-peer counters and the delivery latency histogram).

pub mod fanout;
mod metrics;

pub use fanout::{Fanout, FanoutConfig, Inbound, PeerInfo, PeerTransport};
pub use switchboard_proto::v1 as proto;
