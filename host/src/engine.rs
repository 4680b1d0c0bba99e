//! The Docker Engine a builder builds in (the `buildkit` builder): where
//! the host points `docker`, what each job's images are called there, and
//! removing them when the job ends.
//!
//! The engine is the operator's, reached only through its unix socket,
//! which the host sets (`DOCKER_HOST`) for every program of the builder's
//! jobs: neither a builder nor its grants choose it. Its `RUN` steps run in
//! BuildKit's containers, with no network (the only `network` an engine
//! builder takes), and in the engine's own control groups: dockerd 20.10
//! ignores `--cgroup-parent` for BuildKit, so the job's build limits reach
//! the `docker` client but not its steps. BuildKit's layer cache is the
//! engine's, shared by every job built in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::cancel::CancelSignal;
use crate::exec::HostCommand;
use crate::log::JobLog;
use crate::platform::Platform;

/// The Docker client run when the config names none.
pub const DEFAULT_ENGINE_CLIENT: &str = "docker";

/// How long the host's own `docker` calls (tag, inspect, remove) may take.
const QUICK: Duration = Duration::from_secs(60);

/// One Docker Engine and the client settings the host uses with it.
#[derive(Debug)]
pub struct DockerEngine {
    /// `unix:///path/to/docker.sock`.
    socket: String,
    /// The `docker` program: a name on PATH or an absolute path.
    client: String,
    /// `DOCKER_CONFIG` for every `docker` run against it: `config.json`
    /// holds the registry credentials, so builds pull private base images
    /// and the host pushes, with no file a builder can read.
    config_dir: PathBuf,
    /// The credentials to copy into it.
    auth_file: Option<PathBuf>,
    ready: OnceCell<()>,
}

impl DockerEngine {
    /// The engine at `socket` (`unix:///absolute/path`, checked by the
    /// config), with the client's settings kept in `config_dir`.
    pub fn new(
        socket: String,
        client: String,
        config_dir: PathBuf,
        auth_file: Option<PathBuf>,
    ) -> Self {
        DockerEngine {
            socket,
            client,
            config_dir,
            auth_file,
            ready: OnceCell::new(),
        }
    }

    /// Whether `socket` names an engine the host can use: a unix socket at
    /// an absolute path. TCP is refused: anyone who reaches an engine's
    /// TCP port is root on its host.
    pub fn check_socket(socket: &str) -> Result<(), String> {
        match socket.strip_prefix("unix://") {
            Some(path) if Path::new(path).is_absolute() && !path.contains("..") => Ok(()),
            _ => Err(format!(
                "{socket:?} must be the engine's unix socket, unix:///absolute/path \
                 (an engine reached over TCP is not supported)"
            )),
        }
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The variables every `docker` run against the engine gets: the
    /// engine, BuildKit, and the client settings.
    pub fn env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("DOCKER_HOST".to_string(), self.socket.clone()),
            ("DOCKER_BUILDKIT".to_string(), "1".to_string()),
            (
                "DOCKER_CONFIG".to_string(),
                self.config_dir.display().to_string(),
            ),
        ])
    }

    /// Writes the client settings and makes sure the engine answers, once;
    /// the error says what to fix.
    pub async fn prepare(&self) -> Result<(), String> {
        self.ready
            .get_or_try_init(|| async {
                self.write_config()?;
                let output = tokio::process::Command::new(&self.client)
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .env_clear()
                    .envs(self.env())
                    .kill_on_drop(true)
                    .output();
                let output = tokio::time::timeout(QUICK, output)
                    .await
                    .map_err(|_| format!("the Docker Engine at {} does not answer", self.socket))?
                    .map_err(|e| {
                        format!("cannot run docker: {e}; install the Docker client (docker.io)")
                    })?;
                if !output.status.success() {
                    return Err(format!(
                        "the Docker Engine at {} does not answer: {}; start it, or fix the builder's `engine`",
                        self.socket,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// `config.json` with the host's registry credentials (a containers
    /// auth file has the same `auths`), written whole under a temporary
    /// name and readable by root alone.
    fn write_config(&self) -> Result<(), String> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let failed = |e: std::io::Error| {
            format!(
                "cannot write the Docker client settings in {}: {e}",
                self.config_dir.display()
            )
        };
        let auths = match &self.auth_file {
            Some(file) => std::fs::read(file).map_err(failed)?,
            None => b"{}".to_vec(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.config_dir)
            .map_err(failed)?;
        let partial = self.config_dir.join("config.json.partial");
        let _ = std::fs::remove_file(&partial);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &auths))
            .and_then(|()| std::fs::rename(&partial, self.config_dir.join("config.json")))
            .map_err(failed)
    }

    /// What the images of job run `run` are called in the engine: one name
    /// per run, tagged per platform by the builder ([`platform_tag`]). A
    /// domain of its own, so no `docker push` can take it anywhere.
    pub fn image_name(run: &str) -> String {
        use sha2::Digest as _;
        let hash = hex::encode(sha2::Sha256::digest(run.as_bytes()));
        format!("helix.local/job-{}", &hash[..16])
    }

    /// Runs `docker args…` against the engine as the host.
    pub async fn docker(
        &self,
        args: &[String],
        timeout: Duration,
        log: &JobLog,
        cancel: &CancelSignal,
        cwd: &Path,
    ) -> Result<crate::exec::CommandOutput, crate::exec::RunError> {
        HostCommand {
            program: &self.client,
            args,
            env: &self.env(),
            cwd,
            timeout: Some(timeout),
            log,
            cancel,
            cgroup: None,
        }
        .run()
        .await
    }

    /// Removes every image called `name` from the engine (BuildKit keeps
    /// its layer cache apart, so later builds still reuse the layers).
    /// Failures are logged: a leftover image wastes space but harms no job.
    pub async fn remove_images(&self, name: &str, log: &JobLog, cwd: &Path) {
        // The job may have been cancelled: the cleanup runs regardless.
        let cancel = CancelSignal::default();
        let list = [
            "image",
            "ls",
            "--filter",
            &format!("reference={name}"),
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]
        .map(String::from);
        let images = match self.docker(&list, QUICK, log, &cancel, cwd).await {
            Ok(output) if output.exit_code == 0 => output.stdout,
            Ok(output) => {
                tracing::warn!(
                    "could not list {name} in the engine: {}",
                    output.error_line()
                );
                return;
            }
            Err(e) => {
                tracing::warn!("could not list {name} in the engine: {e}");
                return;
            }
        };
        let mut remove = vec!["image".to_string(), "rm".to_string()];
        remove.extend(images.lines().filter(|l| !l.is_empty()).map(String::from));
        if remove.len() == 2 {
            return;
        }
        match self.docker(&remove, QUICK, log, &cancel, cwd).await {
            Ok(output) if output.exit_code == 0 => {}
            Ok(output) => tracing::warn!("could not remove {name}: {}", output.error_line()),
            Err(e) => tracing::warn!("could not remove {name}: {e}"),
        }
    }
}

/// The tag a BuildKit builder gives `platform`'s image (`linux-arm64`,
/// `linux-arm-v7`), as `helix-builder-kit` does.
pub fn platform_tag(platform: &Platform) -> String {
    platform.to_string().replace('/', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_unix_socket_at_an_absolute_path_is_an_engine() {
        assert!(DockerEngine::check_socket("unix:///run/docker.sock").is_ok());
        for bad in [
            "tcp://127.0.0.1:2375",
            "unix://run/docker.sock",
            "/run/docker.sock",
            "unix:///run/../etc/x",
        ] {
            assert!(DockerEngine::check_socket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_run_gets_its_own_name_in_a_domain_nothing_is_pushed_to() {
        let a = DockerEngine::image_name("job-1-1");
        assert!(a.starts_with("helix.local/job-"), "{a}");
        assert_eq!(a, DockerEngine::image_name("job-1-1"));
        assert_ne!(a, DockerEngine::image_name("job-1-2"));
        assert_ne!(a, DockerEngine::image_name("JOB-1-1"));
    }
}
