//! Connections to the database: opening one (with a timeout, the password
//! kept out of messages), the schema migrations, and a connection with its
//! prepared statements.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, Statement};

use crate::{DatabaseError, StoreError, db_error};

/// Schema migrations, applied in order; `helix_schema.version` records how
/// many have run. The same tables as the SQLite store, plus the lease.
const MIGRATIONS: &[&str] = &[
    "
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
",
    // When each line was taken, in microseconds since the Unix epoch.
    "ALTER TABLE job_logs ADD COLUMN at BIGINT;",
    // What claims order by: priority, aged by the time waited.
    "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0, \
     ADD COLUMN queued_at TIMESTAMPTZ NOT NULL DEFAULT now();",
    // Concurrency groups: claims count a group's running jobs.
    "ALTER TABLE jobs ADD COLUMN grp TEXT, ADD COLUMN max_running INTEGER NOT NULL DEFAULT 1; \
     CREATE INDEX running_by_group ON jobs (grp) WHERE state = 'running';",
    // A lost run queued again waits out its backoff.
    "ALTER TABLE jobs ADD COLUMN not_before TIMESTAMPTZ;",
    // The notifications owed for ended jobs: owed by the same transaction
    // that ends the job, whichever host's write does.
    "
    CREATE TABLE outbox (
        job_id    TEXT PRIMARY KEY,
        due_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        attempts  INTEGER NOT NULL DEFAULT 0,
        delivered TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_by_due ON outbox (due_at);
    CREATE FUNCTION helix_owe_notification() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO outbox (job_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE TRIGGER outbox_when_ended AFTER UPDATE OF state ON jobs FOR EACH ROW
        WHEN (OLD.state IN ('queued', 'running') AND NEW.state NOT IN ('queued', 'running'))
        EXECUTE FUNCTION helix_owe_notification();
    ",
    // Documents of a job besides its log: each run's audit trail, its
    // provenance.
    "
    CREATE TABLE job_records (
        job_id TEXT NOT NULL,
        name   TEXT NOT NULL,
        body   TEXT NOT NULL,
        PRIMARY KEY (job_id, name)
    );
    ",
    // The project a job belongs to: a project's listing filters on it.
    "ALTER TABLE jobs ADD COLUMN project TEXT; \
     CREATE INDEX jobs_by_project ON jobs (project, seq);",
    // Claims share workers between projects by their running jobs and
    // skip jobs past their queue TTL; submissions count a project's
    // waiting jobs.
    "
    ALTER TABLE jobs ADD COLUMN created_at TIMESTAMPTZ, ADD COLUMN queue_ttl_secs INTEGER;
    UPDATE jobs SET created_at = (body::jsonb ->> 'created_at')::timestamptz,
        queue_ttl_secs = (body::jsonb ->> 'queue_ttl_secs')::integer
        WHERE state IN ('queued', 'running');
    CREATE INDEX running_by_project ON jobs (project) WHERE state = 'running';
    CREATE INDEX queued_by_project ON jobs (project) WHERE state = 'queued';
    ",
    // Finding the jobs that hold a document of a name (a build's inputs).
    "CREATE INDEX job_records_by_name ON job_records (name);",
];

/// A connection and the statements prepared on it, so each is parsed and
/// planned once, not at every use.
pub(super) struct Conn {
    pub(super) client: Client,
    prepared: std::sync::Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    pub(super) fn new(client: Client) -> Self {
        Conn {
            client,
            prepared: std::sync::Mutex::default(),
        }
    }

    pub(super) async fn statement(&self, sql: &'static str) -> Result<Statement, StoreError> {
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

/// How long connecting may take when the URL does not say
/// (`connect_timeout`): an unreachable database must not hang requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `url`; the connection's own task runs until it closes.
pub(super) async fn connect(
    url: &str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    StoreError,
> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Database(DatabaseError::with_context(
            format!("store_url {}", redact_url(url)),
            e,
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.connect(NoTls).await.map_err(|e| {
        StoreError::Database(DatabaseError::with_context(
            format!("cannot connect to {}", redact_url(url)),
            e,
        ))
    })
}

pub(super) async fn open(url: &str) -> Result<Client, StoreError> {
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

pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
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
        return Err(db_error(format!(
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

#[cfg(test)]
mod tests {
    use super::redact_url;

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
