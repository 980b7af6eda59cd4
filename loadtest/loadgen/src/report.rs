//! The result of a run: one flat, serializable [`Report`] printed as a table for people and as
//! one JSON line for scripts, and [`compare`], which turns a file of such lines into the
//! Markdown tables of docs/benchmarks.md (each figure next to the baselines of the same run, and
//! Switchboard's HTTP transports next to its WebSockets).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub target: String,
    pub scenario: String,
    pub protocol: String,
    /// `websockets`, `sse` or `longpolling` (absent from older results: WebSockets).
    #[serde(default)]
    pub transport: String,
    /// `idle`, `burst K` or `rate M/s`.
    pub mode: String,
    pub processes: usize,
    pub payload_bytes: usize,

    pub connections: usize,
    pub opened: u64,
    pub connect_errors: u64,
    /// The requested pace (0 = unlimited).
    pub connect_rate_limit: f64,
    /// Opened per second, first attempt to last handshake.
    pub connect_per_s: Option<f64>,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,

    pub sends: u64,
    pub sends_ok: u64,
    pub send_errors: u64,
    pub sends_late: u64,
    pub sends_per_s: Option<f64>,

    pub expected: u64,
    pub received: u64,
    /// Expected deliveries that never arrived.
    pub drops: u64,
    /// Deliveries beyond what was expected (duplicates, other senders on the hub).
    pub extra: u64,
    /// Received per second, from the first send to the last delivery.
    pub deliveries_per_s: Option<f64>,
    pub latency_ms: Option<Latency>,
    pub disconnects: u64,
    pub decode_errors: u64,

    pub server_rss_before_kib: Option<u64>,
    pub server_rss_idle_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    /// (idle RSS − RSS before connecting) / opened connections.
    pub kib_per_connection: Option<f64>,
    pub server_cpu_connect_s: Option<f64>,
    pub server_cpu_send_s: Option<f64>,
    pub client_cpu_connect_s: Option<f64>,
    pub client_cpu_send_s: Option<f64>,
    /// Wall time of the send phase (first send to end of drain), seconds.
    pub send_phase_s: Option<f64>,

    /// Errors by kind (connect, send, receive).
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    /// The transport, `websockets` when not recorded.
    pub fn transport(&self) -> &str {
        if self.transport.is_empty() {
            "websockets"
        } else {
            &self.transport
        }
    }

    /// Every connect, send, decode and disconnect error.
    pub fn error_count(&self) -> u64 {
        self.connect_errors + self.send_errors + self.decode_errors + self.disconnects
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        let _ = writeln!(
            s,
            "switchboard-loadgen  target={} transport={} scenario={} protocol={} mode={} label={}",
            self.target,
            self.transport(),
            self.scenario,
            self.protocol,
            self.mode,
            self.label
        );
        let _ = writeln!(
            s,
            "  connections  {} requested, {} open, {} failed; {} conn/s (limit {}); connect p50 {} ms, p99 {} ms",
            self.connections,
            self.opened,
            self.connect_errors,
            opt(self.connect_per_s, 0),
            if self.connect_rate_limit > 0.0 { format!("{}", self.connect_rate_limit) } else { "none".into() },
            opt(self.connect_p50_ms, 1),
            opt(self.connect_p99_ms, 1),
        );
        if self.sends > 0 {
            let _ = writeln!(
                s,
                "  sends        {} accepted of {}, {} failed, {} late; {}/s",
                self.sends_ok,
                self.sends,
                self.send_errors,
                self.sends_late,
                opt(self.sends_per_s, 1)
            );
            let _ = writeln!(
                s,
                "  deliveries   {} of {} expected, {} dropped, {} extra; {}/s",
                self.received,
                self.expected,
                self.drops,
                self.extra,
                opt(self.deliveries_per_s, 0)
            );
            if let Some(l) = self.latency_ms {
                let _ = writeln!(
                    s,
                    "  latency      p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                    l.p50, l.p90, l.p99, l.max
                );
            }
        }
        if self.server_rss_before_kib.is_some() {
            let _ = writeln!(
                s,
                "  server RSS   {} KiB before, {} KiB idle, {} KiB at the end; {} KiB per connection",
                self.server_rss_before_kib.unwrap_or(0),
                self.server_rss_idle_kib.map_or("-".into(), |v| v.to_string()),
                self.server_rss_end_kib.map_or("-".into(), |v| v.to_string()),
                opt(self.kib_per_connection, 2)
            );
            let _ = writeln!(
                s,
                "  CPU seconds  server {} connecting, {} sending; client {} connecting, {} sending (send phase {} s)",
                opt(self.server_cpu_connect_s, 2),
                opt(self.server_cpu_send_s, 2),
                opt(self.client_cpu_connect_s, 2),
                opt(self.client_cpu_send_s, 2),
                opt(self.send_phase_s, 2),
            );
        }
        let _ = writeln!(
            s,
            "  errors       {} disconnects, {} undecodable frames{}",
            self.disconnects,
            self.decode_errors,
            if self.errors.is_empty() {
                String::new()
            } else {
                ":".into()
            }
        );
        for (kind, n) in &self.errors {
            let _ = writeln!(s, "    {n:>8}  {kind}");
        }
        s
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_owned(),
    }
}

/// The figure a run of this kind is compared by, and its name.
fn metric(r: &Report) -> (&'static str, fn(&Report) -> Option<f64>) {
    if r.mode.starts_with("burst") {
        ("deliveries/s", |r| r.deliveries_per_s)
    } else if r.mode.starts_with("rate") {
        ("p99 latency", |r| r.latency_ms.map(|l| l.p99))
    } else if r.connect_rate_limit == 0.0 {
        ("connections/s", |r| r.connect_per_s)
    } else {
        ("KiB per connection", |r| r.kib_per_connection)
    }
}

/// CPU seconds of the phase a run is about: sending if it sent, else connecting.
fn phase_cpu(r: &Report, connect: Option<f64>, send: Option<f64>) -> Option<f64> {
    if r.sends > 0 {
        send
    } else {
        connect
    }
}

/// Markdown tables of the reports in `results` (one JSON line each; other lines are skipped):
/// every run, then per label the Switchboard figure divided by each baseline's, and per label
/// Switchboard's SSE and Long Polling figures divided by its WebSockets figure.
pub fn compare(results: &str) -> String {
    let reports: Vec<Report> = results
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| run | target | conns | conn/s | KiB/conn | deliveries/s | p50 ms | p90 ms | p99 ms | max ms | drops | errors |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &reports {
        let l = r.latency_ms;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            match r.transport() {
                "websockets" => r.target.clone(),
                other => format!("{} ({other})", r.target),
            },
            r.opened,
            if r.connect_rate_limit == 0.0 {
                fmt_opt(r.connect_per_s, 0)
            } else {
                "–".into()
            },
            fmt_opt(r.kib_per_connection, 2),
            if r.mode.starts_with("burst") {
                fmt_opt(r.deliveries_per_s, 0)
            } else {
                "–".into()
            },
            fmt_opt(l.map(|l| l.p50), 2),
            fmt_opt(l.map(|l| l.p90), 2),
            fmt_opt(l.map(|l| l.p99), 2),
            fmt_opt(l.map(|l| l.max), 2),
            r.drops,
            r.error_count(),
        );
    }
    let mut labels: Vec<&str> = Vec::new();
    for r in &reports {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let find_on = |label: &str, target: &str, transport: &str| {
        reports
            .iter()
            .rev()
            .find(|r| r.label == label && r.target == target && r.transport() == transport)
    };
    let find = |label: &str, target: &str| find_on(label, target, "websockets");
    let mut rows = String::new();
    for label in &labels {
        let Some(sb) = find(label, "switchboard") else {
            continue;
        };
        let bl = find(label, "baseline");
        let sio = find(label, "socketio");
        if bl.is_none() && sio.is_none() {
            continue;
        }
        let (name, get) = metric(sb);
        let _ = writeln!(
            rows,
            "| {label} | {name} | {} | {} | {} | {} | {} |",
            fmt_opt(get(sb), 2),
            fmt_opt(bl.and_then(get), 2),
            fmt_opt(sio.and_then(get), 2),
            ratio(get(sb), bl.and_then(get)),
            ratio(get(sb), sio.and_then(get)),
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| run | metric | switchboard | baseline | socket.io | switchboard ÷ baseline | switchboard ÷ socket.io |"
        );
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        s.push_str(&rows);
    }
    let mut rows = String::new();
    for label in &labels {
        let Some(ws) = find(label, "switchboard") else {
            continue;
        };
        let sse = find_on(label, "switchboard", "sse");
        let lp = find_on(label, "switchboard", "longpolling");
        if sse.is_none() && lp.is_none() {
            continue;
        }
        let (name, get) = metric(ws);
        let runs = [Some(ws), sse, lp];
        let each = |f: &dyn Fn(&Report) -> String| {
            runs.iter()
                .map(|r| r.map_or("–".to_owned(), f))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            rows,
            "| {label} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_opt(get(ws), 2),
            fmt_opt(sse.and_then(get), 2),
            fmt_opt(lp.and_then(get), 2),
            ratio(sse.and_then(get), get(ws)),
            ratio(lp.and_then(get), get(ws)),
            each(&|r| format!("{} of {}", r.received, r.expected)),
            each(&|r| r.error_count().to_string()),
            each(&|r| fmt_opt(phase_cpu(r, r.server_cpu_connect_s, r.server_cpu_send_s), 2)),
            each(&|r| fmt_opt(phase_cpu(r, r.client_cpu_connect_s, r.client_cpu_send_s), 2)),
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| run | metric | websockets | sse | long polling | sse ÷ websockets | long polling ÷ websockets | delivered (ws / sse / lp) | errors (ws / sse / lp) | server CPU s (ws / sse / lp) | generator CPU s (ws / sse / lp) |"
        );
        let _ = writeln!(
            s,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        s.push_str(&rows);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, target: &str, mode: &str, rate: Option<f64>) -> Report {
        Report {
            label: label.into(),
            target: target.into(),
            mode: mode.into(),
            deliveries_per_s: rate,
            opened: 10,
            connect_rate_limit: 1000.0,
            ..Report::default()
        }
    }

    #[test]
    fn compare_divides_by_each_baseline() {
        let lines = [
            report("burst", "switchboard", "burst 200", Some(80.0)),
            report("burst", "baseline", "burst 200", Some(100.0)),
            report("burst", "socketio", "burst 200", Some(10.0)),
        ]
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect::<Vec<_>>()
        .join("\nnot json\n");
        let out = compare(&lines);
        assert!(
            out.contains("| burst | deliveries/s | 80.00 | 100.00 | 10.00 | 0.80 | 8.00 |"),
            "{out}"
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("| burst |")).count(),
            4
        );
    }

    #[test]
    fn compare_divides_http_transports_by_websockets() {
        let mut lines = Vec::new();
        for (transport, rate, received) in [
            ("", 100.0, 2000),
            ("sse", 80.0, 2000),
            ("longpolling", 50.0, 1999),
        ] {
            let mut r = report("burst", "switchboard", "burst 200", Some(rate));
            r.transport = transport.into();
            r.sends = 200;
            r.expected = 2000;
            r.received = received;
            r.drops = 2000 - received;
            r.server_cpu_send_s = Some(1.5);
            r.client_cpu_send_s = Some(0.5);
            lines.push(serde_json::to_string(&r).unwrap());
        }
        // An older line without the field reads as WebSockets.
        let old = lines[0].replace(",\"transport\":\"\"", "");
        assert!(!old.contains("transport"));
        lines[0] = old;
        let out = compare(&lines.join("\n"));
        assert!(out.contains("| burst | switchboard (sse) |"), "{out}");
        assert!(
            out.contains(
                "| burst | deliveries/s | 100.00 | 80.00 | 50.00 | 0.80 | 0.50 | 2000 of 2000 / 2000 of 2000 / 1999 of 2000 | 0 / 0 / 0 | 1.50 / 1.50 / 1.50 | 0.50 / 0.50 / 0.50 |"
            ),
            "{out}"
        );
        // No baseline in the file: no baseline table.
        assert!(!out.contains("switchboard ÷ baseline"), "{out}");
    }

    #[test]
    fn table_lists_errors() {
        let mut r = report("x", "switchboard", "idle", None);
        r.errors.insert("negotiate: HTTP 401".into(), 3);
        r.connect_errors = 3;
        let t = r.table();
        assert!(t.contains("negotiate: HTTP 401"));
        assert_eq!(r.error_count(), 3);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
