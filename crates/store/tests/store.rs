//! End-to-end tests of a single-voter `RaftStore` on a temporary directory: durability across
//! restarts (graceful, dropped without shutdown, and a process abort), snapshots and log purging, group commit under concurrency, and
//! expiry driven by the leader's ticks.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;
use switchboard_membership::{Command, Membership, Name, Outcome};
use switchboard_store::log_store::LogStore;
use switchboard_store::network::SingleNodeNetwork;
use switchboard_store::{MembershipStore, RaftStore, StoreConfig, StoreError};
use tempfile::TempDir;

const HUB: &str = "chat";
const WAIT: Duration = Duration::from_secs(20);

fn name(s: &str) -> Name {
    Name::from(s)
}

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(1, dir);
    config.heartbeat_ms = 50;
    config.election_timeout_min_ms = 150;
    config.election_timeout_max_ms = 300;
    config
}

async fn open(config: StoreConfig) -> Arc<RaftStore> {
    let store = RaftStore::open(config, SingleNodeNetwork)
        .await
        .expect("open store");
    store.initialize_single().await.expect("initialize");
    store
}

/// Polls `condition` until it holds, failing after `WAIT`.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat() -> Command {
    Command::NodeHeartbeat {
        node: 7,
        incarnation: 1,
        address: "10.0.0.7:7000".into(),
        lease_ms: 3_600_000,
    }
}

fn opened(connection: &str, user: Option<&str>) -> Command {
    Command::ConnectionOpened {
        hub: name(HUB),
        connection: name(connection),
        user: user.map(name),
        node: 7,
        incarnation: 1,
    }
}

fn join(connection: &str, group: &str) -> Command {
    Command::AddConnectionToGroup {
        hub: name(HUB),
        group: name(group),
        connection: name(connection),
    }
}

/// Writes a small scenario and checks its outcomes; returns the applied index.
async fn write_scenario(store: &RaftStore) -> u64 {
    assert_eq!(store.write(heartbeat()).await.unwrap(), Outcome::Registered);
    assert_eq!(
        store.write(opened("c1", Some("alice"))).await.unwrap(),
        Outcome::Ok
    );
    assert_eq!(store.write(join("c1", "g1")).await.unwrap(), Outcome::Ok);
    assert_eq!(
        store.write(join("nobody", "g1")).await.unwrap(),
        Outcome::ConnectionNotFound
    );
    let outcomes = store
        .write_all(vec![
            opened("c2", Some("bob")),
            join("c2", "g2"),
            Command::AddUserToGroup {
                hub: name(HUB),
                user: name("bob"),
                group: name("g3"),
                ttl_secs: None,
            },
            join("ghost", "g2"),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Ok,
            Outcome::ConnectionNotFound
        ]
    );
    assert_eq!(
        store.write_all(Vec::new()).await.unwrap(),
        Vec::<Outcome>::new()
    );
    // Read-your-writes: the view already shows every acknowledged write.
    let view = store.view();
    {
        let state = view.read();
        assert!(state.connection(HUB, "c1").is_some());
        assert!(state.group_has_connections(HUB, "g1"));
        assert!(state.group_has_connections(HUB, "g2"));
        assert!(state.user_in_group(HUB, "bob", "g3", state.now_ms()));
    }
    store.status().applied_index.expect("applied index")
}

fn check_scenario(state: &Membership) {
    assert!(state.connection(HUB, "c1").is_some());
    assert!(state.connection(HUB, "c2").is_some());
    assert!(state.group_has_connections(HUB, "g1"));
    assert!(state.user_in_group(HUB, "bob", "g3", state.now_ms()));
    assert!(state.node(7).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_graceful_restart_and_initialize_is_idempotent() {
    let dir = TempDir::new().unwrap();
    let store = open(config(dir.path())).await;
    store.initialize_single().await.unwrap();
    let applied = write_scenario(&store).await;
    let status = store.status();
    assert!(
        status.is_leader && status.leader_id == Some(1) && status.term >= 1,
        "{status:?}"
    );
    let before = store.view().read().clone();
    store.shutdown().await;
    store.shutdown().await;
    assert!(matches!(
        store.write(Command::Tick).await,
        Err(StoreError::Unavailable(_))
    ));
    drop(store);

    let store = open(config(dir.path())).await;
    store.initialize_single().await.unwrap();
    // `initialize_single` (in `open`) returns once the whole log is applied.
    assert!(store.status().applied_index >= Some(applied));
    assert_eq!(*store.view().read(), before);
    check_scenario(&store.view().read());
    // And the store still takes writes.
    assert_eq!(store.write(join("c2", "g9")).await.unwrap(), Outcome::Ok);
    store.shutdown().await;
}

#[test]
fn acknowledged_writes_survive_a_crash() {
    let dir = TempDir::new().unwrap();
    let (applied, before) = {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let result = runtime.block_on(async {
            let store = open(config(dir.path())).await;
            let applied = write_scenario(&store).await;
            (applied, store.view().read().clone())
        });
        // No shutdown: the runtime and everything on it are dropped mid-flight.
        drop(runtime);
        result
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(config(dir.path())).await;
        // `initialize_single` (in `open`) returns once the whole log is applied.
        assert!(store.status().applied_index >= Some(applied));
        assert_eq!(*store.view().read(), before);
        check_scenario(&store.view().read());
        store.shutdown().await;
    });
}

/// Set in the child process of `acknowledged_writes_survive_a_process_abort`.
const CRASH_DIR_ENV: &str = "SWITCHBOARD_STORE_TEST_CRASH_DIR";
const CRASH_ACKS: usize = 100;

/// The child: writes the scenario, then fires concurrent writes and aborts the process while
/// some are still in flight, right after printing the 100th acknowledgement.
fn crash_child(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(config(dir)).await;
        let applied = write_scenario(&store).await;
        println!("scenario-applied {applied}");
        let (tx, mut acks) = tokio::sync::mpsc::channel(512);
        for i in 0..(4 * CRASH_ACKS) {
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if store.write(join("c1", &format!("crash-{i}"))).await == Ok(Outcome::Ok) {
                    let _ = tx.send(i).await;
                }
            });
        }
        let mut count = 0;
        while let Some(i) = acks.recv().await {
            println!("acked {i}");
            count += 1;
            if count == CRASH_ACKS {
                std::process::abort();
            }
        }
    });
}

#[test]
fn acknowledged_writes_survive_a_process_abort() {
    if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let dir = TempDir::new().unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_writes_survive_a_process_abort",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child was expected to abort");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut applied = None;
    let mut acked = Vec::new();
    for line in stdout.lines() {
        // libtest may print its own "test ... " prefix on the same line.
        if let Some(at) = line.find("scenario-applied ") {
            applied = Some(
                line[at + "scenario-applied ".len()..]
                    .trim()
                    .parse::<u64>()
                    .unwrap(),
            );
        } else if let Some(i) = line.strip_prefix("acked ") {
            acked.push(i.trim().parse::<usize>().unwrap());
        }
    }
    let applied = applied.unwrap_or_else(|| panic!("child output: {stdout}"));
    assert_eq!(acked.len(), CRASH_ACKS, "child output: {stdout}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(config(dir.path())).await;
        // Some entries may have been committed without the committed index reaching the disk;
        // `initialize_single` (in `open`) returns only once the whole log is applied again.
        let status = store.status();
        assert!(status.last_log_index > Some(applied));
        assert!(status.applied_index >= status.last_log_index, "{status:?}");
        let state = store.view().read().clone();
        check_scenario(&state);
        for i in acked {
            assert!(
                state.group_has_connections(HUB, &format!("crash-{i}")),
                "acknowledged write {i} lost"
            );
        }
        store.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_writes_then_restart_keeps_state_and_purges_the_log() {
    let dir = TempDir::new().unwrap();
    let mut config = config(dir.path());
    config.snapshot_every = 1_000_000;
    config.keep_logs_after_snapshot = 0;
    let store = open(config.clone()).await;
    write_scenario(&store).await;
    store.trigger_snapshot().await.unwrap();
    let snapshot_index = store.status().snapshot_index.expect("snapshot index");
    wait_until("purge", || {
        store.status().purged_index == Some(snapshot_index)
    })
    .await;
    for i in 0..20 {
        let outcome = store
            .write(join("c1", &format!("after-{i}")))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Ok);
    }
    let applied = store.status().applied_index.unwrap();
    assert!(applied > snapshot_index);
    let before = store.view().read().clone();
    store.shutdown().await;
    drop(store);

    {
        let mut log = LogStore::open(&dir.path().join("raft")).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_purged_log_id.map(|id| id.index),
            Some(snapshot_index)
        );
        let kept = log.try_get_log_entries(0..).await.unwrap();
        assert!(!kept.is_empty());
        assert!(
            kept.iter().all(|e| e.log_id.index > snapshot_index),
            "log not purged behind the snapshot"
        );
    }
    assert!(dir.path().join("snapshots").join("current.snap").exists());

    let store = open(config).await;
    // `initialize_single` (in `open`) returns once the whole log is applied.
    assert!(store.status().applied_index >= Some(applied));
    assert_eq!(*store.view().read(), before);
    assert!(store.view().read().group_has_connections(HUB, "after-19"));
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries() {
    const WRITES: usize = 2000;
    const CONNECTIONS: usize = 50;
    let dir = TempDir::new().unwrap();
    let store = open(config(dir.path())).await;
    store.write(heartbeat()).await.unwrap();
    let opens = (0..CONNECTIONS)
        .map(|c| opened(&format!("c{c}"), None))
        .collect();
    store.write_all(opens).await.unwrap();
    let start_index = store.status().last_log_index.unwrap();

    let mut tasks = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Every tenth write names a connection that does not exist.
            let connection = if i % 10 == 0 {
                format!("missing{i}")
            } else {
                format!("c{}", i % CONNECTIONS)
            };
            let outcome = store.write(join(&connection, &format!("g{i}"))).await;
            (i, outcome)
        }));
    }
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        let expected = if i % 10 == 0 {
            Outcome::ConnectionNotFound
        } else {
            Outcome::Ok
        };
        assert_eq!(outcome.unwrap(), expected, "write {i}");
    }
    let entries = store.status().last_log_index.unwrap() - start_index;
    assert!(
        entries < (WRITES / 4) as u64,
        "{entries} log entries for {WRITES} writes"
    );
    let state = store.view().read().clone();
    for i in (1..WRITES).filter(|i| i % 10 != 0) {
        assert!(
            state.group_has_connections(HUB, &format!("g{i}")),
            "group g{i}"
        );
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_barriers_on_the_leader_never_answer_from_before_the_caller() {
    const READS: usize = 500;
    let dir = TempDir::new().unwrap();
    let store = open(config(dir.path())).await;
    store.write(heartbeat()).await.unwrap();
    store.write(opened("c", None)).await.unwrap();
    let mut tasks = Vec::with_capacity(READS * 2);
    for i in 0..READS {
        let writer = store.clone();
        tasks.push(tokio::spawn(async move {
            writer.write(join("c", &format!("g{i}"))).await.unwrap();
        }));
        let reader = store.clone();
        tasks.push(tokio::spawn(async move {
            // Everything applied when the caller arrives is at or below the index it is given.
            let seen = reader.view().applied_index();
            let index = reader.read_index().await.unwrap();
            assert!(index >= seen, "read index {index} below {seen}");
            reader.sync().await.unwrap();
            assert!(reader.view().applied_index() >= index);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_expire_without_traffic() {
    let dir = TempDir::new().unwrap();
    let store = open(config(dir.path())).await;
    let add = Command::AddUserToGroup {
        hub: name(HUB),
        user: name("carol"),
        group: name("short"),
        ttl_secs: Some(1),
    };
    assert_eq!(store.write(add).await.unwrap(), Outcome::Ok);
    let view = store.view();
    {
        let state = view.read();
        assert_eq!(state.user_groups(HUB, "carol", 0).len(), 1);
        assert!(state.next_deadline().is_some());
    }
    let index = store.status().last_log_index.unwrap();
    // Nothing else is written: only the leader's ticks can expire the entry.
    wait_until("expiry", || {
        let state = view.read();
        state.next_deadline().is_none() && state.user_groups(HUB, "carol", 0).is_empty()
    })
    .await;
    assert!(
        store.status().last_log_index.unwrap() > index,
        "a tick entry was proposed"
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_entries_expires_in_bounded_ticks_without_traffic() {
    let dir = TempDir::new().unwrap();
    let store = open(config(dir.path())).await;
    // More than one tick expires, in several entries below the size bound.
    let count = switchboard_membership::MAX_EXPIRED_PER_BATCH * 2 + 100;
    let adds: Vec<Command> = (0..count)
        .map(|i| Command::AddUserToGroup {
            hub: name(HUB),
            user: name(&format!("u{i}")),
            group: name("burst"),
            ttl_secs: Some(1),
        })
        .collect();
    for chunk in adds.chunks(1000) {
        store.write_all(chunk.to_vec()).await.unwrap();
    }
    let view = store.view();
    assert_eq!(view.read().stats().user_group_entries, count);
    let index = store.status().last_log_index.unwrap();
    wait_until("every entry expired", || {
        view.read().stats().user_group_entries == 0
    })
    .await;
    let ticks = store.status().last_log_index.unwrap() - index;
    assert!(ticks >= 3, "{ticks} ticks for {count} entries");
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_leader_are_unavailable() {
    let dir = TempDir::new().unwrap();
    let mut config = config(dir.path());
    config.write_timeout = Duration::from_millis(300);
    // Never initialized: no leader can exist.
    let store = RaftStore::open(config, SingleNodeNetwork).await.unwrap();
    let error = store.write(Command::Tick).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(!store.status().leader_known());
    let core: switchboard_core::Error = error.into();
    assert_eq!(core.code, switchboard_core::ErrorCode::Unavailable);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_keeps_its_node_id() {
    let dir = TempDir::new().unwrap();
    let store = open(config(dir.path())).await;
    store.shutdown().await;
    drop(store);
    let mut other = config(dir.path());
    other.node_id = 2;
    let result = with_timeout(RaftStore::open(other, SingleNodeNetwork)).await;
    assert!(matches!(result, Err(StoreError::Config(_))));
}

async fn with_timeout<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}
