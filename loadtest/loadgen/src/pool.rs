//! The client connections of a run, in this process or spread over worker processes.
//!
//! A [`LocalPool`] opens its share of connections at the given pace (a schedule, plus a bound on
//! attempts in flight), runs one task per connection, and records into one [`Recorder`].
//! With `--processes P` the parent re-executes its own binary P times with `--worker-index k`;
//! each worker runs a `LocalPool` over its slice of connection indices and talks to the parent
//! in JSON lines on stdout ([`WorkerLine`]): `ready` once its connections are open, `progress`
//! every 100 ms, `done` with its figures after the parent writes `stop` (or closes stdin). A
//! process may hold at most 20,000 open files here, hence the workers.

use std::ops::Range;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{self, Endpoint};
use crate::error::Error;
use crate::stats::{now_us, Buckets, ConnectStats, OpenConnection, ReceiveStats, Recorder};

/// One line a worker prints for its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum WorkerLine {
    Ready { connect: ConnectStats },
    Progress { received: u64 },
    Done { receive: ReceiveStats },
}

enum Outcome {
    Open {
        index: usize,
        connection_id: Option<String>,
        took_us: u64,
        at_us: u64,
    },
    Failed(String),
}

/// Connections held by this process.
pub struct LocalPool {
    recorder: Arc<Recorder>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl LocalPool {
    /// Opens connections `indices` at `rate` per second (0: no schedule) with at most
    /// `concurrency` attempts in flight, and returns once every attempt has succeeded or failed.
    pub async fn open(
        endpoint: Arc<Endpoint>,
        indices: Range<usize>,
        rate: f64,
        concurrency: usize,
    ) -> (LocalPool, ConnectStats) {
        let recorder = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let attempts = indices.len();
        let (tx, mut rx) = mpsc::channel(attempts.max(1));
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let start = Instant::now();
        let first_start_us = now_us();
        for (n, index) in indices.enumerate() {
            if rate > 0.0 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (endpoint, recorder, stop, tx) =
                (endpoint.clone(), recorder.clone(), stop.clone(), tx.clone());
            tasks.spawn(async move {
                let began = Instant::now();
                match client::open(&endpoint, index).await {
                    Ok(opened) => {
                        let outcome = Outcome::Open {
                            index,
                            connection_id: opened.connection_id.clone(),
                            took_us: u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX),
                            at_us: now_us(),
                        };
                        drop(permit);
                        let _ = tx.send(outcome).await;
                        drop(tx);
                        client::receive(opened, index, &endpoint, &recorder, stop).await;
                    }
                    Err(e) => {
                        drop(permit);
                        let _ = tx.send(Outcome::Failed(e.kind())).await;
                    }
                }
            });
        }
        drop(tx);
        let mut stats = ConnectStats {
            attempted: attempts as u64,
            first_start_us: (attempts > 0).then_some(first_start_us),
            ..ConnectStats::default()
        };
        let mut durations = crate::stats::new_histogram();
        while let Some(outcome) = rx.recv().await {
            match outcome {
                Outcome::Open {
                    index,
                    connection_id,
                    took_us,
                    at_us,
                } => {
                    stats.opened += 1;
                    let _ = durations.record(took_us.clamp(1, durations.high()));
                    stats.last_open_us = stats.last_open_us.max(Some(at_us));
                    stats.open.push(OpenConnection {
                        index,
                        connection_id,
                    });
                }
                Outcome::Failed(kind) => stats.errors.add(kind, 1),
            }
        }
        stats.duration_us = Buckets::from_histogram(&durations);
        stats.open.sort_by_key(|c| c.index);
        (
            LocalPool {
                recorder,
                stop,
                tasks,
            },
            stats,
        )
    }

    pub fn received(&self) -> u64 {
        self.recorder.received()
    }

    /// Closes every connection and returns what they received.
    pub async fn finish(self) -> ReceiveStats {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.recorder.snapshot()
    }
}

/// Runs this process as worker `--worker-index` of its parent (see the module docs).
pub async fn run_worker(
    endpoint: Arc<Endpoint>,
    indices: Range<usize>,
    rate: f64,
    concurrency: usize,
) -> Result<(), Error> {
    let mut out = tokio::io::stdout();
    let (pool, connect) = LocalPool::open(endpoint, indices, rate, concurrency).await;
    write_line(&mut out, &WorkerLine::Ready { connect }).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(l)) if l.trim() != "stop" => continue,
                _ => break,
            },
            _ = tick.tick() => {
                write_line(&mut out, &WorkerLine::Progress { received: pool.received() }).await?;
            }
        }
    }
    let receive = pool.finish().await;
    write_line(&mut out, &WorkerLine::Done { receive }).await
}

async fn write_line(out: &mut tokio::io::Stdout, line: &WorkerLine) -> Result<(), Error> {
    let mut text = serde_json::to_string(line).map_err(|e| Error::Protocol(e.to_string()))?;
    text.push('\n');
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    received: Arc<AtomicU64>,
    done: oneshot::Receiver<Result<ReceiveStats, String>>,
}

/// Connections held by worker processes.
pub struct RemotePool {
    workers: Vec<Worker>,
}

impl RemotePool {
    /// Starts `processes` workers with this process's own arguments and waits until each has
    /// opened its connections.
    pub async fn open(processes: usize) -> Result<(RemotePool, ConnectStats), Error> {
        let exe = std::env::current_exe()?;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let mut workers = Vec::with_capacity(processes);
        let mut readies = Vec::with_capacity(processes);
        for index in 0..processes {
            let mut child = tokio::process::Command::new(&exe)
                .args(&args)
                .arg("--worker-index")
                .arg(index.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child.stdout.take().ok_or_else(|| Error::Worker {
                index,
                message: "no stdout".into(),
            })?;
            let received = Arc::new(AtomicU64::new(0));
            let (ready_tx, ready_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            tokio::spawn(read_worker(stdout, received.clone(), ready_tx, done_tx));
            readies.push(ready_rx);
            workers.push(Worker {
                stdin: child.stdin.take(),
                child,
                received,
                done: done_rx,
            });
        }
        let mut connect = ConnectStats::default();
        for (index, ready) in readies.into_iter().enumerate() {
            match ready.await {
                Ok(Ok(stats)) => connect.merge(stats),
                Ok(Err(message)) => return Err(Error::Worker { index, message }),
                Err(_) => {
                    return Err(Error::Worker {
                        index,
                        message: "exited before its connections were open".into(),
                    })
                }
            }
        }
        connect.open.sort_by_key(|c| c.index);
        Ok((RemotePool { workers }, connect))
    }

    pub fn received(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.received.load(Ordering::Relaxed))
            .sum()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Tells every worker to stop and merges what they received.
    pub async fn finish(mut self) -> Result<ReceiveStats, Error> {
        for w in &mut self.workers {
            if let Some(mut stdin) = w.stdin.take() {
                let _ = stdin.write_all(b"stop\n").await;
            }
        }
        let mut total = ReceiveStats::default();
        for (index, w) in self.workers.into_iter().enumerate() {
            match w.done.await {
                Ok(Ok(stats)) => total.merge(stats),
                Ok(Err(message)) => return Err(Error::Worker { index, message }),
                Err(_) => {
                    return Err(Error::Worker {
                        index,
                        message: "exited without its results".into(),
                    })
                }
            }
            let mut child = w.child;
            let _ = child.wait().await;
        }
        Ok(total)
    }
}

async fn read_worker(
    stdout: tokio::process::ChildStdout,
    received: Arc<AtomicU64>,
    ready: oneshot::Sender<Result<ConnectStats, String>>,
    done: oneshot::Sender<Result<ReceiveStats, String>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut ready = Some(ready);
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            _ => return,
        };
        match serde_json::from_str::<WorkerLine>(&line) {
            Ok(WorkerLine::Ready { connect }) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(connect));
                }
            }
            Ok(WorkerLine::Progress { received: n }) => received.store(n, Ordering::Relaxed),
            Ok(WorkerLine::Done { receive }) => {
                let _ = done.send(Ok(receive));
                return;
            }
            Err(e) => {
                let message = format!("unexpected output {line:?}: {e}");
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(message));
                } else {
                    let _ = done.send(Err(message));
                }
                return;
            }
        }
    }
}

/// The connections of a run, wherever they live.
pub enum Pool {
    Local(LocalPool),
    Remote(RemotePool),
}

impl Pool {
    pub fn received(&self) -> u64 {
        match self {
            Pool::Local(p) => p.received(),
            Pool::Remote(p) => p.received(),
        }
    }

    /// The processes holding the client side (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Pool::Local(_) => vec![std::process::id()],
            Pool::Remote(p) => p.pids(),
        }
    }

    pub async fn finish(self) -> Result<ReceiveStats, Error> {
        match self {
            Pool::Local(p) => Ok(p.finish().await),
            Pool::Remote(p) => p.finish().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_round_trip() {
        let line = WorkerLine::Progress { received: 7 };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text, "{\"event\":\"progress\",\"received\":7}");
        assert!(matches!(
            serde_json::from_str(&text).unwrap(),
            WorkerLine::Progress { received: 7 }
        ));
        let ready = WorkerLine::Ready {
            connect: ConnectStats {
                opened: 3,
                ..Default::default()
            },
        };
        let back: WorkerLine =
            serde_json::from_str(&serde_json::to_string(&ready).unwrap()).unwrap();
        assert!(matches!(back, WorkerLine::Ready { connect } if connect.opened == 3));
    }
}
