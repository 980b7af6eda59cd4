//! The Raft log, the vote and the committed log id, kept in one redb database.
//!
//! This is openraft's [`RaftLogStorage`]: the durable half of Raft. Its correctness rules are
//! openraft's: an append is acknowledged (the [`LogFlushed`] callback) only once the entries are on
//! disk, the vote is on disk before `save_vote` returns, and truncation and purging never leave a
//! hole. redb commits with [`Durability::Immediate`] fsync before returning; every disk operation
//! runs on tokio's blocking pool so the runtime threads never wait for the disk.
//!
//! The committed log id is written without its own fsync ([`Durability::None`]): redb makes it
//! durable with the next durable commit (the next append), and losing the latest value only makes
//! a restart re-apply less at once — Raft recommits the rest.
//!
//! Layout: table `raft_log` maps the log index to one encoded [`Entry`]; table `raft_meta` holds
//! `vote`, `committed`, `last_purged` and `node_id`.

// openraft's trait fixes the error type (`StorageError`, ~224 bytes); the disk helpers return it
// as is rather than converting at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::StoreError;
use crate::{Entry, LogId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_NODE_ID: &str = "node_id";

/// File name of the database inside the Raft directory.
pub const LOG_FILE: &str = "log.redb";

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The redb-backed Raft log storage. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Committed index + 1 (0 = none), for status and metrics.
    committed: AtomicU64,
}

fn io_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    error: impl std::fmt::Display,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::error(error)).into()
}

fn corrupt(index: u64, error: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_log_at_index(
        index,
        AnyError::error(format!("corrupt log entry at index {index}: {error}")),
    )
    .into()
}

/// Runs disk work on the blocking pool.
async fn blocking<T, F>(subject: ErrorSubject<u64>, f: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StorageResult<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(io_error(
            subject,
            ErrorVerb::Write,
            format!("storage task failed: {join}"),
        )),
    }
}

impl LogStore {
    /// Opens (or creates) the log database in `dir` (created if missing). Blocking.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(LOG_FILE);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Storage(format!("open {}: {e}", path.display())))?;
        let store = LogStore {
            inner: Arc::new(Inner {
                db,
                path,
                committed: AtomicU64::new(0),
            }),
        };
        store.create_tables().map_err(|e| {
            StoreError::Storage(format!("initialize {}: {e}", store.inner.path.display()))
        })?;
        let committed = store
            .read_meta::<Option<LogId>>(KEY_COMMITTED)
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        store.set_committed_index(committed.flatten().map(|id| id.index));
        Ok(store)
    }

    fn create_tables(&self) -> Result<(), redb::Error> {
        let txn = self.inner.db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// Binds the database to `node_id` on first use and refuses a different id afterwards: a
    /// Raft node's identity must never change under its log. Blocking.
    pub fn check_node_id(&self, node_id: u64) -> Result<(), StoreError> {
        let stored: Option<u64> = self
            .read_meta(KEY_NODE_ID)
            .map_err(|e| StoreError::Storage(e.to_string()))?;
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
                .map_err(|e| StoreError::Storage(e.to_string())),
        }
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

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> StorageResult<Option<T>> {
        let subject = || {
            if key == KEY_VOTE {
                ErrorSubject::Vote
            } else {
                ErrorSubject::Store
            }
        };
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| io_error(subject(), ErrorVerb::Read, e))?;
        let table = txn
            .open_table(META)
            .map_err(|e| io_error(subject(), ErrorVerb::Read, e))?;
        let Some(value) = table
            .get(key)
            .map_err(|e| io_error(subject(), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let decoded = codec::decode(value.value()).map_err(|e| {
            io_error(
                subject(),
                ErrorVerb::Read,
                format!("corrupt `{key}` record: {e}"),
            )
        })?;
        Ok(Some(decoded))
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
        subject: ErrorSubject<u64>,
    ) -> StorageResult<()> {
        let bytes =
            codec::encode(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        let err =
            |e: &dyn std::fmt::Display| io_error(subject.clone(), ErrorVerb::Write, e.to_string());
        let mut txn = self.inner.db.begin_write().map_err(|e| err(&e))?;
        txn.set_durability(durability).map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| err(&e))?;
            table.insert(key, bytes.as_slice()).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }

    fn read_entries(&self, start: Bound<u64>, end: Bound<u64>) -> StorageResult<Vec<Entry>> {
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
        let err = |e: &dyn std::fmt::Display| {
            io_error(ErrorSubject::Logs, ErrorVerb::Read, e.to_string())
        };
        let txn = self.inner.db.begin_read().map_err(|e| err(&e))?;
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
    }

    fn log_state(&self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        let err = |e: &dyn std::fmt::Display| {
            io_error(ErrorSubject::Logs, ErrorVerb::Read, e.to_string())
        };
        let txn = self.inner.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(LOG).map_err(|e| err(&e))?;
        let last = match table.last().map_err(|e| err(&e))? {
            Some((key, value)) => {
                let index = key.value();
                let entry: Entry = codec::decode(value.value()).map_err(|e| corrupt(index, e))?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    fn write_entries(&self, entries: Vec<Entry>) -> StorageResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let subject = ErrorSubject::Log(first.log_id);
        let err =
            |e: &dyn std::fmt::Display| io_error(subject.clone(), ErrorVerb::Write, e.to_string());
        let mut txn = self.inner.db.begin_write().map_err(|e| err(&e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
            for entry in &entries {
                let bytes = codec::encode(entry).map_err(|e| err(&e))?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    /// Deletes entries with index >= `since`.
    fn delete_since(&self, since: u64) -> StorageResult<()> {
        let err = |e: &dyn std::fmt::Display| {
            io_error(ErrorSubject::Logs, ErrorVerb::Delete, e.to_string())
        };
        let mut txn = self.inner.db.begin_write().map_err(|e| err(&e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
            table
                .retain_in(since.., |_, _| false)
                .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }

    /// Deletes entries with index <= `upto.index` and records `upto` as the last purged id, in
    /// one transaction so no reader sees a hole.
    fn purge_upto(&self, upto: LogId) -> StorageResult<()> {
        let err = |e: &dyn std::fmt::Display| {
            io_error(ErrorSubject::Logs, ErrorVerb::Delete, e.to_string())
        };
        let bytes = codec::encode(&upto).map_err(|e| err(&e))?;
        let mut txn = self.inner.db.begin_write().map_err(|e| err(&e))?;
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
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let this = self.clone();
        blocking(ErrorSubject::Logs, move || this.read_entries(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let this = self.clone();
        blocking(ErrorSubject::Logs, move || this.log_state()).await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let this = self.clone();
        let vote = *vote;
        blocking(ErrorSubject::Vote, move || {
            this.write_meta(KEY_VOTE, &vote, Durability::Immediate, ErrorSubject::Vote)
        })
        .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        let this = self.clone();
        blocking(ErrorSubject::Vote, move || this.read_meta(KEY_VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        let this = self.clone();
        blocking(ErrorSubject::Store, move || {
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
        let this = self.clone();
        blocking(ErrorSubject::Store, move || {
            Ok(this.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        let result = blocking(ErrorSubject::Logs, move || this.write_entries(entries)).await;
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
        let this = self.clone();
        blocking(ErrorSubject::Logs, move || this.delete_since(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        tracing::debug!(upto = log_id.index, "purging raft log");
        let this = self.clone();
        blocking(ErrorSubject::Logs, move || this.purge_upto(log_id)).await
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
        blocking(ErrorSubject::Logs, move || this.write_entries(entries))
            .await
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
            let txn = store.inner.db.begin_write().unwrap();
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
