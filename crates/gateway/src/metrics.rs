//! The gateway's Prometheus metrics.
//!
//! Handles are registered once at start-up and kept in [`GatewayMetrics`], so the hot path
//! increments a counter without a registry lookup. Labels are bounded: close reasons are a fixed
//! enum, HTTP routes are axum's matched path templates, never raw paths or ids.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

/// Why a client connection ended: the `reason` label of `switchboard_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection or sent a Close message.
    Client,
    /// A REST call closed it (`DELETE .../connections/{id}`, `:closeConnections`).
    Api,
    /// Its outbound queue overflowed.
    SlowConsumer,
    /// Nothing received within the client timeout, or no handshake in time.
    Timeout,
    /// It sent something that is not the hub protocol.
    ProtocolError,
    /// The server is shutting down.
    Shutdown,
    /// The store dropped this node's connections (lease lost) or refused to register it.
    Store,
    /// A transport error on the socket.
    TransportError,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::Api,
        CloseReason::SlowConsumer,
        CloseReason::Timeout,
        CloseReason::ProtocolError,
        CloseReason::Shutdown,
        CloseReason::Store,
        CloseReason::TransportError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Api => "api",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Timeout => "timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Store => "store",
            CloseReason::TransportError => "transport_error",
        }
    }
}

/// Pre-registered metric handles shared by every connection and request.
pub struct GatewayMetrics {
    pub connections: Gauge,
    pub connections_opened: Counter,
    closed: [Counter; 8],
    pub handshake_failures: Counter,
    pub messages_received: Counter,
    pub bytes_received: Counter,
    pub messages_sent: Counter,
    pub bytes_sent: Counter,
    pub slow_consumer_closes: Counter,
    pub queue_dropped: Counter,
    /// Negotiates and connects refused: the connection limit was reached.
    pub refused_limit: Counter,
    /// Connects refused: the connection token is used by an open connection.
    pub refused_in_use: Counter,
    /// Connections opened, by transport.
    transports: [Counter; 3],
    /// Long Polling polls, by outcome.
    polls: [Counter; 3],
    /// Stateful reconnect: connections resumed on a new socket, windows that expired, frames
    /// sent again.
    pub stateful_resumed: Counter,
    pub stateful_expired: Counter,
    pub replayed: Counter,
    /// Requests relayed to the gateway holding their connection, and relays that failed, by
    /// kind (send, poll, close).
    relays: [Counter; 4],
    relay_failures: [Counter; 4],
    /// Negotiates answered, by negotiate version.
    pub negotiated_v0: Counter,
    pub negotiated_v1: Counter,
    /// Time from a message entering the gateway (REST or peer) until it is queued for every
    /// local recipient.
    pub fanout_seconds: Histogram,
    pub recipients: Histogram,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        describe_gauge!(
            "switchboard_connections",
            "Client connections currently open on this gateway."
        );
        describe_counter!(
            "switchboard_connections_opened_total",
            "Client connections that completed the handshake."
        );
        describe_counter!(
            "switchboard_connections_closed_total",
            "Client connections closed, by reason."
        );
        describe_counter!(
            "switchboard_transport_connections_total",
            "Client connections opened, by transport (websockets, sse, longpolling)."
        );
        describe_counter!(
            "switchboard_long_polls_total",
            "Long Polling polls answered, by outcome: data, empty (poll timeout or superseded), closed (204)."
        );
        describe_counter!(
            "switchboard_stateful_reconnects_total",
            "Stateful reconnect: dropped WebSockets whose client came back (resumed) or did not within the window (expired)."
        );
        describe_counter!(
            "switchboard_replayed_messages_total",
            "Stateful reconnect: unacknowledged messages sent again on a reconnected socket."
        );
        describe_counter!(
            "switchboard_relayed_requests_total",
            "Requests relayed to the gateway holding their connection, by kind: send, poll, close (SSE and Long Polling), resume (a stateful-reconnect WebSocket)."
        );
        describe_counter!(
            "switchboard_relay_failures_total",
            "Relays that failed because the holding gateway could not be reached, by kind."
        );
        describe_counter!(
            "switchboard_presence_calls_total",
            "Presence calls to other gateways (query, apply, claim, announce, hubs), by outcome (ok, failed, given_up: a retry not started because too many are in flight)."
        );
        describe_histogram!(
            "switchboard_presence_call_seconds",
            Unit::Seconds,
            "Time a presence call to another gateway took, by call."
        );
        describe_counter!(
            "switchboard_negotiations_total",
            "Negotiate requests answered, by negotiate version (0: clients that send none)."
        );
        describe_counter!(
            "switchboard_handshake_failures_total",
            "Connection attempts that failed before or during the handshake."
        );
        describe_counter!(
            "switchboard_messages_received_total",
            "Hub protocol messages received from clients."
        );
        describe_counter!(
            "switchboard_received_bytes_total",
            Unit::Bytes,
            "Bytes of hub protocol messages received from clients."
        );
        describe_counter!(
            "switchboard_messages_sent_total",
            "Hub protocol messages written to client sockets."
        );
        describe_counter!(
            "switchboard_sent_bytes_total",
            Unit::Bytes,
            "Bytes of hub protocol messages written to client sockets."
        );
        describe_counter!(
            "switchboard_slow_consumer_closes_total",
            "Connections closed because their outbound queue overflowed."
        );
        describe_counter!(
            "switchboard_queue_dropped_messages_total",
            "Messages dropped because a connection's outbound queue was full or closing."
        );
        describe_counter!(
            "switchboard_connections_refused_total",
            "Negotiates and connects refused, by reason: limit (--max-connections reached), in_use (the connection token belongs to an open connection)."
        );
        describe_histogram!("switchboard_fanout_duration_seconds", Unit::Seconds, "Time from a message entering the gateway until it is queued for every local recipient.");
        describe_histogram!(
            "switchboard_fanout_recipients",
            "Local recipients per routed message."
        );
        describe_counter!(
            "switchboard_http_requests_total",
            "HTTP requests by matched route template, method and status."
        );
        describe_counter!(
            "switchboard_admin_refusals_total",
            "Admin API requests refused for want of an admin token (--admin)."
        );
        describe_gauge!(
            "switchboard_admin_trace_streams",
            "Open live-trace streams of the admin page."
        );
        describe_counter!(
            "switchboard_admin_trace_dropped_total",
            "Live-trace events a slow admin viewer missed."
        );
        describe_histogram!(
            "switchboard_http_request_duration_seconds",
            Unit::Seconds,
            "HTTP request handling time by matched route template."
        );
        let closed = CloseReason::ALL
            .map(|r| counter!("switchboard_connections_closed_total", "reason" => r.as_str()));
        GatewayMetrics {
            connections: gauge!("switchboard_connections"),
            connections_opened: counter!("switchboard_connections_opened_total"),
            closed,
            handshake_failures: counter!("switchboard_handshake_failures_total"),
            messages_received: counter!("switchboard_messages_received_total"),
            bytes_received: counter!("switchboard_received_bytes_total"),
            messages_sent: counter!("switchboard_messages_sent_total"),
            bytes_sent: counter!("switchboard_sent_bytes_total"),
            slow_consumer_closes: counter!("switchboard_slow_consumer_closes_total"),
            queue_dropped: counter!("switchboard_queue_dropped_messages_total"),
            refused_limit: counter!("switchboard_connections_refused_total", "reason" => "limit"),
            refused_in_use: counter!("switchboard_connections_refused_total", "reason" => "in_use"),
            transports: ["websockets", "sse", "longpolling"]
                .map(|t| counter!("switchboard_transport_connections_total", "transport" => t)),
            polls: ["data", "empty", "closed"]
                .map(|o| counter!("switchboard_long_polls_total", "outcome" => o)),
            stateful_resumed: counter!("switchboard_stateful_reconnects_total", "outcome" => "resumed"),
            stateful_expired: counter!("switchboard_stateful_reconnects_total", "outcome" => "expired"),
            replayed: counter!("switchboard_replayed_messages_total"),
            relays: ["send", "poll", "close", "resume"]
                .map(|k| counter!("switchboard_relayed_requests_total", "kind" => k)),
            relay_failures: ["send", "poll", "close", "resume"]
                .map(|k| counter!("switchboard_relay_failures_total", "kind" => k)),
            negotiated_v0: counter!("switchboard_negotiations_total", "version" => "0"),
            negotiated_v1: counter!("switchboard_negotiations_total", "version" => "1"),
            fanout_seconds: histogram!("switchboard_fanout_duration_seconds"),
            recipients: histogram!("switchboard_fanout_recipients"),
        }
    }

    /// Counts a connection opened on `transport` (`websockets`, `sse`, `longpolling`).
    pub fn transport(&self, transport: &str) {
        let i = match transport {
            "sse" => 1,
            "longpolling" => 2,
            _ => 0,
        };
        self.transports[i].increment(1);
    }

    /// Counts a request relayed to the gateway holding its connection.
    pub(crate) fn relayed(&self, kind: &str) {
        self.relays[relay_index(kind)].increment(1);
    }

    /// Counts a relay that failed (the holder could not be reached).
    pub(crate) fn relay_failed(&self, kind: &str) {
        self.relay_failures[relay_index(kind)].increment(1);
    }

    /// Counts a Long Polling poll's outcome.
    pub(crate) fn long_poll(&self, outcome: &crate::client::http::Polled) {
        use crate::client::http::Polled;
        let i = match outcome {
            Polled::Data(_) => 0,
            Polled::Empty => 1,
            Polled::Closed => 2,
        };
        self.polls[i].increment(1);
    }

    pub fn closed(&self, reason: CloseReason) {
        // `ALL` lists the variants in declaration order (checked by a test).
        if let Some(counter) = self.closed.get(reason as usize) {
            counter.increment(1);
        }
    }
}

fn relay_index(kind: &str) -> usize {
    match kind {
        "poll" => 1,
        "close" => 2,
        "resume" => 3,
        _ => 0,
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Histogram buckets (seconds) for latencies measured by Switchboard: 50 µs .. 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets for counts (recipients per message, commands per batch).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_close_reasons_are_in_declaration_order() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
    }
}
