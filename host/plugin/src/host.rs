//! What a builder instance can reach: the per-job store data and the host
//! side of the `helix:build` imports.
//!
//! A fresh [`JobHost`] is made for every job. By construction it grants
//! nothing but: the job workspace and the builder's granted directories as
//! its only preopened directories, no environment, no arguments, no sockets
//! or name lookups, no stdin, stdout/stderr copied into the job log, and
//! programs only through [`CommandRunner`] under the builder's grants.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::output::PluginOutput;
use super::wit::latest::{command_runner, helix, job_context};
use helix_core::audit::AuditTrail;
use helix_core::log::JobLog;
use helix_sandbox::cancel::CancelSignal;
use helix_sandbox::exec::{
    CommandRunner, CommandSpec, GUEST_WORKSPACE, GrantPolicy, JobValues, RunError,
};

/// Store data for one job's builder instance.
pub(crate) struct JobHost {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryLimit,
    log: Arc<JobLog>,
    cancel: CancelSignal,
    settings: Arc<BTreeMap<String, String>>,
    /// `None` outside a job, where no program may run.
    runner: Option<CommandRunner>,
    pub(crate) stdout: PluginOutput,
    pub(crate) stderr: PluginOutput,
}

/// Everything a job's builder instance is given.
pub(crate) struct JobHostParts<'a> {
    pub builder: Arc<str>,
    pub log: Arc<JobLog>,
    pub cancel: CancelSignal,
    pub settings: Arc<BTreeMap<String, String>>,
    pub grants: Arc<GrantPolicy>,
    /// `None` for calls outside a job (reading `info` at load time).
    pub workspace: Option<&'a Path>,
    /// Variables the host sets for every program, over the grants.
    pub program_env: BTreeMap<String, String>,
    /// What the host set for the job; the builder learns the registry
    /// cache and control group as settings (see [`JobValues::settings`]).
    pub values: JobValues,
    /// Where each program call is recorded, during a job.
    pub audit: Option<Arc<AuditTrail>>,
    pub memory_limit: usize,
}

impl JobHost {
    pub(crate) fn new(parts: JobHostParts<'_>) -> std::io::Result<Self> {
        let stdout = PluginOutput::new("stdout", parts.log.clone());
        let stderr = PluginOutput::new("stderr", parts.log.clone());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = parts.workspace {
            // Read-only to the builder's own code: it could otherwise plant
            // symbolic links out of the workspace for the root-run programs
            // that write there to follow.
            wasi.preopened_dir(dir, GUEST_WORKSPACE, FsPerms::ReadOnly)
                .map_err(std::io::Error::other)?;
        }
        for dir in parts.grants.dirs() {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(std::io::Error::other)?;
        }
        let runner = parts.workspace.map(|workspace| {
            let runner = CommandRunner::new(
                parts.builder.clone(),
                parts.grants.clone(),
                workspace.to_path_buf(),
                parts.log.clone(),
                parts.cancel.clone(),
                std::env::var_os("PATH"),
            )
            .with_program_env(parts.program_env.clone())
            .with_values(parts.values.clone());
            match &parts.audit {
                Some(audit) => runner.with_audit(audit.clone()),
                None => runner,
            }
        });
        let settings = parts.values.settings(&parts.settings);
        Ok(JobHost {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryLimit::new(parts.memory_limit),
            log: parts.log,
            cancel: parts.cancel,
            settings,
            runner,
            stdout,
            stderr,
        })
    }
}

impl WasiView for JobHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl job_context::Host for JobHost {
    fn log(&mut self, line: String) {
        self.log.push_output(&line);
    }

    fn cancelled(&mut self) -> bool {
        self.cancel.is_cancelled()
    }

    fn workspace(&mut self) -> String {
        GUEST_WORKSPACE.to_string()
    }

    fn setting(&mut self, name: String) -> Option<String> {
        self.settings.get(&name).cloned()
    }
}

impl command_runner::Host for JobHost {
    async fn run(
        &mut self,
        cmd: command_runner::Command,
    ) -> Result<command_runner::Output, command_runner::RunError> {
        use command_runner::RunError as Wit;
        let Some(runner) = &self.runner else {
            return Err(Wit::Denied("programs can only run during a build".into()));
        };
        let spec = CommandSpec {
            program: cmd.program,
            args: cmd.args,
            env: cmd.env,
            working_dir: cmd.working_dir,
            timeout: cmd.timeout_ms.map(std::time::Duration::from_millis),
        };
        match runner.run(spec).await {
            Ok(output) => Ok(command_runner::Output {
                exit_code: output.exit_code,
                stdout: output.stdout,
                stderr: output.stderr,
            }),
            Err(RunError::Denied(m)) => Err(Wit::Denied(m)),
            Err(RunError::NotFound(m)) => Err(Wit::NotFound(m)),
            Err(RunError::Cancelled) => Err(Wit::Cancelled),
            Err(RunError::TimedOut) => Err(Wit::TimedOut),
            Err(RunError::FailedToStart(m)) => Err(Wit::FailedToStart(m)),
        }
    }
}

impl helix::build::types::Host for JobHost {}

/// Caps a builder's linear memory and remembers whether the cap was hit,
/// so the job can say "over its memory limit" instead of "trapped".
pub(crate) struct MemoryLimit {
    max_bytes: usize,
    hit: bool,
}

impl MemoryLimit {
    fn new(max_bytes: usize) -> Self {
        MemoryLimit {
            max_bytes,
            hit: false,
        }
    }

    pub(crate) fn was_hit(&self) -> bool {
        self.hit
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a builder needing more than this
        // is broken, not busy.
        Ok(desired <= 100_000)
    }
}
