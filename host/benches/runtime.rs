//! What the runtime adds, each figure measured side by side in one run and
//! reported as a median:
//!
//! - loading every built-in builder with an empty compile cache against
//!   loading them again from the cache;
//! - one job's fresh instance plus its `build` call (simulated builder, zero
//!   delay), the per-job price of the wasm boundary;
//! - running `true` through the command runner (grant check, process group,
//!   log streaming) against spawning it directly.
//!
//! Run with `bench/run runtime`.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{median, ms, row};

use chrono::Utc;
use helix_build::audit::AuditTrail;
use helix_build::cancel::CancelSignal;
use helix_build::config::Config;
use helix_build::exec::{CommandRunner, CommandSpec, Grants, ProgramGrant};
use helix_build::job::{Job, JobRequest, SubmitPolicy};
use helix_build::log::JobLog;
use helix_build::plugin::{Built, ComponentCache, PluginRuntime, PoolSizing, RunContext};

const LOAD_ROUNDS: usize = 5;
const JOB_ROUNDS: usize = 2_000;
const COMMAND_ROUNDS: usize = 500;

pub fn main() {
    common::block_on(run());
}

async fn run() {
    let config = Config::default();
    let sizing = PoolSizing {
        instances: 4,
        max_memory_bytes: 512 << 20,
    };
    println!("cores: {}", common::cores());

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut loaded = None;
    for _ in 0..LOAD_ROUNDS {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(cache_dir.path());
        let started = Instant::now();
        PluginRuntime::load(config.builder_sources().unwrap(), &cache, sizing)
            .await
            .unwrap();
        cold.push(started.elapsed());
        let started = Instant::now();
        let runtime = PluginRuntime::load(config.builder_sources().unwrap(), &cache, sizing)
            .await
            .unwrap();
        warm.push(started.elapsed());
        loaded = Some(runtime);
    }
    let (cold, warm) = (median(&mut cold), median(&mut warm));
    println!(
        "load all built-in builders, compiling:  {:>10.2} ms",
        ms(cold)
    );
    println!(
        "load all built-in builders, from cache: {:>10.2} ms",
        ms(warm)
    );
    let faster = cold.as_secs_f64() / warm.as_secs_f64();
    println!("  cached is {faster:.1}x faster");
    row(
        "component load",
        &format!("{:.1} ms cached", ms(warm)),
        &format!("{:.0} ms compiling", ms(cold)),
        &format!("{faster:.0}x faster"),
        ">= 20x faster, <= 50 ms",
        Some(faster >= 20.0 && warm <= Duration::from_millis(50)),
    );

    let runtime = loaded.unwrap();
    let builder = runtime.builder("simulated").unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let request = JobRequest {
        repo_url: "https://git.example/app.git".into(),
        ..JobRequest::default()
    };
    let mut job = Job::from_request(
        request,
        &SubmitPolicy::for_builders("simulated", ["simulated"]),
        Utc::now(),
    )
    .unwrap();
    job.start(Utc::now()).unwrap();
    let mut per_job = Vec::with_capacity(JOB_ROUNDS);
    for _ in 0..JOB_ROUNDS {
        let ctx = RunContext {
            log: Arc::new(JobLog::new(100)),
            cancel: CancelSignal::new(),
            workspace: workspace.path().to_path_buf(),
            program_env: Default::default(),
            commit: None,
            values: Default::default(),
            audit: Arc::new(AuditTrail::new(1)),
        };
        let started = Instant::now();
        let outcome = builder.run(&job, ctx).await;
        per_job.push(started.elapsed());
        assert!(matches!(outcome, Ok(Built::Simulated(_))), "{outcome:?}");
    }
    let per_job = median(&mut per_job);
    let micros = per_job.as_secs_f64() * 1e6;
    println!("one job: fresh instance + build call:   {micros:>10.1} µs");
    row(
        "instantiate + call",
        &format!("{micros:.1} µs per job"),
        "-",
        "-",
        "<= 50 µs",
        Some(per_job <= Duration::from_micros(50)),
    );

    command_overhead(workspace.path()).await;
}

/// `true` through the command runner against `true` spawned directly,
/// alternating so both see the same machine state.
async fn command_overhead(workspace: &std::path::Path) {
    let grants = Grants {
        programs: vec![ProgramGrant {
            command: "true".into(),
            args: Vec::new(),
            options: Default::default(),
        }],
        ..Grants::default()
    };
    let runner = CommandRunner::new(
        "bench".into(),
        Arc::new(grants.resolve(|_| None)),
        workspace.to_path_buf(),
        Arc::new(JobLog::new(100)),
        CancelSignal::new(),
        std::env::var_os("PATH"),
    );
    let spec = CommandSpec {
        program: "true".into(),
        ..CommandSpec::default()
    };
    let mut mediated = Vec::with_capacity(COMMAND_ROUNDS);
    let mut direct = Vec::with_capacity(COMMAND_ROUNDS);
    for _ in 0..COMMAND_ROUNDS {
        let started = Instant::now();
        let output = runner.run(spec.clone()).await.unwrap();
        mediated.push(started.elapsed());
        assert_eq!(output.exit_code, 0);

        let started = Instant::now();
        let status = std::process::Command::new("true").status().unwrap();
        direct.push(started.elapsed());
        assert!(status.success());
    }
    let (mediated, direct) = (median(&mut mediated), median(&mut direct));
    println!(
        "`true` through the command runner:      {:>10.1} µs",
        mediated.as_secs_f64() * 1e6
    );
    println!(
        "`true` spawned directly:                {:>10.1} µs",
        direct.as_secs_f64() * 1e6
    );
    let ratio = mediated.as_secs_f64() / direct.as_secs_f64();
    println!("  command runner / direct = {ratio:.2}x");
    row(
        "command",
        &format!("{:.0} µs via runner", mediated.as_secs_f64() * 1e6),
        &format!("{:.0} µs direct", direct.as_secs_f64() * 1e6),
        &format!("{ratio:.2}x"),
        "<= 1.10x",
        Some(ratio <= 1.10),
    );
}
