//! The shared store: one PostgreSQL database that several hosts use at
//! once. Besides the jobs and their logs it holds the queue: hosts claim
//! queued jobs with `FOR UPDATE SKIP LOCKED`, hold a lease on each job they
//! run (owner host, expiry) and renew it by heartbeat; a job whose lease
//! ran out is queued again (or failed) by whichever host notices first.
//!
//! Every statement runs on its own (autocommit), so one pipelined
//! connection serves all reads; state changes that race between hosts are
//! compare-and-set `UPDATE`s that name the state they expect. Writes from
//! the service go through a writer task that commits whatever has queued up
//! in one transaction (group commit), as the SQLite store does.
//!
//! When the database goes away the store reconnects on the next use;
//! meanwhile writes and reads fail with [`StoreError::Database`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt as _;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::{
    CancelRequest, Commit, Heartbeat, JobStore, Notice, REMEMBERED_LOGS, Read, SharedQueue,
    StoreError, StoredJob, TRIM_EVERY, Write, acknowledge, db_error,
};
use crate::job::{Job, JobId, Outcome, State};

/// Schema migrations, applied in order; `helix_schema.version` records how
/// many have run. The same tables as the SQLite store, plus the lease.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE jobs (
        seq              BIGSERIAL PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        state            TEXT NOT NULL,
        builder          TEXT NOT NULL,
        body             TEXT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        owner            TEXT,
        lease_until      TIMESTAMPTZ,
        cancel_requested TEXT
    );
    CREATE INDEX jobs_by_state ON jobs (state, seq);
    CREATE INDEX queued_by_builder ON jobs (builder, seq) WHERE state = 'queued';
    CREATE TABLE job_logs (
        job_id TEXT NOT NULL,
        n      BIGSERIAL,
        line   TEXT NOT NULL,
        PRIMARY KEY (job_id, n)
    );
"];

/// Channel told when jobs are queued (payload empty).
const QUEUED_CHANNEL: &str = "helix_queued";
/// Channel told when a running job should be cancelled (payload: its id).
const CANCEL_CHANNEL: &str = "helix_cancel";
/// Channel told when a job's state or log changed (payload: its id), for
/// hosts following it.
const CHANGED_CHANNEL: &str = "helix_changed";

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How long to wait before reconnecting the listener after it lost the
/// database.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A connection and the statements prepared on it, so each is parsed and
/// planned once, not at every use.
struct Conn {
    client: Client,
    prepared: std::sync::Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    fn new(client: Client) -> Self {
        Conn {
            client,
            prepared: std::sync::Mutex::default(),
        }
    }

    async fn statement(&self, sql: &'static str) -> Result<Statement, StoreError> {
        let cached = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await.map_err(db_error)?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql, statement.clone());
        Ok(statement)
    }
}

/// A job store and queue in one PostgreSQL database, shared by hosts.
pub struct PostgresStore {
    url: String,
    /// This host's name in leases.
    host: String,
    /// Reads and single-statement changes; replaced when it breaks.
    conn: Mutex<Option<Arc<Conn>>>,
    writes: mpsc::UnboundedSender<Write>,
    notices: broadcast::Sender<Notice>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`), brings the schema up to date and
    /// starts the writer and the listener. `host` names this host in the
    /// leases it takes.
    pub async fn connect(url: &str, host: &str) -> Result<Arc<Self>, StoreError> {
        let mut client = open(url).await?;
        migrate(&mut client).await?;
        let (writes, queued) = mpsc::unbounded_channel();
        let (notices, _) = broadcast::channel(1024);
        let store = Arc::new(PostgresStore {
            url: url.to_string(),
            host: host.to_string(),
            conn: Mutex::new(Some(Arc::new(Conn::new(client)))),
            writes,
            notices,
        });
        tokio::spawn(write_loop(url.to_string(), host.to_string(), queued));
        tokio::spawn(listen_loop(url.to_string(), Arc::downgrade(&store)));
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

    fn write_job(&self, job: &Job, insert: bool) -> Commit {
        let (write, committed) = Write::job(job, insert);
        if let Some(write) = write {
            // Fails only once the writer is gone; the commit reports it.
            let _ = self.writes.send(write);
        }
        committed
    }

    async fn jobs(
        &self,
        query: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Job>, StoreError> {
        let rows = self.query(query, params).await?;
        rows.iter().map(|row| parse_job(row.get(0))).collect()
    }

    /// Moves `job` from `expected` to its new state, clearing its lease.
    /// False when the job was no longer in `expected` (another host got
    /// there first).
    async fn swap(&self, job: &Job, expected: State) -> Result<bool, StoreError> {
        let body = serde_json::to_string(job).map_err(db_error)?;
        let changed = self
            .execute(
                "UPDATE jobs SET state = $2, body = $3, owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND state = $4",
                &[
                    &job.id.as_str(),
                    &job.state.as_str(),
                    &body,
                    &expected.as_str(),
                ],
            )
            .await?;
        Ok(changed == 1)
    }
}

/// How long connecting may take when the URL does not say
/// (`connect_timeout`): an unreachable database must not hang requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `url`; the connection's own task runs until it closes.
async fn connect(
    url: &str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    StoreError,
> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Database(format!("store_url {}: {e}", redact_url(url))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Database(format!("cannot connect to {}: {e}", redact_url(url))))
}

async fn open(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = connect(url).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// `url` without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    // Serialises hosts starting at once against a new database.
    let tx = client.transaction().await.map_err(db_error)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7243110); \
         CREATE TABLE IF NOT EXISTS helix_schema (version INTEGER NOT NULL); \
         INSERT INTO helix_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM helix_schema);",
    )
    .await
    .map_err(db_error)?;
    let applied: i32 = tx
        .query_one("SELECT version FROM helix_schema", &[])
        .await
        .map_err(db_error)?
        .get(0);
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database was written by a newer helix-build (schema version {applied}); upgrade this binary"
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(migration).await.map_err(db_error)?;
        let version = i32::try_from(version + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE helix_schema SET version = $1", &[&version])
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}

fn parse_job(body: String) -> Result<Job, StoreError> {
    serde_json::from_str(&body).map_err(|e| db_error(format!("a stored job is unreadable: {e}")))
}

/// Owned statement parameters, so pipelined statements need not borrow.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

macro_rules! params {
    ($($value:expr),* $(,)?) => {
        { let params: Params = vec![$(Box::new($value)),*]; params }
    };
}

/// The writer's connection and its statements, prepared once.
struct Writer {
    client: Client,
    insert: Statement,
    update: Statement,
    log: Statement,
    trim: Statement,
    notify: Statement,
}

impl Writer {
    async fn connect(url: &str) -> Result<Writer, StoreError> {
        let client = open(url).await?;
        let prepare = |sql: &'static str| client.prepare(sql);
        let (insert, update, log, trim, notify) = tokio::try_join!(
            prepare(
                "INSERT INTO jobs (id, state, builder, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING"
            ),
            // Only the run that holds the job may change it: a host whose
            // lease ran out must not overwrite the next run.
            prepare(
                "UPDATE jobs SET state = $2, body = $3 WHERE id = $1 AND owner = $4 AND attempts = $5"
            ),
            prepare("INSERT INTO job_logs (job_id, line) VALUES ($1, $2)"),
            prepare(
                "DELETE FROM job_logs WHERE job_id = $1 AND n < \
                 (SELECT n FROM job_logs WHERE job_id = $1 ORDER BY n DESC OFFSET $2 LIMIT 1)"
            ),
            prepare("SELECT pg_notify($1, $2)"),
        )
        .map_err(db_error)?;
        Ok(Writer {
            client,
            insert,
            update,
            log,
            trim,
            notify,
        })
    }
}

/// Commits queued writes in batches until the store is dropped,
/// reconnecting when the database comes back.
async fn write_loop(url: String, host: String, mut queued: mpsc::UnboundedReceiver<Write>) {
    let mut writer: Option<Writer> = None;
    let mut lines: HashMap<JobId, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if writer.as_ref().is_some_and(|w| w.client.is_closed()) {
            writer = None;
        }
        let result = match writer.as_mut() {
            Some(w) => commit(w, &host, &batch, &mut lines).await,
            None => match Writer::connect(&url).await {
                Ok(w) => commit(writer.insert(w), &host, &batch, &mut lines).await,
                Err(e) => Err(e),
            },
        };
        let results = result.unwrap_or_else(|e| {
            tracing::error!("job store: a batch of {} writes failed: {e}", batch.len());
            vec![Err(e); batch.len()]
        });
        acknowledge(std::mem::take(&mut batch), results);
        if lines.len() > REMEMBERED_LOGS {
            lines.clear();
        }
    }
}

/// Applies `batch` in one transaction, its statements pipelined (sent
/// without waiting for each answer; the server runs them in order). One
/// result per write.
async fn commit(
    writer: &mut Writer,
    host: &str,
    batch: &[Write],
    lines: &mut HashMap<JobId, u64>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let Writer {
        client,
        insert,
        update,
        log,
        trim,
        notify,
    } = writer;
    let tx = client.transaction().await.map_err(db_error)?;
    let mut statements = Vec::with_capacity(batch.len() + 8);
    // Index into `statements` of each write's own statement.
    let mut own = Vec::with_capacity(batch.len());
    let mut inserted_any = false;
    let mut changed = std::collections::BTreeSet::new();
    for write in batch {
        own.push(statements.len());
        match write {
            Write::Job {
                id,
                state,
                builder,
                body,
                insert: true,
                ..
            } => {
                inserted_any = true;
                statements.push(tx.execute_raw(
                    &*insert,
                    params![
                        id.to_string(),
                        state.as_str(),
                        builder.clone(),
                        body.clone()
                    ],
                ));
            }
            Write::Job {
                id,
                state,
                body,
                attempts,
                ..
            } => {
                changed.insert(id.as_str());
                let attempts = i32::try_from(*attempts).unwrap_or(i32::MAX);
                statements.push(tx.execute_raw(
                    &*update,
                    params![
                        id.to_string(),
                        state.as_str(),
                        body.clone(),
                        host.to_string(),
                        attempts
                    ],
                ));
            }
            Write::Log { id, line, cap } => {
                changed.insert(id.as_str());
                statements.push(tx.execute_raw(&*log, params![id.to_string(), line.clone()]));
                let count = lines.entry(id.clone()).or_default();
                *count += 1;
                if count.is_multiple_of(TRIM_EVERY) {
                    let cap = i64::try_from(*cap).unwrap_or(i64::MAX);
                    statements.push(tx.execute_raw(&*trim, params![id.to_string(), cap]));
                }
            }
        }
    }
    // Told at commit, to hosts waiting for new work or following a job.
    if inserted_any {
        statements.push(tx.execute_raw(&*notify, params![QUEUED_CHANNEL, ""]));
    }
    for ids in changed_payloads(changed) {
        statements.push(tx.execute_raw(&*notify, params![CHANGED_CHANNEL, ids]));
    }
    let counts = futures_util::future::try_join_all(statements)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(batch
        .iter()
        .zip(own)
        .map(|(write, at)| match write {
            Write::Job {
                id, insert: true, ..
            } if counts[at] == 0 => Err(StoreError::Duplicate(id.clone())),
            Write::Job {
                id, insert: false, ..
            } if counts[at] == 0 => Err(StoreError::Lost(id.clone())),
            _ => Ok(()),
        })
        .collect())
}

/// The ids of changed jobs as few notification payloads: space-separated
/// (ids hold no spaces), each under PostgreSQL's 8000-byte limit.
fn changed_payloads<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    const MAX_PAYLOAD: usize = 7900;
    let mut payloads: Vec<String> = Vec::new();
    for id in ids {
        match payloads.last_mut() {
            Some(last) if last.len() + 1 + id.len() <= MAX_PAYLOAD => {
                last.push(' ');
                last.push_str(id);
            }
            _ => payloads.push(id.to_string()),
        }
    }
    payloads
}

/// Relays the database's notifications to `notices` until the store is
/// gone, reconnecting after the database went away. After a reconnect it
/// announces `Queued`, since notifications sent meanwhile were lost.
async fn listen_loop(url: String, store: std::sync::Weak<PostgresStore>) {
    loop {
        let Some(notices) = store.upgrade().map(|s| s.notices.clone()) else {
            return;
        };
        if let Err(e) = listen_once(&url, &notices, &store).await {
            tracing::warn!("PostgreSQL notifications interrupted: {e}");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
        let _ = notices.send(Notice::Queued);
    }
}

/// Listens on one connection until it breaks or the store is gone.
async fn listen_once(
    url: &str,
    notices: &broadcast::Sender<Notice>,
    store: &std::sync::Weak<PostgresStore>,
) -> Result<(), StoreError> {
    use futures_util::StreamExt as _;
    let (client, mut connection) = connect(url).await?;
    let (relay, mut received) = mpsc::unbounded_channel();
    // The connection has to be polled for anything to happen on it,
    // including the LISTEN below.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let notice = match n.channel() {
                        CANCEL_CHANNEL => Notice::Cancel(n.payload().to_string()),
                        CHANGED_CHANNEL => {
                            for id in n.payload().split(' ') {
                                if relay.send(Notice::Changed(id.to_string())).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        _ => Notice::Queued,
                    };
                    if relay.send(notice).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("PostgreSQL notification connection: {e}");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {QUEUED_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {CHANGED_CHANNEL}"
        ))
        .await
        .map_err(db_error)?;
    while let Some(notice) = received.recv().await {
        if store.strong_count() == 0 {
            driver.abort();
            return Ok(());
        }
        let _ = notices.send(notice);
    }
    Err(db_error("the notification connection closed"))
}

impl JobStore for PostgresStore {
    fn insert(&self, job: &Job) -> Commit {
        self.write_job(job, true)
    }

    fn update(&self, job: &Job) -> Commit {
        self.write_job(job, false)
    }

    fn append_log(&self, id: &JobId, line: &str, cap: usize) {
        let _ = self.writes.send(Write::Log {
            id: id.clone(),
            line: line.to_string(),
            cap,
        });
    }

    fn get<'a>(&'a self, id: &'a str) -> Read<'a, Option<Job>> {
        async move {
            let jobs = self
                .jobs("SELECT body FROM jobs WHERE id = $1", &[&id])
                .await?;
            Ok(jobs.into_iter().next())
        }
        .boxed()
    }

    fn log<'a>(&'a self, id: &'a str) -> Read<'a, Vec<String>> {
        async move {
            let rows = self
                .query(
                    "SELECT line FROM job_logs WHERE job_id = $1 ORDER BY n",
                    &[&id],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        }
        .boxed()
    }

    fn page<'a>(
        &'a self,
        state: Option<State>,
        limit: usize,
        before: Option<&'a str>,
    ) -> Read<'a, Option<Vec<Job>>> {
        async move {
            let before: i64 = match before {
                None => i64::MAX,
                Some(id) => {
                    let row = self.query_opt("SELECT seq FROM jobs WHERE id = $1", &[&id]).await?;
                    match row {
                        Some(row) => row.get(0),
                        None => return Ok(None),
                    }
                }
            };
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let jobs = match state {
                Some(state) => {
                    self.jobs(
                        "SELECT body FROM jobs WHERE state = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                        &[&state.as_str(), &before, &limit],
                    )
                    .await?
                }
                None => {
                    self.jobs(
                        "SELECT body FROM jobs WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                        &[&before, &limit],
                    )
                    .await?
                }
            };
            Ok(Some(jobs))
        }
        .boxed()
    }

    fn count_by_state(&self) -> Read<'_, Vec<(State, u64)>> {
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

    /// Nothing: in a shared queue, live jobs belong to whichever host
    /// claims them; see [`SharedQueue::recover_lost`].
    fn load_unfinished(&self) -> Read<'_, Vec<StoredJob>> {
        std::future::ready(Ok(Vec::new())).boxed()
    }
}

impl PostgresStore {
    /// Appends a line to a job's log at once, outside the writer: for
    /// changes made by this host to jobs it does not run.
    async fn log_now(&self, id: &str, line: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO job_logs (job_id, line) VALUES ($1, $2)",
            &[&id, &line],
        )
        .await?;
        Ok(())
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await?;
        Ok(())
    }
}

impl SharedQueue for PostgresStore {
    fn claim<'a>(&'a self, lease: Duration, builders: &'a [String]) -> Read<'a, Option<StoredJob>> {
        async move {
            let row = self
                .query_opt(
                    "UPDATE jobs SET state = 'running', owner = $1, attempts = attempts + 1, \
                     lease_until = now() + make_interval(secs => $2), cancel_requested = NULL \
                     WHERE id = (SELECT id FROM jobs WHERE state = 'queued' \
                                 AND builder = ANY($3) ORDER BY seq \
                                 LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING body",
                    &[&self.host, &lease.as_secs_f64(), &builders],
                )
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut job = parse_job(row.get(0))?;
            job.start(Utc::now()).map_err(db_error)?;
            // The claim is ours; record it in the body before running.
            self.update(&job).await?;
            // Only a job that ran before has a log to continue.
            let log = match job.attempts {
                1 => Vec::new(),
                _ => self.log(job.id.as_str()).await?,
            };
            Ok(Some(StoredJob { job, log }))
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, lease: Duration, running: &'a [JobId]) -> Read<'a, Heartbeat> {
        async move {
            let running: Vec<&str> = running.iter().map(JobId::as_str).collect();
            let rows = self
                .query(
                    "UPDATE jobs SET lease_until = now() + make_interval(secs => $2) \
                     WHERE owner = $1 AND state = 'running' AND id = ANY($3) \
                     RETURNING id, cancel_requested",
                    &[&self.host, &lease.as_secs_f64(), &running],
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

    fn recover_lost(&self, max_attempts: u32, own_too: bool) -> Read<'_, usize> {
        async move {
            let rows = self
                .query(
                    "SELECT body, owner, attempts FROM jobs WHERE state = 'running' \
                     AND (lease_until < now() OR ($2 AND owner = $1))",
                    &[&self.host, &own_too],
                )
                .await
                .map_err(db_error)?;
            let mut recovered = 0;
            for row in rows {
                let owner = row.get::<_, Option<String>>(1).unwrap_or_default();
                let claimed_attempts: i32 = row.get(2);
                let mut job = match parse_job(row.get(0)) {
                    Ok(job) => job,
                    Err(e) => {
                        tracing::error!("cannot recover a job of host '{owner}': {e}");
                        continue;
                    }
                };
                let what = if owner == self.host {
                    "interrupted: this host stopped while the job ran".to_string()
                } else {
                    format!("host lost: '{owner}' stopped renewing its lease on the job")
                };
                // A host that died between claiming a job and recording the
                // claim left the job as it was queued: it simply goes back.
                let line = match job.state {
                    State::Running => match job.recover_lost_run(max_attempts, &what, Utc::now()) {
                        Ok(line) => Some(line),
                        Err(e) => {
                            tracing::error!(job = %job.id, "cannot recover: {e}");
                            continue;
                        }
                    },
                    _ => None,
                };
                let body = serde_json::to_string(&job).map_err(db_error)?;
                let attempts = i32::try_from(job.attempts).unwrap_or(i32::MAX);
                // Only if nobody renewed or recovered it meanwhile.
                let changed = self
                    .execute(
                        "UPDATE jobs SET state = $2, body = $3, attempts = $7, owner = NULL, \
                         lease_until = NULL \
                         WHERE id = $1 AND state = 'running' AND owner = $4 AND attempts = $5 \
                         AND (lease_until < now() OR $6)",
                        &[
                            &job.id.as_str(),
                            &job.state.as_str(),
                            &body,
                            &owner,
                            &claimed_attempts,
                            &(own_too && owner == self.host),
                            &attempts,
                        ],
                    )
                    .await
                    .map_err(db_error)?;
                if changed == 1 {
                    recovered += 1;
                    if let Some(line) = line {
                        self.log_now(job.id.as_str(), &line).await?;
                    }
                    tracing::warn!(job = %job.id, state = %job.state, "{what}");
                }
            }
            if recovered > 0 {
                self.notify(QUEUED_CHANNEL, "").await?;
            }
            Ok(recovered)
        }
        .boxed()
    }

    fn request_cancel<'a>(&'a self, id: &'a str, reason: &'a str) -> Read<'a, CancelRequest> {
        async move {
            // A queued job may be claimed between the read and the swap;
            // then look again.
            loop {
                let Some(mut job) = self.get(id).await? else {
                    return Ok(CancelRequest::NotFound);
                };
                match job.state {
                    State::Queued => {
                        job.finish(
                            Outcome::Cancelled {
                                reason: format!("{reason} before it started"),
                            },
                            Utc::now(),
                        )
                        .map_err(db_error)?;
                        if self.swap(&job, State::Queued).await? {
                            self.log_now(id, "[helix] cancelled before it started")
                                .await?;
                            return Ok(CancelRequest::Cancelled(Box::new(job)));
                        }
                    }
                    State::Running => {
                        let asked = self
                            .execute(
                                "UPDATE jobs SET cancel_requested = $2 WHERE id = $1 AND state = 'running'",
                                &[&id, &reason],
                            )
                            .await?;
                        if asked == 1 {
                            self.notify(CANCEL_CHANNEL, id).await?;
                            return Ok(CancelRequest::Asked);
                        }
                    }
                    _ => return Ok(CancelRequest::Ended(Box::new(job))),
                }
            }
        }
        .boxed()
    }

    fn queued(&self) -> Read<'_, u64> {
        async move {
            let count: i64 = self
                .query_one("SELECT COUNT(*) FROM jobs WHERE state = 'queued'", &[])
                .await?
                .get(0);
            Ok(u64::try_from(count).unwrap_or(0))
        }
        .boxed()
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::{changed_payloads, redact_url};

    #[test]
    fn changed_jobs_share_notifications_within_the_size_limit() {
        assert_eq!(changed_payloads(["a", "b-1", "c"]), ["a b-1 c"]);
        let long = "x".repeat(128);
        let ids = vec![long.as_str(); 100];
        let payloads = changed_payloads(ids);
        assert_eq!(payloads.len(), 2);
        assert!(payloads.iter().all(|p| p.len() <= 7900));
        let total: usize = payloads.iter().map(|p| p.split(' ').count()).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://helix:s3cret@db:5432/helix"),
            "postgres://helix:***@db:5432/helix"
        );
        assert_eq!(
            redact_url("postgres://helix@db/helix"),
            "postgres://helix@db/helix"
        );
        assert_eq!(redact_url("postgres://db/helix"), "postgres://db/helix");
    }
}
