//! Running programs for a builder: the host side of `command-runner`.
//!
//! Every call is checked against the builder's [`GrantPolicy`]; a granted
//! program runs without a shell, resolved on the host's `PATH` (never the
//! workspace or the current directory), in its own process group, with an
//! environment built from the grants alone, in a directory inside the job
//! workspace. Its output goes into the job log line by line as it arrives.
//! Cancellation, a timeout, or dropping the call kills the whole group.

mod grant;
mod process;
mod value;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use grant::{Denial, DirGrant, GrantPolicy, Granted, Grants, InvalidGrants, ProgramGrant};
pub use process::KILL_GRACE;
pub(crate) use process::confined;
pub use value::{CallSite, ValuePolicy, ValueType};

use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::jail::Jail;
use crate::secrets::SecretFiles;
use helix_core::audit::{AuditEntry, AuditTrail};
use helix_core::log::JobLog;

/// Where the job workspace appears to a builder.
pub const GUEST_WORKSPACE: &str = "/workspace";
/// Where the host's checkout of the job's source goes, relative to the
/// workspace.
pub const SOURCE_DIR: &str = "src";

/// One program invocation a builder asked for.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Relative to the workspace, or absolute under [`GUEST_WORKSPACE`].
    pub working_dir: Option<String>,
    pub timeout: Option<Duration>,
}

/// How a program that ran ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `128 + n` when killed by signal `n`.
    pub exit_code: i32,
    /// The last [`OUTPUT_TAIL_BYTES`] of standard output.
    pub stdout: String,
    /// The last [`OUTPUT_TAIL_BYTES`] of standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// The line of stderr that says what went wrong, for an error message:
    /// the last `fatal:`/`error:`/`Error:` line (prefix removed), else the
    /// last non-empty one.
    pub fn error_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        const PREFIXES: [&str; 3] = ["fatal: ", "error: ", "Error: "];
        lines
            .iter()
            .rev()
            .find(|l| PREFIXES.iter().any(|p| l.starts_with(p.trim_end())))
            .or(lines.last())
            .map(|l| {
                PREFIXES
                    .iter()
                    .fold(l.to_string(), |l, p| l.trim_start_matches(p).to_string())
            })
            .unwrap_or_else(|| "no error output".into())
    }
}

/// Output kept for the builder per stream; everything goes to the log.
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Why a program did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("cancelled")]
    Cancelled,
    #[error("timed out")]
    TimedOut,
    #[error("failed to start: {0}")]
    FailedToStart(String),
}

/// Runs programs for one job of one builder.
pub struct CommandRunner {
    builder: Arc<str>,
    policy: Arc<GrantPolicy>,
    workspace: PathBuf,
    log: Arc<JobLog>,
    cancel: CancelSignal,
    search_path: Option<OsString>,
    /// Set by the host for every call, over the grants and the builder.
    program_env: BTreeMap<String, String>,
    /// What the host set for this job besides the grants.
    values: JobValues,
    /// Where each call is recorded; `None` outside a job's run.
    audit: Option<Arc<AuditTrail>>,
}

/// What the host sets per job besides the builder's grants: what the
/// typed values of its calls are checked against, and where its programs
/// run.
#[derive(Debug, Clone, Default)]
pub struct JobValues {
    /// The job's build secrets, for `secret` values.
    pub secrets: SecretFiles,
    /// The job's Dockerfile in its checkout, canonical, for `dockerfile`
    /// values.
    pub dockerfile: Option<PathBuf>,
    /// The job's build context in its checkout, canonical, for `context`
    /// values.
    pub context: Option<PathBuf>,
    /// The job's build args, for `build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The job's repository in the registry cache, for `cache` values.
    pub registry_cache: Option<String>,
    /// The run's control group: every program starts in it, and its
    /// `steps` group is the only `cgroup` value.
    pub cgroup: Option<Arc<RunCgroup>>,
    /// The run's jail: every program runs in it.
    pub jail: Option<Arc<Jail>>,
    /// The name of the job's images in its builder's Docker Engine, for
    /// `engine-image` values.
    pub engine_image: Option<String>,
    /// A dry run (`helix-build plugin test --dry-run`): allowed programs
    /// are not run but answered from here.
    pub canned: Option<Arc<CannedAnswers>>,
}

/// What a dry run answers each allowed call with, by program: exit 0 and
/// no output unless the program has an answer of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedAnswers {
    #[serde(default)]
    pub programs: BTreeMap<String, CannedOutput>,
}

/// One program's canned answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CannedOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CannedAnswers {
    /// The answer to a call of `program`.
    pub fn answer(&self, program: &str) -> CommandOutput {
        let canned = self.programs.get(program).cloned().unwrap_or_default();
        CommandOutput {
            exit_code: canned.exit_code,
            stdout: canned.stdout,
            stderr: canned.stderr,
        }
    }
}

/// The settings through which a builder learns its job's values.
pub const REGISTRY_CACHE_SETTING: &str = "registry-cache";
pub const CGROUP_SETTING: &str = "cgroup-parent";
pub const ENGINE_IMAGE_SETTING: &str = "engine-image";

impl JobValues {
    /// `settings` with the job's values a builder reads as settings.
    pub fn settings(
        &self,
        settings: &Arc<BTreeMap<String, String>>,
    ) -> Arc<BTreeMap<String, String>> {
        let own = [
            (REGISTRY_CACHE_SETTING, self.registry_cache.clone()),
            (
                CGROUP_SETTING,
                self.cgroup.as_ref().map(|c| c.steps_path().to_string()),
            ),
            (ENGINE_IMAGE_SETTING, self.engine_image.clone()),
        ];
        if own.iter().all(|(_, value)| value.is_none()) {
            return settings.clone();
        }
        let mut settings = (**settings).clone();
        for (name, value) in own {
            if let Some(value) = value {
                settings.insert(name.into(), value);
            }
        }
        Arc::new(settings)
    }
}

impl CommandRunner {
    /// A runner for a job whose workspace is `workspace` (an existing
    /// directory). Programs are looked up on `search_path` (the host's
    /// `PATH`); only its absolute entries are used.
    pub fn new(
        builder: Arc<str>,
        policy: Arc<GrantPolicy>,
        workspace: PathBuf,
        log: Arc<JobLog>,
        cancel: CancelSignal,
        search_path: Option<OsString>,
    ) -> Self {
        CommandRunner {
            builder,
            policy,
            workspace,
            log,
            cancel,
            search_path,
            program_env: BTreeMap::new(),
            values: JobValues::default(),
            audit: None,
        }
    }

    /// The same runner, setting `env` for every program over whatever the
    /// grants and the builder set (the job's container storage, say).
    pub fn with_program_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.program_env = env;
        self
    }

    /// The same runner, recording every call in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditTrail>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The same runner, with the job's `values`.
    pub fn with_values(mut self, values: JobValues) -> Self {
        self.values = values;
        self
    }

    /// Runs `spec` to completion if the grants allow it. A denial is
    /// logged as well as returned. The output returned has the job's
    /// secrets redacted, as the log has: a build step that prints one
    /// must not hand it to the builder.
    /// Every call, allowed or not, is recorded in the job's audit trail.
    pub async fn run(&self, spec: CommandSpec) -> Result<CommandOutput, RunError> {
        let started_at = chrono::Utc::now();
        let clock = std::time::Instant::now();
        let mut grant = None;
        let result = self.checked_run(&spec, &mut grant).await;
        if let Err(RunError::Denied(reason)) = &result {
            self.log.push(&format!("[helix] denied: {reason}"));
        }
        if let Some(audit) = &self.audit {
            audit.record(AuditEntry {
                attempt: audit.attempt(),
                program: spec.program,
                args: spec.args.iter().map(|a| self.log.redact(a)).collect(),
                working_dir: spec.working_dir.map(|d| self.log.redact(&d)),
                allowed: grant.is_some(),
                grant,
                started_at,
                duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                exit_code: result.as_ref().ok().map(|o| o.exit_code),
                error: result
                    .as_ref()
                    .err()
                    .map(|e| self.log.redact(&e.to_string())),
            });
        }
        result.map(|output| CommandOutput {
            exit_code: output.exit_code,
            stdout: self.log.redact(&output.stdout),
            stderr: self.log.redact(&output.stderr),
        })
    }

    /// Runs `spec` if the grants allow it, setting `grant` to the grant
    /// that did.
    async fn checked_run(
        &self,
        spec: &CommandSpec,
        grant: &mut Option<String>,
    ) -> Result<CommandOutput, RunError> {
        let denied = |d: Denial| RunError::Denied(format!("builder '{}': {d}", self.builder));
        let (workspace, cwd) = self.working_dir(spec.working_dir.as_deref())?;
        let site = CallSite {
            workspace: &workspace,
            cwd: &cwd,
            job: &self.values,
        };
        let granted = self
            .policy
            .check(&spec.program, &spec.args, &site)
            .map_err(denied)?;
        let args = granted.args;
        *grant = Some(granted.grant);
        let mut env = self.policy.environment(&spec.env).map_err(denied)?;
        if let Some(canned) = &self.values.canned {
            let answer = canned.answer(&spec.program);
            self.log.push(&format!(
                "[helix] dry run: {} {} (not run; answered exit {})",
                spec.program,
                spec.args.join(" "),
                answer.exit_code
            ));
            return Ok(answer);
        }
        env.extend(self.program_env.clone());
        let program = resolve_program(&spec.program, self.search_path.as_deref())?;
        if self.cancel.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        self.log.push(&format!(
            "[helix] run: {} {}",
            spec.program,
            spec.args.join(" ")
        ));
        process::run(process::Invocation {
            program: &program,
            label: &spec.program,
            args: &args,
            env: &env,
            cwd: &cwd,
            timeout: spec.timeout,
            log: &self.log,
            cancel: &self.cancel,
            cgroup: self.values.cgroup.as_deref(),
            jail: self.values.jail.as_deref(),
        })
        .await
    }

    /// The canonical workspace and the host directory for a requested
    /// working directory, which must stay inside the workspace after
    /// following symlinks.
    fn working_dir(&self, requested: Option<&str>) -> Result<(PathBuf, PathBuf), RunError> {
        let root = self
            .workspace
            .canonicalize()
            .map_err(|e| RunError::FailedToStart(format!("job workspace is gone: {e}")))?;
        let Some(requested) = requested.filter(|r| !r.is_empty()) else {
            return Ok((root.clone(), root));
        };
        let path = Path::new(requested);
        let relative = if path.is_absolute() {
            path.strip_prefix(GUEST_WORKSPACE).map_err(|_| {
                RunError::Denied(format!(
                    "working directory {requested} is outside the job workspace {GUEST_WORKSPACE}"
                ))
            })?
        } else {
            path
        };
        if relative
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(RunError::Denied(format!(
                "working directory {requested} may not contain '..'"
            )));
        }
        let resolved = self.workspace.join(relative).canonicalize().map_err(|_| {
            RunError::FailedToStart(format!(
                "working directory {requested} does not exist in the workspace"
            ))
        })?;
        if !resolved.starts_with(&root) {
            return Err(RunError::Denied(format!(
                "working directory {requested} leads outside the job workspace"
            )));
        }
        Ok((root, resolved))
    }
}

/// What confines a run's programs: its control group and its jail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Confinement<'a> {
    pub cgroup: Option<&'a RunCgroup>,
    pub jail: Option<&'a Jail>,
}

/// One of the host's own commands: git for the checkout, skopeo or podman
/// for the push, the build cache's cleanup. No grant is checked (the host
/// chose every argument), but it runs like a builder's programs: no shell,
/// its own process group, a cleared environment plus the host's `PATH` and
/// `env`, output into the job log, the group killed on cancel or
/// `timeout`, and inside the job run's control group and jail when it has
/// them.
pub struct HostCommand<'a> {
    /// A bare name, looked up on the host's `PATH`, or an absolute path.
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub timeout: Option<Duration>,
    pub log: &'a JobLog,
    pub cancel: &'a CancelSignal,
    pub cgroup: Option<&'a RunCgroup>,
    pub jail: Option<&'a Jail>,
}

impl HostCommand<'_> {
    pub async fn run(self) -> Result<CommandOutput, RunError> {
        let search_path = std::env::var_os("PATH");
        let program = resolve_program(self.program, search_path.as_deref())?;
        // The host's tools find their helpers (runc, conmon, git's remote
        // helpers) where the host does.
        let mut env = self.env.clone();
        env.entry("PATH".to_string()).or_insert_with(|| {
            search_path
                .as_deref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        process::run(process::Invocation {
            program: &program,
            label: self.program,
            args: self.args,
            env: &env,
            cwd: self.cwd,
            timeout: self.timeout,
            log: self.log,
            cancel: self.cancel,
            cgroup: self.cgroup,
            jail: self.jail,
        })
        .await
    }
}

/// Whether `program` (a bare name, looked up in this process's `PATH`,
/// or an absolute path) is an executable on this host.
pub fn is_installed(program: &str) -> bool {
    resolve_program(program, std::env::var_os("PATH").as_deref()).is_ok()
}

/// The executable for a granted program name: an absolute path as is, a
/// bare name from the absolute entries of `search_path`.
fn resolve_program(
    program: &str,
    search_path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, RunError> {
    let not_found = || RunError::NotFound(format!("`{program}` is not installed on this host"));
    let path = Path::new(program);
    if path.is_absolute() {
        return is_executable(path)
            .then(|| path.to_path_buf())
            .ok_or_else(not_found);
    }
    let search_path = search_path.ok_or_else(not_found)?;
    std::env::split_paths(search_path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
