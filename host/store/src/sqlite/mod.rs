//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer thread owns the write connection and commits whatever writes
//! have queued up since its last commit in one transaction (group commit),
//! so a burst of submissions and log lines costs a few commits, not one
//! each. Reads use their own connection, which WAL lets run beside the
//! writer.
//!
//! `synchronous = NORMAL` in WAL mode makes each commit durable against a
//! process crash (`kill -9`); only a power loss can take the last few.
//!
//! [`schema`] creates and migrates the database; [`writer`] runs the
//! writer and checkpoint threads; this module opens the store and answers
//! its reads on the reader connection.

mod schema;
mod writer;

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures_util::FutureExt as _;
use rusqlite::{Connection, OptionalExtension, params};

use chrono::{DateTime, Utc};

use super::{
    Commit, DatabaseError, JobFilter, JobStore, OwedNotification, PRUNED_JOBS, StoreCall,
    StoreError, StoredJob, Writes, db_error, delivered_column, delivered_from_column, parse_job,
};
use helix_core::job::{Job, JobId, State};
use helix_core::log::{LogLine, LogSink};
use schema::{check, configure, connect, migrate, open_file};
use writer::{checkpoint_loop, write_loop};

/// [`JobFilter`]'s group (`?4`), builder (`?5`), text (`?6`) and project
/// (`?7`), each when given.
const FILTERS: &str = "(?4 IS NULL OR json_extract(body, '$.group') = ?4) \
    AND (?5 IS NULL OR json_extract(body, '$.builder') = ?5) \
    AND (?6 IS NULL OR instr(id, ?6) > 0 \
         OR instr(json_extract(body, '$.repo_url'), ?6) > 0 \
         OR instr(coalesce(json_extract(body, '$.image'), ''), ?6) > 0 \
         OR instr(coalesce(json_extract(body, '$.image_tag'), ''), ?6) > 0) \
    AND (?7 IS NULL OR json_extract(body, '$.project') = ?7)";
/// A job store in one SQLite database file.
pub struct SqliteStore {
    /// `None` only while dropping, to let the writer finish.
    writes: Option<Writes>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
    /// Dropped to stop the checkpointer.
    checkpoints: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, checks it is
    /// not damaged, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_checked(path, false)
    }

    /// [`SqliteStore::open`] for a data dir that was in use: a database
    /// file there that is empty (truncated, replaced) is refused as well.
    pub fn open_used(path: &Path) -> Result<Self, StoreError> {
        Self::open_checked(path, path.exists())
    }

    fn open_checked(path: &Path, used: bool) -> Result<Self, StoreError> {
        let db = open_file(path)?;
        check(&db, path, used)?;
        configure(&db, path)?;
        migrate(&db, path)?;
        // Checkpoints (which fsync) run on their own thread instead of
        // inside whichever commit crosses the threshold.
        db.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db_error)?;
        let reader = connect(path)?;
        let checkpointer = connect(path)?;
        let (writes, queued) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("helix-store-writer".into())
            .spawn(move || write_loop(db, queued))
            .map_err(db_error)?;
        let (stop, stopped) = mpsc::channel();
        let checkpoints = std::thread::Builder::new()
            .name("helix-store-checkpoints".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(db_error)?;
        // A send fails only once the writer is gone, and then the commit's
        // receiver reports it.
        let writes = Writes::new(move |write| {
            let _ = writes.send(write);
        });
        Ok(SqliteStore {
            writes: Some(writes),
            writer: Some(writer),
            reader: Mutex::new(reader),
            checkpoints: Some((stop, checkpoints)),
        })
    }

    /// Copies the database at `db` to `to` while other processes may be
    /// writing to it: SQLite's online backup, all pages in one step, so the
    /// copy is the database as of one moment (every job committed before
    /// it began). Written beside `to` and renamed, so `to` is never half a
    /// database. Returns how many jobs the copy holds.
    pub fn backup(db: &Path, to: &Path) -> Result<u64, StoreError> {
        use rusqlite::OpenFlags;
        if !db.is_file() {
            return Err(db_error(format!(
                "{}: no store here (is this the server's config?)",
                db.display()
            )));
        }
        let source = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Database(DatabaseError::with_context(db.display(), e)))?;
        source
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_error)?;
        let partial = to.with_extension("partial");
        let written =
            |e: rusqlite::Error| StoreError::Database(DatabaseError::with_context(to.display(), e));
        let mut copy = Connection::open(&partial).map_err(written)?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut copy).map_err(written)?;
            match backup.step(-1).map_err(written)? {
                rusqlite::backup::StepResult::Done => {}
                _ => {
                    return Err(db_error(format!(
                        "{}: the store stayed locked; try again",
                        db.display()
                    )));
                }
            }
        }
        let jobs: i64 = copy
            .query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))
            .map_err(written)?;
        drop(copy);
        std::fs::rename(&partial, to)
            .map_err(|e| StoreError::Database(DatabaseError::with_context(to.display(), e)))?;
        Ok(u64::try_from(jobs).unwrap_or(0))
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writes(&self) -> &Writes {
        self.writes
            .as_ref()
            .expect("the store is not being dropped")
    }
}

impl Drop for SqliteStore {
    /// Lets the writer commit what is queued, so a store reopened after
    /// this one sees every write.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some((stop, checkpoints)) = self.checkpoints.take() {
            drop(stop);
            let _ = checkpoints.join();
        }
    }
}

/// Deletes what [`JobStore::prune`] says in one transaction, taking the
/// write lock first (waiting for the writer's commits, not failing on
/// them).
fn prune(
    db: &Connection,
    ended_before: Option<DateTime<Utc>>,
    keep: Option<usize>,
) -> Result<u64, StoreError> {
    let select = PRUNED_JOBS
        .replace(
            "COMPLETED_AT",
            "julianday(json_extract(body, '$.completed_at'))",
        )
        .replace("CUTOFF", "julianday($1)");
    let cutoff = ended_before.map(|at| at.to_rfc3339());
    let keep = keep.map_or(i64::MAX, |keep| i64::try_from(keep).unwrap_or(i64::MAX));
    let tx = rusqlite::Transaction::new_unchecked(db, rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let ids: Vec<String> = tx
        .prepare(&select)
        .and_then(|mut s| {
            s.query_map(params![cutoff, keep], |row| row.get(0))?
                .collect()
        })
        .map_err(db_error)?;
    for id in &ids {
        tx.execute("DELETE FROM job_logs WHERE job_id = ?1", [id])
            .and_then(|_| tx.execute("DELETE FROM outbox WHERE job_id = ?1", [id]))
            .and_then(|_| tx.execute("DELETE FROM job_records WHERE job_id = ?1", [id]))
            .and_then(|_| tx.execute("DELETE FROM jobs WHERE id = ?1", [id]))
            .map_err(db_error)?;
    }
    tx.commit().map_err(db_error)?;
    Ok(ids.len() as u64)
}

/// Microseconds since the Unix epoch, `after` from now: the outbox's time.
fn micros_from_now(after: std::time::Duration) -> i64 {
    let at = Utc::now() + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    at.timestamp_micros()
}

/// What [`JobStore::owed_notifications`] says, in one transaction.
fn take_owed(
    db: &Connection,
    lease: std::time::Duration,
    limit: usize,
) -> Result<Vec<OwedNotification>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let tx = rusqlite::Transaction::new_unchecked(db, rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let taken: Vec<(String, String, u32)> = tx
        .prepare_cached(
            "UPDATE outbox SET due_at = ?2, attempts = attempts + 1 WHERE job_id IN \
             (SELECT job_id FROM outbox WHERE due_at <= ?1 ORDER BY due_at LIMIT ?3) \
             RETURNING job_id, delivered, attempts",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    micros_from_now(Default::default()),
                    micros_from_now(lease),
                    limit
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?
            .collect()
        })
        .map_err(db_error)?;
    let mut owed = Vec::with_capacity(taken.len());
    for (id, delivered, attempts) in taken {
        if let Some(job) = jobs(&tx, "SELECT body FROM jobs WHERE id = ?1", [&id])?.pop() {
            owed.push(OwedNotification {
                job,
                delivered: delivered_from_column(&delivered),
                attempts,
            });
        }
    }
    tx.commit().map_err(db_error)?;
    Ok(owed)
}

/// The jobs whose bodies `query` selects with `params`.
fn jobs(
    db: &Connection,
    query: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Job>, StoreError> {
    let mut statement = db.prepare_cached(query).map_err(db_error)?;
    let bodies = statement
        .query_map(params, |row| row.get::<_, String>(0))
        .map_err(db_error)?;
    bodies
        .map(|body| parse_job(body.map_err(db_error)?))
        .collect()
}

fn log_lines(db: &Connection, id: &str) -> Result<Vec<LogLine>, StoreError> {
    let mut statement = db
        .prepare_cached("SELECT line, at FROM job_logs WHERE job_id = ?1 ORDER BY n")
        .map_err(db_error)?;
    let lines = statement
        .query_map([id], |row| Ok(LogLine::stored(row.get(0)?, row.get(1)?)))
        .map_err(db_error)?;
    lines.collect::<Result<_, _>>().map_err(db_error)
}

/// Reads are quick local queries, answered before the future is returned.
fn ready<'a, T: Send + 'a>(result: Result<T, StoreError>) -> StoreCall<'a, T> {
    std::future::ready(result).boxed()
}

impl LogSink for SqliteStore {
    fn append_log(&self, id: &JobId, line: &LogLine, cap: usize) {
        self.writes().log(id, line, cap);
    }
}

impl JobStore for SqliteStore {
    fn insert(&self, job: &Job) -> Commit {
        self.writes().job(job, true)
    }

    fn update(&self, job: &Job) -> Commit {
        self.writes().job(job, false)
    }

    fn put_record(&self, id: &JobId, name: &str, body: String) {
        self.writes().record(id, name, body);
    }

    fn records<'a>(&'a self, id: &'a str, prefix: &'a str) -> StoreCall<'a, Option<Vec<String>>> {
        let db = self.reader();
        let read = || {
            let exists = db
                .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], |_| Ok(())).optional())
                .map_err(db_error)?;
            if exists.is_none() {
                return Ok(None);
            }
            db.prepare_cached(
                "SELECT body FROM job_records WHERE job_id = ?1 AND substr(name, 1, length(?2)) = ?2 \
                 ORDER BY name",
            )
            .and_then(|mut s| s.query_map([id, prefix], |row| row.get(0))?.collect())
            .map(Some)
            .map_err(db_error)
        };
        ready(read())
    }

    fn jobs_with_record<'a>(&'a self, name: &'a str, limit: usize) -> StoreCall<'a, Vec<String>> {
        let found = self
            .reader()
            .prepare_cached(
                "SELECT r.job_id FROM job_records r JOIN jobs j ON j.id = r.job_id \
                 WHERE r.name = ?1 ORDER BY j.seq DESC LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(rusqlite::params![name, limit as i64], |row| row.get(0))?
                    .collect()
            })
            .map_err(db_error);
        ready(found)
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreCall<'a, Option<Job>> {
        let found = jobs(&self.reader(), "SELECT body FROM jobs WHERE id = ?1", [id]);
        ready(found.map(|jobs| jobs.into_iter().next()))
    }

    fn log<'a>(&'a self, id: &'a str) -> StoreCall<'a, Vec<LogLine>> {
        ready(log_lines(&self.reader(), id))
    }

    fn position<'a>(&'a self, id: &'a str) -> StoreCall<'a, Option<i64>> {
        let position = self
            .reader()
            .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |row| row.get(0)).optional())
            .map_err(db_error);
        ready(position)
    }

    fn before<'a>(
        &'a self,
        filter: &'a JobFilter,
        before: i64,
        limit: usize,
    ) -> StoreCall<'a, Vec<Job>> {
        let db = self.reader();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (group, builder, text, project) = (
            filter.group.as_deref(),
            filter.builder.as_deref(),
            filter.text.as_deref(),
            filter.project.as_deref(),
        );
        // Two statements, so a state's listing uses the state index.
        ready(match filter.state {
            Some(state) => jobs(
                &db,
                &format!(
                    "SELECT body FROM jobs WHERE state = ?1 AND seq < ?2 AND {FILTERS} \
                     ORDER BY seq DESC LIMIT ?3"
                ),
                params![state.as_str(), before, limit, group, builder, text, project],
            ),
            None => jobs(
                &db,
                &format!(
                    "SELECT body FROM jobs WHERE ?1 IS NULL AND seq < ?2 AND {FILTERS} \
                     ORDER BY seq DESC LIMIT ?3"
                ),
                params![None::<String>, before, limit, group, builder, text, project],
            ),
        })
    }

    fn count_by_state(&self) -> StoreCall<'_, Vec<(State, u64)>> {
        let db = self.reader();
        let counts = State::ALL
            .iter()
            .map(|state| {
                db.prepare_cached("SELECT COUNT(*) FROM jobs WHERE state = ?1")
                    .and_then(|mut s| s.query_row([state.as_str()], |row| row.get::<_, i64>(0)))
                    .map(|count| (*state, u64::try_from(count).unwrap_or(0)))
                    .map_err(db_error)
            })
            .collect();
        ready(counts)
    }

    fn unfinished_in_group<'a>(&'a self, group: &'a str) -> StoreCall<'a, Vec<Job>> {
        ready(jobs(
            &self.reader(),
            "SELECT body FROM jobs WHERE state IN ('queued', 'running') \
             AND json_extract(body, '$.group') = ?1 ORDER BY seq",
            [group],
        ))
    }

    fn prune(
        &self,
        ended_before: Option<DateTime<Utc>>,
        keep: Option<usize>,
    ) -> StoreCall<'_, u64> {
        ready(prune(&self.reader(), ended_before, keep))
    }

    fn owed_notifications(
        &self,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreCall<'_, Vec<OwedNotification>> {
        ready(take_owed(&self.reader(), lease, limit))
    }

    fn settle_notification<'a>(
        &'a self,
        id: &'a str,
        delivered: &'a [String],
        retry_in: Option<std::time::Duration>,
    ) -> StoreCall<'a, ()> {
        let db = self.reader();
        let settled = match retry_in {
            None => db.execute("DELETE FROM outbox WHERE job_id = ?1", [id]),
            Some(after) => db.execute(
                "UPDATE outbox SET delivered = ?2, due_at = ?3 WHERE job_id = ?1",
                params![id, delivered_column(delivered), micros_from_now(after)],
            ),
        };
        ready(settled.map(drop).map_err(db_error))
    }

    fn load_unfinished(&self) -> StoreCall<'_, Vec<StoredJob>> {
        let db = self.reader();
        let unfinished = jobs(
            &db,
            "SELECT body FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq",
            [],
        )
        .and_then(|jobs| {
            jobs.into_iter()
                .map(|job| {
                    let log = log_lines(&db, job.id.as_str())?;
                    Ok(StoredJob { job, log })
                })
                .collect()
        });
        ready(unfinished)
    }
}
