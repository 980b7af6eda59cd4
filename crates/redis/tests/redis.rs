//! The Redis engine against a real `redis-server`: two or three gateways' stores on one Redis
//! agree on every write, the 100-group cap holds under concurrent adds from two gateways,
//! TTLs expire with nobody writing, snapshots trim the stream and a late gateway starts from
//! one, and a Redis that restarts (with its append-only file, or without persistence) is
//! followed without a restart of the gateways. The URL forms: a plain `redis://`, `rediss://` to a
//! TLS-only Redis, `redis-cluster://` to three masters, `redis-sentinel://` through a sentinel.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use switchboard_membership::{Command, Membership, Name, Outcome, MAX_GROUPS_WITHOUT_TTL};
use switchboard_redis::{RedisConfig, RedisStore};
use switchboard_store::{MembershipStore, StoreError};
use switchboard_testkit::eventually;
use switchboard_testkit::redis::RedisServer;

const HUB: &str = "chat";
const WAIT: Duration = Duration::from_secs(20);

fn n(s: &str) -> Name {
    Name::from(s)
}

async fn store(
    redis: &RedisServer,
    node: u64,
    tune: impl FnOnce(&mut RedisConfig),
) -> Arc<RedisStore> {
    let mut config = RedisConfig::new(redis.url(), node);
    config.tick_interval = Duration::from_millis(50);
    tune(&mut config);
    RedisStore::open(config)
        .await
        .expect("open the redis store")
}

/// Opens a store on `url` as soon as Redis there answers (a server just started).
async fn open_once_up(url: &str, node: u64) -> Arc<RedisStore> {
    eventually(WAIT, "redis answering", || async move {
        RedisStore::open(RedisConfig::new(url, node)).await.ok()
    })
    .await
    .unwrap()
}

fn add(user: &str, group: &str, ttl_secs: Option<u32>) -> Command {
    Command::AddUserToGroup {
        hub: n(HUB),
        user: n(user),
        group: n(group),
        ttl_secs,
    }
}

fn groups_of(state: &Membership, user: &str) -> Vec<String> {
    let mut groups: Vec<String> = state
        .user_groups(HUB, user, state.now_ms())
        .into_iter()
        .map(|g| g.group.to_string())
        .collect();
    groups.sort();
    groups
}

/// Waits until every store applied everything appended anywhere so far.
async fn settle(stores: &[&Arc<RedisStore>]) {
    for store in stores {
        store.sync().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_redis_agree_on_every_write() {
    let redis = RedisServer::start().await.unwrap();
    let a = store(&redis, 1, |_| {}).await;
    let b = store(&redis, 2, |_| {}).await;
    let registered = a
        .write(Command::NodeHeartbeat {
            node: 1,
            incarnation: 1,
            address: "127.0.0.1:1".into(),
            lease_ms: 60_000,
        })
        .await
        .unwrap();
    assert_eq!(registered, Outcome::Registered);
    // Read-your-writes on the writer, at once; the other sees it after a barrier.
    a.write(add("u", "g1", None)).await.unwrap();
    assert_eq!(groups_of(&a.view().read(), "u"), vec!["g1"]);
    b.write(add("u", "g2", Some(3600))).await.unwrap();
    let (_, index) = b.write_indexed(add("v", "g1", None)).await.unwrap();
    assert!(index > 0);
    settle(&[&a, &b]).await;
    assert_eq!(*a.view().read(), *b.view().read());
    assert_eq!(groups_of(&b.view().read(), "u"), vec!["g1", "g2"]);
    assert!(a.view().read().nodes().any(|node| node.node == 1));
    assert!(a.status().leader_known());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_cap_holds_under_concurrent_adds_from_two_gateways() {
    let redis = RedisServer::start().await.unwrap();
    let a = store(&redis, 1, |_| {}).await;
    let b = store(&redis, 2, |_| {}).await;
    let adds = |store: Arc<RedisStore>, parity: usize| {
        tokio::spawn(async move {
            let writes = (0..150).filter(|i| i % 2 == parity).map(|i| {
                let store = store.clone();
                async move { store.write(add("u", &format!("g{i:03}"), None)).await }
            });
            for result in futures_join_all(writes).await {
                result.unwrap();
            }
        })
    };
    let (x, y) = (adds(a.clone(), 0), adds(b.clone(), 1));
    x.await.unwrap();
    y.await.unwrap();
    settle(&[&a, &b]).await;
    let state = a.view().read().clone();
    assert_eq!(state, *b.view().read());
    let groups = groups_of(&state, "u");
    assert_eq!(groups.len(), MAX_GROUPS_WITHOUT_TTL, "{groups:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Joins futures without pulling in a crate: spawn each, await in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_expire_with_nobody_writing() {
    let redis = RedisServer::start().await.unwrap();
    let a = store(&redis, 1, |_| {}).await;
    a.write(add("u", "short", Some(1))).await.unwrap();
    a.write(add("u", "long", None)).await.unwrap();
    assert_eq!(groups_of(&a.view().read(), "u"), vec!["long", "short"]);
    eventually(WAIT, "the 1 s entry expired by a tick", || async {
        let state = a.view().read().clone();
        // The entry is gone from the state itself, not only hidden by the clock.
        (state.next_deadline().is_none_or(|d| d > state.now_ms())
            && !state.user_in_group(HUB, "u", "short", 0))
        .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(groups_of(&a.view().read(), "u"), vec!["long"]);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_trims_the_stream_and_a_late_gateway_starts_from_it() {
    let redis = RedisServer::start().await.unwrap();
    let a = store(&redis, 1, |c| c.snapshot_every = 50).await;
    for i in 0..120 {
        a.write(add(&format!("u{i}"), "g", None)).await.unwrap();
    }
    assert!(a.snapshot_now().await.unwrap());
    let length: u64 = redis
        .cli(&["XLEN", "{switchboard}:log"])
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        length <= 1,
        "the stream kept {length} entries behind the snapshot"
    );
    a.write(add("after", "g", None)).await.unwrap();
    let late = store(&redis, 3, |_| {}).await;
    settle(&[&a, &late]).await;
    assert_eq!(*late.view().read(), *a.view().read());
    assert!(late.view().read().user_in_group(HUB, "u0", "g", 0));
    assert!(late.view().read().user_in_group(HUB, "after", "g", 0));
    a.shutdown().await;
    late.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_its_append_only_file_loses_nothing() {
    let mut redis = RedisServer::start_persistent().await.unwrap();
    let a = store(&redis, 1, |_| {}).await;
    for i in 0..20 {
        a.write(add(&format!("u{i}"), "g", None)).await.unwrap();
    }
    redis.restart().await.unwrap();
    // The gateway reconnects by itself; writes succeed again and nothing was lost.
    eventually(WAIT, "a write after the restart", || async {
        a.write(add("after", "g", None)).await.ok()
    })
    .await
    .unwrap();
    let b = store(&redis, 2, |_| {}).await;
    settle(&[&a, &b]).await;
    for i in 0..20 {
        assert!(b.view().read().user_in_group(HUB, &format!("u{i}"), "g", 0));
    }
    assert_eq!(*a.view().read(), *b.view().read());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_is_followed_from_what_it_has() {
    let mut redis = RedisServer::start().await.unwrap();
    let a = store(&redis, 1, |_| {}).await;
    a.write(add("before", "g", None)).await.unwrap();
    redis.restart().await.unwrap();
    // Without persistence Redis starts empty: the replica notices the gap at the next entry and
    // follows the new history rather than keeping a state nobody else has.
    eventually(WAIT, "a write after the restart", || async {
        a.write(add("after", "g", None)).await.ok()
    })
    .await
    .unwrap();
    let b = store(&redis, 2, |_| {}).await;
    settle(&[&a, &b]).await;
    assert_eq!(*a.view().read(), *b.view().read());
    assert!(a.view().read().user_in_group(HUB, "after", "g", 0));
    assert!(!a.view().read().user_in_group(HUB, "before", "g", 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_write_fails_as_unavailable_and_the_store_is_not_ready() {
    let mut redis = RedisServer::start().await.unwrap();
    let a = store(&redis, 1, |c| c.write_timeout = Duration::from_secs(2)).await;
    a.write(add("u", "g", None)).await.unwrap();
    redis.kill().await.unwrap();
    let error = a.write(add("u", "h", None)).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Unavailable(_) | StoreError::Timeout(_)),
        "{error:?}"
    );
    eventually(WAIT, "not ready without redis", || async {
        (!a.status().leader_known()).then_some(())
    })
    .await
    .unwrap();
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_a_redis_cluster_of_three_masters_agree() {
    let cluster = switchboard_testkit::redis::RedisCluster::start(3)
        .await
        .unwrap();
    let open = |node: u64| {
        let mut config = RedisConfig::new(cluster.url(), node);
        config.tick_interval = Duration::from_millis(50);
        config.snapshot_every = 20;
        RedisStore::open(config)
    };
    let a = open(1).await.expect("open on the cluster");
    let b = open(2).await.expect("open on the cluster");
    let (x, y) = (a.clone(), b.clone());
    let adds = tokio::spawn(async move {
        for i in 0..60 {
            x.write(add("u", &format!("a{i:03}"), None)).await.unwrap();
        }
    });
    for i in 0..60 {
        y.write(add("u", &format!("b{i:03}"), None)).await.unwrap();
    }
    adds.await.unwrap();
    settle(&[&a, &b]).await;
    assert_eq!(*a.view().read(), *b.view().read());
    assert_eq!(
        groups_of(&a.view().read(), "u").len(),
        MAX_GROUPS_WITHOUT_TTL
    );
    // Snapshots and trimming work on the cluster too, and a late gateway starts from them.
    assert!(a.snapshot_now().await.unwrap());
    let late = open(3).await.expect("open on the cluster");
    settle(&[&a, &late]).await;
    assert_eq!(*late.view().read(), *a.view().read());
    a.shutdown().await;
    b.shutdown().await;
    late.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_reach_redis_over_tls_with_a_rediss_url() {
    use switchboard_testkit::pki::Ca;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "redis-test").unwrap();
    let leaf = ca.leaf(dir.path(), "localhost").unwrap();
    let port = switchboard_testkit::free_addr(std::net::Ipv4Addr::LOCALHOST)
        .unwrap()
        .port();
    let _redis = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(&leaf.cert)
        .arg("--tls-key-file")
        .arg(&leaf.key)
        .arg("--tls-ca-cert-file")
        .arg(&ca.pem)
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server with TLS");
    // The gateway trusts the test CA the way an operator would point it at theirs: through the
    // system trust store's SSL_CERT_FILE (this test runs in a process of its own).
    std::env::set_var("SSL_CERT_FILE", &ca.pem);
    let url = format!("rediss://localhost:{port}");
    let a = open_once_up(&url, 1).await;
    let b = open_once_up(&url, 2).await;
    a.write(add("u", "over-tls", None)).await.unwrap();
    settle(&[&a, &b]).await;
    assert!(b.view().read().user_in_group(HUB, "u", "over-tls", 0));
    assert_eq!(*a.view().read(), *b.view().read());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_find_redis_through_sentinel() {
    let master = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = switchboard_testkit::free_addr(std::net::Ipv4Addr::LOCALHOST)
        .unwrap()
        .port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 2000\n",
            dir.path().display(),
            master.addr().port()
        ),
    )
    .unwrap();
    let _sentinel = tokio::process::Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-sentinel (apt-get install redis-sentinel)");
    let url = format!("redis-sentinel://127.0.0.1:{port}/0?sentinelServiceName=mymaster");
    let a = open_once_up(&url, 1).await;
    let b = open_once_up(&url, 2).await;
    a.write(add("u", "via-sentinel", None)).await.unwrap();
    settle(&[&a, &b]).await;
    assert!(b.view().read().user_in_group(HUB, "u", "via-sentinel", 0));
    // It is the master the sentinel names that holds the log.
    let length: u64 = master
        .cli(&["XLEN", "{switchboard}:log"])
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(length >= 1);
    a.shutdown().await;
    b.shutdown().await;
}
