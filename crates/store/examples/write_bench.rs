//! Membership write throughput of a fresh single-voter store (fsync on every log append).
//!
//! N writers each open a connection, then for D seconds alternate `AddUserToGroup` and
//! `AddConnectionToGroup` through `MembershipStore::write`, each waiting for its own outcome.
//! Prints ops/s, log entries used, the mean batch size and latency percentiles.
//!
//! ```text
//! cargo run --release -p switchboard-store --example write_bench -- --writers 256 --seconds 10
//! ```
//! `--dir PATH` puts the data on a given file system (default: a temporary directory);
//! `--in-flight N` overrides `StoreConfig::max_in_flight`.
//!
//! `--voters H:P,H:P,H:P` writes to a running cluster of store voters instead (started with
//! `switchboard store ...`), through a `RemoteStore` — what a stateless gateway does; `--key K`
//! is the cluster's key (default `cluster-bench-key`, as `loadtest/cluster-bench.sh` uses). Log
//! entries are then not counted.
//!
//! `--redis URL` writes through the Redis engine instead (`switchboard_redis::RedisStore`, what a
//! `gateway --redis` does). `--mix users` writes only user-group entries (`AddUserToGroup`),
//! the durable commands a gateway sends; it is the mix `--voters` and `--redis` always use (the
//! store refuses connection commands from gateways), so run the in-process store with it too to
//! compare the three in one run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchboard_membership::{Command, Name};
use switchboard_store::network::SingleNodeNetwork;
use switchboard_store::remote::{RemoteStore, RemoteStoreConfig};
use switchboard_store::{MembershipStore, RaftStore, StoreConfig};

struct Args {
    writers: usize,
    seconds: u64,
    dir: Option<std::path::PathBuf>,
    in_flight: Option<usize>,
    voters: Option<Vec<String>>,
    key: String,
    redis: Option<String>,
    users_only: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        writers: 256,
        seconds: 10,
        dir: None,
        in_flight: None,
        voters: None,
        key: "cluster-bench-key".into(),
        redis: None,
        users_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => args.writers = value.parse().expect("--writers N"),
            "--seconds" => args.seconds = value.parse().expect("--seconds D"),
            "--dir" => args.dir = Some(value.into()),
            "--in-flight" => args.in_flight = Some(value.parse().expect("--in-flight N")),
            "--voters" => args.voters = Some(value.split(',').map(str::to_owned).collect()),
            "--key" => args.key = value,
            "--redis" => args.redis = Some(value),
            "--mix" => args.users_only = value == "users",
            other => panic!(
                "unknown flag {other}; use --writers N --seconds D [--dir PATH] [--in-flight N]"
            ),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let temp = tempfile::TempDir::new().expect("temporary directory");
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut config = StoreConfig::new(1, &dir);
    if let Some(in_flight) = args.in_flight {
        config.max_in_flight = in_flight;
    }
    let mut local = None;
    let mut redis = None;
    let users_only = args.users_only || args.voters.is_some() || args.redis.is_some();
    let store: Arc<dyn MembershipStore> = match &args.voters {
        None if args.redis.is_some() => {
            let url = args.redis.clone().unwrap_or_default();
            let store =
                switchboard_redis::RedisStore::open(switchboard_redis::RedisConfig::new(url, 1))
                    .await
                    .expect("open the redis store");
            redis = Some(store.clone());
            store
        }
        Some(voters) => {
            let security = switchboard_net::ClusterSecurity::new(
                switchboard_net::ClusterKeys::new(&[args.key.as_str()]).expect("a key"),
                switchboard_net::ClusterIdentity {
                    node: 1,
                    incarnation: 1,
                },
            );
            let remote = RemoteStore::connect(voters.clone(), RemoteStoreConfig::new(1), security);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !remote.status().leader_known() {
                assert!(Instant::now() < deadline, "no leader among {voters:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            remote
        }
        None => {
            let store = RaftStore::open(config, SingleNodeNetwork)
                .await
                .expect("open store");
            store.initialize_single().await.expect("initialize");
            local = Some(store.clone());
            store
        }
    };
    let hub: Name = Name::from("bench");
    store
        .write(Command::NodeHeartbeat {
            node: 1,
            incarnation: 1,
            address: "127.0.0.1:0".into(),
            lease_ms: 3_600_000,
        })
        .await
        .expect("register node");

    let start_index = store.status().last_log_index.unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut writers = Vec::with_capacity(args.writers);
    for w in 0..args.writers {
        let store = store.clone();
        let hub = hub.clone();
        writers.push(tokio::spawn(async move {
            let connection = Name::from(format!("c{w}"));
            let user = Name::from(format!("u{w}"));
            if !users_only {
                store
                    .write(Command::ConnectionOpened {
                        hub: hub.clone(),
                        connection: connection.clone(),
                        user: Some(user.clone()),
                        node: 1,
                        incarnation: 1,
                    })
                    .await
                    .expect("open connection");
            }
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut k = 0u64;
            while Instant::now() < deadline {
                let group = Name::from(format!("g{}", k % 200));
                let command = if users_only || k % 2 == 0 {
                    Command::AddUserToGroup {
                        hub: hub.clone(),
                        user: user.clone(),
                        group,
                        ttl_secs: None,
                    }
                } else {
                    Command::AddConnectionToGroup {
                        hub: hub.clone(),
                        group,
                        connection: connection.clone(),
                    }
                };
                let sent = Instant::now();
                store.write(command).await.expect("write");
                latencies.saturating_record(sent.elapsed().as_micros() as u64);
                k += 1;
            }
            latencies
        }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for writer in writers {
        latencies.add(writer.await.expect("writer")).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Each writer's ConnectionOpened is in the log too.
    let ops = latencies.len() + if users_only { 0 } else { args.writers as u64 };
    let entries = match &local {
        Some(local) => local.status().last_log_index.unwrap_or(0) - start_index,
        None => 0,
    };
    println!("writers            {}", args.writers);
    println!("duration           {elapsed:.2} s");
    println!("writes             {ops}");
    println!("throughput         {:.0} ops/s", ops as f64 / elapsed);
    if local.is_some() {
        println!("log entries        {entries}");
        println!(
            "mean batch         {:.1} commands/entry",
            ops as f64 / entries.max(1) as f64
        );
    }
    println!(
        "latency p50        {:.2} ms",
        latencies.value_at_quantile(0.50) as f64 / 1000.0
    );
    println!(
        "latency p99        {:.2} ms",
        latencies.value_at_quantile(0.99) as f64 / 1000.0
    );
    println!(
        "latency max        {:.2} ms",
        latencies.max() as f64 / 1000.0
    );
    if let Some(local) = local {
        local.shutdown().await;
    }
    if let Some(redis) = redis {
        redis.shutdown().await;
    }
}
