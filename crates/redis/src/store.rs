//! [`RedisStore`]: the membership store of a gateway whose durable state lives in Redis.
//!
//! See the crate docs for the design. This module is the I/O edge: one fred client for
//! commands (appends, snapshots, barriers) and one for the blocking stream read, a task that
//! follows the stream into the [`View`], a ticker that appends `Tick` when something is due, and
//! a task that snapshots the state and trims the stream behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, StreamsInterface};
use fred::types::scripts::Script;
use fred::types::streams::{XCap, XCapKind, XCapTrim, XReadResponse};
use fred::types::{Expiration, SetOptions, Value};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use switchboard_core::throttle::{now_ms, Throttle};
use switchboard_core::NodeId;
use switchboard_membership::{Batch, Command, Membership, Outcome};
use switchboard_store::{MembershipStore, StoreError, StoreStatus, View};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ids::EntryId;
use crate::metrics;

/// Appends one entry holding the previous entry's id (`p`), the writer's token (`w`) and the
/// encoded commands (`b`). Atomic, so `p` is exactly the entry before: a replica that did not
/// read that entry knows it missed something.
const APPEND: &str = r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #last > 0 then prev = last[1][1] end
return redis.call('XADD', KEYS[1], '*', 'p', prev, 'w', ARGV[1], 'b', ARGV[2])
";

/// Most writes waiting for their entry at once (callers beyond wait for a slot).
const MAX_PENDING_WRITES: usize = 4096;
/// Most entries one read takes.
const READ_COUNT: u64 = 1024;
/// How long one blocking read waits for new entries.
const READ_BLOCK_MS: u64 = 1000;
/// The replica counts as down when no read answered for this long.
const READ_STALE_MS: u64 = 3 * READ_BLOCK_MS;
/// How often a gateway checks whether the stream needs a snapshot.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(10);
/// How long the snapshot lock is held at most.
const SNAPSHOT_LOCK_MS: i64 = 60_000;

static READ_FAILED_LOG: Throttle = Throttle::new(10_000);

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` (TLS), `redis-cluster://` or `redis-sentinel://` (fred's forms).
    pub url: String,
    /// This gateway's node id.
    pub node_id: NodeId,
    /// Prefix of every key; one prefix is one Switchboard (several may share a Redis).
    pub prefix: String,
    /// How long a write may take, waiting for its entry to be applied here included.
    pub write_timeout: Duration,
    /// Snapshot the state and trim the stream once it holds this many entries.
    pub snapshot_every: u64,
    /// How often to check whether an expiry is due.
    pub tick_interval: Duration,
}

impl RedisConfig {
    /// Defaults for `node_id` on `url`.
    pub fn new(url: impl Into<String>, node_id: NodeId) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            node_id,
            prefix: "switchboard".to_owned(),
            write_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
            tick_interval: Duration::from_millis(250),
        }
    }
}

/// The keys of one Switchboard. They share one hash tag, so on Redis Cluster they live in one
/// slot (the append script touches only the stream, the snapshot is written beside it).
#[derive(Debug, Clone)]
struct Keys {
    log: String,
    snapshot: String,
    lock: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            log: format!("{{{prefix}}}:log"),
            snapshot: format!("{{{prefix}}}:snapshot"),
            lock: format!("{{{prefix}}}:snapshot-lock"),
        }
    }
}

/// A snapshot as stored: the state after the entry `id`.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    state: Vec<u8>,
}

type Waiter = oneshot::Sender<(u64, Vec<Outcome>)>;

struct Inner {
    config: RedisConfig,
    keys: Keys,
    commands: Client,
    reader: Client,
    view: View,
    /// Writes waiting for their entry, by the token the entry carries.
    pending: Mutex<HashMap<String, Waiter>>,
    slots: Semaphore,
    /// Tokens are `{incarnation}-{n}`: unique across gateways and restarts.
    incarnation: u64,
    next_token: AtomicU64,
    /// When the stream read last answered (ms since epoch; 0: never).
    last_read_ms: AtomicU64,
    /// Entries applied since the last snapshot this replica loaded or wrote.
    since_snapshot: AtomicU64,
    append: Script,
    stopped: AtomicBool,
    /// Concurrent barriers share one "last entry?" question (see `switchboard_store::barrier`).
    barrier: switchboard_store::barrier::ReadBarrier,
}

/// The membership store on Redis (see the crate docs).
pub struct RedisStore {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {what}: {error}"))
}

fn connect_client(config: &RedisConfig) -> Result<Client, StoreError> {
    builder(&config.url)?
        .build()
        .map_err(|e| StoreError::Config(format!("--redis {}: {e}", redact(&config.url))))
}

/// A command client and a subscriber client for `url` (not yet connected).
pub(crate) fn connect_clients(
    url: &str,
) -> Result<(Client, fred::clients::SubscriberClient), StoreError> {
    let builder = builder(url)?;
    let bad = |e: fred::error::Error| StoreError::Config(format!("--redis {}: {e}", redact(url)));
    Ok((
        builder.build().map_err(bad)?,
        builder.build_subscriber_client().map_err(bad)?,
    ))
}

fn builder(url: &str) -> Result<fred::types::Builder, StoreError> {
    let redis = fred::types::config::Config::from_url(url)
        .map_err(|e| StoreError::Config(format!("--redis {}: {e}", redact(url))))?;
    let mut builder = fred::types::Builder::from_config(redis);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(5);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(10);
            // Pub/sub frames wait here until the fan-out's reader moves them to its own queue.
            p.broadcast_channel_capacity = 1024;
        })
        .set_policy(fred::types::config::ReconnectPolicy::new_exponential(
            0, 50, 5_000, 2,
        ));
    Ok(builder)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl RedisStore {
    /// Connects to Redis (failing if it cannot within the connection timeout), loads the latest
    /// snapshot and starts following the stream.
    pub async fn open(config: RedisConfig) -> Result<Arc<RedisStore>, StoreError> {
        metrics::describe();
        let commands = connect_client(&config)?;
        let reader = commands.clone_new();
        for client in [&commands, &reader] {
            let connect = tokio::time::timeout(Duration::from_secs(10), client.init()).await;
            match connect {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(unavailable(
                        &format!("connect to {}", redact(&config.url)),
                        e,
                    ))
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "redis: no connection to {} within 10 s",
                        redact(&config.url)
                    )))
                }
            }
        }
        for client in [&commands, &reader] {
            let url = redact(&config.url);
            // The handler runs as a task of its own for as long as the client lives.
            let handler = client.on_reconnect(move |server| {
                metrics::reconnected();
                tracing::info!(redis = %url, %server, "reconnected to redis");
                async { Ok(()) }
            });
            drop(handler);
        }
        let inner = Arc::new(Inner {
            keys: Keys::new(&config.prefix),
            commands,
            reader,
            view: View::new(Membership::new()),
            pending: Mutex::new(HashMap::new()),
            slots: Semaphore::new(MAX_PENDING_WRITES),
            incarnation: rand::random(),
            next_token: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            since_snapshot: AtomicU64::new(0),
            append: Script::from_lua(APPEND),
            stopped: AtomicBool::new(false),
            barrier: Default::default(),
            config,
        });
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let loaded = inner.load().await?;
        tasks.spawn(inner.clone().follow(loaded, cancel.child_token()));
        tasks.spawn(inner.clone().tick(cancel.child_token()));
        tasks.spawn(inner.clone().snapshots(cancel.child_token()));
        tracing::info!(
            redis = %redact(&inner.config.url),
            prefix = %inner.config.prefix,
            "redis store opened"
        );
        Ok(Arc::new(RedisStore {
            inner,
            cancel,
            tasks,
        }))
    }

    /// Stops the tasks and closes the connections; pending writes fail as unavailable.
    pub async fn shutdown(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.inner.pending.lock().clear();
        // Without Redis, QUIT would wait for a reconnection.
        for client in [&self.inner.commands, &self.inner.reader] {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        }
    }

    /// Snapshots the state now and trims the stream behind it (what the snapshot task does
    /// when the stream grew past `snapshot_every`). Returns whether this gateway did it (another
    /// may hold the lock).
    pub async fn snapshot_now(&self) -> Result<bool, StoreError> {
        self.inner.snapshot().await
    }
}

impl Inner {
    /// The latest snapshot (state replaced) and the id to read after; the empty state and the
    /// origin when there is none.
    async fn load(&self) -> Result<EntryId, StoreError> {
        let stored: Option<Vec<u8>> = self
            .commands
            .get(&self.keys.snapshot)
            .await
            .map_err(|e| unavailable("read the snapshot", e))?;
        let (state, after) = match stored {
            None => (Membership::new(), EntryId::ORIGIN),
            Some(bytes) => {
                let stored: Stored = rmp_serde::from_slice(&bytes)
                    .map_err(|e| StoreError::Storage(format!("undecodable redis snapshot: {e}")))?;
                let id = EntryId::parse(&stored.id)
                    .map_err(|e| StoreError::Storage(format!("redis snapshot: {e}")))?;
                (switchboard_store::decode_state(&stored.state)?, id)
            }
        };
        *self.view.write() = state;
        if let Ok(index) = after.index() {
            self.view.set_applied(index);
        }
        self.since_snapshot.store(0, Ordering::Relaxed);
        tracing::info!(after = %after, "redis replica loaded");
        Ok(after)
    }

    /// Follows the stream from `after`, applying every entry; starts over from the snapshot when
    /// an entry's predecessor is not the last one applied (entries were trimmed away, or Redis
    /// lost data).
    async fn follow(self: Arc<Self>, mut after: EntryId, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let read = tokio::select! {
                _ = cancel.cancelled() => return,
                read = self.reader.xread_map::<String, String, String, Value, _, _>(
                    Some(READ_COUNT),
                    Some(READ_BLOCK_MS),
                    self.keys.log.as_str(),
                    after.to_string(),
                ) => read,
            };
            let response: XReadResponse<String, String, String, Value> = match read {
                Ok(response) => response,
                Err(error) => {
                    metrics::read_failed();
                    if let Some(suppressed) = READ_FAILED_LOG.allow(now_ms()) {
                        tracing::warn!(%error, suppressed, "redis stream read failed; retrying");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            self.last_read_ms.store(now_ms(), Ordering::Release);
            let mut gap = false;
            for (_, entries) in response {
                for (id, fields) in entries {
                    match self.apply(after, &id, &fields) {
                        Ok(applied) => after = applied,
                        Err(why) => {
                            tracing::warn!(%why, at = %after, "the redis log has a gap here; reloading from the snapshot");
                            metrics::resynced();
                            gap = true;
                            break;
                        }
                    }
                }
            }
            if gap {
                loop {
                    match self.load().await {
                        Ok(loaded) => {
                            after = loaded;
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "reloading the redis snapshot failed; retrying");
                            tokio::select! {
                                _ = cancel.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies the entry `id` that follows `after`; `Err` when it does not follow it.
    fn apply(
        &self,
        after: EntryId,
        id: &str,
        fields: &HashMap<String, Value>,
    ) -> Result<EntryId, String> {
        let entry = EntryId::parse(id).map_err(|e| e.to_string())?;
        let prev = fields
            .get("p")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("entry {id} has no predecessor"))?;
        let prev = EntryId::parse(&prev).map_err(|e| e.to_string())?;
        if prev != after {
            return Err(format!("entry {id} follows {prev}, not {after}"));
        }
        let index = entry.index().map_err(|e| e.to_string())?;
        let commands: Vec<Command> = match fields.get("b").and_then(Value::as_bytes) {
            Some(bytes) => match rmp_serde::from_slice(bytes) {
                Ok(commands) => commands,
                Err(error) => {
                    // Every replica skips it alike, so they stay equal.
                    tracing::error!(%error, id, "undecodable redis log entry skipped");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let outcomes = {
            let mut state = self.view.write();
            let outcomes = state.apply(&Batch {
                time_ms: entry.ms,
                commands,
            });
            self.view.set_applied(index);
            outcomes
        };
        self.since_snapshot.fetch_add(1, Ordering::Relaxed);
        metrics::applied(entry.ms, now_ms());
        if let Some(token) = fields.get("w").and_then(Value::as_str) {
            if let Some(waiter) = self.pending.lock().remove(&*token) {
                let _ = waiter.send((index, outcomes));
            }
        }
        Ok(entry)
    }

    /// Appends `commands` as one entry and waits until this replica applied it.
    async fn append(&self, commands: Vec<Command>) -> Result<(Vec<Outcome>, u64), StoreError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "the store is shutting down".to_owned(),
            ));
        }
        let started = std::time::Instant::now();
        let timeout = self.config.write_timeout;
        let result = tokio::time::timeout(timeout, self.append_inner(commands)).await;
        let result = match result {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(format!(
                "the write was not applied within {} ms; it may still be applied",
                timeout.as_millis()
            ))),
        };
        metrics::write_done(&result, started.elapsed());
        result
    }

    async fn append_inner(
        &self,
        commands: Vec<Command>,
    ) -> Result<(Vec<Outcome>, u64), StoreError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".to_owned()))?;
        let payload = rmp_serde::to_vec(&commands)
            .map_err(|e| StoreError::Internal(format!("encode commands: {e}")))?;
        let token = format!(
            "{:016x}-{}",
            self.incarnation,
            self.next_token.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(token.clone(), tx);
        let forget = Forget {
            pending: &self.pending,
            token: &token,
        };
        let appended: Result<String, _> = self
            .append
            .evalsha_with_reload(
                &self.commands,
                vec![self.keys.log.as_str()],
                vec![Value::from(token.as_str()), Value::Bytes(payload.into())],
            )
            .await;
        let id = appended.map_err(|e| unavailable("append", e))?;
        // The entry exists: from here on, a lost answer means "may be applied".
        let (index, outcomes) = rx.await.map_err(|_| {
            StoreError::Timeout(format!(
                "entry {id} was appended, but this replica has not applied it"
            ))
        })?;
        drop(forget);
        Ok((outcomes, index))
    }

    /// Whether the stream read answered recently.
    fn following(&self) -> bool {
        now_ms().saturating_sub(self.last_read_ms.load(Ordering::Acquire)) <= READ_STALE_MS
            && self.commands.is_connected()
    }

    /// Appends a `Tick` whenever an expiry is due (every gateway may; a tick that finds nothing
    /// due does nothing, and the jitter keeps gateways from ticking all at once).
    async fn tick(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let jitter =
                rand::random::<u64>() % (self.config.tick_interval.as_millis() as u64).max(1);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.tick_interval + Duration::from_millis(jitter)) => {}
            }
            let due = self
                .view
                .read()
                .next_deadline()
                .is_some_and(|at| at <= now_ms());
            if due && self.following() {
                if let Err(error) = self.append(vec![Command::Tick]).await {
                    tracing::debug!(%error, "tick not appended");
                }
            }
        }
    }

    /// Snapshots the state once the stream holds `snapshot_every` entries past the last one.
    async fn snapshots(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SNAPSHOT_CHECK) => {}
            }
            if self.since_snapshot.load(Ordering::Relaxed) < self.config.snapshot_every {
                continue;
            }
            let length: Result<u64, _> = self.commands.xlen(&self.keys.log).await;
            if length.is_ok_and(|n| n >= self.config.snapshot_every) {
                if let Err(error) = self.snapshot().await {
                    tracing::warn!(%error, "redis snapshot failed");
                }
            }
        }
    }

    /// Writes the state (at the last applied entry) as the snapshot and trims the stream before
    /// that entry, under a lock so only one gateway does it at a time.
    async fn snapshot(&self) -> Result<bool, StoreError> {
        let token = format!("{:016x}", self.incarnation);
        let locked: Option<String> = self
            .commands
            .set(
                &self.keys.lock,
                token.as_str(),
                Some(Expiration::PX(SNAPSHOT_LOCK_MS)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| unavailable("take the snapshot lock", e))?;
        if locked.is_none() {
            return Ok(false);
        }
        let result = self.write_snapshot().await;
        let _: Result<i64, _> = self.commands.del(&self.keys.lock).await;
        result.map(|()| true)
    }

    async fn write_snapshot(&self) -> Result<(), StoreError> {
        let (id, state) = {
            let state = self.view.read();
            let id = EntryId::from_index(self.view.applied_index());
            (id, switchboard_store::encode_state(&state)?)
        };
        if id == EntryId::ORIGIN {
            return Ok(());
        }
        let bytes = rmp_serde::to_vec(&Stored {
            id: id.to_string(),
            state,
        })
        .map_err(|e| StoreError::Internal(format!("encode the snapshot: {e}")))?;
        let size = bytes.len();
        let _: () = self
            .commands
            .set(
                &self.keys.snapshot,
                Value::Bytes(bytes.into()),
                None,
                None,
                false,
            )
            .await
            .map_err(|e| unavailable("write the snapshot", e))?;
        let trimmed: u64 = self
            .commands
            .xtrim(
                &self.keys.log,
                XCap::try_from((XCapKind::MinID, XCapTrim::Exact, id.to_string(), None))
                    .map_err(|e| StoreError::Internal(format!("trim: {e}")))?,
            )
            .await
            .map_err(|e| unavailable("trim the log", e))?;
        self.since_snapshot.store(0, Ordering::Relaxed);
        metrics::snapshot_written();
        tracing::info!(after = %id, bytes = size, trimmed, "redis snapshot written");
        Ok(())
    }
}

/// Removes a write's waiter when the write gives up.
struct Forget<'a> {
    pending: &'a Mutex<HashMap<String, Waiter>>,
    token: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(self.token);
    }
}

#[async_trait]
impl MembershipStore for RedisStore {
    async fn write_all(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, StoreError> {
        self.inner
            .append(commands)
            .await
            .map(|(outcomes, _)| outcomes)
    }

    async fn write_indexed(&self, command: Command) -> Result<(Outcome, u64), StoreError> {
        let (outcomes, index) = self.inner.append(vec![command]).await?;
        let outcome = outcomes
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Internal("the store returned no outcome".to_owned()))?;
        Ok((outcome, index))
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (client, log) = (self.inner.commands.clone(), self.inner.keys.log.clone());
        let index = self
            .inner
            .barrier
            .leader_index(move || async move {
                let last: Vec<(String, HashMap<String, Value>)> = client
                    .xrevrange(&log, "+", "-", Some(1))
                    .await
                    .map_err(|e| format!("redis: read the last entry: {e}"))?;
                match last.into_iter().next() {
                    None => Ok(0),
                    Some((id, _)) => EntryId::parse(&id)
                        .and_then(EntryId::index)
                        .map_err(|e| e.to_string()),
                }
            })
            .await
            .map_err(StoreError::Unavailable)?;
        let id = EntryId::from_index(index);
        if self
            .inner
            .view
            .wait_applied(index, self.inner.config.write_timeout)
            .await
        {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "this gateway has not applied redis entry {id} yet"
            )))
        }
    }

    fn view(&self) -> View {
        self.inner.view.clone()
    }

    fn status(&self) -> StoreStatus {
        let applied = self.inner.view.applied_index();
        StoreStatus {
            node_id: self.inner.config.node_id,
            // Redis plays the leader: known while this replica follows its stream.
            leader_id: self.inner.following().then_some(self.inner.config.node_id),
            is_leader: false,
            term: 0,
            last_log_index: Some(applied),
            applied_index: Some(applied),
            committed_index: Some(applied),
            snapshot_index: None,
            purged_index: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("sb");
        for key in [&keys.log, &keys.snapshot, &keys.lock] {
            assert!(key.starts_with("{sb}:"), "{key}");
        }
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("rediss://user:pw@h:1"), "rediss://***@h:1");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
