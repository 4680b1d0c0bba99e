//! Jobs per second through the whole `Service` (queue, workers, SQLite
//! store, logs) with the simulated wasm builder at zero delay, against the
//! same service running a native no-op builder that does the same work in
//! Rust: the price of the plugin boundary on a job. Beside them, the wasm
//! builder's jobs spread over ten projects in a service that has them
//! (tokens, fair claiming between projects): the price of projects. Rounds
//! alternate between the three; medians.
//!
//! Run with `bench/run plugin_call`.

use crate::common;

use std::time::Duration;

use common::{NATIVE, PROJECTS, median, row, submit_all};
use helix_build::service::Service;

/// Jobs per round, submitted by `common::CLIENTS` clients.
const JOBS: usize = 2_000;
const ROUNDS: usize = 5;

pub fn main() {
    common::block_on(run());
}

async fn run() {
    let data = tempfile::tempdir().unwrap();
    let config = common::config(&data, JOBS * 2);
    let service = common::service_with_native(&config).await;
    let projects_data = tempfile::tempdir().unwrap();
    let with_projects = common::with_projects(common::config(&projects_data, JOBS * 2));
    let projects = common::service_with_native(&with_projects).await;
    println!("cores: {}, workers: {}", common::cores(), config.workers);

    let (mut wasm, mut native, mut spread) = (Vec::new(), Vec::new(), Vec::new());
    let simulated = Some("simulated");
    for round in 0..ROUNDS {
        let prefix = format!("round-{round}");
        let round_of = async |service: &Service, side: &str, builder, for_projects| {
            let services = [service.clone()];
            let prefix = format!("{prefix}-{side}");
            submit_all(&services, &prefix, 0..JOBS, builder, true, for_projects).await
        };
        wasm.push(round_of(&service, "wasm", simulated, false).await);
        native.push(round_of(&service, "native", Some(NATIVE), false).await);
        spread.push(round_of(&projects, "projects", simulated, true).await);
    }
    let per_second = |d: Duration| JOBS as f64 / d.as_secs_f64();
    let (wasm, native, spread) = (
        per_second(median(&mut wasm)),
        per_second(median(&mut native)),
        per_second(median(&mut spread)),
    );
    println!("{JOBS} jobs, simulated wasm builder:   {wasm:>8.0} jobs/s");
    println!("{JOBS} jobs, native no-op builder:     {native:>8.0} jobs/s");
    println!("{JOBS} jobs over {PROJECTS} projects (wasm): {spread:>8.0} jobs/s");
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
    let ratio = spread / wasm;
    println!("  {PROJECTS} projects / none = {ratio:.2}x");
    row(
        &format!("plugin call, {PROJECTS} projects"),
        &format!("{spread:.0} jobs/s ({PROJECTS} projects)"),
        &format!("{wasm:.0} jobs/s (no project)"),
        &format!("{ratio:.2}x"),
        ">= 0.90x",
        Some(ratio >= 0.90),
    );
    service.stop(Duration::from_secs(5)).await;
    projects.stop(Duration::from_secs(5)).await;
}
