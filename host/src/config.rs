//! The configuration file: one TOML document, every field defaulted, unknown
//! fields refused by name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::builtin;
use crate::cache::BuildCache;
use crate::cgroup::BuildLimits;
use crate::docker_engine::DockerEngine;
use crate::exec::{Grants, ValuePolicy};
use crate::hooks::{HookRule, Webhooks};
use crate::log::OutputCaps;
use crate::network::BuildNetwork;
use crate::notify::{Notifications, NotifyTarget};
use crate::plugin::{BuilderSource, Limits, Origin};
use crate::provenance::dsse::SigningKey;
use crate::registry::RegistrySettings;
use crate::secrets::{BuildSecrets, SecretSource};
use crate::service::Retention;

/// The whole configuration. `Config::default()` is what `helix-build serve`
/// runs with when no file is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on; loopback unless the operator says
    /// otherwise.
    pub listen: SocketAddr,
    /// When set, every `/v1` request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM), with `tls_key`;
    /// both are read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
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
    /// Builder used when a job names none.
    pub default_builder: String,
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
    /// Build secrets by the name jobs use (`RUN --mount=type=secret,id=NAME`),
    /// each read from the server's environment or a file when it starts.
    pub secrets: BTreeMap<String, SecretSource>,
    /// The file this config was read from, read again when builders are
    /// reloaded; `None` for a config made in memory.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Where jobs are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// One host's SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database several hosts share (its URL).
    Postgres(String),
}

/// How to talk to one registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `false` for a registry served over plain HTTP or with a certificate
    /// that cannot be verified.
    pub tls_verify: bool,
    /// Registries (`host[:port][/path]`) base images of this one are
    /// pulled from first, in order, falling back to this one.
    pub mirrors: Vec<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            tls_verify: true,
            mirrors: Vec::new(),
        }
    }
}

/// One builder's component, limits and settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuilderConfig {
    /// A `.wasm` component file; absent means the built-in builder of the
    /// same name.
    pub component: Option<PathBuf>,
    /// Largest linear memory the builder may use, in MiB.
    pub memory_mib: u64,
    /// Wall-clock limit on one job, in seconds.
    pub timeout_secs: u64,
    /// Values the builder reads through `job-context.setting`, on top of
    /// the one the host sets: `network` (the `--network` value for its
    /// build steps).
    pub settings: BTreeMap<String, String>,
    /// What the builder's build steps may reach: `none`, `private` (the
    /// world but no address of this host; the default) or `host`. A
    /// builder with an `engine` takes only `none`, its default.
    pub network: Option<BuildNetwork>,
    /// The Docker Engine the builder builds in (`unix:///path/to/docker.sock`),
    /// for the `buildkit` builder: the host points every `docker` of its
    /// jobs at it.
    pub engine: Option<String>,
    /// The Docker client run against `engine`, by the builder and the host:
    /// `docker` on PATH unless set. It must drive BuildKit itself
    /// (Debian's docker.io, `/usr/bin/docker`); a newer client wants the
    /// buildx plugin.
    pub engine_client: Option<String>,
    /// What the builder may run and see. Absent: a built-in builder's own
    /// defaults, nothing for any other.
    pub grants: Option<Grants>,
    /// Whether its jobs reuse layers from earlier jobs (see `build_cache_mib`);
    /// a job can still opt out with `no_cache`.
    pub cache: bool,
    /// A repository prefix in a configured registry (`host[:port]/path`)
    /// where its jobs' layers are also kept, so every host sharing the
    /// registry reuses them: each source repository gets its own
    /// repository under it, pushed to (`--cache-to`) and pulled from
    /// (`--cache-from`, not with `no_cache`) with the registry's settings.
    pub registry_cache: Option<String>,
    /// Memory a job's build may use, its tools and `RUN` steps together,
    /// in MiB; 0: unbounded.
    pub build_memory_mib: u64,
    /// CPUs' worth of time a job's build may use; 0: unbounded.
    pub build_cpus: f64,
    /// Processes (and threads) a job's build may have at once; 0:
    /// unbounded.
    pub build_pids: u64,
    /// Disk a job's workspace (and, with `no_cache` or `cache = false`,
    /// its container storage) may use, in MiB; 0: unbounded.
    pub build_disk_mib: u64,
}

const MAX_WORKERS: usize = 256;
/// A hundred years: longer is "for ever", which 0 says.
const MAX_RETENTION_DAYS: u64 = 36_500;
/// The setting through which a builder learns its `--network` value.
const NETWORK_SETTING: &str = "network";
/// The setting through which an engine builder learns its Docker client.
const ENGINE_CLIENT_SETTING: &str = "engine-client";
const MAX_MEMORY_MIB: u64 = 16 * 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tls_cert: None,
            tls_key: None,
            data_dir: default_data_dir(),
            cache_dir: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 1000,
            default_builder: "simulated".into(),
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
            builders: BTreeMap::new(),
        }
    }
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            component: None,
            memory_mib: 512,
            timeout_secs: 3600,
            settings: BTreeMap::new(),
            network: None,
            engine: None,
            engine_client: None,
            grants: None,
            cache: true,
            registry_cache: None,
            // What a CI job typically gets (GitLab's and GitHub's smallest
            // Linux runners have 4 to 8 GiB for everything).
            build_memory_mib: 4096,
            // Shared fairly by the kernel's scheduler unless set.
            build_cpus: 0.0,
            // podman's own default per container (containers.conf
            // pids_limit): room for parallel compilers, not a fork bomb.
            build_pids: 2048,
            // What a GitHub-hosted runner leaves a job, roughly.
            build_disk_mib: 20 * 1024,
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
        if self.max_attempts == 0 {
            return invalid("max_attempts must be at least 1".into());
        }
        self.store()?;
        if self.lease_secs < 3 {
            return Err(ConfigError::Invalid(format!(
                "lease_secs must be at least 3 (a heartbeat renews leases every third of it), got {}",
                self.lease_secs
            )));
        }
        if self.log_cap_lines == 0 {
            return invalid("log_cap_lines must be at least 1".into());
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
        for (name, builder) in &self.builders {
            let valid_name = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name.len() <= 64
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid_name {
                return invalid(format!(
                    "builders.{name}: builder names must be 1 to 64 lower-case letters, digits, '-' or '_'"
                ));
            }
            if !(1..=MAX_MEMORY_MIB).contains(&builder.memory_mib) {
                return invalid(format!(
                    "builders.{name}.memory_mib must be 1 to {MAX_MEMORY_MIB}, got {}",
                    builder.memory_mib
                ));
            }
            if builder.timeout_secs == 0 {
                return invalid(format!("builders.{name}.timeout_secs must be at least 1"));
            }
            for (setting, field) in [
                (NETWORK_SETTING, "network"),
                (ENGINE_CLIENT_SETTING, "engine_client"),
                (crate::exec::ENGINE_IMAGE_SETTING, "engine"),
                (crate::exec::CGROUP_SETTING, "build_memory_mib"),
                (crate::exec::REGISTRY_CACHE_SETTING, "registry_cache"),
            ] {
                if builder.settings.contains_key(setting) {
                    return invalid(format!(
                        "builders.{name}.settings.{setting} is set by the host; use builders.{name}.{field}"
                    ));
                }
            }
            if let Some(grants) = &builder.grants {
                grants
                    .validate(&format!("builders.{name}.grants"))
                    .map_err(ConfigError::Invalid)?;
            }
            if !(0.0..=1024.0).contains(&builder.build_cpus) {
                return invalid(format!(
                    "builders.{name}.build_cpus must be 0 (unbounded) to 1024, got {}",
                    builder.build_cpus
                ));
            }
            if (1..64).contains(&builder.build_memory_mib) || (1..16).contains(&builder.build_pids)
            {
                return invalid(format!(
                    "builders.{name}: build_memory_mib must be 0 (unbounded) or at least 64, build_pids 0 or at least 16; a build's tools need that much"
                ));
            }
            if let Some(prefix) = &builder.registry_cache {
                self.validate_registry_cache(name, prefix)?;
            }
            if let Some(socket) = &builder.engine {
                DockerEngine::check_socket(socket)
                    .map_err(|e| ConfigError::Invalid(format!("builders.{name}.engine: {e}")))?;
                if builder.network() != BuildNetwork::None {
                    return invalid(format!(
                        "builders.{name}.network: a builder in a Docker Engine takes only \"none\"; \
                         the engine's networks would let build steps reach this host"
                    ));
                }
                if builder.registry_cache.is_some() {
                    return invalid(format!(
                        "builders.{name}.registry_cache: a builder in a Docker Engine keeps its layers \
                         in the engine's BuildKit cache; remove it"
                    ));
                }
            }
            if builder.component.is_none() && builtin::component(name).is_none() {
                return invalid(format!(
                    "builders.{name}.component is missing, and there is no built-in builder called '{name}' \
                     (built-in: {})",
                    builtin::names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for (host, registry) in &self.registries {
            let probe = |location: &str| {
                crate::reference::validate_image_ref(&format!("{location}/probe")).is_ok()
            };
            if host.contains('/') || !probe(host) {
                return invalid(format!(
                    "registries.\"{host}\" must be a registry's host[:port], e.g. registry.example.com:5000"
                ));
            }
            if let Some(mirror) = registry.mirrors.iter().find(|m| !probe(m)) {
                return invalid(format!(
                    "registries.\"{host}\".mirrors: {mirror:?} must be host[:port][/path]"
                ));
            }
        }
        if let Some(registry) = &self.default_registry {
            let probe = format!("{registry}/probe");
            if registry.is_empty() || crate::reference::validate_image_ref(&probe).is_err() {
                return invalid(format!(
                    "default_registry {registry:?} must be host[:port][/namespace], e.g. registry.example.com/team"
                ));
            }
        }
        if let Some(file) = &self.registry_auth_file
            && !file.is_file()
        {
            return invalid(format!(
                "registry_auth_file {} is not a readable file",
                file.display()
            ));
        }
        self.build_secrets()?;
        if !self.builder_configs().contains_key(&self.default_builder) {
            return invalid(format!(
                "default_builder '{}' is not a configured or built-in builder",
                self.default_builder
            ));
        }
        Ok(self)
    }

    /// The webhook secrets, read now, and the rules.
    pub fn webhooks(&self) -> Result<Webhooks, ConfigError> {
        Webhooks::load(&self.webhooks, self.webhook_rules.clone(), |name| {
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
            .map_err(ConfigError::Invalid)
    }

    /// Every builder to load: the configured ones plus each built-in that no
    /// entry replaces.
    pub fn builder_configs(&self) -> BTreeMap<String, BuilderConfig> {
        let mut all = self.builders.clone();
        for name in builtin::names() {
            all.entry(name.to_string()).or_default();
        }
        all
    }

    /// Reads each builder's component (embedded or from its file).
    pub fn builder_sources(&self) -> Result<Vec<BuilderSource>, ConfigError> {
        self.builder_configs()
            .into_iter()
            .map(|(name, builder)| {
                let (origin, bytes): (Origin, Arc<[u8]>) = match &builder.component {
                    Some(path) => {
                        let bytes = std::fs::read(path).map_err(|e| {
                            ConfigError::Invalid(format!(
                                "builders.{name}.component: cannot read {}: {e}",
                                path.display()
                            ))
                        })?;
                        (Origin::File(path.clone()), bytes.into())
                    }
                    None => {
                        let bytes = builtin::component(&name).expect("validated: built-in exists");
                        (Origin::BuiltIn, bytes.into())
                    }
                };
                let grants = builder.grants.clone().unwrap_or_else(|| {
                    builtin::default_grants(&name, builder.network(), builder.engine_client())
                });
                let mut settings = builder.settings.clone();
                settings.insert(
                    NETWORK_SETTING.into(),
                    builder.network().flag_value().into(),
                );
                let engine = builder.engine.clone().map(|socket| {
                    Arc::new(DockerEngine::new(
                        socket,
                        builder.engine_client().into(),
                        self.data_dir.join("docker"),
                        self.registry_auth_file.clone(),
                    ))
                });
                if engine.is_some() {
                    settings.insert(ENGINE_CLIENT_SETTING.into(), builder.engine_client().into());
                }
                Ok(BuilderSource {
                    limits: builder.limits(),
                    build_limits: builder.build_limits(),
                    grants: grants
                        .resolve(|name| std::env::var(name).ok())
                        .with_values(self.value_policy()),
                    network: builder.network(),
                    registry_cache: builder.registry_cache.clone(),
                    engine,
                    name,
                    origin,
                    bytes,
                    settings,
                })
            })
            .collect()
    }

    /// The store `store_url` names.
    pub fn store(&self) -> Result<StoreLocation, ConfigError> {
        let Some(url) = &self.store_url else {
            return Ok(StoreLocation::Sqlite(self.data_dir.join("helix.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(url.clone()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "store_url {url:?} is not supported; use sqlite://PATH or postgres://user:password@host:port/database"
                ))
            })?;
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }

    /// This host's name in a shared queue's leases.
    pub fn host_id(&self) -> String {
        self.host_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "helix-host".into())
        })
    }

    /// What typed grant values are checked against: the configured
    /// registries (and the default one's) and the repository policy.
    /// A registry cache must be a plain repository (no tag or digest:
    /// podman's cache keys are its tags) in a registry the operator
    /// configured, whose settings and credentials then apply to it.
    fn validate_registry_cache(&self, name: &str, prefix: &str) -> Result<(), ConfigError> {
        let last = prefix.rsplit('/').next().unwrap_or_default();
        let plain = prefix.contains('/') && !last.contains(':') && !prefix.contains('@');
        if !plain || crate::reference::validate_image_ref(prefix).is_err() {
            return Err(ConfigError::Invalid(format!(
                "builders.{name}.registry_cache {prefix:?} must be host[:port]/path, a repository without tag or digest"
            )));
        }
        let registry = crate::reference::registry_of(prefix);
        if !self.value_policy().registries.contains(registry) {
            return Err(ConfigError::Invalid(format!(
                "builders.{name}.registry_cache: registry {registry} is not configured; add [registries.\"{registry}\"] or make it the default_registry"
            )));
        }
        Ok(())
    }

    fn value_policy(&self) -> ValuePolicy {
        let mut registries: std::collections::BTreeSet<String> =
            self.registries.keys().cloned().collect();
        if let Some(default) = &self.default_registry {
            registries.insert(crate::reference::registry_of(default).to_string());
        }
        ValuePolicy {
            registries,
            allow_file_repos: self.allow_file_repos,
        }
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

    /// The layer cache of every builder that keeps one.
    pub fn build_cache(&self) -> BuildCache {
        let builders: Vec<String> = self
            .builder_configs()
            .into_iter()
            .filter(|(_, b)| b.cache)
            .map(|(name, _)| name)
            .collect();
        let slots = self.workers;
        let per_slot = self.build_cache_mib * 1024 * 1024 / slots.max(1) as u64;
        BuildCache::new(
            self.data_dir.join("build-cache"),
            &builders,
            slots,
            per_slot,
        )
    }

    /// How much output a job may log.
    pub fn output_caps(&self) -> OutputCaps {
        OutputCaps {
            step_bytes: self.log_step_cap_bytes,
            job_bytes: self.log_cap_bytes,
        }
    }

    /// How the host and its builds reach registries.
    pub fn registry_settings(&self) -> RegistrySettings {
        RegistrySettings::new(self.registries.clone(), self.registry_auth_file.clone())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("compiled"))
    }

    pub fn workspace_dir(&self) -> PathBuf {
        self.data_dir.join("workspaces")
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

impl BuilderConfig {
    /// What its build steps may reach: as configured, else `private`, or
    /// `none` in a Docker Engine.
    pub fn network(&self) -> BuildNetwork {
        self.network.unwrap_or(match self.engine {
            Some(_) => BuildNetwork::None,
            None => BuildNetwork::Private,
        })
    }

    /// The Docker client for its engine.
    pub fn engine_client(&self) -> &str {
        self.engine_client
            .as_deref()
            .unwrap_or(crate::docker_engine::DEFAULT_ENGINE_CLIENT)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: usize::try_from(self.memory_mib << 20).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(self.timeout_secs),
        }
    }

    pub fn build_limits(&self) -> BuildLimits {
        BuildLimits {
            memory_mib: (self.build_memory_mib > 0).then_some(self.build_memory_mib),
            cpus: (self.build_cpus > 0.0).then_some(self.build_cpus),
            pids: (self.build_pids > 0).then_some(self.build_pids),
            disk_mib: (self.build_disk_mib > 0).then_some(self.build_disk_mib),
        }
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

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validated().map_err(|e| e.to_string()))
    }

    /// The README's configuration example: every key in it is one the
    /// server knows, in the table it belongs to.
    #[test]
    fn the_readme_example_is_a_config() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let config = toml::from_str::<Config>(example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.log_cap_lines, 10_000);
        assert!(config.provenance);
        assert!(!config.registries["127.0.0.1:5000"].tls_verify);
        assert!(config.builders["buildkit"].engine.is_some());
    }

    #[test]
    fn empty_file_is_the_default() {
        let config = parse("").unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.default_builder, "simulated");
        assert!(config.builder_configs().contains_key("simulated"));
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

    #[test]
    fn builder_overrides_and_sources() {
        let config = parse(
            "[builders.simulated]\nmemory_mib = 64\ntimeout_secs = 5\nsettings = { delay_ms = '10' }",
        )
        .unwrap();
        let sources = config.builder_sources().unwrap();
        let sim = sources.iter().find(|s| s.name == "simulated").unwrap();
        assert_eq!(sim.origin, Origin::BuiltIn);
        assert_eq!(sim.limits.memory_bytes, 64 << 20);
        assert_eq!(sim.limits.timeout, Duration::from_secs(5));
        assert_eq!(sim.settings["delay_ms"], "10");
        assert_eq!(
            sim.settings["network"], "helix-private",
            "the host adds the network setting"
        );
        let config = parse(
            "[builders.podman]
network = 'none'",
        )
        .unwrap();
        let sources = config.builder_sources().unwrap();
        let podman = sources.iter().find(|s| s.name == "podman").unwrap();
        assert_eq!(podman.settings["network"], "none");
        let err = parse(
            "[builders.podman]
network = 'bridge'",
        )
        .unwrap_err();
        assert!(err.contains("network"), "{err}");
        let err = parse(
            "[builders.podman]
settings = { network = 'host' }",
        )
        .unwrap_err();
        assert!(err.contains("builders.podman.network"), "{err}");
    }

    #[test]
    fn registry_auth_file_reaches_no_builders_programs() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "registry_auth_file = {:?}",
            file.path().display().to_string()
        );
        let config = parse(&text).unwrap();
        for source in config.builder_sources().unwrap() {
            assert!(
                !source
                    .grants
                    .env_names()
                    .contains(&"REGISTRY_AUTH_FILE".to_string()),
                "{}",
                source.name
            );
            assert!(
                !source
                    .settings
                    .values()
                    .any(|v| v.contains(&file.path().display().to_string())),
                "{}",
                source.name
            );
        }
        let err = parse("registry_auth_file = '/nonexistent/auth.json'").unwrap_err();
        assert!(err.contains("registry_auth_file"), "{err}");
    }

    #[test]
    fn store_url_selects_sqlite_or_postgres() {
        let config = parse("data_dir = '/srv/helix'").unwrap();
        assert_eq!(
            config.store().unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/srv/helix/helix.db"))
        );
        let config = parse("store_url = 'sqlite:///var/lib/h.db'").unwrap();
        assert_eq!(
            config.store().unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/var/lib/h.db"))
        );
        let config = parse("store_url = 'postgres://helix@db:5432/helix'").unwrap();
        assert_eq!(
            config.store().unwrap(),
            StoreLocation::Postgres("postgres://helix@db:5432/helix".into())
        );
        let err = parse("store_url = 'mysql://db/helix'").unwrap_err();
        assert!(
            err.contains("store_url") && err.contains("postgres://"),
            "{err}"
        );
        assert!(parse("lease_secs = 1").unwrap_err().contains("lease_secs"));
        assert!(
            parse("max_attempts = 0")
                .unwrap_err()
                .contains("max_attempts")
        );
    }

    #[test]
    fn missing_component_file_is_named() {
        let config = parse("[builders.mine]\ncomponent = '/nonexistent/x.wasm'").unwrap();
        let err = config.builder_sources().unwrap_err().to_string();
        assert!(
            err.contains("builders.mine.component") && err.contains("/nonexistent/x.wasm"),
            "{err}"
        );
    }
}
