//! Metrics of the public edge.

use metrics::{counter, describe_counter, describe_gauge, gauge};

const OPEN_SOCKETS: &str = "switchboard_http_open_connections";
const ENDED: &str = "switchboard_http_connections_closed_early_total";
const REJECTED: &str = "switchboard_http_requests_refused_total";
const ACCEPT_ERRORS: &str = "switchboard_http_accept_errors_total";

/// Registers help text (call once the recorder is installed).
pub fn describe() {
    describe_gauge!(OPEN_SOCKETS, "TCP connections open on the public listener.");
    describe_counter!(
        ENDED,
        "Connections the edge closed or refused, by reason: limit (every connection busy), evicted (closed to make room), malformed, head_timeout, silent_timeout, idle_timeout, body_timeout, write_timeout, tls, pipelined_overflow (more than 64 KiB sent behind a long-lived request)."
    );
    describe_counter!(
        REJECTED,
        "Requests refused before routing (malformed heads, too long, too large, too slow), by status."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        "Failed accepts on the public listener (usually: out of file descriptors)."
    );
}

pub(crate) fn open_sockets(n: usize) {
    gauge!(OPEN_SOCKETS).set(n as f64);
}

pub(crate) fn connection_ended(reason: &'static str) {
    counter!(ENDED, "reason" => reason).increment(1);
}

pub(crate) fn request_rejected(status: u16) {
    counter!(REJECTED, "status" => status.to_string()).increment(1);
}

pub(crate) fn accept_error() {
    counter!(ACCEPT_ERRORS).increment(1);
}
