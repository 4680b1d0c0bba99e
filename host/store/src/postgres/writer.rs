//! The writer: applies the service's writes in order, whatever has queued
//! up in one transaction (group commit), its statements pipelined, and
//! tells other hosts what changed when the transaction commits.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::conn::open;
use super::{CHANGED_CHANNEL, QUEUED_CHANNEL, sql};
use crate::{REMEMBERED_LOGS, StoreError, TRIM_EVERY, Write, acknowledge, db_error};
use helix_core::job::JobId;

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
/// reconnecting when the database comes back.
pub(super) async fn write_loop(
    url: String,
    host: String,
    mut queued: mpsc::UnboundedReceiver<Write>,
) {
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
    use super::changed_payloads;

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
