//! The shared store: one PostgreSQL database that several hosts use at
//! once. Besides the jobs and their logs it holds the queue
//! ([`queue`]): hosts claim queued jobs with `FOR UPDATE SKIP LOCKED`, hold
//! a lease on each job they run (owner host, expiry) and renew it by
//! heartbeat; a job whose lease ran out is queued again (or failed) by
//! whichever host notices first.
//!
//! Reads and single-statement changes share one pipelined connection
//! ([`conn`]); changes that race between hosts are compare-and-set
//! `UPDATE`s that name the state they expect, and a claim is one
//! transaction on a connection of its own. Writes from the service go
//! through the [`writer`], which commits whatever has queued up in one
//! transaction (group commit), as the SQLite store does. The [`listener`]
//! relays the database's notifications.
//!
//! When the database goes away the store reconnects on the next use;
//! meanwhile writes and reads fail with [`StoreError::Database`].

mod conn;
mod listener;
mod queue;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::{
    Commit, JobFilter, JobStore, OwedNotification, StoreCall, StoreError, StoredJob, Writes,
    db_error, delivered_column, delivered_from_column, parse_job,
};
use crate::queue::Notice;
use conn::{Conn, migrate, open};
use helix_core::job::{Job, JobId, State};
use helix_core::log::{LogLine, LogSink};

/// Channel told when jobs are queued (payload empty).
const QUEUED_CHANNEL: &str = "helix_queued";
/// Channel told when a running job should be cancelled (payload: its id).
const CANCEL_CHANNEL: &str = "helix_cancel";
/// Channel told when a job's state or log changed (payload: its id), for
/// hosts following it.
const CHANGED_CHANNEL: &str = "helix_changed";

/// Statements used in more than one place.
mod sql {
    pub const APPEND_LOG: &str = "INSERT INTO job_logs (job_id, line, at) VALUES ($1, $2, $3)";
    pub const NOTIFY: &str = "SELECT pg_notify($1, $2)";
}

/// A job store and queue in one PostgreSQL database, shared by hosts.
pub struct PostgresStore {
    url: String,
    /// This host's name in leases.
    host: String,
    /// How long a claimed job stays this host's without a heartbeat.
    lease: Duration,
    /// Reads and single-statement changes; replaced when it breaks.
    conn: Mutex<Option<Arc<Conn>>>,
    /// Claims, each a transaction; replaced when it breaks.
    claims: Mutex<Option<Client>>,
    writes: Writes,
    notices: broadcast::Sender<Notice>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`), brings the schema up to date and
    /// starts the writer and the listener. `host` names this host in the
    /// leases it takes, each lasting `lease` without a heartbeat.
    pub async fn connect(url: &str, host: &str, lease: Duration) -> Result<Arc<Self>, StoreError> {
        let mut client = open(url).await?;
        migrate(&mut client).await?;
        let (writes, queued) = mpsc::unbounded_channel();
        let (notices, _) = broadcast::channel(1024);
        let store = Arc::new(PostgresStore {
            url: url.to_string(),
            host: host.to_string(),
            lease,
            conn: Mutex::new(Some(Arc::new(Conn::new(client)))),
            claims: Mutex::new(None),
            // Fails only once the writer is gone; the commit reports it.
            writes: Writes::new(move |write| {
                let _ = writes.send(write);
            }),
            notices,
        });
        tokio::spawn(writer::write_loop(
            url.to_string(),
            host.to_string(),
            queued,
        ));
        tokio::spawn(listener::listen_loop(
            url.to_string(),
            Arc::downgrade(&store),
        ));
        Ok(store)
    }

    /// The connection for reads, reconnecting if it broke.
    async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(Conn::new(open(&self.url).await?));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        let statement = conn.statement(sql).await?;
        conn.client
            .query(&statement, params)
            .await
            .map_err(db_error)
    }

    async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn query_one(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| db_error(format!("no row from {sql}")))
    }

    /// Runs one statement; how many rows it changed.
    async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let statement = conn.statement(sql).await?;
        conn.client
            .execute(&statement, params)
            .await
            .map_err(db_error)
    }

    async fn jobs(
        &self,
        query: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Job>, StoreError> {
        let rows = self.query(query, params).await?;
        rows.iter().map(|row| parse_job(row.get(0))).collect()
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.execute(sql::NOTIFY, &[&channel, &payload]).await?;
        Ok(())
    }

    async fn jobs_with_logs(&self, jobs: Vec<Job>) -> Result<Vec<StoredJob>, StoreError> {
        let mut stored = Vec::with_capacity(jobs.len());
        for job in jobs {
            let log = self.log(job.id.as_str()).await?;
            stored.push(StoredJob { job, log });
        }
        Ok(stored)
    }
}

impl LogSink for PostgresStore {
    fn append_log(&self, id: &JobId, line: &LogLine, cap: usize) {
        self.writes.log(id, line, cap);
    }
}

impl JobStore for PostgresStore {
    fn insert(&self, job: &Job) -> Commit {
        self.writes.job(job, true)
    }

    fn update(&self, job: &Job) -> Commit {
        self.writes.job(job, false)
    }

    fn put_record(&self, id: &JobId, name: &str, body: String) {
        self.writes.record(id, name, body);
    }

    fn records<'a>(&'a self, id: &'a str, prefix: &'a str) -> StoreCall<'a, Option<Vec<String>>> {
        async move {
            if self
                .query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&id])
                .await?
                .is_none()
            {
                return Ok(None);
            }
            let rows = self
                .query(
                    "SELECT body FROM job_records WHERE job_id = $1 AND starts_with(name, $2) \
                     ORDER BY name",
                    &[&id, &prefix],
                )
                .await?;
            Ok(Some(rows.iter().map(|row| row.get(0)).collect()))
        }
        .boxed()
    }

    fn jobs_with_record<'a>(&'a self, name: &'a str, limit: usize) -> StoreCall<'a, Vec<String>> {
        async move {
            let limit = limit as i64;
            let rows = self
                .query(
                    "SELECT r.job_id FROM job_records r JOIN jobs j ON j.id = r.job_id \
                     WHERE r.name = $1 ORDER BY j.seq DESC LIMIT $2",
                    &[&name, &limit],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        }
        .boxed()
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreCall<'a, Option<Job>> {
        async move {
            let jobs = self
                .jobs("SELECT body FROM jobs WHERE id = $1", &[&id])
                .await?;
            Ok(jobs.into_iter().next())
        }
        .boxed()
    }

    fn log<'a>(&'a self, id: &'a str) -> StoreCall<'a, Vec<LogLine>> {
        async move {
            let rows = self
                .query(
                    "SELECT line, at FROM job_logs WHERE job_id = $1 ORDER BY n",
                    &[&id],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| LogLine::stored(row.get(0), row.get(1)))
                .collect())
        }
        .boxed()
    }

    fn position<'a>(&'a self, id: &'a str) -> StoreCall<'a, Option<i64>> {
        async move {
            let row = self
                .query_opt("SELECT seq FROM jobs WHERE id = $1", &[&id])
                .await?;
            Ok(row.map(|row| row.get(0)))
        }
        .boxed()
    }

    fn before<'a>(
        &'a self,
        filter: &'a JobFilter,
        before: i64,
        limit: usize,
    ) -> StoreCall<'a, Vec<Job>> {
        async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let state = filter.state.map(State::as_str);
            self.jobs(
                "SELECT body FROM jobs WHERE ($1::text IS NULL OR state = $1) \
                 AND ($2::text IS NULL OR grp = $2) AND seq < $3 \
                 AND ($5::text IS NULL OR builder = $5) \
                 AND ($6::text IS NULL OR strpos(id, $6) > 0 \
                      OR strpos(body::jsonb ->> 'repo_url', $6) > 0 \
                      OR strpos(coalesce(body::jsonb ->> 'image', ''), $6) > 0 \
                      OR strpos(coalesce(body::jsonb ->> 'image_tag', ''), $6) > 0) \
                 AND ($7::text IS NULL OR project = $7) \
                 ORDER BY seq DESC LIMIT $4",
                &[
                    &state,
                    &filter.group,
                    &before,
                    &limit,
                    &filter.builder,
                    &filter.text,
                    &filter.project,
                ],
            )
            .await
        }
        .boxed()
    }

    fn count_by_state(&self) -> StoreCall<'_, Vec<(State, u64)>> {
        async move {
            let rows = self
                .query("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])
                .await?;
            let counts: HashMap<String, i64> =
                rows.iter().map(|row| (row.get(0), row.get(1))).collect();
            Ok(State::ALL
                .iter()
                .map(|state| {
                    let count = counts.get(state.as_str()).copied().unwrap_or(0);
                    (*state, u64::try_from(count).unwrap_or(0))
                })
                .collect())
        }
        .boxed()
    }

    fn unfinished_in_group<'a>(&'a self, group: &'a str) -> StoreCall<'a, Vec<Job>> {
        async move {
            self.jobs(
                "SELECT body FROM jobs WHERE state IN ('queued', 'running') AND grp = $1 \
                 ORDER BY seq",
                &[&group],
            )
            .await
        }
        .boxed()
    }

    fn prune(
        &self,
        ended_before: Option<DateTime<Utc>>,
        keep: Option<usize>,
    ) -> StoreCall<'_, u64> {
        async move {
            let select = super::PRUNED_JOBS
                .replace(
                    "COMPLETED_AT",
                    "(body::jsonb ->> 'completed_at')::timestamptz",
                )
                .replace("CUTOFF", "$1::text::timestamptz");
            let sql = format!(
                "WITH doomed AS ({select}), \
                 logs AS (DELETE FROM job_logs WHERE job_id IN (SELECT id FROM doomed)), \
                 owed AS (DELETE FROM outbox WHERE job_id IN (SELECT id FROM doomed)), \
                 records AS (DELETE FROM job_records WHERE job_id IN (SELECT id FROM doomed)) \
                 DELETE FROM jobs WHERE id IN (SELECT id FROM doomed)"
            );
            let cutoff = ended_before.map(|at| at.to_rfc3339());
            let keep = keep.map_or(i64::MAX, |keep| i64::try_from(keep).unwrap_or(i64::MAX));
            let conn = self.conn().await?;
            conn.client
                .execute(&sql, &[&cutoff, &keep])
                .await
                .map_err(db_error)
        }
        .boxed()
    }

    fn owed_notifications(
        &self,
        lease: Duration,
        limit: usize,
    ) -> StoreCall<'_, Vec<OwedNotification>> {
        async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            // SKIP LOCKED: hosts taking at once take different ones.
            let rows = self
                .query(
                    "UPDATE outbox o SET due_at = now() + make_interval(secs => $1), \
                     attempts = o.attempts + 1 FROM jobs j \
                     WHERE j.id = o.job_id AND o.job_id IN (SELECT job_id FROM outbox \
                       WHERE due_at <= now() ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING j.body, o.delivered, o.attempts",
                    &[&lease.as_secs_f64(), &limit],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(OwedNotification {
                        job: parse_job(row.get(0))?,
                        delivered: delivered_from_column(row.get(1)),
                        attempts: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn settle_notification<'a>(
        &'a self,
        id: &'a str,
        delivered: &'a [String],
        retry_in: Option<Duration>,
    ) -> StoreCall<'a, ()> {
        async move {
            match retry_in {
                None => {
                    self.execute("DELETE FROM outbox WHERE job_id = $1", &[&id])
                        .await?
                }
                Some(after) => {
                    self.execute(
                        "UPDATE outbox SET delivered = $2, \
                         due_at = now() + make_interval(secs => $3) WHERE job_id = $1",
                        &[&id, &delivered_column(delivered), &after.as_secs_f64()],
                    )
                    .await?
                }
            };
            Ok(())
        }
        .boxed()
    }

    fn load_unfinished(&self) -> StoreCall<'_, Vec<StoredJob>> {
        async move {
            let jobs = self
                .jobs(
                    "SELECT body FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq",
                    &[],
                )
                .await?;
            self.jobs_with_logs(jobs).await
        }
        .boxed()
    }
}
