//! The scale simulator: the real membership state machine under synthetic churn, with no network
//! and no fsync, to see how the design's costs grow with the cluster's connections — for the
//! design before the scale work (`before`: every connect a Raft command, every replica holding
//! every connection) and the current one (`after`: connections are soft state on their gateway,
//! the store holds leases and user-group entries).
//!
//! For each size N and gateway count G:
//! - `before`: G gateways register, N connections open (one user each, spread over the
//!   gateways) in log entries of at most 1,024 commands (the batcher's bound) applied to one
//!   replica, then one gateway's lease lapses and one tick drops its connections. Reported: the
//!   replica's memory per connection (a stateless gateway holds all N), the log bytes and
//!   commands per connect, the longest apply (a write-lock hold), the dead gateway's tick, the
//!   snapshot's size and encode time (spent under the state's read lock).
//! - `after`: the store's state holds the G leases; one gateway's presence
//!   (`switchboard_gateway::local::LocalPresence`) opens its N/G connections one by one, as the
//!   connection tasks do. Reported: that gateway's memory per connection it holds; what every
//!   other gateway holds of them (nothing reaches them, nor the store: its snapshot is checked
//!   unchanged); commands per connect (none is written); the longest single open (a write-lock
//!   hold of the local state); the store's tick that ends a dead gateway's lease; the store's
//!   snapshot.
//!
//! ```text
//! cargo run --release -p switchboard-gateway --example scale_sim                      # the matrix
//! cargo run --release -p switchboard-gateway --example scale_sim -- after 1000000 10  # one run
//! ```
//! The matrix runs every (N, G) of `--sizes 100000,300000,1000000` × `--gateways 3,10,50` for
//! `--designs before,after`, each in a child process of its own (so each memory figure starts
//! from a fresh heap), and prints a table per design plus the slopes fitted over N; `--sizes`
//! may include 3000000 (about 4 GiB of memory for `before`). `SCALE_SIM_SPIKES=1` prints every
//! apply or open over 20 ms to stderr. `scale_sim entries N` measures the store's own ceiling:
//! N user-group entries (what the store keeps now), their log bytes, the longest apply, the
//! snapshot, and the ticks that expire them when they all expire at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command as Process;
use std::time::{Duration, Instant};

use switchboard_gateway::local::LocalPresence;
use switchboard_membership::{Batch, Command, Membership, Name};

/// Commands per log entry, as the batcher packs them.
const PER_ENTRY: usize = 1024;
const LEASE_MS: u64 = 10_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A lease (or its renewal) for each of `nodes`.
fn heartbeats(nodes: std::ops::RangeInclusive<u64>) -> Vec<Command> {
    nodes
        .map(|node| Command::NodeHeartbeat {
            node,
            incarnation: 1,
            address: format!("10.0.0.{node}:7001"),
            lease_ms: LEASE_MS,
        })
        .collect()
}

/// One run of the design before: prints a line of `key=value` fields.
fn before(connections: usize, gateways: u64) {
    let mut state = Membership::new();
    let mut time_ms = 1_000_000u64;
    state.apply(&Batch {
        time_ms,
        commands: heartbeats(1..=gateways),
    });
    let hub: Name = "chat".into();
    let before = rss_bytes();
    let mut log_bytes = 0usize;
    let mut entries = 0usize;
    let mut longest_apply = Duration::ZERO;
    let mut opened = 0;
    while opened < connections {
        let n = PER_ENTRY.min(connections - opened);
        let commands = (opened..opened + n)
            .map(|i| Command::ConnectionOpened {
                hub: hub.clone(),
                connection: format!("{i:022}.{}", i as u64 % gateways + 1).into(),
                user: Some(format!("user-{i}").into()),
                node: i as u64 % gateways + 1,
                incarnation: 1,
            })
            .collect();
        let batch = Batch { time_ms, commands };
        log_bytes += rmp_serde::to_vec(&batch).expect("encode").len();
        entries += 1;
        let started = Instant::now();
        state.apply(&batch);
        let took = started.elapsed();
        if std::env::var_os("SCALE_SIM_SPIKES").is_some() && took > Duration::from_millis(20) {
            eprintln!("apply of entry {entries} ({opened} open) took {took:?}");
        }
        longest_apply = longest_apply.max(took);
        opened += n;
    }
    let after = rss_bytes();

    let started = Instant::now();
    let snapshot = rmp_serde::to_vec_named(&state).expect("encode the state");
    let snapshot_encode = started.elapsed();

    // Every gateway but the first renews its lease; the first's lapses, and the next tick
    // drops its connections in one apply.
    time_ms += LEASE_MS / 2;
    state.apply(&Batch {
        time_ms,
        commands: heartbeats(2..=gateways),
    });
    time_ms += LEASE_MS / 2 + 1;
    let started = Instant::now();
    state.apply(&Batch {
        time_ms,
        commands: vec![Command::Tick],
    });
    let dead_gateway_apply = started.elapsed();
    let remaining = state.stats();

    println!(
        "connections={connections} gateways={gateways} state_bytes_per_connection={:.1} log_bytes_per_connect={:.1} commands_per_connect=1 log_entries={entries} longest_open_apply_ms={:.2} dead_gateway_apply_ms={:.2} dead_gateway_connections={} snapshot_bytes={} snapshot_bytes_per_connection={:.1} snapshot_encode_ms={:.1} connections_left={}",
        after.saturating_sub(before) as f64 / connections as f64,
        log_bytes as f64 / connections as f64,
        longest_apply.as_secs_f64() * 1e3,
        dead_gateway_apply.as_secs_f64() * 1e3,
        connections.div_ceil(gateways as usize),
        snapshot.len(),
        snapshot.len() as f64 / connections as f64,
        snapshot_encode.as_secs_f64() * 1e3,
        remaining.connections,
    );
}

/// One run of the current design: prints a line of `key=value` fields.
fn after(connections: usize, gateways: u64) {
    let mut store = Membership::new();
    let mut time_ms = 1_000_000u64;
    store.apply(&Batch {
        time_ms,
        commands: heartbeats(1..=gateways),
    });
    let store_before = rmp_serde::to_vec_named(&store).expect("encode").len();
    let hub: Name = "chat".into();
    // Gateway 1 holds its share; the others' connections never reach it or the store.
    let own = connections.div_ceil(gateways as usize);
    let local = LocalPresence::new(1);
    let before = rss_bytes();
    let mut longest_open = Duration::ZERO;
    for i in 0..own {
        let connection: Name = format!("{i:022}.1").into();
        let user: Name = format!("user-{i}").into();
        let started = Instant::now();
        local.open(&hub, &connection, Some(&user), || (Vec::new(), 0));
        let took = started.elapsed();
        if std::env::var_os("SCALE_SIM_SPIKES").is_some() && took > Duration::from_millis(20) {
            eprintln!("open {i} took {took:?}");
        }
        longest_open = longest_open.max(took);
    }
    let after = rss_bytes();
    let started = Instant::now();
    let snapshot = rmp_serde::to_vec_named(&store).expect("encode the state");
    let snapshot_encode = started.elapsed();
    assert_eq!(
        snapshot.len(),
        store_before,
        "connections reached the store"
    );

    // Every gateway but the first renews; the first's lease lapses and one tick ends it.
    time_ms += LEASE_MS / 2;
    store.apply(&Batch {
        time_ms,
        commands: heartbeats(2..=gateways),
    });
    time_ms += LEASE_MS / 2 + 1;
    let started = Instant::now();
    store.apply(&Batch {
        time_ms,
        commands: vec![Command::Tick],
    });
    let dead_gateway_apply = started.elapsed();
    assert_eq!(store.stats().nodes as u64, gateways - 1);

    println!(
        "connections={connections} gateways={gateways} own_connections={own} holder_bytes_per_connection={:.1} longest_open_ms={:.3} dead_gateway_apply_ms={:.3} snapshot_bytes={} snapshot_encode_ms={:.3}",
        after.saturating_sub(before) as f64 / own as f64,
        longest_open.as_secs_f64() * 1e3,
        dead_gateway_apply.as_secs_f64() * 1e3,
        snapshot.len(),
        snapshot_encode.as_secs_f64() * 1e3,
    );
}

/// The store's own ceiling: `count` user-group entries (one per user, a 60 s TTL), written in
/// log entries of at most 1,024 commands, then expired by one tick.
fn entries(count: usize) {
    let mut store = Membership::new();
    let mut time_ms = 1_000_000u64;
    store.apply(&Batch {
        time_ms,
        commands: heartbeats(1..=3),
    });
    let hub: Name = "chat".into();
    let before = rss_bytes();
    let mut longest_apply = Duration::ZERO;
    let mut log_bytes = 0usize;
    let mut written = 0;
    while written < count {
        let n = PER_ENTRY.min(count - written);
        let commands = (written..written + n)
            .map(|i| Command::AddUserToGroup {
                hub: hub.clone(),
                user: format!("user-{i}").into(),
                group: format!("group-{}", i % 1000).into(),
                ttl_secs: Some(60),
            })
            .collect();
        let batch = Batch { time_ms, commands };
        log_bytes += rmp_serde::to_vec(&batch).expect("encode").len();
        let started = Instant::now();
        store.apply(&batch);
        longest_apply = longest_apply.max(started.elapsed());
        written += n;
    }
    let after = rss_bytes();
    let started = Instant::now();
    let snapshot = rmp_serde::to_vec_named(&store).expect("encode the state");
    let snapshot_encode = started.elapsed();
    // They all expire at once: ticks until none is left (each expires a bounded number).
    time_ms += 61_000;
    let mut expiry = Duration::ZERO;
    let mut ticks = 0;
    while store.stats().user_group_entries > 0 {
        let started = Instant::now();
        store.apply(&Batch {
            time_ms,
            commands: vec![Command::Tick],
        });
        let took = started.elapsed();
        if std::env::var_os("SCALE_SIM_SPIKES").is_some() && took > Duration::from_millis(20) {
            eprintln!("expiry tick {ticks} took {took:?}");
        }
        expiry = expiry.max(took);
        ticks += 1;
    }
    println!(
        "entries={count} state_bytes_per_entry={:.1} log_bytes_per_entry={:.1} longest_apply_ms={:.2} snapshot_bytes_per_entry={:.1} snapshot_encode_ms={:.1} longest_expiry_tick_ms={:.2} expiry_ticks={ticks}",
        after.saturating_sub(before) as f64 / count as f64,
        log_bytes as f64 / count as f64,
        longest_apply.as_secs_f64() * 1e3,
        snapshot.len() as f64 / count as f64,
        snapshot_encode.as_secs_f64() * 1e3,
        expiry.as_secs_f64() * 1e3,
    );
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Least-squares slope and intercept of `ys` over `xs`.
fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let slope = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (slope, my - slope * mx)
}

fn list(args: &[String], flag: &str, default: &str) -> Vec<u64> {
    let value = args
        .iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    value
        .split(',')
        .map(|v| v.trim().parse().expect("a number"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let (Some("entries"), Some(n)) = (
        args.first().map(String::as_str),
        args.get(1).and_then(|a| a.parse().ok()),
    ) {
        entries(n);
        return;
    }
    if let (Some(design), Some(n), Some(g)) = (
        args.first(),
        args.get(1).and_then(|a| a.parse().ok()),
        args.get(2).and_then(|a| a.parse().ok()),
    ) {
        match design.as_str() {
            "before" => before(n, g),
            "after" => after(n, g),
            other => panic!("no design {other}: before or after"),
        }
        return;
    }
    let sizes = list(&args, "--sizes", "100000,300000,1000000");
    let gateways = list(&args, "--gateways", "3,10,50");
    let designs = args
        .iter()
        .position(|a| a == "--designs")
        .and_then(|i| args.get(i + 1))
        .map_or("before,after", String::as_str)
        .to_owned();
    let exe = std::env::current_exe().expect("this program");
    let child = |design: &str, n: u64, g: u64| {
        let out = Process::new(&exe)
            .args([design.to_owned(), n.to_string(), g.to_string()])
            .output()
            .expect("run a child");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    if designs.split(',').any(|d| d == "before") {
        print_before(&sizes, &gateways, |n, g| child("before", n, g));
    }
    if designs.split(',').any(|d| d == "after") {
        print_after(&sizes, &gateways, |n, g| child("after", n, g));
    }
}

fn print_after(sizes: &[u64], gateways: &[u64], run: impl Fn(u64, u64) -> String) {
    println!("After (connections soft state on their gateway):");
    println!();
    println!("| connections | gateways | held by one gateway | its B/conn | B/conn on every other gateway | log B/connect | commands/connect | longest open ms | dead-gateway apply ms | store snapshot bytes | snapshot encode ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rows: Vec<(u64, u64, String)> = Vec::new();
    for &g in gateways {
        for &n in sizes {
            let line = run(n, g);
            println!(
                "| {n} | {g} | {:.0} | {:.0} | 0 | 0 | 0 | {:.2} | {:.3} | {:.0} | {:.3} |",
                field(&line, "own_connections"),
                field(&line, "holder_bytes_per_connection"),
                field(&line, "longest_open_ms"),
                field(&line, "dead_gateway_apply_ms"),
                field(&line, "snapshot_bytes"),
                field(&line, "snapshot_encode_ms"),
            );
            rows.push((n, g, line));
        }
    }
    println!();
    println!("Fitted over the sizes, per gateway count (x = connections the gateway holds), and extrapolated to 10M connections in the cluster:");
    println!();
    println!("| gateways | holder bytes = a·x + b | holder at 10M/G | every other gateway at 10M | store snapshot at 10M |");
    println!("| ---: | --- | ---: | ---: | ---: |");
    for &g in gateways {
        let mine: Vec<&(u64, u64, String)> = rows.iter().filter(|r| r.1 == g).collect();
        let xs: Vec<f64> = mine
            .iter()
            .map(|r| field(&r.2, "own_connections"))
            .collect();
        let bytes: Vec<f64> = mine
            .iter()
            .map(|r| field(&r.2, "holder_bytes_per_connection") * field(&r.2, "own_connections"))
            .collect();
        let (a, b) = fit(&xs, &bytes);
        let snapshot = mine
            .last()
            .map_or(f64::NAN, |r| field(&r.2, "snapshot_bytes"));
        println!(
            "| {g} | {a:.0}·x + {:.1} MB | {:.2} GB | 0 | {snapshot:.0} bytes (the leases) |",
            b / 1e6,
            (a * 1e7 / g as f64 + b) / 1e9,
        );
    }
    println!();
}

fn print_before(sizes: &[u64], gateways: &[u64], run: impl Fn(u64, u64) -> String) {
    println!("Before (every connect a Raft command, every replica holding every connection):");
    println!();
    println!("| connections | gateways | state B/conn | log B/connect | commands/connect | longest open apply ms | dead-gateway apply ms (its connections) | snapshot MB | snapshot B/conn | snapshot encode ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rows: Vec<(u64, u64, String)> = Vec::new();
    for &g in gateways {
        for &n in sizes {
            let line = run(n, g);
            println!(
                "| {n} | {g} | {:.0} | {:.1} | 1 | {:.1} | {:.1} ({:.0}) | {:.1} | {:.0} | {:.0} |",
                field(&line, "state_bytes_per_connection"),
                field(&line, "log_bytes_per_connect"),
                field(&line, "longest_open_apply_ms"),
                field(&line, "dead_gateway_apply_ms"),
                field(&line, "dead_gateway_connections"),
                field(&line, "snapshot_bytes") / 1e6,
                field(&line, "snapshot_bytes_per_connection"),
                field(&line, "snapshot_encode_ms"),
            );
            rows.push((n, g, line));
        }
    }
    println!();
    println!("Fitted over the sizes, per gateway count, and extrapolated to 10M connections:");
    println!();
    println!("| gateways | state bytes = a·N + b | at 10M | snapshot encode ms = a·N + b | at 10M | dead-gateway apply ms per connection dropped |");
    println!("| ---: | --- | ---: | --- | ---: | ---: |");
    for &g in gateways {
        let mine: Vec<&(u64, u64, String)> = rows.iter().filter(|r| r.1 == g).collect();
        let xs: Vec<f64> = mine.iter().map(|r| r.0 as f64).collect();
        let state: Vec<f64> = mine
            .iter()
            .map(|r| field(&r.2, "state_bytes_per_connection") * r.0 as f64)
            .collect();
        let encode: Vec<f64> = mine
            .iter()
            .map(|r| field(&r.2, "snapshot_encode_ms"))
            .collect();
        let dead: Vec<f64> = mine
            .iter()
            .map(|r| field(&r.2, "dead_gateway_apply_ms") / field(&r.2, "dead_gateway_connections"))
            .collect();
        let (sa, sb) = fit(&xs, &state);
        let (ea, eb) = fit(&xs, &encode);
        let dead_per = dead.iter().sum::<f64>() / dead.len() as f64;
        println!(
            "| {g} | {sa:.0}·N + {:.1} MB | {:.2} GB | {:.2e}·N + {eb:.0} | {:.1} s | {:.2e} |",
            sb / 1e6,
            (sa * 1e7 + sb) / 1e9,
            ea,
            (ea * 1e7 + eb) / 1e3,
            dead_per,
        );
    }
    println!();
}
