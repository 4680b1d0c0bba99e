//! The `[builders.*]` tables: each builder's component, limits, network and grants, checked at startup and turned into what the plugin runtime loads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::builtin;
use crate::cgroup::BuildLimits;
use crate::docker_engine::DockerEngine;
use crate::exec::Grants;
use crate::layer_cache::BuildCache;
use crate::managed_engine::EngineSettings;
use crate::network::BuildNetwork;
use crate::plugin::MANAGED_ENGINE;
use crate::plugin::{BuilderSource, Limits, Origin};

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
    /// The Docker Engine the builder builds in, for the `buildkit` builder:
    /// `managed` (the host runs one per cache slot, in a jail, with the
    /// builder's limits; see `helix_sandbox::managed_engine`), or an
    /// operator's engine at `unix:///path/to/docker.sock`, which the host
    /// points every `docker` of its jobs at (its steps then run outside
    /// any jail and the job's limits).
    pub engine: Option<String>,
    /// The Docker client run against `engine`, by the builder and the host:
    /// `docker` on PATH unless set. It must drive BuildKit itself
    /// (Debian's docker.io, `/usr/bin/docker`); a newer client wants the
    /// buildx plugin.
    pub engine_client: Option<String>,
    /// For `engine = "managed"`: how long, in seconds, a slot's engine may
    /// sit without a job before the host stops it (the next job starts it
    /// again; its layers stay in the slot). Default 300; 0 stops it after
    /// every job.
    pub engine_idle_secs: Option<u64>,
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

/// How long a managed engine sits idle before it is stopped, unless
/// `engine_idle_secs` says: long enough to keep one warm between the jobs
/// of a busy hour, short enough that a quiet slot holds no daemon.
const DEFAULT_ENGINE_IDLE_SECS: u64 = 300;

/// The setting through which a builder learns its `--network` value.
const NETWORK_SETTING: &str = "network";
/// The setting through which an engine builder learns its Docker client.
const ENGINE_CLIENT_SETTING: &str = "engine-client";
const MAX_MEMORY_MIB: u64 = 16 * 1024;

/// A builder's settings as the host gives them: the operator's, plus the
/// `network` value its build steps get and, for an engine builder, its
/// `engine-client`. (`plugin test` gives the same.)
pub fn host_settings(
    own: &BTreeMap<String, String>,
    network: BuildNetwork,
    engine_client: Option<&str>,
) -> BTreeMap<String, String> {
    let mut settings = own.clone();
    settings.insert(NETWORK_SETTING.into(), network.flag_value().into());
    if let Some(client) = engine_client {
        settings.insert(ENGINE_CLIENT_SETTING.into(), client.into());
    }
    settings
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
            engine_idle_secs: None,
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

impl Config {
    /// Checks every `[builders.*]` table: its name, limits, host-set
    /// settings, grants, network, engine and component.
    pub(super) fn validate_builders(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
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
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
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
            if builder.engine_idle_secs.is_some()
                && builder.engine.as_deref() != Some(MANAGED_ENGINE)
            {
                return invalid(format!(
                    "builders.{name}.engine_idle_secs: only a managed engine (engine = \"{MANAGED_ENGINE}\") \
                     is stopped when idle; remove it"
                ));
            }
            if let Some(socket) = &builder.engine {
                if socket != MANAGED_ENGINE {
                    DockerEngine::check_socket(socket).map_err(|e| {
                        ConfigError::Invalid(format!(
                            "builders.{name}.engine: {e}, or \"{MANAGED_ENGINE}\""
                        ))
                    })?;
                }
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
                if socket == MANAGED_ENGINE && !builder.cache {
                    return invalid(format!(
                        "builders.{name}.cache: a builder in managed engines runs one per cache slot \
                         (its data inside the slot); it cannot be false"
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
        Ok(())
    }

    /// Every builder to load: the configured ones plus each built-in that no
    /// entry replaces, less those that cannot run here
    /// ([`Config::unavailable_builders`]).
    pub fn builder_configs(&self) -> BTreeMap<String, BuilderConfig> {
        let mut all = self.builders.clone();
        for name in builtin::names() {
            all.entry(name.to_string()).or_default();
        }
        let unavailable = self.unavailable_builders();
        all.retain(|name, _| !unavailable.contains_key(name));
        all
    }

    /// Builders this server does not offer, each with why and the setting
    /// that would make it run: the built-in `buildkit` builds in a Docker
    /// Engine, so it is offered only with `builders.buildkit.engine` set.
    /// A job naming one is refused at submit with the reason.
    pub fn unavailable_builders(&self) -> BTreeMap<String, String> {
        let name = "buildkit";
        let engine = self.builders.get(name).and_then(|b| b.engine.as_ref());
        match engine {
            Some(_) => BTreeMap::new(),
            None => BTreeMap::from([(
                name.to_string(),
                format!(
                    "builder '{name}' builds in a Docker Engine and this server has none configured; \
                     set builders.{name}.engine (\"{MANAGED_ENGINE}\", or an engine's unix:// socket)"
                ),
            )]),
        }
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
                let settings = host_settings(
                    &builder.settings,
                    builder.network(),
                    builder.engine.is_some().then(|| builder.engine_client()),
                );
                let client = EngineSettings {
                    client: builder.engine_client().into(),
                    config_dir: self.data_dir.join("docker"),
                    idle_stop: Duration::from_secs(
                        builder.engine_idle_secs.unwrap_or(DEFAULT_ENGINE_IDLE_SECS),
                    ),
                };
                let (engine, managed_engine) = match builder.engine.clone() {
                    None => (None, None),
                    Some(managed) if managed == MANAGED_ENGINE => (None, Some(Arc::new(client))),
                    Some(socket) => (
                        Some(Arc::new(DockerEngine::new(
                            socket,
                            client.client,
                            client.config_dir,
                        ))),
                        None,
                    ),
                };
                Ok(BuilderSource {
                    limits: builder.limits(),
                    build_limits: builder.build_limits(),
                    grants: grants
                        .resolve(|name| std::env::var(name).ok())
                        .with_values(self.value_policy()),
                    network: builder.network(),
                    registry_cache: builder.registry_cache.clone(),
                    engine,
                    managed_engine,
                    name,
                    origin,
                    bytes,
                    settings,
                })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

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
    fn only_a_managed_engine_takes_an_idle_stop() {
        let idle = |config: &Config| {
            let sources = config.builder_sources().unwrap();
            let buildkit = sources.iter().find(|s| s.name == "buildkit").unwrap();
            buildkit.managed_engine.as_ref().unwrap().idle_stop
        };
        let config = parse("[builders.buildkit]\nengine = 'managed'").unwrap();
        assert_eq!(idle(&config), Duration::from_secs(DEFAULT_ENGINE_IDLE_SECS));
        let config =
            parse("[builders.buildkit]\nengine = 'managed'\nengine_idle_secs = 0").unwrap();
        assert_eq!(idle(&config), Duration::ZERO);
        for builder in [
            "[builders.podman]",
            "[builders.buildkit]\nengine = 'unix:///run/docker.sock'",
        ] {
            let err = parse(&format!("{builder}\nengine_idle_secs = 60")).unwrap_err();
            assert!(
                err.contains(".engine_idle_secs: only a managed engine"),
                "{err}"
            );
        }
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
