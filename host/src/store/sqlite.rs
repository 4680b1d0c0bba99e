//! The embedded default store: one SQLite file in WAL mode.
//!
//! `synchronous = NORMAL` in WAL mode makes each write durable against a
//! process crash (`kill -9`); only a power loss can take the last few
//! commits.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{JobStore, StoreError, StoredJob};
use crate::job::{Job, JobId};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE jobs (
        seq   INTEGER PRIMARY KEY AUTOINCREMENT,
        id    TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        body  TEXT NOT NULL
    );
    CREATE TABLE job_logs (
        job_id TEXT NOT NULL,
        n      INTEGER NOT NULL,
        line   TEXT NOT NULL,
        PRIMARY KEY (job_id, n)
    ) WITHOUT ROWID;
"];

/// A job store in one SQLite database file.
pub struct SqliteStore {
    db: Mutex<Connection>,
}

fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_error)?;
        let applied: i64 = db
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db_error)?;
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "{} was written by a newer helix-build (schema version {applied}); upgrade this binary",
                path.display()
            )));
        }
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            db.execute_batch(&format!(
                "BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;",
                version + 1
            ))
            .map_err(db_error)?;
        }
        Ok(SqliteStore { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn body(job: &Job) -> Result<String, StoreError> {
    serde_json::to_string(job).map_err(db_error)
}

impl JobStore for SqliteStore {
    fn insert(&self, job: &Job) -> Result<(), StoreError> {
        let inserted = self.db().execute(
            "INSERT INTO jobs (id, state, body) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
            params![job.id.as_str(), job.state.as_str(), body(job)?],
        );
        match inserted.map_err(db_error)? {
            0 => Err(StoreError::Duplicate(job.id.clone())),
            _ => Ok(()),
        }
    }

    fn update(&self, job: &Job) -> Result<(), StoreError> {
        self.db()
            .execute(
                "UPDATE jobs SET state = ?2, body = ?3 WHERE id = ?1",
                params![job.id.as_str(), job.state.as_str(), body(job)?],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn append_log(&self, id: &JobId, line: &str, cap: usize) -> Result<(), StoreError> {
        let db = self.db();
        let last: Option<i64> = db
            .query_row(
                "SELECT MAX(n) FROM job_logs WHERE job_id = ?1",
                [id.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)?
            .flatten();
        let n = last.map_or(0, |n| n + 1);
        db.execute(
            "INSERT INTO job_logs (job_id, n, line) VALUES (?1, ?2, ?3)",
            params![id.as_str(), n, line],
        )
        .map_err(db_error)?;
        // Trim in batches, not on every line.
        if n % 256 == 0 && n >= cap as i64 {
            db.execute(
                "DELETE FROM job_logs WHERE job_id = ?1 AND n <= ?2",
                params![id.as_str(), n - cap as i64],
            )
            .map_err(db_error)?;
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<StoredJob>, StoreError> {
        let db = self.db();
        let mut jobs = db
            .prepare("SELECT body FROM jobs ORDER BY seq")
            .map_err(db_error)?;
        let mut lines = db
            .prepare("SELECT line FROM job_logs WHERE job_id = ?1 ORDER BY n")
            .map_err(db_error)?;
        let bodies: Vec<String> = jobs
            .query_map([], |row| row.get(0))
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        bodies
            .into_iter()
            .map(|body| {
                let job: Job = serde_json::from_str(&body)
                    .map_err(|e| db_error(format!("a stored job is unreadable: {e}")))?;
                let log = lines
                    .query_map([job.id.as_str()], |row| row.get(0))
                    .map_err(db_error)?
                    .collect::<Result<_, _>>()
                    .map_err(db_error)?;
                Ok(StoredJob { job, log })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{FailureKind, JobRequest, Outcome, State, SubmitPolicy};

    fn job(id: &str) -> Job {
        let request = JobRequest {
            repo_url: "https://git.example/a.git".into(),
            platforms: vec!["linux/arm64".into(), "linux/amd64".into()],
            ..JobRequest::default()
        };
        Job::from_request(
            request,
            JobId::parse(id).unwrap(),
            "simulated".into(),
            &SubmitPolicy::default(),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn jobs_and_logs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helix.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut a = job("a");
            store.insert(&a).unwrap();
            store.insert(&job("b")).unwrap();
            a.start(chrono::Utc::now()).unwrap();
            a.finish(
                Outcome::failed(FailureKind::Build, "RUN false"),
                chrono::Utc::now(),
            )
            .unwrap();
            store.update(&a).unwrap();
            store.append_log(&a.id, "first", 100).unwrap();
            store.append_log(&a.id, "second", 100).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let loaded = store.load().unwrap();
        let ids: Vec<&str> = loaded.iter().map(|s| s.job.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "submission order");
        assert_eq!(loaded[0].job.state, State::Failed);
        assert_eq!(
            loaded[0].job.error.as_deref(),
            Some("build error: RUN false")
        );
        assert_eq!(loaded[0].job.platforms, job("x").platforms);
        assert_eq!(loaded[0].log, ["first", "second"]);
        assert_eq!(loaded[1].job.state, State::Queued);
        assert!(loaded[1].log.is_empty());
    }

    #[test]
    fn a_duplicate_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("helix.db")).unwrap();
        store.insert(&job("same")).unwrap();
        assert!(matches!(
            store.insert(&job("same")),
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(store.load().unwrap().len(), 1);
    }

    #[test]
    fn stored_logs_are_trimmed_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("helix.db")).unwrap();
        let a = job("a");
        store.insert(&a).unwrap();
        for i in 0..1000 {
            store.append_log(&a.id, &format!("line {i}"), 100).unwrap();
        }
        let log = &store.load().unwrap()[0].log;
        assert!(log.len() <= 100 + 256, "{}", log.len());
        assert_eq!(log.last().map(String::as_str), Some("line 999"));
    }
}
