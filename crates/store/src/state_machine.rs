//! Applying committed entries to the membership state, and snapshots of it on disk.
//!
//! This is openraft's [`RaftStateMachine`]. The state itself is one
//! `Arc<parking_lot::RwLock<Membership>>` shared with every [`crate::View`], so an applied entry is
//! visible to readers the moment `apply` releases the write lock — which is before openraft
//! answers the proposer, hence read-your-writes.
//!
//! Snapshots: openraft asks for a builder between two applies; the builder serializes the state
//! right then under the read lock (so the bytes match the last applied log id exactly) and the
//! file is written afterwards, off the lock. The file `{dir}/current.snap` is replaced atomically
//! (temporary file, fsync, rename, fsync of the directory), so only the latest snapshot is kept
//! and a crash leaves either the old or the new one. A disk fault while writing or reading it is
//! retried until the disk works again (see [`crate::disk`]), so a full or read-only snapshot
//! directory delays the snapshot instead of stopping Raft. On open the latest snapshot is loaded; Raft
//! then replays the committed log behind it.

use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use switchboard_membership::{Batch, Membership, Outcome};
use tokio::sync::broadcast;

use crate::api::View;
use crate::codec;
use crate::disk::{DiskHealth, Failure};
use crate::error::StoreError;
use crate::{Entry, LogId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<u64>>;
type Meta = SnapshotMeta<u64, BasicNode>;

/// File name of the latest snapshot inside the snapshot directory.
pub const SNAPSHOT_FILE: &str = "current.snap";
const SNAPSHOT_TMP: &str = "current.snap.tmp";

fn snapshot_error(
    meta: Option<&Meta>,
    verb: ErrorVerb,
    error: impl std::fmt::Display,
) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::Snapshot(meta.map(Meta::signature)),
        verb,
        AnyError::error(error),
    )
    .into()
}

fn sm_error(verb: ErrorVerb, error: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::error(error)).into()
}

/// The snapshot directory: writes the latest snapshot atomically and reads it back.
struct SnapshotDir {
    dir: PathBuf,
    /// Meta of the snapshot on disk; the lock also serializes writers.
    current: Mutex<Option<Meta>>,
    /// Where disk faults are reported; writes and reads are retried while the disk fails.
    health: DiskHealth,
}

/// A disk fault (retried) or an undecodable file (not), with the path in the message.
type Attempt<T> = Result<T, Failure<String>>;

/// A snapshot read from disk: its meta and the encoded state.
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

impl SnapshotDir {
    /// Opens the directory (created if missing), drops a leftover temporary file and loads the
    /// latest snapshot, if any. Blocking.
    fn open(
        dir: &Path,
        health: DiskHealth,
    ) -> Result<(SnapshotDir, Option<StoredSnapshot>), StoreError> {
        fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("create {}: {e}", dir.display())))?;
        let tmp = dir.join(SNAPSHOT_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp)
                .map_err(|e| StoreError::Storage(format!("remove {}: {e}", tmp.display())))?;
        }
        let snapshots = SnapshotDir {
            dir: dir.to_path_buf(),
            current: Mutex::new(None),
            health,
        };
        let loaded = snapshots.read().map_err(|f| match f {
            Failure::Transient(e) | Failure::Permanent(e) => StoreError::Storage(e),
        })?;
        *snapshots.current.lock() = loaded.as_ref().map(|s| s.meta.clone());
        Ok((snapshots, loaded))
    }

    fn read(&self) -> Attempt<Option<StoredSnapshot>> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let file = match fs::read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Failure::Transient(format!("read {}: {e}", path.display()))),
        };
        let (meta, data) = codec::unframe_snapshot(&file)
            .map_err(|e| Failure::Permanent(format!("corrupt snapshot {}: {e}", path.display())))?;
        let meta: Meta = codec::decode(meta).map_err(|e| {
            Failure::Permanent(format!("corrupt snapshot meta {}: {e}", path.display()))
        })?;
        Ok(Some(StoredSnapshot {
            meta,
            data: data.to_vec(),
        }))
    }

    /// Replaces the snapshot on disk unless the one there is newer. Returns whether it wrote.
    fn write(&self, meta: &Meta, data: &[u8]) -> Attempt<bool> {
        let mut current = self.current.lock();
        if let Some(existing) = current.as_ref() {
            if existing.last_log_id > meta.last_log_id {
                return Ok(false);
            }
        }
        let encoded_meta = codec::encode(meta).map_err(|e| Failure::Permanent(e.to_string()))?;
        let framed = codec::frame_snapshot(&encoded_meta, data)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let path = self.dir.join(SNAPSHOT_FILE);
        let disk = |what: &str, at: &Path, e: std::io::Error| {
            Failure::Transient(format!("{what} {}: {e}", at.display()))
        };
        let written = File::create(&tmp)
            .map_err(|e| disk("create", &tmp, e))
            .and_then(|mut file| {
                file.write_all(&framed)
                    .map_err(|e| disk("write", &tmp, e))?;
                file.sync_all().map_err(|e| disk("fsync", &tmp, e))
            });
        if let Err(failure) = written {
            // A partial temporary file would only take space the next attempt needs.
            let _ = fs::remove_file(&tmp);
            return Err(failure);
        }
        fs::rename(&tmp, &path).map_err(|e| disk("rename to", &path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| disk("fsync", &self.dir, e))?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// [`SnapshotDir::write`] on the blocking pool, retried while the disk fails.
    async fn write_retrying(
        self: &Arc<Self>,
        op: &'static str,
        meta: &Meta,
        data: Arc<Vec<u8>>,
    ) -> Result<bool, String> {
        self.health
            .retry(op, || {
                let this = self.clone();
                let meta = meta.clone();
                let data = data.clone();
                async move {
                    tokio::task::spawn_blocking(move || this.write(&meta, &data))
                        .await
                        .unwrap_or_else(|e| {
                            Err(Failure::Permanent(format!("snapshot task failed: {e}")))
                        })
                }
            })
            .await
    }

    /// [`SnapshotDir::read`] on the blocking pool, retried while the disk fails.
    async fn read_retrying(self: &Arc<Self>) -> Result<Option<StoredSnapshot>, String> {
        self.health
            .retry("snapshot read", || {
                let this = self.clone();
                async move {
                    tokio::task::spawn_blocking(move || this.read())
                        .await
                        .unwrap_or_else(|e| {
                            Err(Failure::Permanent(format!("snapshot task failed: {e}")))
                        })
                }
            })
            .await
    }
}

/// What the state machine tells watchers (remote replicas) after each change.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// The batch at `log_index` was applied on top of everything before it.
    Batch { log_index: u64, batch: Arc<Batch> },
    /// The entry at `log_index` carried no commands (a blank or membership entry): only the
    /// applied index moves.
    Index { log_index: u64 },
    /// The state was replaced wholesale (a snapshot was installed): watchers must start over.
    Reset,
}

/// How many applied batches a slow watcher may fall behind before it must start over.
const FEED_CAPACITY: usize = 4096;

/// The Raft state machine: the shared membership state plus what Raft needs to know about it.
pub struct StateMachineStore {
    view: View,
    feed: broadcast::Sender<FeedEvent>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    snapshots: Arc<SnapshotDir>,
}

impl StateMachineStore {
    /// Opens the state machine with its snapshots in `dir`, loading the latest snapshot (or an
    /// empty state). Blocking.
    pub fn open(dir: &Path) -> Result<StateMachineStore, StoreError> {
        StateMachineStore::open_with(dir, DiskHealth::new())
    }

    /// [`StateMachineStore::open`], reporting disk faults to `health`. Blocking.
    pub fn open_with(dir: &Path, health: DiskHealth) -> Result<StateMachineStore, StoreError> {
        let (snapshots, loaded) = SnapshotDir::open(dir, health)?;
        let mut sm = StateMachineStore {
            view: View::new(Membership::new()),
            feed: broadcast::channel(FEED_CAPACITY).0,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshots: Arc::new(snapshots),
        };
        if let Some(snapshot) = loaded {
            let state: Membership = codec::decode(&snapshot.data).map_err(|e| {
                StoreError::Storage(format!("corrupt snapshot state in {}: {e}", dir.display()))
            })?;
            tracing::info!(
                last_log_index = snapshot.meta.last_log_id.map(|id| id.index),
                snapshot_id = %snapshot.meta.snapshot_id,
                bytes = snapshot.data.len(),
                "loaded snapshot"
            );
            *sm.view.write() = state;
            sm.view
                .set_applied(snapshot.meta.last_log_id.map_or(0, |id| id.index));
            sm.last_applied = snapshot.meta.last_log_id;
            sm.last_membership = snapshot.meta.last_membership;
        }
        Ok(sm)
    }

    /// The view this machine applies to.
    pub fn view(&self) -> View {
        self.view.clone()
    }

    /// The feed of applied batches (see [`FeedEvent`]).
    pub fn feed(&self) -> broadcast::Sender<FeedEvent> {
        self.feed.clone()
    }
}

/// Builds a snapshot from state serialized at a consistent point.
pub struct SnapshotBuilder {
    meta: Meta,
    data: Result<Vec<u8>, String>,
    snapshots: Arc<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let started = Instant::now();
        let data = std::mem::replace(&mut self.data, Err("snapshot already built".to_owned()))
            .map_err(|e| {
                snapshot_error(
                    Some(&self.meta),
                    ErrorVerb::Read,
                    format!("serialize state: {e}"),
                )
            })?;
        let data = Arc::new(data);
        let wrote = self
            .snapshots
            .write_retrying("snapshot write", &self.meta, data.clone())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "snapshot write failed");
                snapshot_error(Some(&self.meta), ErrorVerb::Write, e)
            })?;
        let data = Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone());
        tracing::info!(
            last_log_index = self.meta.last_log_id.map(|id| id.index),
            snapshot_id = %self.meta.snapshot_id,
            bytes = data.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            written = wrote,
            "built snapshot"
        );
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn snapshot_id(last: Option<LogId>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    match last {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, now),
        None => format!("none-{now}"),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId>, StoredMembership<u64, BasicNode>)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<Outcome>>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let view = self.view.clone();
        let feed = self.feed.clone();
        // Applying a batch of up to a thousand commands is CPU work: keep it off the runtime.
        let (responses, last_applied, membership) = tokio::task::spawn_blocking(move || {
            let mut responses = Vec::with_capacity(entries.len());
            let mut last_applied = None;
            let mut membership = None;
            for entry in entries {
                last_applied = Some(entry.log_id);
                let index = entry.log_id.index;
                // Apply, advance the applied index and tell watchers under one write lock, so a
                // watcher that snapshots the state under the read lock misses nothing.
                let mut state = view.write();
                match entry.payload {
                    EntryPayload::Blank => {
                        responses.push(Vec::new());
                        let _ = feed.send(FeedEvent::Index { log_index: index });
                    }
                    EntryPayload::Normal(batch) => {
                        responses.push(state.apply(&batch));
                        let _ = feed.send(FeedEvent::Batch {
                            log_index: index,
                            batch: Arc::new(batch),
                        });
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        responses.push(Vec::new());
                        let _ = feed.send(FeedEvent::Index { log_index: index });
                    }
                }
                view.set_applied(index);
                drop(state);
            }
            (responses, last_applied, membership)
        })
        .await
        .map_err(|e| sm_error(ErrorVerb::Write, format!("apply task failed: {e}")))?;
        if last_applied.is_some() {
            self.last_applied = last_applied;
        }
        if let Some(membership) = membership {
            self.last_membership = membership;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Raft calls this between two applies, so the state serialized here matches
        // `last_applied` exactly; only the file write happens later, concurrently with applies.
        let view = self.view.clone();
        let data = tokio::task::spawn_blocking(move || {
            let guard = view.read();
            codec::encode_named(&*guard).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("serialize task failed: {e}")));
        SnapshotBuilder {
            meta: Meta {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
                snapshot_id: snapshot_id(self.last_applied),
            },
            data,
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = Arc::new(snapshot.into_inner());
        let decoded = data.clone();
        let state = tokio::task::spawn_blocking(move || -> Result<Membership, String> {
            codec::decode(&decoded).map_err(|e| format!("corrupt snapshot state: {e}"))
        })
        .await
        .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?
        .map_err(|e| {
            tracing::error!(error = %e, "snapshot install failed");
            snapshot_error(Some(meta), ErrorVerb::Write, e)
        })?;
        self.snapshots
            .write_retrying("snapshot install", meta, data)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "snapshot install failed");
                snapshot_error(Some(meta), ErrorVerb::Write, e)
            })?;
        {
            let mut current = self.view.write();
            *current = state;
            self.view
                .set_applied(meta.last_log_id.map_or(0, |id| id.index));
            let _ = self.feed.send(FeedEvent::Reset);
        }
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        tracing::info!(
            last_log_index = meta.last_log_id.map(|id| id.index),
            snapshot_id = %meta.snapshot_id,
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = self
            .snapshots
            .read_retrying()
            .await
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::testing::log_id;
    use switchboard_membership::{Batch, Command};
    use tempfile::TempDir;

    use super::*;

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload,
        }
    }

    fn tick(index: u64) -> Entry {
        entry(
            index,
            EntryPayload::Normal(Batch {
                time_ms: 1_000 + index,
                commands: vec![Command::Tick, Command::Tick],
            }),
        )
    }

    #[tokio::test]
    async fn outcomes_per_entry_and_empty_for_blank_and_membership() {
        let dir = TempDir::new().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let membership = openraft::Membership::new(vec![BTreeSet::from([1u64])], None);
        let responses = sm
            .apply(vec![
                entry(1, EntryPayload::Blank),
                entry(2, EntryPayload::Membership(membership)),
                tick(3),
            ])
            .await
            .unwrap();
        assert_eq!(responses.len(), 3);
        assert!(responses[0].is_empty());
        assert!(responses[1].is_empty());
        assert_eq!(responses[2].len(), 2);
        let (applied, stored) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 1, 3)));
        assert_eq!(stored.log_id(), &Some(log_id(1, 1, 2)));
    }

    #[tokio::test]
    async fn snapshot_survives_reopen_and_a_torn_temp_file_is_ignored() {
        let dir = TempDir::new().unwrap();
        {
            let mut sm = StateMachineStore::open(dir.path()).unwrap();
            sm.apply(vec![tick(1), tick(2)]).await.unwrap();
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 2)));
            std::fs::write(dir.path().join(SNAPSHOT_TMP), b"torn").unwrap();
        }
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 1, 2)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(1, 1, 2)));
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());
    }

    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = TempDir::new().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply(vec![tick(1)]).await.unwrap();
        let mut old = sm.get_snapshot_builder().await;
        sm.apply(vec![tick(2)]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        old.build_snapshot().await.unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(1, 1, 2)));
    }

    #[tokio::test]
    async fn a_damaged_snapshot_file_fails_open() {
        let dir = TempDir::new().unwrap();
        {
            let mut sm = StateMachineStore::open(dir.path()).unwrap();
            sm.apply(vec![tick(1)]).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        }
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            StateMachineStore::open(dir.path()),
            Err(StoreError::Storage(_))
        ));
    }
}
