//! Cancelling a job: a queued one is withdrawn from the queue, a running one is stopped where it runs, here or on another host.

use std::time::Duration;

use chrono::Utc;

use super::{Service, ServiceError};
use crate::job::{Job, Outcome, State};

/// How long `cancel` waits for a running job's worker to record the
/// cancellation before returning the job as it then is.
const CANCEL_SETTLE: Duration = Duration::from_secs(5);

/// How often `cancel` looks again at a job that changed under it (claimed
/// or ended between two reads) before giving up.
const CANCEL_RETRIES: usize = 100;

impl Service {
    /// Cancels job `id`. A queued job ends `cancelled` at once; a running
    /// job's builder is stopped (its instance dropped, its programs killed)
    /// and the job returned once its worker has recorded the cancellation.
    /// A job that already ended is an error.
    pub async fn cancel(&self, id: &str) -> Result<Job, ServiceError> {
        self.cancel_because(id, "cancelled by request").await
    }

    /// [`Service::cancel`], saying `reason` in the job's error.
    pub(super) async fn cancel_because(&self, id: &str, reason: &str) -> Result<Job, ServiceError> {
        for _ in 0..CANCEL_RETRIES {
            let running_here = self.inner.live(id, |entry| {
                if let Some(cancel) = &entry.cancel {
                    cancel.cancel(reason);
                }
                entry.job.state
            });
            match running_here {
                Some(state) if state.is_terminal() => break,
                Some(_) => {
                    tracing::info!(job = %id, "running job cancelled");
                    return self.wait(id, CANCEL_SETTLE).await;
                }
                None => {}
            }
            let job = self.inner.stored(id).await?;
            match job.state {
                State::Queued => {
                    let mut ended = job;
                    let outcome = Outcome::Cancelled {
                        reason: format!("{reason} before it started"),
                    };
                    ended
                        .finish(outcome, Utc::now())
                        .expect("queued → cancelled is allowed");
                    let line = "[helix] cancelled before it started";
                    if self.inner.config.queue.withdraw(&ended, line).await? {
                        tracing::info!(job = %id, "queued job cancelled");
                        self.inner.counts().ended(&ended);
                        return Ok(ended);
                    }
                }
                State::Running => {
                    if self.inner.config.queue.ask_cancel(id, reason).await? {
                        return self.wait(id, CANCEL_SETTLE).await;
                    }
                }
                _ => break,
            }
            // Claimed or ended meanwhile: look again.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ended = self.get(id).await?;
        Err(ServiceError::AlreadyEnded {
            id: ended.id,
            state: ended.state,
        })
    }
}
