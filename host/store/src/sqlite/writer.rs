//! The threads that write: group commit of queued writes (jobs, log lines, records) on the write connection, and WAL checkpoints.

use std::collections::HashMap;
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{REMEMBERED_LOGS, StoreError, TRIM_EVERY, Write, acknowledge, db_error};
use helix_core::job::JobId;
use helix_core::log::LogLine;

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 4096;

/// Moves committed pages from the WAL into the database file every
/// `CHECKPOINT_EVERY` until told to stop, without blocking the writer
/// (a passive checkpoint copies what it can and never waits).
pub(super) fn checkpoint_loop(db: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("job store: checkpoint failed: {e}");
        }
    }
}

/// Commits queued writes in batches until every sender is gone.
pub(super) fn write_loop(mut db: Connection, queued: mpsc::Receiver<Write>) {
    let mut next_line = HashMap::new();
    while let Ok(first) = queued.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let results = match commit(&mut db, &batch, &mut next_line) {
            Ok(results) => results,
            Err(e) => {
                tracing::error!("job store: a batch of {} writes failed: {e}", batch.len());
                // Rolled back: line numbers remembered from it are wrong.
                next_line.clear();
                vec![Err(e); batch.len()]
            }
        };
        acknowledge(batch, results);
    }
}

/// Applies `batch` in one transaction; one result per write (only an
/// insert of a duplicate id fails alone).
fn commit(
    db: &mut Connection,
    batch: &[Write],
    next_line: &mut HashMap<JobId, i64>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    // Immediate: the write lock is taken (waiting for it) before the
    // batch reads anything. A deferred transaction that read a line count
    // and then had to write would fail at once ("database is locked",
    // with no wait) whenever the store wrote on its other connection
    // meanwhile (pruning, handing out notifications), losing the batch.
    let tx = db
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        results.push(match write {
            Write::Job {
                id,
                state,
                body,
                insert: true,
                ..
            } => {
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO jobs (id, state, body) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .and_then(|mut s| s.execute(params![id.as_str(), state.as_str(), body]))
                    .map_err(db_error)?;
                match inserted {
                    0 => Err(StoreError::Duplicate(id.clone())),
                    _ => Ok(()),
                }
            }
            Write::Job {
                id, state, body, ..
            } => {
                tx.prepare_cached("UPDATE jobs SET state = ?2, body = ?3 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id.as_str(), state.as_str(), body]))
                    .map_err(db_error)?;
                Ok(())
            }
            Write::Log { id, line, cap } => {
                append_line(&tx, next_line, id, line, *cap)?;
                Ok(())
            }
            Write::Record { id, name, body } => {
                tx.prepare_cached(crate::PUT_RECORD)
                    .and_then(|mut s| s.execute(params![id.as_str(), name, body]))
                    .map_err(db_error)?;
                Ok(())
            }
        });
    }
    tx.commit().map_err(db_error)?;
    Ok(results)
}

fn append_line(
    tx: &rusqlite::Transaction<'_>,
    next_line: &mut HashMap<JobId, i64>,
    id: &JobId,
    line: &LogLine,
    cap: usize,
) -> Result<(), StoreError> {
    let n = match next_line.get(id) {
        Some(n) => *n,
        None => {
            let last: Option<i64> = tx
                .prepare_cached("SELECT MAX(n) FROM job_logs WHERE job_id = ?1")
                .and_then(|mut s| s.query_row([id.as_str()], |row| row.get(0)))
                .optional()
                .map_err(db_error)?
                .flatten();
            if next_line.len() >= REMEMBERED_LOGS {
                next_line.clear();
            }
            last.map_or(0, |n| n + 1)
        }
    };
    next_line.insert(id.clone(), n + 1);
    tx.prepare_cached("INSERT INTO job_logs (job_id, n, line, at) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![id.as_str(), n, line.text, line.at_micros()]))
        .map_err(db_error)?;
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    if n.unsigned_abs().is_multiple_of(TRIM_EVERY) && n >= cap {
        tx.prepare_cached("DELETE FROM job_logs WHERE job_id = ?1 AND n <= ?2")
            .and_then(|mut s| s.execute(params![id.as_str(), n - cap]))
            .map_err(db_error)?;
    }
    Ok(())
}
