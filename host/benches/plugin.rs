//! What the plugin runtime costs, each figure measured side by side in one
//! run and reported as a median:
//!
//! - loading every built-in builder with an empty compile cache against
//!   loading them again from the cache;
//! - one job's fresh instance plus its `build` call (simulated builder, zero
//!   delay), the per-job price of the wasm boundary.
//!
//! Run with `cargo bench -p helix-build --bench plugin`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use helix_build::cancel::CancelSignal;
use helix_build::config::Config;
use helix_build::job::{Job, JobId, JobRequest, Outcome, SubmitPolicy};
use helix_build::log::JobLog;
use helix_build::plugin::{ComponentCache, PluginRuntime, PoolSizing, RunContext};

const LOAD_ROUNDS: usize = 5;
const JOB_ROUNDS: usize = 2_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let config = Config::default();
    let sizing = PoolSizing {
        instances: 4,
        max_memory_bytes: 512 << 20,
    };
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

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
    println!(
        "  cached is {:.1}x faster",
        cold.as_secs_f64() / warm.as_secs_f64()
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
        JobId::generate(),
        "simulated".into(),
        &SubmitPolicy::default(),
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
        };
        let started = Instant::now();
        let outcome = builder.run(&job, ctx).await;
        per_job.push(started.elapsed());
        assert!(matches!(outcome, Outcome::Succeeded(_)), "{outcome:?}");
    }
    let per_job = median(&mut per_job);
    println!(
        "one job: fresh instance + build call:   {:>10.1} µs",
        per_job.as_secs_f64() * 1e6
    );
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
