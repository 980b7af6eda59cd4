//! One run, start to end: read the server's memory, open the connections, let them settle,
//! read the memory again, send (or hold), wait for the last deliveries, close, report.

use std::sync::Arc;
use std::time::Duration;

use switchboard_auth::ConnectionString;
use tokio::time::Instant;

use crate::cli::{RunArgs, Scenario, Target};
use crate::client::Endpoint;
use crate::error::Error;
use crate::frames::Protocol;
use crate::pool::{self, LocalPool, Pool, RemotePool};
use crate::procfs;
use crate::report::{Latency, Report};
use crate::rest::RestClient;
use crate::send::{self, Pace, Plan, SendStats};
use crate::stats::{ConnectStats, ReceiveStats};

/// The server URL and key the options name.
fn server(args: &RunArgs) -> Result<(String, Option<String>), Error> {
    let cs = match &args.connection_string {
        Some(cs) if args.target == Target::Switchboard => Some(
            cs.parse::<ConnectionString>()
                .map_err(|e| Error::Config(format!("--connection-string: {e}")))?,
        ),
        _ => None,
    };
    let url = match (&args.url, &cs) {
        (Some(url), _) => url.clone(),
        (None, Some(cs)) => cs.base_url(),
        (None, None) => {
            return Err(Error::Config(format!(
                "--target {} needs --url",
                args.target.name()
            )))
        }
    };
    let key = args
        .access_key
        .clone()
        .or_else(|| cs.and_then(|cs| cs.access_key));
    Ok((url, key))
}

/// What every connection and sender of this process shares.
pub fn endpoint(args: &RunArgs) -> Result<Arc<Endpoint>, Error> {
    let (url, key) = server(args)?;
    let mut rest = RestClient::new(args.target, &url, &args.hub, key)?;
    if let Some(rest_url) = &args.rest_url {
        rest = rest.with_rest_base(rest_url)?;
    }
    let rest = Arc::new(rest);
    Ok(Arc::new(Endpoint {
        target: args.target,
        protocol: args.protocol.into(),
        rest,
        users: (args.scenario == Scenario::User).then(|| args.user_count()),
        groups: (args.scenario == Scenario::Group).then(|| args.group_count()),
        keep_alive: Duration::from_secs_f64(args.keep_alive),
        transport: args.transport,
        side_requests: tokio::sync::Semaphore::new(crate::http_transport::SIDE_REQUESTS),
    }))
}

/// CPU seconds of all `pids` (None if any cannot be read).
fn cpu(pids: &[u32]) -> Option<f64> {
    pids.iter()
        .map(|&p| procfs::cpu_seconds(p).ok())
        .sum::<Option<f64>>()
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// Runs as worker `--worker-index` of a parent (see [`pool`]).
pub async fn worker(args: &RunArgs) -> Result<(), Error> {
    args.validate().map_err(Error::Config)?;
    let k = args.worker_index.unwrap_or(0);
    let endpoint = endpoint(args)?;
    let rate = args.connect_rate / args.processes as f64;
    pool::run_worker(endpoint, args.slice(k), rate, args.connect_concurrency).await
}

/// Runs the whole measurement and returns its report.
pub async fn run(args: &RunArgs) -> Result<Report, Error> {
    args.validate().map_err(Error::Config)?;
    let endpoint = endpoint(args)?;
    let server_pid = args.server_pid;
    let rss = || server_pid.and_then(|p| procfs::rss_kib(p).ok());
    let server_cpu = || server_pid.and_then(|p| procfs::cpu_seconds(p).ok());

    let rss_before = rss();
    let server_cpu_0 = server_cpu();
    // Workers start at zero CPU time; this process has already used some.
    let client_cpu_0 = if args.processes > 1 {
        Some(0.0)
    } else {
        cpu(&[std::process::id()])
    };
    let (pool, connect) = if args.processes > 1 {
        let (p, c) = RemotePool::open(args.processes).await?;
        (Pool::Remote(p), c)
    } else {
        let (p, c) = LocalPool::open(
            endpoint.clone(),
            0..args.connections,
            args.connect_rate,
            args.connect_concurrency,
        )
        .await;
        (Pool::Local(p), c)
    };
    let client_pids = pool.pids();
    let client_cpu_1 = cpu(&client_pids);
    let server_cpu_1 = server_cpu();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_idle = rss();

    let pace = match (args.scenario, args.rate, args.burst) {
        (Scenario::Idle, _, _) => None,
        (_, _, Some(k)) => Some(Pace::Burst(k)),
        (_, Some(r), None) => Some(Pace::Rate {
            per_second: r,
            total: (r * args.duration).round() as u64,
        }),
        (_, None, None) => None,
    };
    let server_cpu_2 = server_cpu();
    let client_cpu_2 = cpu(&client_pids);
    let phase_start = Instant::now();
    let sent = match pace {
        None => {
            tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
            None
        }
        Some(pace) => {
            let plan = Arc::new(Plan::new(
                args.scenario,
                args.user_count(),
                args.group_count(),
                &connect.open,
            ));
            let stats = send::drive(
                endpoint.rest.clone(),
                plan,
                pace,
                args.send_concurrency,
                args.payload_bytes,
            )
            .await;
            drain(&pool, stats.expected, Duration::from_secs_f64(args.drain)).await;
            Some(stats)
        }
    };
    let send_phase_s = phase_start.elapsed().as_secs_f64();
    let server_cpu_3 = server_cpu();
    let client_cpu_3 = cpu(&client_pids);
    let rss_end = rss();
    let receive = pool.finish().await?;

    let mut report = build_report(args, &connect, sent.as_ref(), &receive, pace);
    report.server_rss_before_kib = rss_before;
    report.server_rss_idle_kib = rss_idle;
    report.server_rss_end_kib = rss_end;
    report.kib_per_connection = match (rss_before, rss_idle) {
        (Some(a), Some(b)) if connect.opened > 0 => {
            Some((b as f64 - a as f64) / connect.opened as f64)
        }
        _ => None,
    };
    report.server_cpu_connect_s = diff(server_cpu_0, server_cpu_1);
    report.server_cpu_send_s = diff(server_cpu_2, server_cpu_3);
    report.client_cpu_connect_s = diff(client_cpu_0, client_cpu_1);
    report.client_cpu_send_s = diff(client_cpu_2, client_cpu_3);
    report.send_phase_s = sent.is_some().then_some(send_phase_s);
    Ok(report)
}

/// Waits until `expected` deliveries arrived, or `idle` passed without a new one.
async fn drain(pool: &Pool, expected: u64, idle: Duration) {
    let mut last = pool.received();
    let mut last_change = Instant::now();
    loop {
        let now = pool.received();
        if now >= expected {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn build_report(
    args: &RunArgs,
    connect: &ConnectStats,
    sent: Option<&SendStats>,
    receive: &ReceiveStats,
    pace: Option<Pace>,
) -> Report {
    let protocol: Protocol = args.protocol.into();
    let connect_h = connect.duration_us.to_histogram();
    let latency_h = receive.latency_us.to_histogram();
    let mut errors = connect.errors.clone();
    errors.merge(&receive.errors);
    let (sends, sends_ok, send_errors, sends_late, sends_per_s, expected) = match sent {
        Some(s) => {
            errors.merge(&s.errors);
            (
                s.requested,
                s.ok,
                s.errors.total(),
                s.late,
                s.per_second(),
                s.expected,
            )
        }
        None => (0, 0, 0, 0, None, 0),
    };
    let deliveries_per_s = match (sent.and_then(|s| s.first_send_us), receive.last_rx_us) {
        (Some(a), Some(b)) if b > a => Some(receive.received as f64 / ((b - a) as f64 / 1e6)),
        _ => None,
    };
    Report {
        label: args.label.clone(),
        target: args.target.name().to_owned(),
        transport: args.transport.name().to_owned(),
        scenario: args.scenario.name().to_owned(),
        protocol: match args.target {
            Target::Socketio => "socket.io".to_owned(),
            _ => protocol.name().to_owned(),
        },
        mode: match pace {
            None => "idle".to_owned(),
            Some(Pace::Burst(k)) => format!("burst {k}"),
            Some(Pace::Rate { per_second, .. }) => format!("rate {per_second}/s"),
        },
        processes: args.processes,
        payload_bytes: args.payload_bytes,
        connections: args.connections,
        opened: connect.opened,
        connect_errors: connect.errors.total(),
        connect_rate_limit: args.connect_rate,
        connect_per_s: connect.per_second(),
        connect_p50_ms: (!connect_h.is_empty()).then(|| ms(connect_h.value_at_quantile(0.5))),
        connect_p99_ms: (!connect_h.is_empty()).then(|| ms(connect_h.value_at_quantile(0.99))),
        sends,
        sends_ok,
        send_errors,
        sends_late,
        sends_per_s,
        expected,
        received: receive.received,
        drops: expected.saturating_sub(receive.received),
        extra: receive.received.saturating_sub(expected),
        deliveries_per_s,
        latency_ms: (!latency_h.is_empty()).then(|| Latency {
            p50: ms(latency_h.value_at_quantile(0.5)),
            p90: ms(latency_h.value_at_quantile(0.9)),
            p99: ms(latency_h.value_at_quantile(0.99)),
            max: ms(latency_h.max()),
        }),
        disconnects: receive.disconnects,
        decode_errors: receive.decode_errors,
        errors: errors.0,
        ..Report::default()
    }
}
