//! Jobs per second through one, two and three hosts sharing one PostgreSQL
//! database (a real server on loopback, started by the bench), simulated
//! builder at zero delay, 2 workers per host, all hosts in this process —
//! so on one machine they share its cores, as the database does. Beside
//! each, the same jobs spread over ten projects on hosts that have them
//! (fair claiming between projects across hosts): the price of projects.
//! Each figure is the median of several rounds, the two kinds alternating;
//! every round drains its jobs completely.
//!
//! Needs PostgreSQL (Debian's `postgresql`). Run with
//! `bench/run scale_out`.

use crate::common;

use helix_fixtures as fixtures;
use std::time::Duration;

use common::{PROJECTS, median, row, submit_all};
use helix_build::app;
use helix_fixtures::config::ConfigBuilder;

const JOBS: usize = 1_000;
const ROUNDS: usize = 3;
const WORKERS_PER_HOST: usize = 2;

pub fn main() {
    common::block_on(run());
}

async fn run() {
    let postgres = fixtures::Postgres::start();
    let cache = tempfile::tempdir().unwrap();
    println!("cores: {}", common::cores());
    let mut single = 0.0;
    for hosts in 1..=3 {
        let (mut rounds, mut spread) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            rounds.push(drain(&postgres, cache.path(), hosts, round, false).await);
            spread.push(drain(&postgres, cache.path(), hosts, round, true).await);
        }
        let per_second = JOBS as f64 / median(&mut rounds).as_secs_f64();
        let spread = JOBS as f64 / median(&mut spread).as_secs_f64();
        if hosts == 1 {
            single = per_second;
        }
        let ratio = per_second / single;
        println!("{hosts} host(s), {JOBS} jobs: {per_second:>8.0} jobs/s ({ratio:.2}x one host)");
        row(
            &format!("scale-out, {hosts} host(s)"),
            &format!("{per_second:.0} jobs/s"),
            &format!("{single:.0} jobs/s on 1 host"),
            &format!("{ratio:.2}x"),
            "reported (no target)",
            None,
        );
        let ratio = spread / per_second;
        println!("  over {PROJECTS} projects: {spread:>8.0} jobs/s ({ratio:.2}x no project)");
        row(
            &format!("scale-out, {hosts} host(s), {PROJECTS} projects"),
            &format!("{spread:.0} jobs/s"),
            &format!("{per_second:.0} jobs/s, no project"),
            &format!("{ratio:.2}x"),
            ">= 0.90x",
            Some(ratio >= 0.90),
        );
    }
}

/// Starts `hosts` hosts (with [`common::with_projects`]'s projects when
/// `projects`), submits `JOBS` jobs spread over them (and the projects),
/// and returns the time until every job succeeded.
async fn drain(
    postgres: &fixtures::Postgres,
    cache: &std::path::Path,
    hosts: usize,
    round: usize,
    projects: bool,
) -> Duration {
    let dirs: Vec<_> = (0..hosts).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut services = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = ConfigBuilder::new(dir.path())
            .compiled_components_in(cache.to_path_buf())
            .workers(WORKERS_PER_HOST)
            .queue_capacity(JOBS * 2)
            .unvalidated();
        config.store_url = Some(postgres.url());
        config.host_id = Some(format!("host-{i}"));
        config.lease_secs = 10;
        let config = match projects {
            true => common::with_projects(config),
            false => config,
        };
        services.push(app::start(&config.validated().unwrap()).await.unwrap());
    }
    let prefix = format!("hosts-{hosts}-round-{round}-projects-{projects}");
    let elapsed = submit_all(
        &services,
        &prefix,
        0..JOBS,
        Some("simulated"),
        true,
        projects,
    )
    .await;
    for service in &services {
        service.stop(Duration::from_secs(5)).await;
    }
    elapsed
}
