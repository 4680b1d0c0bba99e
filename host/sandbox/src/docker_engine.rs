//! The Docker Engine a builder builds in (the `buildkit` builder): where
//! the host points `docker`, what each job's images are called there, and
//! removing them when the job ends.
//!
//! The host speaks the engine's API over its socket itself (tag, push,
//! remove): a `docker` client costs a start of its own per call.
//!
//! The engine is the operator's (or one the host runs, see
//! [`crate::managed_engine`]), reached only through its unix socket,
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

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::OnceCell;

use helix_core::platform::Platform;

/// The Docker client run when the config names none.
pub const DEFAULT_ENGINE_CLIENT: &str = "docker";

/// How long the host's own requests to the engine (inspect, tag, remove)
/// may take.
const QUICK: Duration = Duration::from_secs(60);

/// Why the host could not use a Docker Engine, or what the engine refused.
#[derive(Debug, thiserror::Error)]
pub enum DockerEngineError {
    #[error(
        "{0:?} must be the engine's unix socket, unix:///absolute/path \
         (an engine reached over TCP is not supported)"
    )]
    NotAUnixSocket(String),
    #[error("cannot run docker: {0}; install the Docker client (docker.io)")]
    NoClient(#[source] std::io::Error),
    /// `docker version` got no answer from the engine in time.
    #[error("the Docker Engine at {socket} does not answer")]
    Silent { socket: String },
    /// `docker version` failed; `said` is the client's error.
    #[error(
        "the Docker Engine at {socket} does not answer: {said}; start it, or fix the builder's `engine`"
    )]
    Down { socket: String, said: String },
    #[error("cannot write the Docker client settings in {}: {source}", dir.display())]
    Settings {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The engine's API socket could not be spoken to.
    #[error("the Docker Engine at {socket} does not answer: {source}")]
    Unreachable {
        socket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("bad engine request {path}: {source}")]
    Request {
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("the Docker Engine at {socket} took longer than {secs}s")]
    TookTooLong { socket: String, secs: u64 },
    /// What the engine answered instead of doing it.
    #[error("{0}")]
    Refused(String),
    #[error("the engine's answer is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the engine pushed no manifest")]
    NoManifest,
}

/// One Docker Engine and the client settings the host uses with it.
#[derive(Debug)]
pub struct DockerEngine {
    /// `unix:///path/to/docker.sock`.
    socket: String,
    /// The `docker` program: a name on PATH or an absolute path.
    client: String,
    /// `DOCKER_CONFIG` for every `docker` the host runs against it, so
    /// none reads the credentials of the host's user. It holds none: a
    /// run's `docker` gets a directory with its job's own credentials
    /// (they differ from project to project), and the host's pushes name
    /// theirs in each request.
    config_dir: PathBuf,
    ready: OnceCell<()>,
}

impl DockerEngine {
    /// The engine at `socket` (`unix:///absolute/path`, checked by the
    /// config), with the client's settings kept in `config_dir`.
    pub fn new(socket: String, client: String, config_dir: PathBuf) -> Self {
        DockerEngine {
            socket,
            client,
            config_dir,
            ready: OnceCell::new(),
        }
    }

    /// Whether `socket` names an engine the host can use: a unix socket at
    /// an absolute path. TCP is refused: anyone who reaches an engine's
    /// TCP port is root on its host.
    pub fn check_socket(socket: &str) -> Result<(), DockerEngineError> {
        match socket.strip_prefix("unix://") {
            Some(path) if Path::new(path).is_absolute() && !path.contains("..") => Ok(()),
            _ => Err(DockerEngineError::NotAUnixSocket(socket.to_string())),
        }
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// What a run's jail must show for `docker` to reach the engine: its
    /// socket and the client settings' directory, made now (the jail shows
    /// what is there when it is made; the settings are written later).
    pub fn jail_paths(&self) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(&self.config_dir)?;
        let socket = self.socket.trim_start_matches("unix://");
        Ok(vec![PathBuf::from(socket), self.config_dir.clone()])
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
    pub async fn prepare(&self) -> Result<(), DockerEngineError> {
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
                    .map_err(|_| DockerEngineError::Silent {
                        socket: self.socket.clone(),
                    })?
                    .map_err(DockerEngineError::NoClient)?;
                if !output.status.success() {
                    return Err(DockerEngineError::Down {
                        socket: self.socket.clone(),
                        said: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                    });
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// `config.json` without credentials, written whole under a temporary
    /// name and readable by root alone.
    fn write_config(&self) -> Result<(), DockerEngineError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let failed = |source| DockerEngineError::Settings {
            dir: self.config_dir.clone(),
            source,
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
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{}"))
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

    /// The platform (`os/arch[/variant]`) of image `name` in the engine;
    /// `None` when it has no such image.
    pub async fn platform_of(&self, name: &str) -> Result<Option<String>, DockerEngineError> {
        let (status, body) = self
            .api(Method::GET, &format!("/images/{name}/json"), None, QUICK)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let image = json_ok(status, &body)?;
        let part = |key: &str| image[key].as_str().unwrap_or_default().to_string();
        let mut platform = format!("{}/{}", part("Os"), part("Architecture"));
        if !part("Variant").is_empty() {
            platform = format!("{platform}/{}", part("Variant"));
        }
        Ok(Some(platform))
    }

    /// Names image `source` also `repository:tag`.
    pub async fn tag(
        &self,
        source: &str,
        repository: &str,
        tag: &str,
    ) -> Result<(), DockerEngineError> {
        let path = format!(
            "/images/{source}/tag?repo={}&tag={}",
            query_value(repository),
            query_value(tag)
        );
        let (status, body) = self.api(Method::POST, &path, None, QUICK).await?;
        json_ok(status, &body).map(|_| ())
    }

    /// Pushes `repository:tag` with `credentials` (user, password) for its
    /// registry: the digest and size of the manifest the registry now
    /// holds, or what the engine said went wrong.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<(String, u64), DockerEngineError> {
        use base64::Engine as _;
        let registry = helix_core::reference::registry_of(repository);
        let auth = match credentials {
            Some((username, password)) => serde_json::json!({
                "username": username,
                "password": password,
                "serveraddress": registry,
            }),
            None => serde_json::json!({}),
        };
        let auth = base64::engine::general_purpose::URL_SAFE.encode(auth.to_string());
        let path = format!("/images/{repository}/push?tag={}", query_value(tag));
        let (status, body) = self.api(Method::POST, &path, Some(auth), timeout).await?;
        if status != StatusCode::OK {
            return Err(engine_error(status, &body));
        }
        // A stream of JSON messages: progress, then the pushed manifest
        // (`aux`), or an `error`.
        let mut pushed = None;
        for message in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
            let message = message.map_err(DockerEngineError::NotJson)?;
            if let Some(error) = message["error"].as_str() {
                return Err(DockerEngineError::Refused(error.to_string()));
            }
            let aux = &message["aux"];
            if let (Some(digest), Some(size)) = (aux["Digest"].as_str(), aux["Size"].as_u64()) {
                pushed = Some((digest.to_string(), size));
            }
        }
        pushed.ok_or(DockerEngineError::NoManifest)
    }

    /// Removes the name `image` (the image goes with its last name).
    pub async fn remove(&self, image: &str) -> Result<(), DockerEngineError> {
        let (status, body) = self
            .api(Method::DELETE, &format!("/images/{image}"), None, QUICK)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(()),
            _ => json_ok(status, &body).map(|_| ()),
        }
    }

    /// Removes every image called `name` from the engine (BuildKit keeps
    /// its layer cache apart, so later builds still reuse the layers).
    /// Failures are logged: a leftover image wastes space but harms no job.
    pub async fn remove_images(&self, name: &str) {
        let filters = serde_json::json!({ "reference": [name] }).to_string();
        let path = format!("/images/json?filters={}", query_value(&filters));
        let images = match self.api(Method::GET, &path, None, QUICK).await {
            Ok((status, body)) => json_ok(status, &body),
            Err(e) => Err(e),
        };
        let images = match images {
            Ok(images) => images,
            Err(e) => {
                tracing::warn!(
                    "could not list {name} in the engine at {}: {e}",
                    self.socket
                );
                return;
            }
        };
        let tags = images
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|image| image["RepoTags"].as_array().cloned().unwrap_or_default());
        for tag in tags.filter_map(|t| t.as_str().map(String::from)) {
            if let Err(e) = self.remove(&tag).await {
                tracing::warn!(
                    "could not remove {tag} from the engine at {}: {e}",
                    self.socket
                );
            }
        }
    }

    /// Whether the engine answers its API's ping.
    pub async fn ping(&self) -> bool {
        let answered = self
            .api(Method::GET, "/_ping", None, Duration::from_secs(2))
            .await;
        answered.is_ok_and(|(status, _)| status.is_success())
    }

    /// One request to the engine's API over its socket: the status and
    /// the whole body. Dropping the future closes the connection, which
    /// stops what the engine was doing for it (a push, say).
    async fn api(
        &self,
        method: Method,
        path: &str,
        registry_auth: Option<String>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), DockerEngineError> {
        let socket = self.socket.trim_start_matches("unix://");
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| DockerEngineError::Unreachable {
                socket: self.socket.clone(),
                source,
            };
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| unreachable(e.into()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(e.into()))?;
            let connection = AbortOnDrop(tokio::spawn(connection));
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, "docker");
            if let Some(auth) = registry_auth {
                request = request.header("X-Registry-Auth", auth);
            }
            let request = request.body(Empty::<Bytes>::new()).map_err(|source| {
                DockerEngineError::Request {
                    path: path.to_string(),
                    source,
                }
            })?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.into()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.into()))?
                .to_bytes();
            drop(connection);
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            DockerEngineError::TookTooLong {
                socket: self.socket.clone(),
                secs: timeout.as_secs(),
            }
        })?
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The JSON body of a successful answer, or the engine's message.
fn json_ok(status: StatusCode, body: &[u8]) -> Result<Value, DockerEngineError> {
    if !status.is_success() {
        return Err(engine_error(status, body));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(DockerEngineError::NotJson)
}

/// What the engine said went wrong (`{"message": …}`), else its status.
fn engine_error(status: StatusCode, body: &[u8]) -> DockerEngineError {
    DockerEngineError::Refused(
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or_else(|| format!("the engine answered {status}")),
    )
}

/// `value` percent-encoded for a query string.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
