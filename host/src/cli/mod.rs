//! The client commands: submit, jobs, get, cancel, logs, wait, builders.
//! Each talks to a server over HTTP and prints for a person (or `--json`
//! for a program). Exit codes: 0 when the command did what was asked (for
//! `submit --wait/--follow` and `wait`: the job succeeded), 1 otherwise,
//! and [`WAIT_TIMED_OUT`] when `wait --timeout` passed before the job ended.
//! A module per command family; this one holds what they share: how a job,
//! a table and a value are printed.

mod follow;
mod jobs;
mod plugin;
mod submit;
mod verify;

use helix_build::client::ClientError;
use helix_build::job::{Job, State};

pub use follow::{logs, wait};
pub use jobs::{JobsFilter, audit, builders, cancel, get, jobs, provenance};
pub use plugin::{TrialFiles, plugin_test};
pub use submit::{Submission, submit};
pub use verify::verify;

/// `wait`'s exit code when its `--timeout` passed first: timeout(1)'s.
pub const WAIT_TIMED_OUT: u8 = 124;

fn report(job: &Job, as_json: bool) {
    if as_json {
        print_json(job);
        return;
    }
    match (&job.state, &job.image_tag) {
        (State::Succeeded, Some(tag)) => {
            println!("{} succeeded: {tag}", job.id);
            if let Some(digest) = &job.digest {
                println!("  digest {digest}");
            }
            for (platform, digest) in job.manifest.iter() {
                println!("  {platform} {digest}");
            }
        }
        _ => println!("{} {}", job.id, job.summary()),
    }
    if let Some(commit) = &job.commit {
        println!("  commit {commit}");
    }
}

/// Prints `rows` under `header`, each column as wide as its widest cell
/// (the last one left ragged).
fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let last = row.len().saturating_sub(1);
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| match i == last {
                true => cell.clone(),
                false => format!("{cell:<width$}", width = widths[i]),
            })
            .collect();
        println!("{}", line.join("  "));
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn message(e: ClientError) -> String {
    e.to_string()
}
