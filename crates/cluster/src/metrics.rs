//! Fan-out metrics. No per-peer labels (see [`PeerMetrics`]); per-peer detail is in the logs.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};

pub(crate) fn describe() {
    describe_gauge!(
        "switchboard_cluster_peers",
        "Peer gateways known to this node, by state of their fan-out stream (connected, connecting)."
    );
    describe_counter!(
        "switchboard_cluster_forwarded_messages_total",
        "Envelopes queued for a peer gateway."
    );
    describe_counter!(
        "switchboard_cluster_dropped_messages_total",
        "Envelopes dropped because the queue to a peer gateway was full (in messages or bytes)."
    );
    describe_counter!(
        "switchboard_cluster_received_messages_total",
        "Envelopes received from a peer gateway."
    );
    describe_counter!(
        "switchboard_cluster_link_failures_total",
        "Fan-out streams that failed or could not be opened."
    );
    describe_histogram!(
        "switchboard_cluster_delivery_latency_seconds",
        Unit::Seconds,
        "Time from a message entering the cluster on one gateway until another gateway queued it for its connections."
    );
}

/// Peer counts by link state. Per-peer gauges would outlive departed peers (the exporter cannot
/// delete a series), so the state is published as counts.
pub(crate) fn peer_states(connected: usize, connecting: usize) {
    gauge!("switchboard_cluster_peers", "state" => "connected").set(connected as f64);
    gauge!("switchboard_cluster_peers", "state" => "connecting").set(connecting as f64);
}

/// Handles for one peer. The counters carry no peer label: gateway ids are random per process,
/// so a label per peer would leave a new set of series behind every gateway restart.
pub(crate) struct PeerMetrics {
    pub(crate) forwarded: Counter,
    pub(crate) dropped: Counter,
    pub(crate) received: Counter,
    pub(crate) link_failures: Counter,
}

impl PeerMetrics {
    pub(crate) fn new() -> Self {
        PeerMetrics {
            forwarded: counter!("switchboard_cluster_forwarded_messages_total"),
            dropped: counter!("switchboard_cluster_dropped_messages_total"),
            received: counter!("switchboard_cluster_received_messages_total"),
            link_failures: counter!("switchboard_cluster_link_failures_total"),
        }
    }
}

pub(crate) fn delivery_latency() -> Histogram {
    histogram!("switchboard_cluster_delivery_latency_seconds")
}
