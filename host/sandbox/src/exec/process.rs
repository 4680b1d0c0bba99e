//! One program run in its own process group: live output into the job
//! log, and the whole group killed on cancel, timeout or drop.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{CommandOutput, OUTPUT_TAIL_BYTES, RunError};
use crate::cancel::CancelSignal;
use crate::cgroup::RunCgroup;
use crate::jail::Jail;
use helix_core::log::{JobLog, human_bytes};

/// Between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Longest line read at once; a longer one is logged in pieces.
const MAX_LINE: u64 = 8 * 1024;

pub(super) struct Invocation<'a> {
    pub program: &'a Path,
    /// How the log names the program.
    pub label: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub timeout: Option<Duration>,
    pub log: &'a JobLog,
    pub cancel: &'a CancelSignal,
    /// Where the program starts, so it and all it starts stay accounted
    /// and limited with the job run, and are found after a crash.
    pub cgroup: Option<&'a RunCgroup>,
    /// The run's jail, where the program runs instead of on the host.
    pub jail: Option<&'a Jail>,
}

/// `program args` in `cwd`, with `env` and nothing else of an
/// environment, in its own process group, started inside `cgroup` and
/// `jail` when given.
pub(crate) fn confined(
    program: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    cgroup: Option<&RunCgroup>,
    jail: Option<&Jail>,
) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .process_group(0);
    let fds = cgroup.map(RunCgroup::enter_fds).unwrap_or_default();
    let entry = jail.map(|jail| {
        command.env("TMPDIR", crate::jail::TMPDIR);
        command.envs(jail.env().iter().copied());
        jail.entry(cwd)
    });
    if !fds.is_empty() || entry.is_some() {
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe calls on what was made before the fork.
        unsafe {
            command.pre_exec(move || {
                crate::cgroup::enter(&fds)?;
                match &entry {
                    Some(entry) => entry.enter(),
                    None => Ok(()),
                }
            });
        }
    }
    command
}

pub(super) async fn run(inv: Invocation<'_>) -> Result<CommandOutput, RunError> {
    let mut command = confined(
        inv.program,
        inv.args,
        inv.env,
        inv.cwd,
        inv.cgroup,
        inv.jail,
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| match e.kind() {
        // A jail shows the host's /usr, not the rest of its programs.
        std::io::ErrorKind::NotFound if inv.jail.is_some() => RunError::NotFound(format!(
            "`{}`: {e} in the jail, which shows the host's programs in /usr only",
            inv.label
        )),
        std::io::ErrorKind::NotFound => RunError::NotFound(format!("`{}`: {e}", inv.label)),
        _ => RunError::FailedToStart(format!("`{}`: {e}", inv.label)),
    })?;
    let Some(pid) = child.id() else {
        return Err(RunError::FailedToStart(format!(
            "`{}` exited before it could be tracked",
            inv.label
        )));
    };
    let mut group = ProcessGroup::new(pid);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let ended = async {
        let waited = tokio::select! {
            status = child.wait() => status.map_err(|e| RunError::FailedToStart(format!("`{}`: {e}", inv.label))),
            _ = inv.cancel.cancelled() => Err(RunError::Cancelled),
            _ = sleep_or_never(inv.timeout) => Err(RunError::TimedOut),
        };
        match waited {
            Ok(status) => {
                // The leader is done; nothing it started may outlive it.
                group.kill_stragglers();
                Ok(status)
            }
            Err(e) => {
                inv.log
                    .push(&format!("[helix] stopping `{}`: {e}", inv.label));
                group.terminate(&mut child).await;
                Err(e)
            }
        }
    };
    let stdout_label = format!("[{} stdout]", inv.label);
    let stderr_label = format!("[{} stderr]", inv.label);
    let budget = StepBudget::new(inv.label, inv.log.output_caps().step_bytes);
    let (ended, stdout, stderr) = tokio::join!(
        ended,
        stream_lines(stdout, inv.log, &stdout_label, &budget, true),
        stream_lines(stderr, inv.log, &stderr_label, &budget, false),
    );
    let status = ended?;
    Ok(CommandOutput {
        exit_code: exit_code(status),
        stdout,
        stderr,
    })
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn sleep_or_never(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// What one program run may still log, shared by its two streams.
struct StepBudget<'a> {
    program: &'a str,
    cap: usize,
    used: AtomicUsize,
    clipped: AtomicBool,
}

impl<'a> StepBudget<'a> {
    fn new(program: &'a str, cap: usize) -> Self {
        StepBudget {
            program,
            cap,
            used: AtomicUsize::new(0),
            clipped: AtomicBool::new(false),
        }
    }

    /// Logs `line` (`len` bytes read) while the run is within its cap;
    /// the first line past it is replaced by a marker, later ones dropped.
    fn log(&self, log: &JobLog, len: usize, line: impl FnOnce() -> String) {
        let used = self.used.fetch_add(len, Ordering::Relaxed) + len;
        if used <= self.cap {
            log.push_output(&line());
        } else if !self.clipped.swap(true, Ordering::Relaxed) {
            log.push(&format!(
                "[helix] output of `{}` clipped: it printed more than {} (log_step_cap_bytes); the rest is not logged",
                self.program,
                human_bytes(self.cap)
            ));
        }
    }
}

/// Copies `pipe` into the log line by line as lines arrive, within
/// `budget`; returns the last [`OUTPUT_TAIL_BYTES`] of it. Everything is
/// read, so the program never blocks on a full pipe, but no more than a
/// line and the tail is ever held.
async fn stream_lines(
    pipe: impl AsyncRead + Unpin,
    log: &JobLog,
    label: &str,
    budget: &StepBudget<'_>,
    count_steps: bool,
) -> String {
    let mut reader = BufReader::new(pipe);
    let mut tail = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                let text = String::from_utf8_lossy(&line);
                if count_steps {
                    log.count_step(text.trim_end());
                }
                tail.push_str(&text);
                budget.log(log, read, || {
                    format!("{label} {}", text.trim_end_matches(['\n', '\r']))
                });
            }
        }
        if tail.len() > 2 * OUTPUT_TAIL_BYTES {
            keep_tail(&mut tail);
        }
    }
    keep_tail(&mut tail);
    tail
}

fn keep_tail(text: &mut String) {
    if text.len() <= OUTPUT_TAIL_BYTES {
        return;
    }
    let mut start = text.len() - OUTPUT_TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.drain(..start);
}

/// A process group led by a program we started. Until it is settled —
/// terminated, or its leftovers killed after the leader exited — dropping
/// it (because the builder's call was abandoned) sends SIGTERM at once and
/// SIGKILL after [`KILL_GRACE`].
struct ProcessGroup {
    pgid: libc::pid_t,
    settled: bool,
}

impl ProcessGroup {
    fn new(pid: u32) -> Self {
        ProcessGroup {
            pgid: pid as libc::pid_t,
            settled: false,
        }
    }

    fn signal(pgid: libc::pid_t, signal: libc::c_int) {
        // SAFETY: killpg has no memory-safety preconditions; a group that
        // is already gone gives ESRCH, which is what we want.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }

    fn kill_stragglers(&mut self) {
        Self::signal(self.pgid, libc::SIGKILL);
        self.settled = true;
    }

    async fn terminate(&mut self, child: &mut Child) {
        Self::signal(self.pgid, libc::SIGTERM);
        let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
        Self::signal(self.pgid, libc::SIGKILL);
        let _ = child.wait().await;
        self.settled = true;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let pgid = self.pgid;
        Self::signal(pgid, libc::SIGTERM);
        // Drop cannot wait; a thread gives the group its grace period.
        let _ = std::thread::Builder::new()
            .name("helix-reaper".into())
            .spawn(move || {
                std::thread::sleep(KILL_GRACE);
                Self::signal(pgid, libc::SIGKILL);
            });
    }
}
