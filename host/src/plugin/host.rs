//! What a builder instance can reach: the per-job store data and the host
//! side of the `helix:build` imports.
//!
//! A fresh [`JobHost`] is made for every job. By construction it grants
//! nothing but: the job workspace as the only preopened directory, no
//! environment, no arguments, no sockets or name lookups, no stdin, and
//! stdout/stderr copied into the job log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{command_runner, helix, job_context};
use super::output::PluginOutput;
use crate::cancel::CancelSignal;
use crate::log::JobLog;

/// Where the job workspace appears inside the guest.
pub(crate) const GUEST_WORKSPACE: &str = "/workspace";

/// Store data for one job's builder instance.
pub(crate) struct JobHost {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryLimit,
    builder: Arc<str>,
    log: Arc<JobLog>,
    cancel: CancelSignal,
    settings: Arc<BTreeMap<String, String>>,
    pub(crate) stdout: PluginOutput,
    pub(crate) stderr: PluginOutput,
}

/// Everything a job's builder instance is given.
pub(crate) struct JobHostParts<'a> {
    pub builder: Arc<str>,
    pub log: Arc<JobLog>,
    pub cancel: CancelSignal,
    pub settings: Arc<BTreeMap<String, String>>,
    /// `None` for calls outside a job (reading `info` at load time).
    pub workspace: Option<&'a Path>,
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
            wasi.preopened_dir(dir, GUEST_WORKSPACE, FsPerms::ReadWrite)
                .map_err(std::io::Error::other)?;
        }
        Ok(JobHost {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryLimit::new(parts.memory_limit),
            builder: parts.builder,
            log: parts.log,
            cancel: parts.cancel,
            settings: parts.settings,
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
        self.log.push(&line);
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
    /// No program grants exist for builders yet, so every call is refused,
    /// logged, and reported to the builder as `denied`.
    async fn run(
        &mut self,
        cmd: command_runner::Command,
    ) -> Result<command_runner::Output, command_runner::RunError> {
        let reason = format!(
            "builder '{}' is not granted any programs; refused to run `{}`",
            self.builder, cmd.program
        );
        self.log.push(&format!("[helix] denied: {reason}"));
        Err(command_runner::RunError::Denied(reason))
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
