//! One loaded builder: its metadata, and running a job in a fresh instance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap};

use super::host::{JobHost, JobHostParts};
use super::wit::{CallError, Pre, WIT_PACKAGE, latest};
use super::{BuilderInfo, BuilderSource, GrantSummary, Limits};
use helix_core::audit::AuditTrail;
use helix_core::job::{BuildResult, CacheScope, Job};
use helix_core::log::JobLog;
use helix_sandbox::cancel::CancelSignal;
use helix_sandbox::docker_engine::DockerEngine;
use helix_sandbox::exec::GrantPolicy;
use helix_sandbox::exec::JobValues;
use helix_sandbox::managed_engine::EngineSettings;

mod error;
mod outcome;

pub use error::{BuilderError, Reported};
use outcome::crash_message;

/// The `engine` value by which a builder builds in engines the host runs.
pub const MANAGED_ENGINE: &str = "managed";

/// How long a builder's `info` export may take at load time.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines kept from `info`'s output for an error message.
const INFO_LOG_LINES: usize = 50;

/// What a job run is given besides the job itself.
pub struct RunContext {
    /// Receives the builder's log lines and its stdout/stderr.
    pub log: Arc<JobLog>,
    /// Ends the run (and the instance) as soon as it fires.
    pub cancel: CancelSignal,
    /// An existing directory: the builder's only preopened directory
    /// (read-only to its own code), holding the host's checkout in `src`
    /// for a real builder.
    pub workspace: PathBuf,
    /// Variables the host sets for every program of the job, over the
    /// grants (see `workspace::JobDirs::program_env`).
    pub program_env: BTreeMap<String, String>,
    /// The commit checked out in the workspace; `None` for a simulated
    /// builder.
    pub commit: Option<String>,
    /// The job's build secrets (written where the builder cannot read
    /// them), its registry cache and its run's control group.
    pub values: JobValues,
    /// Records every program the builder asks for.
    pub audit: Arc<AuditTrail>,
}

/// What a builder's successful run left for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// An OCI layout directory inside the workspace (checked to contain no
    /// symbolic link on the way), for the host to push.
    Layout(PathBuf),
    /// The image in the job's container storage, under
    /// the name its grants pin (the host's layer cache names it), for the
    /// host to push from there.
    LocalImage,
    /// A simulated builder's pretend result, recorded as is.
    Simulated(BuildResult),
}

/// Where a builder makes its images: decided once, when it is loaded, and
/// asked of it by every step of a run.
#[derive(Clone)]
pub enum Backend {
    /// It only pretends (its `info` says so): nothing is checked out,
    /// pushed, checked or attested, and it gets no layer cache.
    Simulated,
    /// In container storage: its cache slot's, or the job's own.
    Storage,
    /// In a Docker Engine.
    Engine(EngineKind),
}

/// Whose Docker Engine a builder builds in.
#[derive(Clone)]
pub enum EngineKind {
    /// The operator's: its layers are in BuildKit's cache there.
    Operator(Arc<DockerEngine>),
    /// One the host runs in each cache slot, with these settings.
    Managed(Arc<EngineSettings>),
}

/// A builder ready to run jobs. Each run gets a fresh instance from the
/// pre-instantiated component, in its own store, so nothing one job does can
/// leak into the next.
pub struct Builder {
    info: BuilderInfo,
    code: Code,
    settings: Arc<BTreeMap<String, String>>,
    grants: Arc<GrantPolicy>,
    backend: Backend,
    instantiations: Timings,
}

/// What runs a job.
enum Code {
    Component { engine: Engine, pre: Pre },
    Native(NativeBuild),
}

/// A builder written in Rust and run in-process, with no sandbox and no
/// limits. Only benchmarks use one, as the floor the wasm boundary is
/// measured against; operators cannot configure one.
pub type NativeBuild = fn(&Job, &JobLog) -> BuildResult;

/// A running count and total of durations, readable while jobs run.
#[derive(Debug, Default)]
pub struct Timings {
    count: AtomicU64,
    total_micros: AtomicU64,
}

impl Timings {
    fn record(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (how many, total seconds).
    pub fn read(&self) -> (u64, f64) {
        (
            self.count.load(Ordering::Relaxed),
            self.total_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

impl Builder {
    /// Wraps a linked component, asking it for its `info`.
    pub(super) async fn new(
        engine: Engine,
        pre: Pre,
        source: BuilderSource,
    ) -> Result<Self, String> {
        use sha2::Digest as _;
        let component_digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&source.bytes))
        );
        let mut builder = Builder {
            info: BuilderInfo {
                name: source.name.clone(),
                plugin_name: String::new(),
                version: String::new(),
                description: String::new(),
                simulated: false,
                component_digest,
                contract: format!("{WIT_PACKAGE}@{}", pre.version()),
                origin: source.origin.to_string(),
                limits: source.limits,
                build_limits: source.build_limits,
                grants: GrantSummary {
                    programs: source.grants.programs().to_vec(),
                    env: source.grants.env_names(),
                    builder_env: source.grants.builder_env(),
                    dirs: source
                        .grants
                        .dirs()
                        .iter()
                        .map(|d| d.guest.clone())
                        .collect(),
                },
                network: source.network,
                registry_cache: source.registry_cache,
                engine: match (&source.engine, &source.managed_engine) {
                    (Some(engine), _) => Some(engine.socket().to_string()),
                    (None, Some(_)) => Some(MANAGED_ENGINE.to_string()),
                    (None, None) => None,
                },
                platforms: None,
            },
            backend: match (source.engine, source.managed_engine) {
                (Some(engine), _) => Backend::Engine(EngineKind::Operator(engine)),
                (None, Some(settings)) => Backend::Engine(EngineKind::Managed(settings)),
                (None, None) => Backend::Storage,
            },
            code: Code::Component { engine, pre },
            settings: Arc::new(source.settings),
            grants: Arc::new(source.grants),
            instantiations: Timings::default(),
        };
        let metadata = builder.call_info().await?;
        builder.info.plugin_name = metadata.name;
        builder.info.version = metadata.version;
        builder.info.description = metadata.description;
        builder.info.simulated = metadata.simulated;
        match metadata.simulated {
            true => builder.backend = Backend::Simulated,
            false => builder.info.platforms = Some(helix_core::platform::buildable_here()),
        }
        Ok(builder)
    }

    /// A native builder called `name` (see [`NativeBuild`]).
    pub fn native(name: &str, build: NativeBuild) -> Self {
        let limits = Limits {
            memory_bytes: 0,
            timeout: Duration::MAX,
        };
        Builder {
            info: BuilderInfo {
                name: name.to_string(),
                plugin_name: name.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                description: "native in-process builder (benchmark floor)".into(),
                simulated: true,
                component_digest: String::new(),
                contract: String::new(),
                origin: super::Origin::Native.to_string(),
                limits,
                build_limits: Default::default(),
                grants: GrantSummary::default(),
                network: helix_sandbox::network::BuildNetwork::None,
                registry_cache: None,
                engine: None,
                platforms: None,
            },
            backend: Backend::Simulated,
            code: Code::Native(build),
            settings: Arc::default(),
            grants: Arc::default(),
            instantiations: Timings::default(),
        }
    }

    pub fn info(&self) -> &BuilderInfo {
        &self.info
    }

    /// Where it makes its images.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The operator's Docker Engine it builds in, if it builds in one.
    pub fn engine(&self) -> Option<&Arc<DockerEngine>> {
        match &self.backend {
            Backend::Engine(EngineKind::Operator(engine)) => Some(engine),
            _ => None,
        }
    }

    /// Whether it builds in a Docker Engine, the operator's or a managed one.
    pub fn in_engine(&self) -> bool {
        matches!(self.backend, Backend::Engine(_))
    }

    /// What this builder's build steps may reach.
    /// Whether its grants let it run any program (then its runs get a
    /// jail).
    pub fn runs_programs(&self) -> bool {
        !self.grants.programs().is_empty()
    }

    pub fn network(&self) -> helix_sandbox::network::BuildNetwork {
        self.info.network
    }

    /// Where `job`'s layers are kept in the registry cache: a repository
    /// per cache scope (its project, and whether its ref is protected)
    /// and source repository, so a job can only seed the cache of jobs of
    /// its own scope building the same repository.
    pub fn registry_cache_for(&self, job: &Job) -> Option<String> {
        use sha2::Digest as _;
        let prefix = self.info.registry_cache.as_deref()?;
        let scope = CacheScope::of(job);
        let mut key = sha2::Sha256::new();
        // Jobs of no project keep the repositories they had before projects.
        if !scope.as_str().is_empty() {
            key.update(scope.as_str().as_bytes());
            key.update([0]);
        }
        key.update(job.repo_url.as_bytes());
        Some(format!("{prefix}/{}", &hex::encode(key.finalize())[..16]))
    }

    /// How long making a fresh instance for a job has taken so far.
    pub fn instantiations(&self) -> &Timings {
        &self.instantiations
    }

    fn new_store(engine: &Engine, host: JobHost) -> Store<JobHost> {
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.memory);
        // Yield to the async runtime at every epoch tick: a guest that never
        // calls the host still lets other jobs run and can be timed out.
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    async fn call_info(&self) -> Result<latest::Metadata, String> {
        let Code::Component { engine, pre } = &self.code else {
            return Err("a native builder has no `info` export".into());
        };
        let log = Arc::new(JobLog::new(INFO_LOG_LINES));
        let host = JobHost::new(JobHostParts {
            builder: self.info.name.as_str().into(),
            log: log.clone(),
            cancel: CancelSignal::new(),
            settings: self.settings.clone(),
            grants: self.grants.clone(),
            workspace: None,
            program_env: BTreeMap::new(),
            values: JobValues::default(),
            audit: None,
            memory_limit: self.info.limits.memory_bytes,
        })
        .map_err(|e| e.to_string())?;
        let mut store = Self::new_store(engine, host);
        match tokio::time::timeout(INFO_TIMEOUT, pre.info(&mut store)).await {
            Ok(Ok(metadata)) => Ok(metadata),
            Ok(Err(e)) => Err(format!("{}: {e:#}", log.snapshot().join(" / "))),
            Err(_) => Err(format!(
                "it did not return within {}s",
                INFO_TIMEOUT.as_secs()
            )),
        }
    }

    /// Runs `job` to what it built, or to the error that ends it. Never
    /// panics and never leaves the job undecided: a trap, a limit,
    /// cancellation or an invalid result each become an error that says
    /// what happened.
    pub async fn run(&self, job: &Job, ctx: RunContext) -> Result<Built, BuilderError> {
        self.run_measured(job, ctx, &OnceLock::new()).await
    }

    /// [`Builder::run`], setting `instantiation` to how long making the
    /// job's fresh instance took (left unset when none was made).
    pub async fn run_measured(
        &self,
        job: &Job,
        ctx: RunContext,
        instantiation: &OnceLock<Duration>,
    ) -> Result<Built, BuilderError> {
        let (engine, pre) = match &self.code {
            Code::Component { engine, pre } => (engine, pre),
            Code::Native(build) => return Ok(Built::Simulated(build(job, &ctx.log))),
        };
        let host = match JobHost::new(JobHostParts {
            builder: self.info.name.as_str().into(),
            log: ctx.log.clone(),
            cancel: ctx.cancel.clone(),
            settings: self.settings.clone(),
            grants: self.grants.clone(),
            workspace: Some(&ctx.workspace),
            program_env: ctx.program_env.clone(),
            values: ctx.values.clone(),
            audit: Some(ctx.audit.clone()),
            memory_limit: self.info.limits.memory_bytes,
        }) {
            Ok(host) => host,
            Err(source) => {
                return Err(BuilderError::Workspace {
                    workspace: ctx.workspace.clone(),
                    source,
                });
            }
        };
        let mut store = Self::new_store(engine, host);
        let wit_job = to_wit(job, ctx.commit.clone());
        let started = Instant::now();
        let instantiated = || {
            let took = started.elapsed();
            self.instantiations.record(took);
            // Set once: this is the run's only instance.
            let _ = instantiation.set(took);
            tracing::debug!(builder = %self.info.name, micros = took.as_micros() as u64, "instantiated builder");
        };
        let call = pre.build(&mut store, wit_job, instantiated);
        // Dropping the call future abandons the instance; the store goes
        // with it, so a cancelled or timed-out instance is never reused.
        let returned = tokio::select! {
            biased;
            reason = ctx.cancel.cancelled() => return Err(BuilderError::Cancelled { reason }),
            returned = tokio::time::timeout(self.info.limits.timeout, call) => returned,
        };
        let stderr_tail = store.data().stderr.finish();
        store.data().stdout.finish();
        let memory_limit_hit = store.data().memory.was_hit();
        let builder = self.info.name.clone();
        let failed = match returned {
            Err(_elapsed) => BuilderError::TimedOut {
                builder,
                limit_secs: self.info.limits.timeout.as_secs(),
            },
            Ok(Ok(Ok(output))) => return self.validate(job, output, &ctx.workspace),
            Ok(Ok(Err(error))) => self.build_error(error, &ctx.cancel),
            // The job as the component's contract version carries it.
            Ok(Err(CallError::Unfit(unsupported))) => unsupported.into(),
            Ok(Err(_)) if memory_limit_hit => BuilderError::OutOfMemory {
                builder,
                limit_mib: self.info.limits.memory_bytes >> 20,
            },
            Ok(Err(CallError::Instantiate(source))) if source.downcast_ref::<Trap>().is_none() => {
                BuilderError::Start { builder, source }
            }
            Ok(Err(CallError::Instantiate(e) | CallError::Trap(e))) => BuilderError::Crashed {
                builder,
                message: crash_message(&e, &stderr_tail),
            },
        };
        Err(failed)
    }
}

fn to_wit(job: &Job, commit: Option<String>) -> latest::Job {
    latest::Job {
        id: job.id.to_string(),
        repo_url: job.repo_url.clone(),
        git_ref: job.git_ref.clone(),
        commit,
        source_dir: helix_sandbox::exec::SOURCE_DIR.to_string(),
        context: job.context.clone(),
        dockerfile_path: job.dockerfile_path.clone(),
        build_args: job
            .build_args
            .iter()
            .map(|(name, value)| latest::BuildArg {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        platforms: job
            .platforms
            .iter()
            .map(|p| latest::Platform {
                os: p.os().to_string(),
                arch: p.arch().to_string(),
                variant: p.variant().map(str::to_string),
            })
            .collect(),
        target: job.target.clone(),
        labels: job
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        no_cache: job.no_cache,
        secrets: job.secrets.clone(),
    }
}

fn platform_string(p: &latest::Platform) -> String {
    match &p.variant {
        Some(variant) => format!("{}/{}/{variant}", p.os, p.arch),
        None => format!("{}/{}", p.os, p.arch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_cache_has_a_repository_per_scope_and_source_repository() {
        use sha2::Digest as _;
        let mut builder = Builder::native("podman", |_, _| unreachable!("never run"));
        builder.info.registry_cache = Some("r.example/cache".into());
        let job = |project: Option<&str>, protected: bool, repo: &str| Job {
            project: project.map(String::from),
            protected,
            ..Job::from_request(
                helix_core::job::JobRequest {
                    repo_url: repo.into(),
                    ..Default::default()
                },
                &helix_core::job::SubmitPolicy::for_builders("podman", ["podman"]),
                chrono::Utc::now(),
            )
            .unwrap()
        };
        let app = "https://git.example/app.git";
        let cache = |project, protected, repo| {
            builder
                .registry_cache_for(&job(project, protected, repo))
                .unwrap()
        };
        // Jobs of no project keep the repository they had.
        let unchanged = hex::encode(sha2::Sha256::digest(app.as_bytes()));
        assert_eq!(
            cache(None, false, app),
            format!("r.example/cache/{}", &unchanged[..16])
        );
        let all = [
            cache(None, false, app),
            cache(Some("team-a"), false, app),
            cache(Some("team-a"), true, app),
            cache(Some("team-b"), false, app),
            cache(Some("team-a"), false, "https://git.example/other.git"),
        ];
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(cache(Some("team-a"), true, app), all[2], "stable");
    }
}
