//! Jobs per second through the whole `Service` (queue, workers, SQLite
//! store, logs) with the simulated wasm builder at zero delay, against the
//! same service running a native no-op builder that does the same work in
//! Rust: the price of the plugin boundary on a job. Rounds alternate
//! between the two; medians.
//!
//! Run with `cargo bench -p helix-build --bench plugin_call`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{NATIVE, median, row};
use helix_build::job::{JobRequest, State};
use helix_build::service::Service;

const JOBS: usize = 2_000;
const ROUNDS: usize = 5;
/// Concurrent submitters.
const CLIENTS: usize = 64;

fn main() {
    common::block_on(run());
}

async fn run() {
    let data = tempfile::tempdir().unwrap();
    let config = common::config(&data, JOBS * 2);
    let service = common::service_with_native(&config).await;
    println!("cores: {}, workers: {}", common::cores(), config.workers);

    let mut wasm = Vec::new();
    let mut native = Vec::new();
    for round in 0..ROUNDS {
        wasm.push(drain(&service, "simulated", round).await);
        native.push(drain(&service, NATIVE, round).await);
    }
    let per_second = |d: Duration| JOBS as f64 / d.as_secs_f64();
    let (wasm, native) = (
        per_second(median(&mut wasm)),
        per_second(median(&mut native)),
    );
    println!("{JOBS} jobs, simulated wasm builder:   {wasm:>8.0} jobs/s");
    println!("{JOBS} jobs, native no-op builder:     {native:>8.0} jobs/s");
    let ratio = wasm / native;
    println!("  wasm / native = {ratio:.2}x");
    row(
        "plugin call",
        &format!("{wasm:.0} jobs/s (wasm)"),
        &format!("{native:.0} jobs/s (native)"),
        &format!("{ratio:.2}x"),
        ">= 0.5x",
        Some(ratio >= 0.5),
    );
    service.stop(Duration::from_secs(5)).await;
}

/// Submits `JOBS` jobs for `builder` from `CLIENTS` tasks and waits until
/// every one has succeeded; returns the time from the first submission to
/// the last success.
async fn drain(service: &Service, builder: &str, round: usize) -> Duration {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let builder: Arc<str> = builder.into();
    for client in 0..CLIENTS {
        let service = service.clone();
        let builder = builder.clone();
        clients.spawn(async move {
            let mut ids = Vec::new();
            for i in (client..JOBS).step_by(CLIENTS) {
                let request = JobRequest {
                    id: Some(format!("{builder}-{round}-{i}")),
                    repo_url: "https://git.example/app.git".into(),
                    builder: Some(builder.to_string()),
                    ..JobRequest::default()
                };
                ids.push(service.submit(request).await.expect("accepted").id);
            }
            for id in ids {
                let job = service
                    .wait(id.as_str(), Duration::from_secs(120))
                    .await
                    .unwrap();
                assert_eq!(job.state, State::Succeeded, "{:?}", job.error);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    started.elapsed()
}
