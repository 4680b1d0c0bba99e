//! The plugin runtime: loads builder components into one engine, checks they
//! speak this host's `helix:build` version, and runs each job in a fresh
//! instance under the builder's memory and time limits.

mod builder;
mod component_cache;
mod contract;
mod engine;
mod host;
mod output;
mod wit;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use helix_sandbox::docker_engine::DockerEngine;
use helix_sandbox::exec::{GrantPolicy, ProgramGrant};
use helix_sandbox::managed_engine::EngineSettings;

pub use builder::{
    Backend, Builder, BuilderError, Built, EngineKind, MANAGED_ENGINE, NativeBuild, Reported,
    RunContext, Timings,
};
pub use component_cache::{CacheUse, ComponentCache};
pub use engine::PoolSizing;
use helix_core::platform::Platform;
use helix_sandbox::cgroup::BuildLimits;
use helix_sandbox::network::BuildNetwork;
use wit::Pre;
pub use wit::{UnsupportedByContract, WIT_VERSION};

use host::JobHost;

/// A builder component to load and how to run it.
#[derive(Debug, Clone)]
pub struct BuilderSource {
    /// The name jobs use to pick this builder (the config key).
    pub name: String,
    pub origin: Origin,
    pub bytes: Arc<[u8]>,
    pub limits: Limits,
    /// Operator settings the builder reads through `job-context.setting`.
    pub settings: BTreeMap<String, String>,
    /// What the builder may run and see, resolved against the host.
    pub grants: GrantPolicy,
    /// What its build steps may reach.
    pub network: BuildNetwork,
    /// Where its jobs' layers are kept in a registry, by repository prefix.
    pub registry_cache: Option<String>,
    /// The operator's Docker Engine it builds in, if it builds in one.
    pub engine: Option<Arc<DockerEngine>>,
    /// Or the settings of the engines the host runs for it, one per cache
    /// slot (`engine = "managed"`).
    pub managed_engine: Option<Arc<EngineSettings>>,
    /// What each job's build may use.
    pub build_limits: BuildLimits,
}

/// Where a component came from, for messages and `/v1/builders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into this binary.
    BuiltIn,
    /// Read from a file named in the config.
    File(PathBuf),
    /// Rust code in this process (benchmarks only; see [`NativeBuild`]).
    Native,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::BuiltIn => f.write_str("built-in"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Native => f.write_str("native"),
        }
    }
}

/// Per-builder resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Largest linear memory the builder may grow to.
    pub memory_bytes: usize,
    /// Wall-clock limit on one job, instantiation included.
    #[serde(rename = "timeout_secs", serialize_with = "as_secs")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// What the host knows about a loaded builder.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuilderInfo {
    /// The name jobs use.
    pub name: String,
    /// The name the component gives itself.
    pub plugin_name: String,
    pub version: String,
    pub description: String,
    pub simulated: bool,
    /// SHA-256 of the component bytes.
    pub component_digest: String,
    /// The contract version it was built against (`helix:build@X.Y.Z`);
    /// an older one than the host's own is adapted.
    pub contract: String,
    pub origin: String,
    pub limits: Limits,
    /// What each job's build (its tools and `RUN` steps) may use.
    pub build_limits: BuildLimits,
    pub grants: GrantSummary,
    /// What its build steps may reach: `none`, `private` or `host`.
    pub network: BuildNetwork,
    /// The repository prefix under which its jobs' layers are kept in a
    /// registry, if they are.
    pub registry_cache: Option<String>,
    /// The socket of the Docker Engine it builds in, if it builds in one;
    /// `managed` for engines the host runs.
    pub engine: Option<String>,
    /// The platforms it can build on this host; `None` (`null`) for a
    /// simulated builder, which builds nothing and takes any.
    #[schema(value_type = Option<Vec<String>>)]
    pub platforms: Option<Vec<Platform>>,
}

/// The grants of a builder as operators may see them: programs and the
/// names (never the values) of variables.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct GrantSummary {
    pub programs: Vec<ProgramGrant>,
    pub env: Vec<String>,
    pub builder_env: Vec<String>,
    pub dirs: Vec<String>,
}

/// How loading one builder went, for operators and measurements.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub builder: String,
    pub cache: CacheUse,
    /// Compile-or-deserialize plus linking, excluding the `info` call.
    pub elapsed: Duration,
}

/// A component that could not become a builder.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("builder '{name}' ({origin}): not a valid WebAssembly component: {message}")]
    Invalid {
        name: String,
        origin: Origin,
        message: String,
    },
    #[error("builder '{name}' ({origin}): {message}")]
    Incompatible {
        name: String,
        origin: Origin,
        message: String,
    },
    #[error("builder '{name}' ({origin}): its `info` export failed: {message}")]
    Info {
        name: String,
        origin: Origin,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// All loaded builders, sharing one engine and one linker.
pub struct PluginRuntime {
    builders: BTreeMap<String, Arc<Builder>>,
    reports: Vec<LoadReport>,
}

impl PluginRuntime {
    /// Loads every source, compiling through `cache`. Fails on the first
    /// component that cannot be a builder, naming it.
    pub async fn load(
        sources: Vec<BuilderSource>,
        cache: &ComponentCache,
        sizing: PoolSizing,
    ) -> Result<Self, PluginError> {
        let engine =
            engine::new_engine(sizing).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let linker = new_linker(&engine).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut builders = BTreeMap::new();
        let mut reports = Vec::new();
        for source in sources {
            let (builder, report) = load_one(&engine, &linker, cache, source).await?;
            tracing::info!(
                builder = %report.builder,
                cache = ?report.cache,
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                "loaded builder"
            );
            builders.insert(builder.info().name.clone(), Arc::new(builder));
            reports.push(report);
        }
        Ok(PluginRuntime { builders, reports })
    }

    pub fn builder(&self, name: &str) -> Option<Arc<Builder>> {
        self.builders.get(name).cloned()
    }

    /// Loaded builders in name order.
    pub fn builders(&self) -> impl Iterator<Item = &Arc<Builder>> {
        self.builders.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.builders.keys().map(String::as_str).collect()
    }

    /// Adds a native builder called `name`, replacing any builder of
    /// that name (see [`NativeBuild`]).
    pub fn add_native(&mut self, name: &str, build: NativeBuild) {
        self.builders
            .insert(name.to_string(), Arc::new(Builder::native(name, build)));
    }

    pub fn load_reports(&self) -> &[LoadReport] {
        &self.reports
    }
}

fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<JobHost>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::add_to_linker(&mut linker)?;
    Ok(linker)
}

async fn load_one(
    engine: &Engine,
    linker: &Linker<JobHost>,
    cache: &ComponentCache,
    source: BuilderSource,
) -> Result<(Builder, LoadReport), PluginError> {
    let started = Instant::now();
    let (component, cache_use) =
        cache
            .load(engine, &source.bytes)
            .map_err(|e| PluginError::Invalid {
                name: source.name.clone(),
                origin: source.origin.clone(),
                message: format!("{e:#}"),
            })?;
    let pre = prepare(engine, linker, &component, &source)?;
    let elapsed = started.elapsed();
    let report = LoadReport {
        builder: source.name.clone(),
        cache: cache_use,
        elapsed,
    };
    Ok((describe(engine, pre, source).await?, report))
}

/// Checks the component against the contract and links it.
fn prepare(
    engine: &Engine,
    linker: &Linker<JobHost>,
    component: &Component,
    source: &BuilderSource,
) -> Result<Pre, PluginError> {
    let incompatible = |message: String| PluginError::Incompatible {
        name: source.name.clone(),
        origin: source.origin.clone(),
        message,
    };
    let version = contract::check(engine, component).map_err(incompatible)?;
    Pre::new(linker, component, &version).map_err(|e| {
        incompatible(format!(
            "it needs imports this host does not provide: {e:#}"
        ))
    })
}

/// Makes a [`Builder`], asking the component for its `info`.
async fn describe(
    engine: &Engine,
    pre: Pre,
    source: BuilderSource,
) -> Result<Builder, PluginError> {
    let (name, origin) = (source.name.clone(), source.origin.clone());
    Builder::new(engine.clone(), pre, source)
        .await
        .map_err(|message| PluginError::Info {
            name,
            origin,
            message,
        })
}

/// What `helix-build plugin check` reports about a component file.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub info: BuilderInfo,
    /// Every interface the component imports.
    pub imports: Vec<String>,
}

/// Loads the component in `path` as a builder would be loaded (without
/// the disk cache or any grants), and describes it. The error says why the
/// file is not a usable builder.
pub async fn inspect(path: &Path) -> Result<Inspection, PluginError> {
    let name = path.file_stem().map_or_else(
        || "plugin".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let origin = Origin::File(path.to_path_buf());
    let invalid = |message: String| PluginError::Invalid {
        name: name.clone(),
        origin: origin.clone(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| PluginError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let limits = Limits {
        memory_bytes: INSPECT_MEMORY,
        timeout: Duration::from_secs(10),
    };
    let engine = engine::new_engine(PoolSizing {
        instances: 1,
        max_memory_bytes: limits.memory_bytes,
    })
    .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    let linker = new_linker(&engine).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    let component = Component::new(&engine, &bytes).map_err(|e| invalid(format!("{e:#}")))?;
    let imports = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let source = BuilderSource {
        name: name.clone(),
        origin: origin.clone(),
        bytes: bytes.into(),
        limits,
        settings: BTreeMap::new(),
        grants: GrantPolicy::default(),
        network: BuildNetwork::None,
        registry_cache: None,
        engine: None,
        managed_engine: None,
        build_limits: BuildLimits::default(),
    };
    let pre = prepare(&engine, &linker, &component, &source)?;
    let builder = describe(&engine, pre, source).await?;
    Ok(Inspection {
        info: builder.info().clone(),
        imports,
    })
}

/// Memory a component may use while `plugin check` asks for its `info`.
const INSPECT_MEMORY: usize = 256 << 20;
