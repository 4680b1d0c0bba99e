//! The writer: applies the service's writes in order, whatever has queued
//! up in one transaction (group commit), its statements pipelined, and
//! tells other hosts what changed when the transaction commits.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::conn::open;
use super::{CHANGED_CHANNEL, QUEUED_CHANNEL, sql};
use crate::{REMEMBERED_LOGS, StoreError, TRIM_EVERY, Write, acknowledge, db_error};
use helix_core::job::JobId;
use helix_core::log::{LogLine, human_bytes};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

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
    record: Statement,
}

impl Writer {
    async fn connect(url: &str) -> Result<Writer, StoreError> {
        let client = open(url).await?;
        let prepare = |sql: &'static str| client.prepare(sql);
        let (insert, update, log, trim, notify, record) = tokio::try_join!(
            prepare(
                "INSERT INTO jobs (id, state, builder, body, priority, grp, max_running, project, \
                 created_at, queue_ttl_secs) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::timestamptz, $10) \
                 ON CONFLICT (id) DO NOTHING"
            ),
            // Only the run that holds the job may change it: a host whose
            // lease ran out must not overwrite the next run.
            prepare(
                "UPDATE jobs SET state = $2, body = $3 WHERE id = $1 AND owner = $4 AND attempts = $5"
            ),
            prepare(sql::APPEND_LOG),
            prepare(
                "DELETE FROM job_logs WHERE job_id = $1 AND n < \
                 (SELECT n FROM job_logs WHERE job_id = $1 ORDER BY n DESC OFFSET $2 LIMIT 1)"
            ),
            prepare(sql::NOTIFY),
            prepare(super::super::PUT_RECORD_PG),
        )
        .map_err(db_error)?;
        Ok(Writer {
            client,
            insert,
            update,
            log,
            trim,
            notify,
            record,
        })
    }
}

/// Commits queued writes in batches until the store is dropped,
/// reconnecting when the database comes back. While it cannot be reached,
/// job writes fail (their callers retry them) and log lines and records
/// are [`Held`] for the first batch that commits.
pub(super) async fn write_loop(
    url: String,
    host: String,
    mut queued: mpsc::UnboundedReceiver<Write>,
) {
    let mut writer: Option<Writer> = None;
    let mut lines: HashMap<JobId, u64> = HashMap::new();
    let mut held = Held::new(MAX_HELD_BYTES);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = queued.recv_many(&mut batch, MAX_BATCH);
        let received = match held.is_empty() {
            true => received.await,
            // Held writes go in once the database answers, new writes or not.
            false => tokio::time::timeout(RETRY_HELD, received)
                .await
                .unwrap_or(usize::MAX),
        };
        if received == 0 {
            break;
        }
        if writer.as_ref().is_some_and(|w| w.client.is_closed()) {
            writer = None;
        }
        let mut writes = held.take();
        writes.append(&mut batch);
        let result = match writer.as_mut() {
            Some(w) => commit(w, &host, &writes, &mut lines).await,
            None => match Writer::connect(&url).await {
                Ok(w) => commit(writer.insert(w), &host, &writes, &mut lines).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(results) => acknowledge(writes, results),
            Err(e) if !answers(writer.as_ref()).await => {
                tracing::error!(
                    "job store unreachable: a batch of {} writes failed, its log lines and \
                     records are kept for when it answers: {e}",
                    writes.len()
                );
                held.keep(writes, &e);
            }
            Err(e) => {
                tracing::error!("job store: a batch of {} writes failed: {e}", writes.len());
                let failed = vec![Err(e); writes.len()];
                acknowledge(writes, failed);
            }
        }
        if lines.len() > REMEMBERED_LOGS {
            lines.clear();
        }
    }
}

/// Whether the database answers on `writer`'s connection: after a batch
/// failed, whether the statements were at fault or the database is gone.
async fn answers(writer: Option<&Writer>) -> bool {
    match writer {
        Some(w) => {
            let ping = w.client.simple_query("SELECT 1");
            !w.client.is_closed()
                && matches!(tokio::time::timeout(PING_LIMIT, ping).await, Ok(Ok(_)))
        }
        None => false,
    }
}

/// Most log line and record text [`Held`] while the database is
/// unreachable; past it lines are dropped, and a marker says how many.
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// Longest [`answers`] waits: a connection cut by the network (no reset)
/// would never answer.
const PING_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How often held writes are tried again when no new write comes.
const RETRY_HELD: std::time::Duration = std::time::Duration::from_secs(1);

/// Log lines and records of batches that failed because the database was
/// unreachable, oldest first, up to `limit` bytes of text; the lines past
/// it are counted per job, for a marker line in their place.
struct Held {
    writes: Vec<Write>,
    bytes: usize,
    limit: usize,
    /// Per job: lines dropped, and the log cap their writes carried.
    dropped: BTreeMap<JobId, (u64, usize)>,
}

impl Held {
    fn new(limit: usize) -> Self {
        Held {
            writes: Vec::new(),
            bytes: 0,
            limit,
            dropped: BTreeMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.dropped.is_empty()
    }

    /// Keeps `batch`'s log lines and records, and fails its job writes
    /// with `error` (their callers retry them).
    fn keep(&mut self, batch: Vec<Write>, error: &StoreError) {
        for write in batch {
            let size = match &write {
                Write::Job { .. } => None,
                Write::Log { line, .. } => Some(line.text.len()),
                Write::Record { body, .. } => Some(body.len()),
            };
            match (write, size) {
                (Write::Job { done, .. }, _) => {
                    let _ = done.send(Err(error.clone()));
                }
                // Once one is dropped, so are the later ones: what is kept
                // has no gaps before its marker.
                (write, Some(size))
                    if self.dropped.is_empty() && self.bytes + size <= self.limit =>
                {
                    self.bytes += size;
                    self.writes.push(write);
                }
                (Write::Log { id, cap, .. }, _) => {
                    let (count, kept_cap) = self.dropped.entry(id).or_default();
                    *count += 1;
                    *kept_cap = cap;
                }
                (Write::Record { id, name, .. }, _) => {
                    tracing::error!(job = %id, "job store unreachable: its {name} record is lost");
                }
            }
        }
    }

    /// The writes held, then a marker line for each job that lost lines:
    /// to go before the next batch's.
    fn take(&mut self) -> Vec<Write> {
        let mut writes = std::mem::take(&mut self.writes);
        self.bytes = 0;
        for (id, (count, cap)) in std::mem::take(&mut self.dropped) {
            let text = format!(
                "[helix] {count} log lines dropped: written while the job store was unreachable, \
                 past the {} this host holds for it",
                human_bytes(self.limit)
            );
            writes.push(Write::Log {
                id,
                line: LogLine::new(text),
                cap,
            });
        }
        writes
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
        record,
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
                priority,
                group,
                max_running,
                project,
                created_at,
                queue_ttl_secs,
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
                        body.clone(),
                        *priority,
                        group.clone(),
                        i32::try_from(*max_running).unwrap_or(i32::MAX),
                        project.clone(),
                        created_at.to_rfc3339(),
                        queue_ttl_secs.map(|secs| i32::try_from(secs).unwrap_or(i32::MAX))
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
            Write::Record { id, name, body } => {
                statements.push(tx.execute_raw(
                    &*record,
                    params![id.to_string(), name.clone(), body.clone()],
                ));
            }
            Write::Log { id, line, cap } => {
                changed.insert(id.as_str());
                statements.push(tx.execute_raw(
                    &*log,
                    params![id.to_string(), line.text.clone(), line.at_micros()],
                ));
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

#[cfg(test)]
mod tests {
    use super::{Held, Write, changed_payloads};
    use crate::StoreError;
    use helix_core::job::JobId;
    use helix_core::log::LogLine;

    #[test]
    fn held_lines_keep_their_order_and_those_past_the_bound_become_one_marker() {
        let job = JobId::parse("held").unwrap();
        let line = |text: &str| Write::Log {
            id: job.clone(),
            line: LogLine::new(text),
            cap: 100,
        };
        let mut held = Held::new(11);
        let outage = StoreError::Database("connection refused".into());
        held.keep(vec![line("one"), line("two")], &outage);
        held.keep(vec![line("three"), line("four"), line("five")], &outage);
        assert!(!held.is_empty());
        let texts: Vec<String> = held
            .take()
            .into_iter()
            .map(|write| match write {
                Write::Log { line, .. } => line.text,
                _ => unreachable!("only log lines were held"),
            })
            .collect();
        assert_eq!(texts[..3], ["one", "two", "three"]);
        assert!(
            texts[3].starts_with("[helix] 2 log lines dropped"),
            "{texts:?}"
        );
        assert_eq!(texts.len(), 4);
        assert!(held.is_empty());
    }

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
}
