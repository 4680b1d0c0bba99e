//! Trying a builder once, without a server (`helix-build plugin test`):
//! the component is loaded as the server loads it, under the grants given,
//! and runs one job in a temporary workspace (for a real builder, the
//! host's checkout of the job's repository is in it, as on a server).
//! Every program it asks for is recorded, allowed or refused; with canned
//! answers (a dry run) the allowed ones are answered instead of run, so a
//! builder's logic can be tried where its tools are not installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditEntry, AuditTrail};
use crate::cancel::CancelSignal;
use crate::cgroup::{BuildLimits, Cgroups};
use crate::config::host_settings;
use crate::exec::SOURCE_DIR;
use crate::exec::{CannedAnswers, Grants, JobValues};
use crate::job::{FailureKind, Job, JobRequest, Outcome, SubmitPolicy};
use crate::layer_cache::StorageDriver;
use crate::log::JobLog;
use crate::network::BuildNetwork;
use crate::plugin::{
    Builder, BuilderSource, Built, ComponentCache, Limits, Origin, PluginRuntime, PoolSizing,
    RunContext,
};
use crate::registry::RegistrySettings;
use crate::service::fault;
use crate::source::Checkout;
use crate::workspace::{JobDirs, run_name};

/// The name the tried builder has for its one job.
const NAME: &str = "trial";

/// One try of a builder.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The component file.
    pub component: PathBuf,
    /// The job, as `POST /v1/jobs` takes it (its `builder` is ignored).
    pub job: JobRequest,
    /// What the builder may run (the format of `[builders.X.grants]`).
    pub grants: Grants,
    /// Settings the builder reads, as `[builders.X.settings]`.
    pub settings: BTreeMap<String, String>,
    /// The network its build steps get, as `[builders.X] network` says
    /// (the builder reads it as the `network` setting, as on a server).
    pub network: BuildNetwork,
    /// A dry run: allowed programs are answered from here, not run.
    pub canned: Option<CannedAnswers>,
    /// A local directory to build instead of checking out the job's
    /// repository (a real builder's source, as the checkout would leave
    /// it; there is no commit then).
    pub source: Option<PathBuf>,
}

/// What a try did.
#[derive(Debug)]
pub struct TrialRun {
    pub job: Job,
    /// The commit the host checked out, for a real builder.
    pub commit: Option<String>,
    /// Every program the builder asked for, in order, allowed or not.
    pub calls: Vec<AuditEntry>,
    /// The job's log.
    pub log: Vec<String>,
    /// What the builder left for the host to publish, or why it failed.
    pub result: Result<Built, Outcome>,
}

/// Loads `trial.component` and runs its job once. The error says why the
/// try could not start (the component, the job or the workspace).
pub async fn run(trial: Trial) -> Result<TrialRun, String> {
    let bytes = std::fs::read(&trial.component)
        .map_err(|e| format!("cannot read {}: {e}", trial.component.display()))?;
    let limits = Limits {
        memory_bytes: 512 << 20,
        timeout: Duration::from_secs(3600),
    };
    let scratch = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let source = BuilderSource {
        name: NAME.into(),
        origin: Origin::File(trial.component.clone()),
        bytes: bytes.into(),
        limits,
        settings: host_settings(&trial.settings, trial.network, None),
        grants: trial.grants.resolve(|name| std::env::var(name).ok()),
        network: trial.network,
        registry_cache: None,
        engine: None,
        managed_engine: None,
        build_limits: BuildLimits::default(),
    };
    let sizing = PoolSizing {
        instances: 1,
        max_memory_bytes: limits.memory_bytes,
    };
    let cache = ComponentCache::new(scratch.path().join("compiled"));
    let runtime = PluginRuntime::load(vec![source], &cache, sizing)
        .await
        .map_err(|e| e.to_string())?;
    let builder = runtime
        .builder(NAME)
        .ok_or("the component did not load as a builder")?;
    let policy = SubmitPolicy {
        allow_file_repos: true,
        ..SubmitPolicy::for_builders(NAME, [NAME])
    };
    let now = chrono::Utc::now();
    let request = JobRequest {
        builder: None,
        ..trial.job
    };
    let mut job = Job::from_request(request, &policy, now).map_err(|e| format!("the job: {e}"))?;
    job.start(now).map_err(|e| e.to_string())?;
    let dirs = JobDirs::create(
        scratch.path().join("run"),
        &RegistrySettings::default(),
        StorageDriver::for_dir(scratch.path()),
        None,
        None,
    )
    .map_err(|e| format!("cannot make a workspace: {e}"))?;
    let log = Arc::new(JobLog::new(100_000));
    // A control group as on a server, where this machine has them (as
    // root): grants that pin the job's `{cgroup}` need one.
    let cgroup = match Cgroups::detect(scratch.path()) {
        Ok(cgroups) => cgroups
            .create(&run_name(&job.id, 1), &BuildLimits::default())
            .ok()
            .map(Arc::new),
        Err(e) => {
            log.push(&format!(
                "[helix] no control group for this try ({e}): grants that pin {{cgroup}} refuse"
            ));
            None
        }
    };
    let audit = Arc::new(AuditTrail::new(1));
    let values = JobValues {
        canned: trial.canned.map(Arc::new),
        cgroup,
        ..JobValues::default()
    };
    let source = trial.source.as_deref();
    let (commit, result) = build(&builder, &job, source, &dirs, &log, &audit, values).await;
    dirs.remove();
    Ok(TrialRun {
        job,
        commit,
        calls: audit.entries().0,
        log: log.snapshot(),
        result,
    })
}

/// The host's checkout (for a real builder; or a copy of `source`), then
/// the builder's run.
async fn build(
    builder: &Builder,
    job: &Job,
    source: Option<&Path>,
    dirs: &JobDirs,
    log: &Arc<JobLog>,
    audit: &Arc<AuditTrail>,
    mut values: JobValues,
) -> (Option<String>, Result<Built, Outcome>) {
    let cancel = CancelSignal::new();
    let workspace = dirs.workspace();
    let real = !builder.info().simulated;
    let commit = match (real, source) {
        (false, _) => None,
        (true, Some(source)) => {
            let checked_out = workspace.join(SOURCE_DIR);
            if let Err(e) = copy_tree(source, &checked_out) {
                let message = format!("cannot copy {}: {e}", source.display());
                return (None, Err(Outcome::failed(FailureKind::Source, message)));
            }
            log.push(&format!(
                "[helix] building {} (a local copy, no commit)",
                source.display()
            ));
            None
        }
        (true, None) => {
            let checkout = Checkout {
                allow_file_repos: true,
            };
            let cgroup = values.cgroup.as_deref();
            match checkout
                .fetch(job, &workspace, log, &cancel, cgroup, None)
                .await
            {
                Ok(commit) => Some(commit),
                Err(e) => return (None, Err(fault::outcome(e.into(), None, log))),
            }
        }
    };
    if real {
        match crate::rules::check_source(&workspace, job, builder) {
            Ok(checked) => checked.pin(job, &mut values),
            Err(e) => return (commit, Err(fault::outcome(e.into(), None, log))),
        }
    }
    let ctx = RunContext {
        log: log.clone(),
        cancel,
        workspace,
        program_env: dirs.program_env(),
        commit: commit.clone(),
        values,
        audit: audit.clone(),
    };
    let result = builder.run(job, ctx).await;
    let result = result.map_err(|e| fault::outcome(e.into(), None, log));
    (commit, result)
}

/// Copies the directory `from` to `to` (made), files and directories
/// only: a symbolic link is refused rather than followed out of the tree.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (path, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&path, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&path, &target)?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is neither a file nor a directory",
                path.display()
            )));
        }
    }
    Ok(())
}
