//! The queue several hosts share: claims, leases, cancel requests and
//! recovery of lost runs, each a compare-and-set on the `jobs` table, so
//! two hosts never both get one job.

use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::broadcast;
use tokio_postgres::Client;

use super::conn::open;
use super::{CANCEL_CHANNEL, CHANGED_CHANNEL, PostgresStore, QUEUED_CHANNEL};
use crate::queue::{ClaimRules, Heartbeat, JobQueue, LostRun, Notice, Start};
use crate::{JobStore, StoreCall, StoreError, StoredJob, db_error, parse_job};
use helix_core::job::{Job, JobId, State};
use helix_core::log::LogLine;

impl PostgresStore {
    /// Appends a line the host wrote to a job's log at once, outside the
    /// writer, ordered before whatever this host does next.
    async fn log_now(&self, id: &str, line: &str) -> Result<(), StoreError> {
        let line = LogLine::new(line);
        self.execute(
            super::sql::APPEND_LOG,
            &[&id, &line.text, &line.at_micros()],
        )
        .await?;
        Ok(())
    }

    /// The claim connection, reconnecting if it broke.
    async fn claims(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, StoreError> {
        let mut slot = self.claims.lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(open(&self.url).await?);
        }
        Ok(slot)
    }

    /// Claims one job in one transaction: the one `rules` put first,
    /// locked so no other host's claim takes it, made running by `start`
    /// and stored with this host's lease, body and columns together.
    async fn claim_one(
        &self,
        rules: &ClaimRules<'_>,
        start: &Start,
    ) -> Result<Option<Job>, StoreError> {
        let mut slot = self.claims().await?;
        let client = slot.as_mut().expect("claims() connected it");
        let tx = client.transaction().await.map_err(db_error)?;
        let (limited, limits): (Vec<&str>, Vec<i32>) = rules
            .max_running
            .iter()
            .map(|(project, most)| (project.as_str(), i32::try_from(*most).unwrap_or(i32::MAX)))
            .unzip();
        let default_ttl = rules.default_ttl.map(|ttl| ttl.as_secs_f64());
        // Groups and projects found full during this claim; their jobs wait.
        let mut full_groups: Vec<String> = Vec::new();
        let mut full_projects: Vec<String> = Vec::new();
        let row = loop {
            let row = tx
                .query_opt(
                    CLAIM,
                    &[
                        &rules.builders,
                        &full_groups,
                        &full_projects,
                        &limited,
                        &limits,
                        &default_ttl,
                    ],
                )
                .await
                .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            // One claim at a time per group and per limited project, on
            // every host: counted after the lock, the count includes every
            // claim committed before. One another claim holds is skipped,
            // never waited for (two claims waiting on each other's locks
            // would deadlock).
            if let Some(group) = row.get::<_, Option<String>>(1)
                && !Limited::Group.has_room(&tx, &group, row.get(2)).await?
            {
                full_groups.push(group);
                continue;
            }
            if let Some(project) = row.get::<_, Option<String>>(3)
                && let Some(most) = rules.max_running.get(&project)
                && !Limited::Project
                    .has_room(&tx, &project, i32::try_from(*most).unwrap_or(i32::MAX))
                    .await?
            {
                full_projects.push(project);
                continue;
            }
            break row;
        };
        let mut job = parse_job(row.get(0))?;
        start(&mut job).map_err(|e| db_error(format!("a queued job cannot start: {e}")))?;
        let body = serde_json::to_string(&job).map_err(db_error)?;
        let attempts = i32::try_from(job.attempts).unwrap_or(i32::MAX);
        tx.execute(
            "UPDATE jobs SET state = $2, body = $3, owner = $4, attempts = $5, \
             lease_until = now() + make_interval(secs => $6), cancel_requested = NULL \
             WHERE id = $1",
            &[
                &job.id.as_str(),
                &job.state.as_str(),
                &body,
                &self.host,
                &attempts,
                &self.lease.as_secs_f64(),
            ],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(job))
    }
}

/// The claim's query: the first queued job for builders `$1`, of no
/// group in `$2` nor project in `$3` (found full meanwhile), whose project
/// is below its limit (`$4` the limited projects, `$5` their limits), not
/// in its backoff and within its queue TTL (`$6` the default, seconds;
/// a row from a host that wrote no `created_at` counts from `queued_at`),
/// in the order of [`ClaimRules`]: the project with the fewest running
/// jobs first (no project counting as one, ''), then the highest priority
/// aged as `job::effective_priority` (one level per 60 s waited), then the
/// oldest. Locking a row needs every candidate sorted (no top-N sort under
/// `FOR UPDATE`), so the sort carries the row's number only and the body
/// is read after it: with the bodies the sort of 20,000 waiting jobs
/// spills to disk.
const CLAIM: &str = "
    WITH running AS (
        SELECT COALESCE(project, '') AS project, COUNT(*) AS n
        FROM jobs WHERE state = 'running' GROUP BY 1
    ), limits AS (
        SELECT * FROM unnest($4::text[], $5::int[]) AS l(project, most)
    ), pick AS (
        SELECT q.seq FROM jobs q
        LEFT JOIN running r ON r.project = COALESCE(q.project, '')
        LEFT JOIN limits l ON l.project = q.project
        WHERE q.state = 'queued' AND q.builder = ANY($1)
        AND (q.grp IS NULL OR NOT (q.grp = ANY($2)))
        AND (q.project IS NULL OR NOT (q.project = ANY($3)))
        AND (l.most IS NULL OR COALESCE(r.n, 0) < l.most)
        AND (q.not_before IS NULL OR q.not_before <= now())
        AND COALESCE(COALESCE(q.created_at, q.queued_at)
            + make_interval(secs => COALESCE(q.queue_ttl_secs::float8, $6)) > now(), true)
        ORDER BY COALESCE(r.n, 0), q.priority + floor(extract(epoch FROM now() - q.queued_at) / 60) DESC, q.seq
        LIMIT 1 FOR UPDATE OF q SKIP LOCKED
    )
    SELECT j.body, j.grp, j.max_running, j.project FROM pick JOIN jobs j ON j.seq = pick.seq";

/// What a claim counts running jobs of, one claim at a time.
#[derive(Clone, Copy)]
enum Limited {
    Group,
    Project,
}

impl Limited {
    /// Takes the transaction's advisory lock on group or project `$1`,
    /// unless another holds it. A project's is in a space of its own (the
    /// two-key form), so no group's name takes a project's lock.
    fn try_lock(self) -> &'static str {
        match self {
            Limited::Group => "SELECT pg_try_advisory_xact_lock(hashtext($1))",
            Limited::Project => "SELECT pg_try_advisory_xact_lock(7243112, hashtext($1))",
        }
    }

    fn count_running(self) -> &'static str {
        match self {
            Limited::Group => "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND grp = $1",
            Limited::Project => {
                "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND project = $1"
            }
        }
    }

    /// Whether fewer than `most` jobs of group or project `name` run, on
    /// every host, holding `name`'s lock until `tx` ends; `false` too when
    /// another claim holds that lock.
    async fn has_room(
        self,
        tx: &tokio_postgres::Transaction<'_>,
        name: &str,
        most: i32,
    ) -> Result<bool, StoreError> {
        let locked: bool = tx
            .query_one(self.try_lock(), &[&name])
            .await
            .map_err(db_error)?
            .get(0);
        if !locked {
            return Ok(false);
        }
        let running: i64 = tx
            .query_one(self.count_running(), &[&name])
            .await
            .map_err(db_error)?
            .get(0);
        Ok(running < i64::from(most))
    }
}

impl JobQueue for PostgresStore {
    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn enqueue<'a>(&'a self, job: &'a Job) -> StoreCall<'a, ()> {
        // The writer tells other hosts when the insert commits.
        self.insert(job)
    }

    fn claim<'a>(
        &'a self,
        rules: &'a ClaimRules<'a>,
        start: &'a Start,
    ) -> StoreCall<'a, Option<StoredJob>> {
        async move {
            let Some(job) = self.claim_one(rules, start).await? else {
                return Ok(None);
            };
            let log = crate::queue::earlier_log(self, &job).await?;
            Ok(Some(StoredJob { job, log }))
        }
        .boxed()
    }

    fn ended(&self, _id: &JobId) {
        // The database counts what runs.
    }

    fn withdraw<'a>(&'a self, ended: &'a Job, line: &'a str) -> StoreCall<'a, bool> {
        async move {
            let body = serde_json::to_string(ended).map_err(db_error)?;
            let changed = self
                .execute(
                    "UPDATE jobs SET state = $2, body = $3 WHERE id = $1 AND state = 'queued'",
                    &[&ended.id.as_str(), &ended.state.as_str(), &body],
                )
                .await?;
            if changed == 1 {
                self.log_now(ended.id.as_str(), line).await?;
                self.notify(CHANGED_CHANNEL, ended.id.as_str()).await?;
            }
            Ok(changed == 1)
        }
        .boxed()
    }

    fn ask_cancel<'a>(&'a self, id: &'a str, reason: &'a str) -> StoreCall<'a, bool> {
        async move {
            let asked = self
                .execute(
                    "UPDATE jobs SET cancel_requested = $2 WHERE id = $1 AND state = 'running'",
                    &[&id, &reason],
                )
                .await?;
            if asked == 1 {
                self.notify(CANCEL_CHANNEL, &format!("{id}\n{reason}"))
                    .await?;
            }
            Ok(asked == 1)
        }
        .boxed()
    }

    fn lost_runs(&self, own_too: bool) -> StoreCall<'_, Vec<LostRun>> {
        async move {
            let rows = self
                .query(
                    "SELECT body, owner FROM jobs WHERE state = 'running' \
                     AND (lease_until < now() OR ($2 AND owner = $1))",
                    &[&self.host, &own_too],
                )
                .await?;
            let mut lost = Vec::with_capacity(rows.len());
            for row in rows {
                let owner: Option<String> = row.get(1);
                match parse_job(row.get(0)) {
                    Ok(job) => lost.push(LostRun { job, owner }),
                    Err(e) => tracing::error!(
                        "cannot recover a job of host '{}': {e}",
                        owner.unwrap_or_default()
                    ),
                }
            }
            Ok(lost)
        }
        .boxed()
    }

    fn replace_lost<'a>(
        &'a self,
        lost: &'a LostRun,
        recovered: &'a Job,
        line: &'a str,
    ) -> StoreCall<'a, bool> {
        async move {
            let body = serde_json::to_string(recovered).map_err(db_error)?;
            let attempts = i32::try_from(lost.job.attempts).unwrap_or(i32::MAX);
            // Only the run that was lost, and only if nobody renewed its
            // lease (its own host may take its leftovers back at once).
            let changed = self
                .execute(
                    "UPDATE jobs SET state = $2, body = $3, owner = NULL, lease_until = NULL, \
                     not_before = $7::text::timestamptz \
                     WHERE id = $1 AND state = 'running' AND owner = $4 AND attempts = $5 \
                     AND (lease_until < now() OR owner = $6)",
                    &[
                        &recovered.id.as_str(),
                        &recovered.state.as_str(),
                        &body,
                        &lost.owner,
                        &attempts,
                        &self.host,
                        &recovered.not_before.map(|at| at.to_rfc3339()),
                    ],
                )
                .await?;
            if changed == 1 {
                // Before the notice: whoever claims it then sees the line.
                self.log_now(recovered.id.as_str(), line).await?;
                if recovered.state == State::Queued {
                    self.notify(QUEUED_CHANNEL, "").await?;
                }
            }
            Ok(changed == 1)
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, running: &'a [JobId]) -> StoreCall<'a, Heartbeat> {
        async move {
            let running: Vec<&str> = running.iter().map(JobId::as_str).collect();
            let rows = self
                .query(
                    "UPDATE jobs SET lease_until = now() + make_interval(secs => $2) \
                     WHERE owner = $1 AND state = 'running' AND id = ANY($3) \
                     RETURNING id, cancel_requested",
                    &[&self.host, &self.lease.as_secs_f64(), &running],
                )
                .await?;
            let mut beat = Heartbeat::default();
            for row in rows {
                let id = JobId::parse(row.get::<_, &str>(0)).map_err(db_error)?;
                if let Some(reason) = row.get::<_, Option<String>>(1) {
                    beat.cancel.push((id.clone(), reason));
                }
                beat.held.push(id);
            }
            Ok(beat)
        }
        .boxed()
    }

    fn depth(&self) -> StoreCall<'_, usize> {
        async move {
            let count: i64 = self
                .query_one("SELECT COUNT(*) FROM jobs WHERE state = 'queued'", &[])
                .await?
                .get(0);
            Ok(usize::try_from(count).unwrap_or(0))
        }
        .boxed()
    }

    fn depth_of<'a>(&'a self, project: &'a str) -> StoreCall<'a, usize> {
        async move {
            let count: i64 = self
                .query_one(
                    "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND project = $1",
                    &[&project],
                )
                .await?
                .get(0);
            Ok(usize::try_from(count).unwrap_or(0))
        }
        .boxed()
    }

    fn next_attempt<'a>(&'a self, job: &'a Job, next: &'a Job) -> StoreCall<'a, bool> {
        async move {
            let body = serde_json::to_string(next).map_err(db_error)?;
            let (was, now) = (
                i32::try_from(job.attempts).unwrap_or(i32::MAX),
                i32::try_from(next.attempts).unwrap_or(i32::MAX),
            );
            // Only while this host holds this run: the writer's updates
            // check the attempt count from now on.
            let changed = self
                .execute(
                    "UPDATE jobs SET attempts = $2, body = $3 \
                     WHERE id = $1 AND state = 'running' AND owner = $4 AND attempts = $5",
                    &[&job.id.as_str(), &now, &body, &self.host, &was],
                )
                .await?;
            Ok(changed == 1)
        }
        .boxed()
    }

    fn overdue(
        &self,
        default_ttl: Option<Duration>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreCall<'_, Vec<Job>> {
        async move {
            // Only candidates leave the database; Job::is_overdue decides,
            // as the local queue does.
            let default_secs = default_ttl.map(|ttl| ttl.as_secs_f64());
            let jobs = self
                .jobs(
                    // A row without `created_at` was written by a host
                    // from before that column (a rolling upgrade).
                    "SELECT body FROM jobs WHERE state = 'queued' AND CASE \
                     WHEN created_at IS NULL THEN queued_at + make_interval(secs => \
                         COALESCE((body::jsonb ->> 'queue_ttl_secs')::float8, $1)) \
                     ELSE created_at + make_interval(secs => \
                         COALESCE(queue_ttl_secs::float8, $1)) END <= now() \
                     ORDER BY seq",
                    &[&default_secs],
                )
                .await?;
            Ok(jobs
                .into_iter()
                .filter(|job| job.is_overdue(default_ttl, now))
                .collect())
        }
        .boxed()
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}
