//! A load generator for Switchboard, and the baselines it is measured against.
//!
//! Performance targets in this project are ratios measured in one run on one machine: Switchboard
//! against a bare tokio WebSocket broadcast server ([`baseline`], the ceiling for this machine and
//! client) and against Socket.IO 4, all driven by the same generator. This crate is that
//! generator and the bare server.
//!
//! The generator opens N clients at a given pace (negotiate, transport, handshake; SignalR JSON
//! or MessagePack over WebSockets, JSON over Server-Sent Events or Long Polling, or Socket.IO's
//! engine.io v4), drives REST sends at a given rate or in a burst (broadcast, user, group,
//! connection), and reports delivered messages per second, end-to-end latency from a timestamp
//! in each payload (HDR histogram), connect rate, errors and drops, and the server's RSS per
//! connection. Layout:
//!
//! - [`cli`]: the options, shared by the parent and its worker processes.
//! - [`frames`]: the wire formats, decoded only as far as the measurement needs.
//! - [`client`]: one connection, opened and read.
//! - [`http_transport`]: the Server-Sent Events and Long Polling clients.
//! - [`rest`]: negotiate, group joins and sends over HTTP (tokens from `switchboard-auth`).
//! - [`send`]: which message goes where and when, and the deliveries it owes.
//! - [`pool`]: the connections of a run, in this process or in worker processes.
//! - [`stats`]: counters and histograms, and how they merge.
//! - [`procfs`]: the server's RSS and CPU time from `/proc`.
//! - [`report`]: the table, the JSON line, and the comparison of a results file.
//! - [`run`]: one run from start to end.
//! - [`baseline`]: the bare broadcast server (`baseline-server`).
//! - [`invoke`]: the `invoke` subcommand: client invocations through Switchboard to an upstream,
//!   against the same calls made straight to it.
//! - [`upstream`]: the minimal upstream it calls (`upstream-server`).

pub mod baseline;
pub mod cli;
pub mod client;
pub mod error;
pub mod frames;
pub mod http_transport;
pub mod invoke;
pub mod pool;
pub mod procfs;
pub mod report;
pub mod rest;
pub mod run;
pub mod send;
pub mod stats;
pub mod upstream;

pub use error::{Error, FrameError};
