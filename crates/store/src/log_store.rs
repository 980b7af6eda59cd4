//! The Raft log, the vote and the committed log id, kept in one redb database.
//!
//! This is openraft's [`RaftLogStorage`]: the durable half of Raft. Its correctness rules are
//! openraft's: an append is acknowledged (the [`LogFlushed`] callback) only once the entries are on
//! disk, the vote is on disk before `save_vote` returns, and truncation and purging never leave a
//! hole. redb commits with [`Durability::Immediate`] fsync before returning; every disk operation
//! runs on tokio's blocking pool so the runtime threads never wait for the disk.
//!
//! A disk fault (no space, a read-only volume, an I/O error) is not handed to openraft, which
//! would stop for good: the operation is retried with backoff until the disk works again (see
//! [`crate::disk`]). redb latches a failed write, so the retry closes the database and opens the
//! file again, which brings it back to its last commit; an append then writes its entries again.
//!
//! The committed log id is written without its own fsync ([`Durability::None`]): redb makes it
//! durable with the next durable commit (the next append), and losing the latest value only makes
//! a restart re-apply less at once — Raft recommits the rest.
//!
//! Layout: table `raft_log` maps the log index to one encoded [`Entry`]; table `raft_meta` holds
//! `vote`, `committed`, `last_purged`, `node_id` and `cluster_id`.

// openraft's trait fixes the error type (`StorageError`, ~224 bytes); the disk helpers return it
// as is rather than converting at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError, Vote,
};
use parking_lot::RwLock;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::disk::{DiskHealth, Failure};
use crate::error::StoreError;
use crate::{Entry, LogId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_NODE_ID: &str = "node_id";
const KEY_CLUSTER_ID: &str = "cluster_id";

/// File name of the database inside the Raft directory.
pub const LOG_FILE: &str = "log.redb";

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The redb-backed Raft log storage. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; `None` between closing a failed instance and opening a new one.
    db: RwLock<Option<Database>>,
    /// Set when an operation hit a disk fault: redb latches a failed write (every later call
    /// answers "previous I/O error"), so the next attempt reopens the file first.
    broken: AtomicBool,
    path: PathBuf,
    /// Committed index + 1 (0 = none), for status and metrics.
    committed: AtomicU64,
    health: DiskHealth,
}

/// One attempt at a disk operation: a disk fault is retried (see [`crate::disk`]), a corrupt
/// record is not.
type Attempt<T> = Result<T, Failure<StorageError<u64>>>;

fn io_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    error: impl std::fmt::Display,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::error(error)).into()
}

/// A disk fault while doing `verb` on `subject`.
fn fault(
    subject: &ErrorSubject<u64>,
    verb: ErrorVerb,
    error: impl std::fmt::Display,
) -> Failure<StorageError<u64>> {
    Failure::Transient(io_error(subject.clone(), verb, error))
}

fn corrupt(index: u64, error: impl std::fmt::Display) -> Failure<StorageError<u64>> {
    Failure::Permanent(
        StorageIOError::read_log_at_index(
            index,
            AnyError::error(format!("corrupt log entry at index {index}: {error}")),
        )
        .into(),
    )
}

fn storage_error(failure: Failure<StorageError<u64>>) -> StoreError {
    match failure {
        Failure::Transient(e) | Failure::Permanent(e) => StoreError::Storage(e.to_string()),
    }
}

impl LogStore {
    /// Opens (or creates) the log database in `dir` (created if missing), with a disk health of
    /// its own. Blocking.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        LogStore::open_with(dir, DiskHealth::new())
    }

    /// Opens the log database in `dir`, reporting disk faults to `health`. Blocking.
    pub fn open_with(dir: &Path, health: DiskHealth) -> Result<LogStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(LOG_FILE);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Storage(format!("open {}: {e}", path.display())))?;
        let store = LogStore {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                broken: AtomicBool::new(false),
                path,
                committed: AtomicU64::new(0),
                health,
            }),
        };
        store
            .with_db(&ErrorSubject::Store, |db| {
                let err =
                    |e: &dyn std::fmt::Display| fault(&ErrorSubject::Store, ErrorVerb::Write, e);
                let txn = db.begin_write().map_err(|e| err(&e))?;
                txn.open_table(LOG).map_err(|e| err(&e))?;
                txn.open_table(META).map_err(|e| err(&e))?;
                txn.commit().map_err(|e| err(&e))
            })
            .map_err(|e| {
                StoreError::Storage(format!(
                    "initialize {}: {}",
                    store.inner.path.display(),
                    storage_error(e)
                ))
            })?;
        let committed = store
            .read_meta::<Option<LogId>>(KEY_COMMITTED)
            .map_err(storage_error)?;
        store.set_committed_index(committed.flatten().map(|id| id.index));
        Ok(store)
    }

    /// The disk health this store reports to.
    pub fn health(&self) -> &DiskHealth {
        &self.inner.health
    }

    /// Runs `f` on the open database, reopening it first if an earlier operation failed.
    /// A disk fault marks the database for reopening. Blocking.
    fn with_db<T>(
        &self,
        subject: &ErrorSubject<u64>,
        f: impl FnOnce(&Database) -> Attempt<T>,
    ) -> Attempt<T> {
        if self.inner.broken.load(Ordering::Acquire) {
            self.reopen(subject)?;
        }
        let guard = self.inner.db.read();
        let Some(db) = guard.as_ref() else {
            self.inner.broken.store(true, Ordering::Release);
            return Err(fault(
                subject,
                ErrorVerb::Read,
                "the log database is closed after a disk fault",
            ));
        };
        let result = f(db);
        if matches!(result, Err(Failure::Transient(_))) {
            self.inner.broken.store(true, Ordering::Release);
        }
        result
    }

    /// Closes the failed database and opens the file again (redb recovers it to its last
    /// commit). Whoever gets the write lock first does it; the others find it done.
    fn reopen(&self, subject: &ErrorSubject<u64>) -> Attempt<()> {
        let mut guard = self.inner.db.write();
        if !self.inner.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        // redb refuses a second instance on one file: the old one must be gone first.
        *guard = None;
        match Database::create(&self.inner.path) {
            Ok(db) => {
                *guard = Some(db);
                self.inner.broken.store(false, Ordering::Release);
                tracing::info!(path = %self.inner.path.display(), "reopened the raft log after a disk fault");
                Ok(())
            }
            Err(e) => Err(fault(
                subject,
                ErrorVerb::Write,
                format!("reopen the raft log: {e}"),
            )),
        }
    }

    /// Runs the blocking operation `f` on tokio's blocking pool, retried while the disk fails.
    async fn disk<T, F>(
        &self,
        op: &'static str,
        subject: ErrorSubject<u64>,
        f: F,
    ) -> StorageResult<T>
    where
        T: Send + 'static,
        F: Fn(&LogStore) -> Attempt<T> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.inner
            .health
            .retry(op, || {
                let this = self.clone();
                let f = f.clone();
                let subject = subject.clone();
                async move {
                    match tokio::task::spawn_blocking(move || f(&this)).await {
                        Ok(result) => result,
                        Err(join) => Err(Failure::Permanent(io_error(
                            subject,
                            ErrorVerb::Write,
                            format!("storage task failed: {join}"),
                        ))),
                    }
                }
            })
            .await
    }

    /// Binds the database to `node_id` on first use and refuses a different id afterwards: a
    /// Raft node's identity must never change under its log. Blocking.
    pub fn check_node_id(&self, node_id: u64) -> Result<(), StoreError> {
        let stored: Option<u64> = self.read_meta(KEY_NODE_ID).map_err(storage_error)?;
        match stored {
            Some(id) if id == node_id => Ok(()),
            Some(id) => Err(StoreError::Config(format!(
                "the data directory belongs to node {id}, not node {node_id} ({})",
                self.inner.path.display()
            ))),
            None => self
                .write_meta(
                    KEY_NODE_ID,
                    &node_id,
                    Durability::Immediate,
                    ErrorSubject::Store,
                )
                .map_err(storage_error),
        }
    }

    /// The cluster id recorded with this log (see [`LogStore::save_cluster_id`]). Blocking.
    pub fn cluster_id(&self) -> Result<Option<String>, StoreError> {
        self.read_meta(KEY_CLUSTER_ID).map_err(storage_error)
    }

    /// Records the cluster id with the log, so that a restarted node knows its cluster before it
    /// has applied anything (and refuses, and is refused by, another cluster's nodes at once).
    /// Blocking.
    pub fn save_cluster_id(&self, id: &str) -> Result<(), StoreError> {
        self.write_meta(
            KEY_CLUSTER_ID,
            &id.to_owned(),
            Durability::Immediate,
            ErrorSubject::Store,
        )
        .map_err(storage_error)
    }

    /// The committed log index last saved by Raft, if any.
    pub fn committed_index(&self) -> Option<u64> {
        self.inner.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    fn set_committed_index(&self, index: Option<u64>) {
        let raw = index.map_or(0, |i| i.saturating_add(1));
        self.inner.committed.store(raw, Ordering::Relaxed);
        if let Some(index) = index {
            crate::metrics::commit_index(index);
        }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> Attempt<Option<T>> {
        let subject = if key == KEY_VOTE {
            ErrorSubject::Vote
        } else {
            ErrorSubject::Store
        };
        self.with_db(&subject, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&subject, ErrorVerb::Read, e);
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(META).map_err(|e| err(&e))?;
            let Some(value) = table.get(key).map_err(|e| err(&e))? else {
                return Ok(None);
            };
            let decoded = codec::decode(value.value()).map_err(|e| {
                Failure::Permanent(io_error(
                    subject.clone(),
                    ErrorVerb::Read,
                    format!("corrupt `{key}` record: {e}"),
                ))
            })?;
            Ok(Some(decoded))
        })
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
        subject: ErrorSubject<u64>,
    ) -> Attempt<()> {
        let bytes = codec::encode(value)
            .map_err(|e| Failure::Permanent(io_error(subject.clone(), ErrorVerb::Write, e)))?;
        self.with_db(&subject, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&subject, ErrorVerb::Write, e);
            let mut txn = db.begin_write().map_err(|e| err(&e))?;
            txn.set_durability(durability).map_err(|e| err(&e))?;
            {
                let mut table = txn.open_table(META).map_err(|e| err(&e))?;
                table.insert(key, bytes.as_slice()).map_err(|e| err(&e))?;
            }
            txn.commit().map_err(|e| err(&e))
        })
    }

    fn read_entries(&self, start: Bound<u64>, end: Bound<u64>) -> Attempt<Vec<Entry>> {
        let lo = match start {
            Bound::Included(x) => x,
            Bound::Excluded(x) => match x.checked_add(1) {
                Some(x) => x,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let hi = match end {
            Bound::Included(x) => x,
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(x) => x - 1,
            Bound::Unbounded => u64::MAX,
        };
        if lo > hi {
            return Ok(Vec::new());
        }
        self.with_db(&ErrorSubject::Logs, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&ErrorSubject::Logs, ErrorVerb::Read, e);
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(LOG).map_err(|e| err(&e))?;
            let mut entries = Vec::new();
            for item in table.range(lo..=hi).map_err(|e| err(&e))? {
                let (key, value) = item.map_err(|e| err(&e))?;
                let index = key.value();
                let entry: Entry = codec::decode(value.value()).map_err(|e| corrupt(index, e))?;
                if entry.log_id.index != index {
                    return Err(corrupt(
                        index,
                        format!("entry claims index {}", entry.log_id.index),
                    ));
                }
                entries.push(entry);
            }
            Ok(entries)
        })
    }

    fn log_state(&self) -> Attempt<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        self.with_db(&ErrorSubject::Logs, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&ErrorSubject::Logs, ErrorVerb::Read, e);
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(LOG).map_err(|e| err(&e))?;
            let last = match table.last().map_err(|e| err(&e))? {
                Some((key, value)) => {
                    let index = key.value();
                    let entry: Entry =
                        codec::decode(value.value()).map_err(|e| corrupt(index, e))?;
                    Some(entry.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
    }

    fn write_entries(&self, entries: &[Entry]) -> Attempt<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let subject = ErrorSubject::Log(first.log_id);
        self.with_db(&subject, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&subject, ErrorVerb::Write, e);
            let mut txn = db.begin_write().map_err(|e| err(&e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| err(&e))?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
                for entry in entries {
                    let bytes = codec::encode(entry).map_err(|e| {
                        Failure::Permanent(io_error(subject.clone(), ErrorVerb::Write, e))
                    })?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(|e| err(&e))?;
                }
            }
            txn.commit().map_err(|e| err(&e))
        })
    }

    /// Deletes entries with index >= `since`.
    fn delete_since(&self, since: u64) -> Attempt<()> {
        self.with_db(&ErrorSubject::Logs, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&ErrorSubject::Logs, ErrorVerb::Delete, e);
            let mut txn = db.begin_write().map_err(|e| err(&e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| err(&e))?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
                table
                    .retain_in(since.., |_, _| false)
                    .map_err(|e| err(&e))?;
            }
            txn.commit().map_err(|e| err(&e))
        })
    }

    /// Deletes entries with index <= `upto.index` and records `upto` as the last purged id, in
    /// one transaction so no reader sees a hole.
    fn purge_upto(&self, upto: LogId) -> Attempt<()> {
        let bytes = codec::encode(&upto)
            .map_err(|e| Failure::Permanent(io_error(ErrorSubject::Logs, ErrorVerb::Delete, e)))?;
        self.with_db(&ErrorSubject::Logs, |db| {
            let err = |e: &dyn std::fmt::Display| fault(&ErrorSubject::Logs, ErrorVerb::Delete, e);
            let mut txn = db.begin_write().map_err(|e| err(&e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| err(&e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                    .map_err(|e| err(&e))?;
                let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
                table
                    .retain_in(..=upto.index, |_, _| false)
                    .map_err(|e| err(&e))?;
            }
            txn.commit().map_err(|e| err(&e))
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.disk("log read", ErrorSubject::Logs, move |this| {
            this.read_entries(start, end)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.disk("log state", ErrorSubject::Logs, |this| this.log_state())
            .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let vote = *vote;
        self.disk("vote save", ErrorSubject::Vote, move |this| {
            this.write_meta(KEY_VOTE, &vote, Durability::Immediate, ErrorSubject::Vote)
        })
        .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.disk("vote read", ErrorSubject::Vote, |this| {
            this.read_meta(KEY_VOTE)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        self.disk("commit save", ErrorSubject::Store, move |this| {
            this.write_meta(
                KEY_COMMITTED,
                &committed,
                Durability::None,
                ErrorSubject::Store,
            )?;
            this.set_committed_index(committed.map(|id| id.index));
            Ok(())
        })
        .await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        self.disk("commit read", ErrorSubject::Store, |this| {
            Ok(this.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Acknowledged only once on disk: a disk fault keeps the append (and with it this node's
        // part in committing these entries) waiting until the disk works again.
        let entries: Arc<Vec<Entry>> = Arc::new(entries.into_iter().collect());
        let result = self
            .disk("append", ErrorSubject::Logs, move |this| {
                this.write_entries(&entries)
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => {
                tracing::error!(error = %e, "raft log append failed");
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
            }
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        tracing::debug!(since = log_id.index, "truncating raft log");
        self.disk("truncate", ErrorSubject::Logs, move |this| {
            this.delete_since(log_id.index)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        tracing::debug!(upto = log_id.index, "purging raft log");
        self.disk("purge", ErrorSubject::Logs, move |this| {
            this.purge_upto(log_id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{log_id, StoreBuilder, Suite};
    use openraft::{EntryPayload, RaftLogReader};
    use switchboard_membership::{Batch, Command};
    use tempfile::TempDir;

    use super::*;
    use crate::state_machine::StateMachineStore;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
        async fn build(&self) -> StorageResult<(TempDir, LogStore, StateMachineStore)> {
            let dir =
                TempDir::new().map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let log = LogStore::open(&dir.path().join("raft"))
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let sm = StateMachineStore::open(&dir.path().join("snapshots"))
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }

    fn normal(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Batch {
                time_ms: index,
                commands: vec![Command::Tick],
            }),
        }
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let this = store.clone();
        tokio::task::spawn_blocking(move || this.write_entries(&entries))
            .await
            .unwrap()
            .unwrap();
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn truncate_purge_and_state_survive_reopen() {
        let dir = TempDir::new().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (1..=10).map(|i| normal(1, i)).collect()).await;
            store.truncate(log_id(1, 1, 8)).await.unwrap();
            store.purge(log_id(1, 1, 3)).await.unwrap();
            store.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
            store.save_committed(Some(log_id(1, 1, 6))).await.unwrap();
            // A durable commit after the committed id makes it durable too.
            append(&mut store, vec![normal(2, 8)]).await;
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        let entries = store.try_get_log_entries(0..).await.unwrap();
        assert_eq!(indexes(&entries), vec![4, 5, 6, 7, 8]);
        assert_eq!(entries[4].log_id, log_id(2, 1, 8));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 8)));
        assert_eq!(
            store.read_vote().await.unwrap(),
            Some(Vote::new_committed(2, 1))
        );
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 6)));
        assert_eq!(store.committed_index(), Some(6));
        assert_eq!(
            indexes(&store.try_get_log_entries(5..=6).await.unwrap()),
            vec![5, 6]
        );
        assert!(store.try_get_log_entries(7..7).await.unwrap().is_empty());
        assert!(store
            .try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn purging_everything_keeps_the_last_log_id() {
        let dir = TempDir::new().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, (1..=3).map(|i| normal(1, i)).collect()).await;
        store.purge(log_id(1, 1, 3)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 3)));
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_an_error_naming_its_index() {
        let dir = TempDir::new().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, vec![normal(1, 1)]).await;
        {
            let guard = store.inner.db.read();
            let txn = guard.as_ref().unwrap().begin_write().unwrap();
            {
                let mut table = txn.open_table(LOG).unwrap();
                table.insert(2u64, [0xc1u8, 0xff, 0x00].as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = store.try_get_log_entries(0..).await.unwrap_err();
        assert!(err.to_string().contains("index 2"), "{err}");
        let err = store.get_log_state().await.unwrap_err();
        assert!(err.to_string().contains("index 2"), "{err}");
    }

    #[test]
    fn the_cluster_id_is_recorded_with_the_log() {
        let dir = TempDir::new().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            assert_eq!(store.cluster_id().unwrap(), None);
            store.save_cluster_id("c0ffee").unwrap();
        }
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.cluster_id().unwrap().as_deref(), Some("c0ffee"));
    }

    #[test]
    fn the_node_id_is_bound_to_the_directory() {
        let dir = TempDir::new().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            store.check_node_id(7).unwrap();
            store.check_node_id(7).unwrap();
        }
        let store = LogStore::open(dir.path()).unwrap();
        assert!(matches!(store.check_node_id(8), Err(StoreError::Config(_))));
        store.check_node_id(7).unwrap();
    }
}
