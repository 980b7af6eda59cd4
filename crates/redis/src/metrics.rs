//! Prometheus metrics of the Redis engine.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `switchboard_redis_writes_total{result}` | counter | appends by result (`ok`, `unavailable`, `timeout`, `error`) |
//! | `switchboard_redis_write_seconds` | histogram | an append, from call until this gateway applied it |
//! | `switchboard_redis_read_errors_total` | counter | failed reads of the stream (each is retried) |
//! | `switchboard_redis_resyncs_total` | counter | times a gateway found a gap in the stream and reloaded the snapshot |
//! | `switchboard_redis_snapshots_total` | counter | snapshots this gateway wrote |
//! | `switchboard_redis_reconnects_total` | counter | reconnections of this gateway's Redis clients |
//! | `switchboard_redis_replica_lag_seconds` | gauge | age of the last entry this gateway applied, when it applied it |
//! | `switchboard_redis_fanout_published_total` | counter | envelopes published to other gateways' channels |
//! | `switchboard_redis_fanout_dropped_total` | counter | envelopes dropped (a full peer queue, or a subscriber that fell behind) |
//! | `switchboard_redis_fanout_publish_errors_total` | counter | failed publishes (each is retried) |
//! | `switchboard_redis_fanout_lag_seconds` | histogram | from an envelope's send until this gateway received it over pub/sub |

use std::time::Duration;

use switchboard_store::StoreError;

pub(crate) const WRITES: &str = "switchboard_redis_writes_total";
pub(crate) const WRITE_SECONDS: &str = "switchboard_redis_write_seconds";
pub(crate) const READ_ERRORS: &str = "switchboard_redis_read_errors_total";
pub(crate) const RESYNCS: &str = "switchboard_redis_resyncs_total";
pub(crate) const SNAPSHOTS: &str = "switchboard_redis_snapshots_total";
pub(crate) const RECONNECTS: &str = "switchboard_redis_reconnects_total";
pub(crate) const LAG: &str = "switchboard_redis_replica_lag_seconds";
pub(crate) const FANOUT_PUBLISHED: &str = "switchboard_redis_fanout_published_total";
pub(crate) const FANOUT_DROPPED: &str = "switchboard_redis_fanout_dropped_total";
pub(crate) const FANOUT_PUBLISH_ERRORS: &str = "switchboard_redis_fanout_publish_errors_total";
pub(crate) const FANOUT_LAG: &str = "switchboard_redis_fanout_lag_seconds";

pub(crate) fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(WRITES, "Appends to the Redis membership log, by result.");
    describe_histogram!(
        WRITE_SECONDS,
        Unit::Seconds,
        "Time an append to the Redis membership log took, until this gateway applied it."
    );
    describe_counter!(
        READ_ERRORS,
        "Failed reads of the Redis membership log (retried)."
    );
    describe_counter!(
        RESYNCS,
        "Times this gateway found a gap in the Redis membership log and reloaded the snapshot."
    );
    describe_counter!(
        SNAPSHOTS,
        "Snapshots of the membership state this gateway wrote to Redis."
    );
    describe_counter!(RECONNECTS, "Reconnections of this gateway's Redis clients.");
    metrics::describe_gauge!(
        LAG,
        Unit::Seconds,
        "Age of the last Redis log entry this gateway applied, when it applied it."
    );
    describe_counter!(
        FANOUT_PUBLISHED,
        "Envelopes published to other gateways' Redis channels."
    );
    describe_counter!(
        FANOUT_DROPPED,
        "Envelopes dropped on the Redis fan-out: a full peer queue, or a subscriber that fell behind."
    );
    describe_counter!(
        FANOUT_PUBLISH_ERRORS,
        "Failed publishes on the Redis fan-out (retried)."
    );
    describe_histogram!(
        FANOUT_LAG,
        Unit::Seconds,
        "Time from an envelope's send until this gateway received it over Redis pub/sub."
    );
    metrics::counter!(FANOUT_PUBLISHED).absolute(0);
    metrics::counter!(FANOUT_DROPPED).absolute(0);
    metrics::counter!(FANOUT_PUBLISH_ERRORS).absolute(0);
    metrics::counter!(READ_ERRORS).absolute(0);
    metrics::counter!(RESYNCS).absolute(0);
    metrics::counter!(SNAPSHOTS).absolute(0);
    metrics::counter!(RECONNECTS).absolute(0);
    metrics::gauge!(LAG).set(0.0);
}

pub(crate) fn fanout_published(count: u64) {
    metrics::counter!(FANOUT_PUBLISHED).increment(count);
}

pub(crate) fn fanout_dropped(count: u64) {
    metrics::counter!(FANOUT_DROPPED).increment(count);
}

pub(crate) fn fanout_publish_failed() {
    metrics::counter!(FANOUT_PUBLISH_ERRORS).increment(1);
}

/// An envelope sent at `sent_at_micros` (the sender's clock) arrived now.
pub(crate) fn fanout_received(sent_at_micros: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    if sent_at_micros > 0 {
        metrics::histogram!(FANOUT_LAG).record(now.saturating_sub(sent_at_micros) as f64 / 1e6);
    }
}

pub(crate) fn reconnected() {
    metrics::counter!(RECONNECTS).increment(1);
}

pub(crate) fn applied(entry_ms: u64, now_ms: u64) {
    metrics::gauge!(LAG).set(now_ms.saturating_sub(entry_ms) as f64 / 1000.0);
}

pub(crate) fn write_done<T>(result: &Result<T, StoreError>, elapsed: Duration) {
    let label = match result {
        Ok(_) => "ok",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Timeout(_)) => "timeout",
        Err(_) => "error",
    };
    metrics::counter!(WRITES, "result" => label).increment(1);
    metrics::histogram!(WRITE_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn read_failed() {
    metrics::counter!(READ_ERRORS).increment(1);
}

pub(crate) fn resynced() {
    metrics::counter!(RESYNCS).increment(1);
}

pub(crate) fn snapshot_written() {
    metrics::counter!(SNAPSHOTS).increment(1);
}
