//! Storage faults on real filesystems: a full disk (a small tmpfs) and a snapshot directory that
//! goes read-only (a read-only bind mount). While the fault lasts the store refuses writes with
//! "unavailable" and reports its disk failing; once the fault is removed it recovers by itself,
//! without a restart, and every acknowledged write is still there after one.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where the machine forbids it the tests say so and pass
//! without running (`switchboard_testkit::mount`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::ErrorCode;
use switchboard_membership::{Command, Name};
use switchboard_store::network::SingleNodeNetwork;
use switchboard_store::{MembershipStore, RaftStore, StoreConfig, StoreError};
use switchboard_testkit::eventually;
use switchboard_testkit::mount::{self, fill, skip};
use tempfile::TempDir;

const HUB: &str = "chat";
const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(1, dir);
    config.heartbeat_ms = 50;
    config.election_timeout_min_ms = 150;
    config.election_timeout_max_ms = 300;
    config.write_timeout = Duration::from_secs(2);
    config
}

async fn open(config: StoreConfig) -> Arc<RaftStore> {
    let store = RaftStore::open(config, SingleNodeNetwork)
        .await
        .expect("open store");
    store.initialize_single().await.expect("initialize");
    store
}

fn add(user: &str, group: &str) -> Command {
    Command::AddUserToGroup {
        hub: Name::from(HUB),
        user: Name::from(user),
        group: Name::from(group),
        ttl_secs: None,
    }
}

/// Writes user-group entries, recording the acknowledged ones, until `stop` holds.
struct Writer {
    next: usize,
    acknowledged: Vec<(String, String)>,
}

impl Writer {
    fn new() -> Writer {
        Writer {
            next: 0,
            acknowledged: Vec::new(),
        }
    }

    /// One write of a fresh entry (bulky names, so the log grows quickly).
    async fn write(&mut self, store: &RaftStore) -> Result<(), StoreError> {
        self.next += 1;
        let user = format!("user-{:05}-{}", self.next, "u".repeat(200));
        let group = format!("group-{}", self.next % 50);
        store.write(add(&user, &group)).await?;
        self.acknowledged.push((user, group));
        Ok(())
    }

    /// Writes until one write fails and the store reports its disk failing; returns the failure.
    async fn until_failing(&mut self, store: &RaftStore) -> StoreError {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the disk fault never showed"
            );
            if let Err(error) = self.write(store).await {
                if store.disk_failing() {
                    return error;
                }
            }
        }
    }

    /// Writes until one succeeds again.
    /// Waits until the store reports its disk healthy again, then writes once (which must
    /// succeed).
    async fn until_recovered(&mut self, store: &RaftStore) {
        eventually(
            WAIT,
            "the store recovered after the fault was removed",
            || async { (!store.disk_failing()).then_some(()) },
        )
        .await
        .unwrap();
        self.write(store).await.unwrap();
    }

    fn check(&self, store: &RaftStore) {
        let view = store.view();
        let state = view.read();
        for (user, group) in &self.acknowledged {
            assert!(
                state.user_in_group(HUB, user, group, 0),
                "acknowledged write lost: {user} in {group}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_then_recovers_without_a_restart() {
    let root = TempDir::new().unwrap();
    let _mount = match mount::tmpfs(root.path(), 16) {
        Ok(mount) => mount,
        Err(why) => return skip(&why),
    };
    let data = root.path().join("data");
    let mut config = config(&data);
    config.snapshot_every = 200;
    let store = open(config.clone()).await;
    let mut writer = Writer::new();
    for _ in 0..100 {
        writer.write(&store).await.unwrap();
    }
    assert!(!store.disk_failing());

    let filler = fill(root.path());
    let failure = writer.until_failing(&store).await;
    // While the disk is full, writes are refused at once as unavailable: a retry may succeed.
    let refused = writer.write(&store).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Unavailable(_)),
        "{refused:?} (first failure: {failure:?})"
    );
    let public: switchboard_core::Error = refused.into();
    assert_eq!(public.code, ErrorCode::Unavailable);
    assert!(!public.message.contains('/'), "{}", public.message);
    assert!(store.disk_failing());

    std::fs::remove_file(&filler).unwrap();
    writer.until_recovered(&store).await;
    for _ in 0..300 {
        // Past a snapshot too, which needed the disk as well.
        writer.write(&store).await.unwrap();
    }
    assert!(!store.disk_failing());
    writer.check(&store);
    store.shutdown().await;
    drop(store);

    let store = open(config).await;
    writer.check(&store);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_snapshot_directory_refuses_writes_then_recovers_without_a_restart() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let mut config = config(&data);
    config.snapshot_every = 50;
    config.keep_logs_after_snapshot = 10;
    let store = open(config.clone()).await;
    let snapshots = data.join("snapshots");
    let bound = match mount::bind(&snapshots) {
        Ok(mount) => mount,
        Err(why) => {
            store.shutdown().await;
            return skip(&why);
        }
    };
    mount::read_only(&bound, true);
    let mut writer = Writer::new();
    let failure = writer.until_failing(&store).await;
    let fault = store.disk().fault().expect("a fault while failing");
    assert!(fault.op.starts_with("snapshot"), "{fault:?}");
    let refused = writer.write(&store).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Unavailable(_)),
        "{refused:?} (first failure: {failure:?})"
    );

    mount::read_only(&bound, false);
    writer.until_recovered(&store).await;
    for _ in 0..60 {
        writer.write(&store).await.unwrap();
    }
    assert!(!store.disk_failing());
    assert!(snapshots.join("current.snap").exists());
    writer.check(&store);
    store.shutdown().await;
    drop(store);

    let store = open(config).await;
    writer.check(&store);
    store.shutdown().await;
}
