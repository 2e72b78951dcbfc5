//! The server's durable state: jobs, queues and nodes in SQLite (WAL), in the state directory.
//!
//! A job is committed, and the commit synced to disk, before its id is handed out: a server
//! killed at any moment never loses a job whose id `qsub` printed. Later changes of state are
//! committed without a sync of their own (SQLite's `synchronous=NORMAL` in WAL mode): a killed
//! server loses none of them, and the next submission's sync makes them safe from a power
//! loss too. An array's subjobs are rows of their own, so that a subjob's start or end writes
//! that subjob alone, not the whole array.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record could not be encoded or decoded.
    #[error("state record: {0}")]
    Record(#[from] serde_json::Error),
    /// The database was written by a newer hpcbox.
    #[error("state database schema {found} is newer than this hpcbox understands ({known})")]
    NewerSchema {
        /// The schema version found in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
}

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    finished INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished, seq);
CREATE TABLE IF NOT EXISTS subjobs (
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (seq, idx)
);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
";

/// The store's number under `key`, if it has one.
fn read_meta(conn: &Connection, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?)
}

/// Sets the store's number under `key`.
fn write_meta(conn: &Connection, key: &str, value: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// The kinds of named objects the store keeps beside jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A queue, by name.
    Queue,
    /// A node (vnode), by name.
    Node,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Queue => "queue",
            ObjectKind::Node => "node",
        }
    }
}

/// The SQLite database of one server.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                known: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store { conn })
    }

    /// Stores a new job under the next sequence number and returns that number with the record
    /// once it is durable. `make` builds the record from its sequence number; when it refuses,
    /// nothing is stored and the number is not used up.
    pub fn submit<T: Serialize, E>(
        &mut self,
        make: impl FnOnce(u64) -> Result<T, E>,
    ) -> Result<Result<(u64, T), E>, StoreError> {
        // This commit alone is synced before it returns (then back to NORMAL for updates).
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let stored = self.insert_job(make);
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        stored
    }

    fn insert_job<T: Serialize, E>(
        &mut self,
        make: impl FnOnce(u64) -> Result<T, E>,
    ) -> Result<Result<(u64, T), E>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq = read_meta(&tx, "last_seq")?.map_or(0, |last| last + 1);
        let record = match make(seq as u64) {
            Ok(record) => record,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let text = serde_json::to_string(&record)?;
        tx.execute(
            "INSERT INTO jobs (seq, record) VALUES (?1, ?2)",
            params![seq, text],
        )?;
        write_meta(&tx, "last_seq", seq)?;
        tx.commit()?;
        Ok(Ok((seq as u64, record)))
    }

    /// Counts one more start of the server on this store and returns the count (1 for the
    /// first): numbers a server hands out during one run (tasks) are made unique across runs
    /// with it.
    pub fn count_start(&mut self) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let starts = read_meta(&tx, "starts")?.unwrap_or(0) + 1;
        write_meta(&tx, "starts", starts)?;
        tx.commit()?;
        Ok(starts as u64)
    }

    /// Replaces job `seq`'s record and those of the `subjobs` given (index and record), in one
    /// transaction; `finished` marks the job as history.
    pub fn update_job<T: Serialize, S: Serialize>(
        &mut self,
        seq: u64,
        record: &T,
        finished: bool,
        subjobs: &[(u32, &S)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET record = ?2, finished = ?3 WHERE seq = ?1",
            params![seq as i64, serde_json::to_string(record)?, finished],
        )?;
        for (index, subjob) in subjobs {
            tx.execute(
                "INSERT INTO subjobs (seq, idx, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (seq, idx) DO UPDATE SET record = excluded.record",
                params![seq as i64, index, serde_json::to_string(subjob)?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes job `seq` and its subjobs for good (history expired).
    pub fn remove_job(&mut self, seq: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM subjobs WHERE seq = ?1", params![seq as i64])?;
        tx.execute("DELETE FROM jobs WHERE seq = ?1", params![seq as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets subjob `index` of job `seq` (it went back to waiting).
    pub fn remove_subjob(&self, seq: u64, index: u32) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM subjobs WHERE seq = ?1 AND idx = ?2",
            params![seq as i64, index],
        )?;
        Ok(())
    }

    /// Every stored subjob, as (job, index, record), in order.
    pub fn subjobs<S: DeserializeOwned>(&self) -> Result<Vec<(u64, u32, S)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, idx, record FROM subjobs ORDER BY seq, idx")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, index, record) = row?;
            Ok((seq as u64, index, serde_json::from_str(&record)?))
        })
        .collect()
    }

    /// Every stored job in sequence order, with whether it is finished.
    pub fn jobs<T: DeserializeOwned>(&self) -> Result<Vec<(u64, bool, T)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, finished, record FROM jobs ORDER BY seq")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, finished, record) = row?;
            Ok((seq as u64, finished, serde_json::from_str(&record)?))
        })
        .collect()
    }

    /// Stores (or replaces) a named object.
    pub fn put_object<T: Serialize>(
        &self,
        kind: ObjectKind,
        name: &str,
        record: &T,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO objects (kind, name, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, name) DO UPDATE SET record = excluded.record",
            params![kind.as_str(), name, serde_json::to_string(record)?],
        )?;
        Ok(())
    }

    /// Removes a named object; removing one that does not exist is not an error.
    pub fn remove_object(&self, kind: ObjectKind, name: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM objects WHERE kind = ?1 AND name = ?2",
            params![kind.as_str(), name],
        )?;
        Ok(())
    }

    /// Every object of `kind`, by name.
    pub fn objects<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, record FROM objects WHERE kind = ?1 ORDER BY name")?;
        let rows = stmt.query_map(params![kind.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (name, record) = row?;
            Ok((name, serde_json::from_str(&record)?))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Job {
        seq: u64,
        name: String,
    }

    #[test]
    fn starts_are_counted_across_openings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.count_start().unwrap(), 1);
        assert_eq!(store.count_start().unwrap(), 2);
        drop(store);
        assert_eq!(Store::open(&path).unwrap().count_start().unwrap(), 3);
    }

    fn submit(store: &mut Store, name: &str) -> (u64, Job) {
        store
            .submit(|seq| {
                Ok::<_, ()>(Job {
                    seq,
                    name: name.to_string(),
                })
            })
            .unwrap()
            .unwrap()
    }

    #[test]
    fn sequence_numbers_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        {
            let mut store = Store::open(&path).unwrap();
            for expected in 0..3 {
                let (seq, job) = submit(&mut store, &format!("j{expected}"));
                assert_eq!((seq, job.seq), (expected, expected));
            }
            let done = Job {
                seq: 1,
                name: "done".into(),
            };
            store.update_job::<_, Job>(1, &done, true, &[]).unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(submit(&mut store, "next").0, 3);
        let jobs: Vec<(u64, bool, Job)> = store.jobs().unwrap();
        let names: Vec<(&str, bool)> = jobs.iter().map(|(_, f, j)| (j.name.as_str(), *f)).collect();
        assert_eq!(
            names,
            [
                ("j0", false),
                ("done", true),
                ("j2", false),
                ("next", false)
            ]
        );
    }

    #[test]
    fn removed_jobs_do_not_give_back_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let (first, job) = submit(&mut store, "a");
        store.update_job(first, &job, false, &[(1, &job)]).unwrap();
        store.remove_job(first).unwrap();
        assert!(store.subjobs::<Job>().unwrap().is_empty());
        assert_eq!(submit(&mut store, "b").0, first + 1);
    }

    #[test]
    fn subjobs_are_written_one_by_one_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let mut store = Store::open(&path).unwrap();
            let (seq, array) = submit(&mut store, "array");
            let sub = |name: &str| Job {
                seq,
                name: name.into(),
            };
            let (three, one) = (sub("three"), sub("one"));
            store
                .update_job(seq, &array, false, &[(3, &three)])
                .unwrap();
            store.update_job(seq, &array, false, &[(1, &one)]).unwrap();
            let again = sub("three again");
            store
                .update_job(seq, &array, false, &[(3, &again)])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let subjobs: Vec<(u64, u32, Job)> = store.subjobs().unwrap();
        let names: Vec<(u32, &str)> = subjobs
            .iter()
            .map(|(_, i, j)| (*i, j.name.as_str()))
            .collect();
        assert_eq!(names, [(1, "one"), (3, "three again")]);
    }

    #[test]
    fn a_refused_job_uses_up_no_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let refused = store.submit(|_| Err::<Job, &str>("bad resource")).unwrap();
        assert_eq!(refused.unwrap_err(), "bad resource");
        assert_eq!(submit(&mut store, "ok").0, 0);
        assert_eq!(store.jobs::<Job>().unwrap().len(), 1);
    }

    #[test]
    fn objects_by_kind_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.put_object(ObjectKind::Queue, "workq", &1u32).unwrap();
        store
            .put_object(ObjectKind::Queue, "defaultQ", &2u32)
            .unwrap();
        store.put_object(ObjectKind::Queue, "workq", &3u32).unwrap();
        store.put_object(ObjectKind::Node, "workq", &9u32).unwrap();
        let queues: Vec<(String, u32)> = store.objects(ObjectKind::Queue).unwrap();
        assert_eq!(
            queues,
            [("defaultQ".to_string(), 2), ("workq".to_string(), 3)]
        );
        store.remove_object(ObjectKind::Queue, "workq").unwrap();
        assert_eq!(store.objects::<u32>(ObjectKind::Queue).unwrap().len(), 1);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}
