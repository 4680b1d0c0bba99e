//! The configuration file: one TOML document, every field defaulted, unknown
//! fields refused by name. The sections with rules of their own (builders,
//! registries, the store, projects) are checked in their modules.

mod builders;
mod oidc;
mod projects;
mod registry;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hooks::{HookConfig, HookRule, Webhooks};
use crate::jail::IdRange;
use crate::log::OutputCaps;
use crate::notify::{Notifications, NotifyTarget};
use crate::provenance::dsse::SigningKey;
use crate::reuse::ReuseKey;
use crate::secrets::{BuildSecrets, SecretSource};
use crate::service::Retention;

pub use builders::{BuilderConfig, host_settings};
pub use oidc::{IssuerConfig, OidcConfig, OidcRuleConfig};
pub use projects::{ProjectConfig, TokenConfig};
pub use registry::RegistryConfig;
pub use store::StoreLocation;

/// The whole configuration. `Config::default()` is what `helix-build serve`
/// runs with when no file is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on; loopback unless the operator says
    /// otherwise.
    pub listen: SocketAddr,
    /// The admin token (scope `admin`: every project, reloading
    /// builders). When it or any project is set, every `/v1` request needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Projects by name: their tokens and the secrets their jobs may use
    /// (see [`ProjectConfig`]).
    pub projects: BTreeMap<String, ProjectConfig>,
    /// OIDC token exchange: the CI systems whose ID tokens become
    /// short-lived project tokens (`POST /v1/tokens/oidc`); none when
    /// absent.
    pub oidc: Option<OidcConfig>,
    /// Serve HTTPS with this certificate chain (PEM), with `tls_key`;
    /// both are read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Seconds a connection gets to deliver a request's headers, counted
    /// from when the server starts waiting for them: on a new connection,
    /// or after the previous answer on a kept-alive one, so it is the idle
    /// keep-alive timeout too. Past it the connection is closed (a client
    /// trickling its headers holds no connection for longer).
    pub request_header_timeout_secs: u64,
    /// Where compiled components, job workspaces and the store live.
    pub data_dir: PathBuf,
    /// Compiled-component cache; `<data_dir>/compiled` when absent. Safe to
    /// share between hosts and data dirs: entries are keyed by content and
    /// engine, and written atomically.
    pub cache_dir: Option<PathBuf>,
    /// Jobs run at the same time.
    pub workers: usize,
    /// Queued jobs accepted before submissions are refused.
    pub queue_capacity: usize,
    /// Builder used when a job names none. When absent: `podman`, else
    /// `buildah`, whichever can run here (its program installed, and the
    /// server has control groups); `simulated` only when none can.
    pub default_builder: Option<String>,
    /// Whether jobs may use `file://` repository URLs.
    pub allow_file_repos: bool,
    /// Log lines kept per job; older lines are dropped with a marker.
    pub log_cap_lines: usize,
    /// Bytes of output (builder and program lines) kept per job; past it,
    /// output is dropped where it is read, with a marker.
    pub log_cap_bytes: usize,
    /// Bytes of output kept per program run (a whole `podman build`).
    pub log_step_cap_bytes: usize,
    /// On shutdown, how long running jobs get to finish before they are
    /// cancelled.
    pub stop_grace_secs: u64,
    /// Keep the workspace of a job that did not succeed, for debugging
    /// (it is removed otherwise).
    pub keep_failed_workspaces: bool,
    /// Seconds a job may wait in the queue before it ends `expired`,
    /// unless it sets its own `queue_ttl_secs`; 0: no limit.
    pub queue_ttl_secs: u64,
    /// Incoming git webhooks: each forge's secret (`github`, `gitea` or
    /// `forgejo`, `gitlab`); a forge without one has no hook here.
    pub webhooks: BTreeMap<String, SecretSource>,
    /// What a webhook's push builds: the first rule that matches.
    pub webhook_rules: Vec<HookRule>,
    /// Where each job's end is POSTed, signed (see [`crate::notify`]).
    /// Hosts sharing a database should list the same ones: any of them
    /// may send a notification owed for a job another ran.
    pub notifications: Vec<NotifyTarget>,
    /// Days an ended job (and its log) is kept; 0: for ever.
    pub retention_days: u64,
    /// Ended jobs kept at most, the newest; 0: no limit.
    pub retention_jobs: u64,
    /// Sign and attach SLSA provenance to every image a real builder
    /// builds (see [`crate::provenance`]).
    pub provenance: bool,
    /// The Ed25519 private key (PKCS#8 PEM) that signs provenance;
    /// `<data_dir>/provenance.key` when absent, made on first start with
    /// its public key beside it (`.pub`).
    pub provenance_key: Option<PathBuf>,
    /// Give a job the image of an earlier successful job of its project
    /// whose build inputs were the same, instead of building (see
    /// [`crate::reuse`]); a job's `no_cache` opts out. The secrets'
    /// digests are keyed by `<data_dir>/reuse.key`, made on first start.
    pub reuse_builds: bool,
    /// Where jobs are stored: `sqlite://PATH` (`<data_dir>/helix.db` when
    /// absent), or `postgres://user:password@host:port/db` for a database
    /// and queue several hosts share.
    pub store_url: Option<String>,
    /// This host's name in a shared queue's leases; the machine's host
    /// name when absent. Hosts sharing a database need different names; a
    /// host restarting under the same name takes its leftover runs back
    /// at once instead of waiting for their leases to run out.
    pub host_id: Option<String>,
    /// With a shared queue: how long a running job stays this host's
    /// without a heartbeat (renewed every third of it). After a host dies
    /// its jobs run again elsewhere within about this long.
    pub lease_secs: u64,
    /// Runs a job may start: a job that was running when the host died is
    /// queued again while it has attempts left, else failed "interrupted".
    pub max_attempts: u32,
    /// Registry images go to when a job names no `image`
    /// (`host[:port][/namespace]`).
    pub default_registry: Option<String>,
    /// Per-registry settings, by `host[:port]`.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Registry credentials: a containers auth file (`auth.json`, as
    /// `podman login --authfile` writes). Only the host's own push and
    /// registry check use it; no builder and no granted program gets it.
    pub registry_auth_file: Option<PathBuf>,
    /// Builders by the name jobs use. Every built-in builder is available
    /// unless an entry of that name replaces it.
    pub builders: BTreeMap<String, BuilderConfig>,
    /// Disk the layer cache of one builder may use, in MiB, over all its
    /// slots (one per worker); a slot past its share is emptied after its
    /// job.
    pub build_cache_mib: u64,
    /// The host ids (`"FIRST:COUNT"`) a run's jail maps its users to:
    /// root in the jail, and in the build steps, is host user FIRST.
    /// Shared by every run (the cache slots' layers stay owned by it).
    pub jail_uid_range: IdRange,
    /// Build secrets by the name jobs use (`RUN --mount=type=secret,id=NAME`),
    /// each read from the server's environment or a file when it starts.
    pub secrets: BTreeMap<String, SecretSource>,
    /// The file this config was read from, read again when builders are
    /// reloaded; `None` for a config made in memory.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

const MAX_WORKERS: usize = 256;
/// A hundred years: longer is "for ever", which 0 says.
const MAX_RETENTION_DAYS: u64 = 36_500;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            projects: BTreeMap::new(),
            oidc: None,
            tls_cert: None,
            tls_key: None,
            // hyper's own default, and under nginx's 60 s.
            request_header_timeout_secs: 30,
            data_dir: default_data_dir(),
            cache_dir: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 1000,
            default_builder: None,
            allow_file_repos: false,
            log_cap_lines: 10_000,
            log_cap_bytes: OutputCaps::default().job_bytes,
            log_step_cap_bytes: OutputCaps::default().step_bytes,
            stop_grace_secs: 30,
            keep_failed_workspaces: false,
            // As a CI job waiting for a runner: a day.
            queue_ttl_secs: 24 * 3600,
            webhooks: BTreeMap::new(),
            webhook_rules: Vec::new(),
            notifications: Vec::new(),
            retention_days: 30,
            retention_jobs: 0,
            provenance: true,
            provenance_key: None,
            reuse_builds: true,
            store_url: None,
            host_id: None,
            lease_secs: 30,
            max_attempts: 2,
            default_registry: None,
            registries: BTreeMap::new(),
            registry_auth_file: None,
            secrets: BTreeMap::new(),
            file: None,
            build_cache_mib: 20 * 1024,
            jail_uid_range: IdRange::DEFAULT,
            builders: BTreeMap::new(),
        }
    }
}

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config {
            file: Some(path.to_path_buf()),
            ..config
        }
        .validated()
    }

    /// Checks values serde cannot: ranges, names, references between fields.
    pub fn validated(self) -> Result<Self, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return invalid(format!(
                "workers must be 1 to {MAX_WORKERS}, got {}",
                self.workers
            ));
        }
        if self.queue_capacity == 0 {
            return invalid("queue_capacity must be at least 1".into());
        }
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            return invalid("token must be at least 16 characters".into());
        }
        self.validate_queue()?;
        if self.log_cap_lines == 0 {
            return invalid("log_cap_lines must be at least 1".into());
        }
        if self.request_header_timeout_secs == 0 {
            return invalid("request_header_timeout_secs must be at least 1".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                if let Some(missing) = [cert, key].into_iter().find(|f| !f.is_file()) {
                    return invalid(format!(
                        "{} (tls_cert / tls_key) is not a readable file",
                        missing.display()
                    ));
                }
            }
            _ => return invalid("tls_cert and tls_key go together: give both, or neither".into()),
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            return invalid(format!(
                "retention_days must be at most {MAX_RETENTION_DAYS}; 0 keeps ended jobs for ever"
            ));
        }
        if self.log_cap_bytes < 1024 || self.log_step_cap_bytes < 1024 {
            return invalid("log_cap_bytes and log_step_cap_bytes must be at least 1024".into());
        }
        self.validate_builders()?;
        self.validate_registries()?;
        self.build_secrets()?;
        crate::hooks::check_forges("webhooks", &self.webhooks).map_err(ConfigError::Invalid)?;
        let defined = self.secrets.keys().map(String::as_str).collect();
        crate::hooks::check_rule_secrets(
            "webhook_rules",
            &self.webhook_rules,
            &defined,
            "[secrets] defines",
        )
        .map_err(ConfigError::Invalid)?;
        self.validate_projects()?;
        self.validate_oidc()?;
        if let Some(default) = &self.default_builder
            && !self.builder_configs().contains_key(default)
        {
            return match self.unavailable_builders().remove(default) {
                Some(reason) => invalid(format!("default_builder: {reason}")),
                None => invalid(format!(
                    "default_builder '{default}' is not a configured or built-in builder"
                )),
            };
        }
        Ok(self)
    }

    /// The webhook secrets, read now, and the rules.
    pub fn webhooks(&self) -> Result<Webhooks, ConfigError> {
        let server = HookConfig {
            secrets: &self.webhooks,
            rules: self.webhook_rules.clone(),
        };
        Webhooks::load(server, self.project_hooks(), |name| {
            std::env::var(name).ok()
        })
        .map_err(ConfigError::Invalid)
    }

    /// The notification targets, their secrets read now.
    pub fn notifications(&self) -> Result<Notifications, ConfigError> {
        Notifications::load(&self.notifications, |name| std::env::var(name).ok())
            .map_err(ConfigError::Invalid)
    }

    /// The build secrets, read from the server's environment and files.
    pub fn build_secrets(&self) -> Result<BuildSecrets, ConfigError> {
        BuildSecrets::load(&self.secrets, |name| std::env::var(name).ok())
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// How long, and how many, ended jobs are kept.
    pub fn retention(&self) -> Retention {
        Retention {
            max_age: (self.retention_days > 0).then(|| {
                chrono::Duration::days(self.retention_days.min(MAX_RETENTION_DAYS) as i64)
            }),
            keep: (self.retention_jobs > 0)
                .then(|| usize::try_from(self.retention_jobs).unwrap_or(usize::MAX)),
        }
    }

    /// How much output a job may log.
    pub fn output_caps(&self) -> OutputCaps {
        OutputCaps {
            step_bytes: self.log_step_cap_bytes,
            job_bytes: self.log_cap_bytes,
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("compiled"))
    }

    pub fn workspace_dir(&self) -> PathBuf {
        self.data_dir.join("workspaces")
    }

    /// The key of the secrets' digests in build inputs, when builds are
    /// reused: the data dir's, made now if it is missing.
    pub fn reuse_key(&self) -> Result<Option<ReuseKey>, ConfigError> {
        if !self.reuse_builds {
            return Ok(None);
        }
        let path = self.data_dir.join("reuse.key");
        ReuseKey::load_or_create(&path)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The key that signs provenance, when provenance is on: the
    /// configured one, else the data dir's, made now if it is missing.
    pub fn provenance_key(&self) -> Result<Option<SigningKey>, ConfigError> {
        if !self.provenance {
            return Ok(None);
        }
        if let Some(path) = &self.provenance_key {
            return SigningKey::load(path)
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("provenance_key: {e}")));
        }
        let path = self.data_dir.join("provenance.key");
        if !path.exists() {
            let key = SigningKey::generate().map_err(ConfigError::Invalid)?;
            std::fs::create_dir_all(&self.data_dir)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", self.data_dir.display())))?;
            key.write(&path, &path.with_extension("pub"))
                .map_err(ConfigError::Invalid)?;
            tracing::info!(
                "made a provenance signing key at {} (public key: {}); consumers verify images with the public key",
                path.display(),
                path.with_extension("pub").display()
            );
        }
        SigningKey::load(&path)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("provenance_key: {e}")))
    }
}

/// `$HELIX_DATA_DIR`, else `$XDG_DATA_HOME/helix-build`, else
/// `~/.local/share/helix-build`, else `./helix-data`.
fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HELIX_DATA_DIR") {
        return dir.into();
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("helix-build");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/helix-build");
    }
    PathBuf::from("helix-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validated().map_err(|e| e.to_string()))
    }

    /// The README's configuration example: every key in it is one the
    /// server knows, in the table it belongs to.
    #[test]
    fn the_readme_example_is_a_config() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let config = toml::from_str::<Config>(example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.log_cap_lines, 10_000);
        assert!(config.provenance);
        assert!(!config.registries["127.0.0.1:5000"].tls_verify);
        assert!(config.builders["buildkit"].engine.is_some());
        assert_eq!(config.projects["web"].tokens.len(), 2);
        assert_eq!(config.projects["web"].secrets, ["npm_token"]);
        assert_eq!(config.projects["web"].max_running, Some(4));
        assert_eq!(config.jail_uid_range, IdRange::DEFAULT);
    }

    /// A jail's range is unprivileged: above the host's own users, not
    /// reaching the kernel's "no id".
    #[test]
    fn a_jail_uid_range_is_above_the_host_users() {
        let range = parse("jail_uid_range = '200000:65536'")
            .unwrap()
            .jail_uid_range;
        assert_eq!((range.first, range.count), (200_000, 65536));
        for bad in [
            "0:65536",
            "1000:65536",
            "200000",
            "200000:0",
            "4294967000:65536",
        ] {
            let err = parse(&format!("jail_uid_range = '{bad}'")).unwrap_err();
            assert!(err.contains("is not an id range"), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        let config = parse("").unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.default_builder, None);
        assert!(config.builder_configs().contains_key("simulated"));
        assert!(!config.builder_configs().contains_key("buildkit"));
        assert!(!config.allow_file_repos);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = parse("wrokers = 3").unwrap_err();
        assert!(err.contains("wrokers"), "{err}");
        let err = parse("[builders.simulated]\nmemory = 3").unwrap_err();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, field) in [
            ("workers = 0", "workers"),
            ("queue_capacity = 0", "queue_capacity"),
            (
                "request_header_timeout_secs = 0",
                "request_header_timeout_secs",
            ),
            (
                "[builders.simulated]\nmemory_mib = 0",
                "builders.simulated.memory_mib",
            ),
            (
                "[builders.simulated]\ntimeout_secs = 0",
                "builders.simulated.timeout_secs",
            ),
            (
                "[builders.mine]\ntimeout_secs = 5",
                "builders.mine.component",
            ),
            ("[builders.Bad]\ncomponent = 'x.wasm'", "builders.Bad"),
            ("default_builder = 'nope'", "default_builder"),
            ("default_builder = 'buildkit'", "builders.buildkit.engine"),
            (
                "[builders.podman]\nregistry_cache = 'elsewhere.example/cache'",
                "registry elsewhere.example is not configured",
            ),
            (
                "default_registry = 'r.example/team'\n[builders.podman]\nregistry_cache = 'r.example/cache:latest'",
                "a repository without tag or digest",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(field), "{text}: {err}");
        }
    }
}
