//! Metrics of the cluster plane's transport.

use metrics::{counter, describe_counter, describe_gauge, gauge};

pub(crate) fn describe() {
    describe_counter!(
        "switchboard_cluster_auth_refusals_total",
        "Cluster calls refused: without valid credentials (reason missing, malformed, bad_signature, expired, not_yet_valid) or acting for another node (reason identity)."
    );
    describe_counter!(
        "switchboard_cluster_connections_refused_total",
        "Connections to the cluster listener closed by it: over the connection cap with every connection authenticated (limit), closed unauthenticated to make room (evicted), failed or slow TLS handshakes (tls), or no authenticated call in time (unauthenticated)."
    );
    describe_gauge!(
        "switchboard_cluster_listener_connections",
        "Connections open on the cluster listener."
    );
    describe_counter!(
        "switchboard_cluster_tls_reloads_total",
        "Certificate or CA files re-read after they changed (result ok or error)."
    );
}

pub(crate) fn auth_refused(service: &'static str, reason: &'static str) {
    counter!("switchboard_cluster_auth_refusals_total", "service" => service, "reason" => reason)
        .increment(1);
}

pub(crate) fn connection_refused(reason: &'static str) {
    counter!("switchboard_cluster_connections_refused_total", "reason" => reason).increment(1);
}

pub(crate) fn listener_connections(delta: f64) {
    gauge!("switchboard_cluster_listener_connections").increment(delta);
}

pub(crate) fn tls_reload(result: &'static str) {
    counter!("switchboard_cluster_tls_reloads_total", "result" => result).increment(1);
}
