//! A Docker Engine the host runs itself for a BuildKit builder
//! (`engine = "managed"`): one dockerd per cache slot, started when a job
//! first needs it, inside a jail of its own, and stopped with the slot's
//! server, after a job reached one of its limits, or once idle.
//!
//! - **Jail**: its data root inside the slot (within the slot's share of
//!   the cache size), its exec root and socket in a short directory under
//!   `/run/hxe`, nothing else of the host's files; a network namespace
//!   whose only way out is the configured registries' forwarders; no
//!   bridge, no iptables rules of its own; a user namespace, so the
//!   engine and its steps are host users of the jail's range.
//! - **Control group**: the engine, containerd and every BuildKit step are
//!   in the engine's group, which carries the builder's `build_memory_mib`,
//!   `build_pids` and `build_cpus`; in a cgroup namespace rooted there, so
//!   the groups BuildKit makes for its steps (`/docker/buildkit/<step>`)
//!   are below it. A slot runs one job at a time, so the limits are the
//!   job's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;

use crate::cgroup::{BuildLimits, Cgroups, LimitHit, RunCgroup};
use crate::docker_engine::DockerEngine;
use crate::jail::{IdRange, Jail, JailSpec};
use crate::network::BuildNetwork;

/// How long a starting engine may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping engine may take to stop its containers and exit
/// before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Where managed engines keep their exec roots and sockets: short, as unix
/// socket paths are limited to 108 bytes and containerd's lie below.
const EXEC_ROOTS: &str = "/run/hxe";

/// What every managed engine of a builder shares: the client the builder
/// and the host drive it with and its settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub client: String,
    /// `DOCKER_CONFIG` for every client the host runs against it.
    pub config_dir: PathBuf,
    /// How long an engine may sit without a job before it is stopped
    /// ([`ManagedEngine::idle_stop`]).
    pub idle_stop: Duration,
}

/// Why a managed engine did not start: the host's fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the managed engine: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the managed engine: its jail: {0}")]
    Jail(#[from] crate::jail::JailError),
    #[error(
        "cannot start the managed engine: dockerd is not installed on this host (install docker.io)"
    )]
    NoDockerd,
    #[error("the managed engine exited at start ({status}): {log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("the managed engine did not answer within {}s: {log}", START_TIMEOUT.as_secs())]
    Unanswered { log: String },
}

/// One running engine.
pub struct ManagedEngine {
    engine: Arc<DockerEngine>,
    child: tokio::process::Child,
    exec_root: PathBuf,
    idle_stop: Duration,
    // Dropped after the child: the group's leftovers are killed, then the
    // jail's network goes.
    cgroup: RunCgroup,
    _jail: Jail,
}

impl std::fmt::Debug for ManagedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedEngine")
            .field("socket", &self.engine.socket())
            .finish()
    }
}

impl ManagedEngine {
    /// Starts an engine keeping its data in `dir` (a cache slot), limited
    /// by `limits`, reaching `registries`, its root the host's `users`;
    /// its control group is `name`.
    pub async fn start(
        cgroups: &Cgroups,
        name: &str,
        dir: &Path,
        limits: &BuildLimits,
        registries: Vec<String>,
        users: IdRange,
        settings: &EngineSettings,
    ) -> Result<ManagedEngine, EngineError> {
        let setup = |what| move |source| EngineError::Setup { what, source };
        let cgroup = cgroups
            .create(name, limits)
            .map_err(setup("its control group"))?;
        let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
        let exec_root = Path::new(EXEC_ROOTS).join(&hex::encode(digest)[..12]);
        let _ = std::fs::remove_dir_all(&exec_root);
        let data_root = dir.join("engine");
        for made in [&exec_root, &data_root] {
            std::fs::create_dir_all(made).map_err(setup("its directories"))?;
        }
        let jail = Jail::create(JailSpec {
            writable: vec![data_root.clone(), exec_root.clone()],
            written_later: Vec::new(),
            readable: Vec::new(),
            scratch: data_root.join("tmp"),
            cache_mounts: None,
            blob_info_cache: None,
            files: data_root.join("jail"),
            network: BuildNetwork::None,
            registries,
            cgroup: Some(&cgroup),
            cgroup_namespace: true,
            users: Some(users),
        })
        .await?;
        let socket = exec_root.join("docker.sock");
        let args: Vec<String> = [
            format!("--data-root={}", data_root.join("data").display()),
            format!("--exec-root={}", exec_root.join("x").display()),
            format!("--pidfile={}", exec_root.join("dockerd.pid").display()),
            format!("--host=unix://{}", socket.display()),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--bridge=none".into(),
            "--exec-opt=native.cgroupdriver=cgroupfs".into(),
        ]
        .into();
        let log = std::fs::File::create(exec_root.join("dockerd.log")).map_err(setup("its log"))?;
        let dockerd = find_dockerd().ok_or(EngineError::NoDockerd)?;
        let path = BTreeMap::from([("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())]);
        let child = crate::exec::confined(
            &dockerd,
            &args,
            &path,
            &exec_root,
            Some(&cgroup),
            Some(&jail),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(setup("dockerd"))?;
        let engine = Arc::new(DockerEngine::new(
            format!("unix://{}", socket.display()),
            settings.client.clone(),
            settings.config_dir.clone(),
        ));
        let mut managed = ManagedEngine {
            engine,
            child,
            exec_root,
            idle_stop: settings.idle_stop,
            cgroup,
            _jail: jail,
        };
        managed.until_ready().await?;
        Ok(managed)
    }

    async fn until_ready(&mut self) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if self.engine.ping().await {
                return Ok(());
            }
            let log = || {
                let text =
                    std::fs::read_to_string(self.exec_root.join("dockerd.log")).unwrap_or_default();
                text.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EngineError::Exited { status, log: log() });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::Unanswered { log: log() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn engine(&self) -> &Arc<DockerEngine> {
        &self.engine
    }

    /// How long it may sit without a job before it is stopped.
    pub fn idle_stop(&self) -> Duration {
        self.idle_stop
    }

    /// Stops the engine as its operator would (SIGTERM: dockerd stops its
    /// containers and leaves its data consistent), killing it and what is
    /// left in its control group after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // To its process group: the child is the jail entry's waiter,
            // which leaves signals to dockerd, in the same group.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGTERM) };
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "the managed engine at {} did not stop within {}s: killed",
                    self.engine.socket(),
                    STOP_TIMEOUT.as_secs()
                );
            }
        }
        // The drop kills what is left, ends the jail and removes the
        // engine's directories.
        crate::jail::end_off_runtime(self, "a managed engine").await;
    }

    /// A limit the engine's processes reached since it started.
    pub fn limit_hit(&self) -> Option<LimitHit> {
        self.cgroup.limit_hit()
    }
}

impl Drop for ManagedEngine {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

fn find_dockerd() -> Option<PathBuf> {
    ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}
