//! Resident memory of a running service with 100,000 finished jobs in its
//! history and 10,000 queued, against the same process idle (started, no
//! jobs). History is made by running the jobs through the service (native
//! no-op builder, so it is quick); the queued jobs wait behind long
//! simulated jobs holding every worker. Memory is read after 50,000 and
//! after 100,000 finished jobs too, to show it does not grow with history.
//!
//! Run with `bench/run memory`.

use crate::common;

use std::time::Duration;

use common::{CLIENTS, NATIVE, resident_bytes, row, submit_all};
use helix_build::job::{JobRequest, State};

const FINISHED: usize = 100_000;
const QUEUED: usize = 10_000;
/// Over idle, with the full history and queue.
const BUDGET_MB: f64 = 150.0;
/// Growth allowed between half and all of the history.
const FLAT_MB: f64 = 10.0;

pub fn main() {
    common::block_on(run());
}

async fn run() {
    let data = tempfile::tempdir().unwrap();
    let config = common::config(&data, QUEUED + CLIENTS);
    let service = common::service_with_native(&config).await;
    let services = [service.clone()];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = mb(resident_bytes());

    submit_all(&services, "job", 0..FINISHED / 2, Some(NATIVE), true, false).await;
    let half = mb(resident_bytes());
    submit_all(
        &services,
        "job",
        FINISHED / 2..FINISHED,
        Some(NATIVE),
        true,
        false,
    )
    .await;
    let full = mb(resident_bytes());

    // Hold every worker with a long job, so what follows stays queued.
    let mut holders = Vec::new();
    for _ in 0..config.workers {
        let request = JobRequest {
            repo_url: "https://git.example/app.git".into(),
            build_args: [("HELIX_SIMULATE_DELAY_MS".into(), "600000".into())].into(),
            builder: Some("simulated".into()),
            ..JobRequest::default()
        };
        holders.push(service.submit(request).await.unwrap().id);
    }
    for id in &holders {
        while service.get(id.as_str()).await.unwrap().state != State::Running {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    submit_all(
        &services,
        "job",
        FINISHED..FINISHED + QUEUED,
        Some(NATIVE),
        false,
        false,
    )
    .await;
    assert_eq!(service.queue_depth().await.unwrap(), QUEUED);
    let loaded = mb(resident_bytes());

    println!("cores: {}", common::cores());
    println!("idle service:                         {idle:>7.1} MB resident");
    println!(
        "+ {:>6} finished jobs:               {half:>7.1} MB",
        FINISHED / 2
    );
    println!("+ {FINISHED:>6} finished jobs:               {full:>7.1} MB");
    println!("+ {FINISHED:>6} finished and {QUEUED} queued:   {loaded:>7.1} MB");
    let over = loaded - idle;
    let growth = full - half;
    println!("  over idle: {over:.1} MB; from half to all of the history: {growth:+.1} MB");
    row(
        "memory",
        &format!("{loaded:.0} MB ({FINISHED} done, {QUEUED} queued)"),
        &format!("{idle:.0} MB idle"),
        &format!("+{over:.0} MB; history {growth:+.1} MB"),
        &format!("<= {BUDGET_MB:.0} MB over idle, flat"),
        Some(over <= BUDGET_MB && growth <= FLAT_MB),
    );
    service.stop(Duration::ZERO).await;
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
