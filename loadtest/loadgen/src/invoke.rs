//! `switchboard-loadgen invoke`: client → Switchboard → upstream → client, against the same
//! requests sent straight to the upstream, in one run.
//!
//! Two phases share one shape: `--connections` lanes, each doing one call at a time (Switchboard
//! sends a connection's invocations to the upstream one at a time, so the direct lanes do too).
//! - `direct`: each lane POSTs an invocation body with the upstream headers to `--upstream`
//!   over its own keep-alive HTTP/1.1 connection.
//! - `switchboard`: each lane is a client connection (negotiate, WebSocket, JSON handshake) that
//!   sends invocations and reads their completions.
//!
//! With `--rate R`, invocation k is due at `start + k / R` on lane `k % lanes`. Its latency is
//! counted from when its lane sends it: the pacer's timer wakes up to a millisecond late, which
//! is the generator's noise and not the path's. A call its lane sends more than 2 ms after it
//! was due (the lane was still busy) is counted as `late`, so a lane that falls behind shows.
//! Without `--rate`, every lane sends its next call as soon as the last one completes, for
//! `--duration` seconds: the maximum rate at that concurrency. The ratio of the two phases is
//! Switchboard's cost. Phases may repeat (`--phases direct,switchboard,direct,switchboard`) to
//! show how much of a difference is noise.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{InvokeArgs, Phase, Target};
use crate::error::Error;
use crate::frames::{self, Protocol};
use crate::rest::RestClient;
use crate::stats::{new_histogram, ErrorSample};

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub lanes: usize,
    /// Calls started.
    pub sent: u64,
    /// Calls answered with a completion (direct: 200 with a completion body).
    pub completed: u64,
    /// Calls sent more than 2 ms after they were due (their lane was busy).
    pub late: u64,
    pub errors: ErrorSample,
    /// Completed calls per second over the phase.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU seconds of `--server-pid` during the phase.
    pub server_cpu_s: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct InvokeReport {
    pub label: String,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub phases: Vec<PhaseReport>,
}

impl InvokeReport {
    /// A Markdown table, with Switchboard against direct.
    pub fn table(&self) -> String {
        let mut out = format!(
            "invoke {} — {} ({} s)\n\n| phase | lanes | sent | completed | late | errors | calls/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.label,
            self.rate.map_or("max rate".to_owned(), |r| format!("{r} calls/s")),
            self.duration_s
        );
        for p in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} |\n",
                p.phase,
                p.lanes,
                p.sent,
                p.completed,
                p.late,
                p.errors.total(),
                p.per_second,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.max_ms,
                p.server_cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
            ));
        }
        let direct = self.phases.iter().filter(|p| p.phase == "direct");
        let through = self.phases.iter().filter(|p| p.phase == "switchboard");
        for (round, (d, s)) in direct.zip(through).enumerate() {
            out.push_str(&format!(
                "\nround {}: switchboard / direct: throughput {:.2}×, p50 {:+.3} ms, p99 {:+.3} ms",
                round + 1,
                s.per_second / d.per_second.max(f64::MIN_POSITIVE),
                s.p50_ms - d.p50_ms,
                s.p99_ms - d.p99_ms
            ));
        }
        out.push('\n');
        for p in &self.phases {
            for (kind, n) in &p.errors.0 {
                out.push_str(&format!("{} error: {kind} ×{n}\n", p.phase));
            }
        }
        out
    }
}

/// One lane's figures.
struct Lane {
    sent: u64,
    completed: u64,
    late: u64,
    errors: ErrorSample,
    latency: Histogram<u64>,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            sent: 0,
            completed: 0,
            late: 0,
            errors: ErrorSample::default(),
            latency: new_histogram(),
        }
    }

    /// Starts a call that was due at `due`; returns when it started.
    fn start(&mut self, due: Instant) -> Instant {
        self.sent += 1;
        let now = Instant::now();
        if now > due + LATE {
            self.late += 1;
        }
        now
    }

    fn done(&mut self, since: Instant) {
        self.completed += 1;
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self.latency.record(us.max(1));
    }
}

fn invocation(id: u64) -> String {
    format!("{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"bench\",\"arguments\":[\"0123456789abcdef0123456789abcdef\"]}}")
}

/// Runs the phases `args` names.
pub async fn run(args: &InvokeArgs) -> Result<InvokeReport, Error> {
    args.validate().map_err(Error::Config)?;
    let mut phases = Vec::new();
    for phase in &args.phases {
        let cpu_before = args
            .server_pid
            .and_then(|p| crate::procfs::cpu_seconds(p).ok());
        let started = Instant::now();
        let lanes = match phase {
            Phase::Direct => direct(args).await?,
            Phase::Switchboard => switchboard(args).await?,
        };
        let seconds = started.elapsed().as_secs_f64();
        let cpu = match (
            cpu_before,
            args.server_pid
                .and_then(|p| crate::procfs::cpu_seconds(p).ok()),
        ) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        phases.push(summarize(phase.name(), lanes, seconds, cpu));
    }
    Ok(InvokeReport {
        label: args.label.clone(),
        rate: args.rate,
        duration_s: args.duration,
        phases,
    })
}

fn summarize(name: &str, lanes: Vec<Lane>, elapsed: f64, cpu: Option<f64>) -> PhaseReport {
    let mut latency = new_histogram();
    let mut report = PhaseReport {
        phase: name.to_owned(),
        lanes: lanes.len(),
        sent: 0,
        completed: 0,
        late: 0,
        errors: ErrorSample::default(),
        per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        server_cpu_s: cpu,
    };
    for lane in lanes {
        report.sent += lane.sent;
        report.completed += lane.completed;
        report.late += lane.late;
        report.errors.merge(&lane.errors);
        let _ = latency.add(&lane.latency);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    report.per_second = report.completed as f64 / elapsed.max(1e-9);
    report.p50_ms = ms(latency.value_at_quantile(0.5));
    report.p99_ms = ms(latency.value_at_quantile(0.99));
    report.p999_ms = ms(latency.value_at_quantile(0.999));
    report.max_ms = ms(latency.max());
    report
}

/// What drives the lanes: a schedule (`--rate`) or "as fast as answers come" (closed loop).
enum Drive {
    Scheduled(mpsc::Receiver<(u64, Instant)>),
    ClosedLoop {
        lane: u64,
        lanes: u64,
        until: Instant,
    },
}

impl Drive {
    /// The next call: its id and when it was due (closed loop: now).
    async fn next(&mut self, count: u64) -> Option<(u64, Instant)> {
        match self {
            Drive::Scheduled(rx) => rx.recv().await,
            Drive::ClosedLoop { lane, lanes, until } => {
                let now = Instant::now();
                (now < *until).then_some((*lane + count * *lanes, now))
            }
        }
    }
}

/// Starts the drives of `lanes` lanes: a pacer for `--rate`, else closed loops.
fn drives(args: &InvokeArgs, lanes: usize) -> Vec<Drive> {
    let until = Instant::now() + Duration::from_secs_f64(args.duration);
    let Some(rate) = args.rate else {
        return (0..lanes as u64)
            .map(|lane| Drive::ClosedLoop {
                lane,
                lanes: lanes as u64,
                until,
            })
            .collect();
    };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes).map(|_| mpsc::channel(16_384)).unzip();
    let total = (rate * args.duration).round() as u64;
    tokio::spawn(async move {
        let start = Instant::now();
        for k in 0..total {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            tokio::time::sleep_until(due).await;
            let lane = (k % senders.len() as u64) as usize;
            if senders[lane].send((k, due)).await.is_err() {
                return;
            }
        }
    });
    receivers.into_iter().map(Drive::Scheduled).collect()
}

async fn direct(args: &InvokeArgs) -> Result<Vec<Lane>, Error> {
    let uri: http::Uri = args
        .upstream
        .parse()
        .map_err(|e| Error::Config(format!("--upstream: {e}")))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| Error::Config("--upstream needs a host and port".into()))?;
    let mut tasks = Vec::new();
    for drive in drives(args, args.connections) {
        let (uri, authority) = (uri.clone(), authority.clone());
        tasks.push(tokio::spawn(direct_lane(uri, authority, drive)));
    }
    let mut lanes = Vec::new();
    for task in tasks {
        lanes.push(task.await.map_err(|e| Error::Protocol(e.to_string()))?);
    }
    Ok(lanes)
}

/// One caller with its own keep-alive connection, driven in its own task (no pool, no hop to
/// a connection task): the least a direct HTTP call can cost.
async fn direct_lane(uri: http::Uri, authority: String, mut drive: Drive) -> Lane {
    let mut lane = Lane::new();
    let connection = async {
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    let stream = match connection.await {
        Ok(stream) => stream,
        Err(e) => {
            lane.errors.add(format!("connect: {e}"), 1);
            return lane;
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => {
            lane.errors.add(format!("handshake: {e}"), 1);
            return lane;
        }
    };
    tokio::pin!(conn);
    while let Some((id, due)) = drive.next(lane.sent).await {
        let started = lane.start(due);
        let request = http::Request::post(uri.clone())
            .header("host", authority.as_str())
            .header("content-type", "application/json")
            .header("x-asrs-connection-id", "direct-lane")
            .header("x-asrs-hub", "loadgen")
            .header("x-asrs-category", "messages")
            .header("x-asrs-event", "bench")
            .body(Full::new(Bytes::from(invocation(id))));
        let Ok(request) = request else {
            lane.errors.add("request".into(), 1);
            continue;
        };
        let call = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let outcome = tokio::select! {
            outcome = call => outcome,
            ended = &mut conn => {
                lane.errors.add(format!("connection ended: {ended:?}"), 1);
                return lane;
            }
        };
        match outcome {
            Ok((200, body)) if body.starts_with(b"{\"type\":3") => lane.done(started),
            Ok((status, _)) => lane.errors.add(format!("status {status}"), 1),
            Err(e) => lane.errors.add(format!("request: {e}"), 1),
        }
    }
    lane
}

async fn switchboard(args: &InvokeArgs) -> Result<Vec<Lane>, Error> {
    let (url, key) = args.server()?;
    let rest = Arc::new(RestClient::new(Target::Switchboard, &url, &args.hub, key)?);
    // Open every connection first, a few at a time, so the phase measures only invocations.
    let mut sockets = Vec::with_capacity(args.connections);
    let opened = futures::stream::iter(0..args.connections)
        .map(|_| {
            let rest = rest.clone();
            async move { open(&rest).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for socket in opened {
        sockets.push(socket?);
    }
    let mut tasks = Vec::new();
    for (ws, drive) in sockets.into_iter().zip(drives(args, args.connections)) {
        tasks.push(tokio::spawn(connection_lane(ws, drive)));
    }
    let mut lanes = Vec::new();
    for task in tasks {
        lanes.push(task.await.map_err(|e| Error::Protocol(e.to_string()))?);
    }
    Ok(lanes)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(rest: &RestClient) -> Result<Ws, Error> {
    let negotiated = rest.negotiate(None).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(&negotiated.ws_url).await?;
    ws.send(Message::text(frames::handshake_request(Protocol::Json)))
        .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                frames::parse_handshake_response(&text)?;
                return Ok(ws);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Error::Protocol("closed during the handshake".into())),
        }
    }
}

/// A call sent later than this after it was due counts as late.
const LATE: Duration = Duration::from_millis(2);

/// How long a lane waits for its last answers once its schedule has ended.
const DRAIN: Duration = Duration::from_secs(10);

async fn connection_lane(mut ws: Ws, mut drive: Drive) -> Lane {
    let mut lane = Lane::new();
    // Calls sent and not yet answered, in order (Switchboard answers a connection in order).
    let mut waiting: VecDeque<(u64, Instant)> = VecDeque::new();
    let closed_loop = matches!(drive, Drive::ClosedLoop { .. });
    let mut schedule_done = false;
    let mut drain_until: Option<Instant> = None;
    loop {
        if schedule_done && waiting.is_empty() {
            break;
        }
        // A closed loop sends its next call only once the last one is answered.
        let may_send = !schedule_done && (!closed_loop || waiting.is_empty());
        let deadline = drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            next = drive.next(lane.sent), if may_send => match next {
                Some((id, due)) => {
                    let started = lane.start(due);
                    let frame = format!("{}\u{1e}", invocation(id));
                    if let Err(e) = ws.send(Message::text(frame)).await {
                        lane.errors.add(format!("send: {e}"), 1);
                        break;
                    }
                    waiting.push_back((id, started));
                }
                None => {
                    schedule_done = true;
                    drain_until = Some(Instant::now() + DRAIN);
                }
            },
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        lane.errors.add(format!("receive: {e}"), 1);
                        break;
                    }
                    None => {
                        lane.errors.add("closed by the server".into(), 1);
                        break;
                    }
                };
                for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
                    #[derive(serde::Deserialize)]
                    struct Answer<'a> {
                        #[serde(rename = "type")]
                        kind: u8,
                        #[serde(rename = "invocationId", borrow)]
                        invocation_id: Option<&'a str>,
                        error: Option<&'a str>,
                    }
                    let Ok(answer) = serde_json::from_str::<Answer<'_>>(record) else {
                        lane.errors.add("undecodable frame".into(), 1);
                        continue;
                    };
                    if answer.kind != 3 {
                        continue;
                    }
                    let Some((id, started)) = waiting.pop_front() else {
                        lane.errors.add("unexpected completion".into(), 1);
                        continue;
                    };
                    if answer.invocation_id != Some(id.to_string().as_str()) {
                        lane.errors.add("completion out of order".into(), 1);
                    } else if let Some(error) = answer.error {
                        lane.errors.add(format!("completion error: {error}"), 1);
                    } else {
                        lane.done(started);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                lane.errors.add("unanswered at the end".into(), waiting.len() as u64);
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    lane
}
