//! A run's last steps: accounted (its audit trail stored, the limit a
//! failure is blamed on found) and cleaned up (its engine images, slot
//! and workspace, unless a failed one is kept for debugging).

use std::sync::Arc;

use super::Run;
use crate::jail::Jail;
use crate::job::{BuildResult, Outcome};
use crate::layer_cache::CacheSlot;
use crate::service::confine::limit_reached;
use crate::service::fault::{self, Failure};

/// Ends `jail`, if this holds its last reference, off the runtime's
/// threads: its end waits for the jail's processes to be gone.
pub(super) async fn end_jail(jail: Option<Arc<Jail>>) {
    if let Some(jail) = jail {
        crate::jail::end_off_runtime(jail, "a run's jail").await;
    }
}

impl Run<'_> {
    /// The run's outcome from what its work `built`, after storing its
    /// audit trail; a failure is blamed on a limit the run reached.
    pub(super) fn account(&mut self, built: Result<BuildResult, Failure>) -> Outcome {
        let (job, log) = (self.job, self.log);
        if let Some(usage) = self.cgroup.as_ref().map(|c| c.usage()) {
            self.inner.measured(job.id.as_str(), |r| {
                r.cpu_seconds = usage.cpu_seconds;
                r.peak_memory_bytes = usage.peak_memory_bytes;
            });
        }
        // Written before the run's end, so the end is never stored without it.
        let (name, body) = self.audit.stored();
        self.inner.config.store.put_record(&job.id, &name, body);
        let engine_hit = self.slot.as_mut().and_then(CacheSlot::engine_limit_hit);
        let reached = self
            .cgroup
            .as_ref()
            .and_then(|c| c.limit_hit())
            .or(engine_hit);
        // A checkout writes only into the job's own disk, never the slot.
        let written = self
            .slot
            .as_ref()
            .filter(|_| !matches!(built, Err(Failure::Checkout(_))));
        let info = self.builder.info();
        let reached = limit_reached(job, info, reached, &self.dirs, written, log);
        match built {
            Ok(result) => Outcome::Succeeded(result),
            Err(failure) => fault::outcome(failure, reached.as_deref(), log),
        }
    }

    /// Removes what the run made: what its build left, unless taken away
    /// already, its jail and control group, and its
    /// workspace — kept, without its secrets, when the job did not
    /// succeed and the operator keeps failed workspaces.
    pub(super) async fn clean_up(mut self, outcome: &Outcome) {
        if std::mem::take(&mut self.leftovers) {
            let mut slot = self.slot.take();
            self.tidy_after_build(slot.as_mut(), self.jail.as_deref())
                .await;
            self.slot = slot;
        }
        let Run {
            inner,
            job,
            log,
            jail,
            cgroup,
            dirs,
            slot,
            ..
        } = self;
        end_jail(jail).await;
        drop(cgroup);
        let failed = !matches!(outcome, Outcome::Succeeded(_));
        if failed && inner.config.keep_failed_workspaces {
            // Never the secrets or credentials: they outlive no job.
            if let Err(e) = dirs.remove_secrets() {
                tracing::error!(job = %job.id, "could not remove the job's build secrets: {e}");
            }
            log.push(&format!(
                "[helix] workspace kept for debugging (without its build secrets and credentials): {}",
                dirs.root().display()
            ));
            dirs.keep();
        } else {
            dirs.remove();
        }
        // Its mirrors bounded once the run's layer over its working tree
        // is gone (with the jail and the workspace), then the slot goes
        // back to the cache last.
        if let Some(slot) = &slot {
            slot.keep_mirrors_within_bounds(log);
        }
        drop(slot);
    }
}
