//! Jobs per second through the whole `Service` (queue, workers, SQLite
//! store, logs) with the simulated wasm builder at zero delay, against the
//! same service running a native no-op builder that does the same work in
//! Rust: the price of the plugin boundary on a job. Rounds alternate
//! between the two; medians.
//!
//! Run with `bench/run plugin_call`.

use crate::common;

use std::time::Duration;

use common::{NATIVE, median, row, submit_all};

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
    println!("cores: {}, workers: {}", common::cores(), config.workers);

    let mut wasm = Vec::new();
    let mut native = Vec::new();
    for round in 0..ROUNDS {
        let services = [service.clone()];
        let prefix = format!("round-{round}");
        let simulated = Some("simulated");
        wasm.push(
            submit_all(
                &services,
                &format!("{prefix}-wasm"),
                0..JOBS,
                simulated,
                true,
            )
            .await,
        );
        native.push(
            submit_all(
                &services,
                &format!("{prefix}-native"),
                0..JOBS,
                Some(NATIVE),
                true,
            )
            .await,
        );
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
