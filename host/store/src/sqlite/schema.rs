//! The database's schema, its migrations in order, and the settings every connection opens with.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use crate::{DatabaseError, StoreError, db_error};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run.
const MIGRATIONS: &[&str] = &[
    "
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
    ",
    // Listing by state and finding live jobs at start without a full scan.
    "CREATE INDEX jobs_by_state ON jobs (state, seq);",
    // When each line was taken, in microseconds since the Unix epoch.
    "ALTER TABLE job_logs ADD COLUMN at INTEGER;",
    // The notifications owed for ended jobs: owed by the same transaction
    // that ends the job, whichever write does. `due_at` is in microseconds
    // since the Unix epoch.
    "
    CREATE TABLE outbox (
        job_id    TEXT PRIMARY KEY,
        due_at    INTEGER NOT NULL,
        attempts  INTEGER NOT NULL DEFAULT 0,
        delivered TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    CREATE INDEX outbox_by_due ON outbox (due_at);
    CREATE TRIGGER outbox_when_ended AFTER UPDATE OF state ON jobs
    WHEN OLD.state IN ('queued', 'running') AND NEW.state NOT IN ('queued', 'running')
    BEGIN
        INSERT OR IGNORE INTO outbox (job_id, due_at) VALUES (NEW.id, 0);
    END;
    ",
    // Documents of a job besides its log: each run's audit trail, its
    // provenance.
    "
    CREATE TABLE job_records (
        job_id TEXT NOT NULL,
        name   TEXT NOT NULL,
        body   TEXT NOT NULL,
        PRIMARY KEY (job_id, name)
    ) WITHOUT ROWID;
    ",
    // A project's listing without a full scan (the project is in the body).
    "CREATE INDEX jobs_by_project ON jobs (json_extract(body, '$.project'), seq);",
    // Finding the jobs that hold a document of a name (a build's inputs).
    "CREATE INDEX job_records_by_name ON job_records (name);",
];

/// Longest the integrity check at start may take; on a store too large
/// to check in it, the server starts unchecked, with a warning.
const QUICK_CHECK_LIMIT: Duration = Duration::from_secs(10);

/// A connection to the database at `path`, with every setting.
pub(super) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let db = open_file(path)?;
    configure(&db, path)?;
    Ok(db)
}

/// A connection to the database at `path`, creating it, without settings:
/// nothing is written to the file yet.
pub(super) fn open_file(path: &Path) -> Result<Connection, StoreError> {
    Connection::open(path)
        .map_err(|e| StoreError::Database(DatabaseError::with_context(path.display(), e)))
}

/// Sets `db` up: WAL (which writes the file's header), durability, waits.
pub(super) fn configure(db: &Connection, path: &Path) -> Result<(), StoreError> {
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| damage(path, e))?;
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_error)?;
    db.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db_error)?;
    // Whichever connection's checkpoint resets the WAL cuts it back to
    // this, so a burst of writes does not leave a large file behind.
    db.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(db_error)?;
    Ok(())
}

pub(super) fn migrate(db: &Connection, path: &Path) -> Result<(), StoreError> {
    let applied: i64 = db
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(db_error(format!(
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
    Ok(())
}

/// Refuses a database that fails SQLite's `quick_check` (bounded by
/// [`QUICK_CHECK_LIMIT`]), or, when `used` (the data dir was in use), one
/// that holds no schema: an emptied file would otherwise start a server
/// that silently has no jobs.
pub(super) fn check(db: &Connection, path: &Path, used: bool) -> Result<(), StoreError> {
    let interrupt = db.get_interrupt_handle();
    let (done, finished) = mpsc::channel::<()>();
    let timer = std::thread::spawn(move || {
        if finished.recv_timeout(QUICK_CHECK_LIMIT) == Err(mpsc::RecvTimeoutError::Timeout) {
            interrupt.interrupt();
        }
    });
    let problems: Result<Vec<String>, rusqlite::Error> = db
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut check| check.query_map([], |row| row.get(0))?.collect());
    drop(done);
    let _ = timer.join();
    match problems {
        Ok(problems) if problems != ["ok"] => {
            return Err(StoreError::Damaged {
                path: path.display().to_string(),
                detail: problems.join("; "),
            });
        }
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
            tracing::warn!(
                store = %path.display(),
                "the integrity check did not finish within {}s; starting without it",
                QUICK_CHECK_LIMIT.as_secs()
            );
        }
        Err(e) => return Err(damage(path, e)),
    }
    let version: i64 = db
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| damage(path, e))?;
    if used && version == 0 {
        return Err(StoreError::Emptied {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// `e` from reading the database at `path`: damage when SQLite says the
/// file is corrupt or no database.
fn damage(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Damaged {
            path: path.display().to_string(),
            detail: e.to_string(),
        },
        _ => StoreError::Database(DatabaseError::with_context(path.display(), e)),
    }
}
