//! Watching a job: following its log as it is written (`logs --follow`, `submit --follow`) and waiting for its end (`wait`, `submit --wait`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use helix_build::client::{Client, Followed};
use helix_build::job::{Job, State};
use reqwest::Method;

use super::{message, report};

/// How long one `wait` request may block before asking again.
const WAIT_SLICE_SECS: u64 = 60;

/// Prints the job's log as it is written (with `timestamps`, each line's
/// time first); on a terminal, a status line under it shows the job's
/// state and the elapsed time.
pub(super) async fn follow_job(
    client: &Client,
    id: &str,
    show_progress: bool,
    timestamps: bool,
) -> Result<Job, String> {
    let tty = show_progress && std::io::stderr().is_terminal();
    let started = Instant::now();
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut frame = 0;
    let mut state = String::from("queued");
    let mut status = |state: &str, clear_only: bool| {
        if tty {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            if !clear_only {
                frame = (frame + 1) % frames.len();
                let elapsed = started.elapsed().as_secs_f64();
                let _ = write!(err, "{} {id} {state} {elapsed:.0}s", frames[frame]);
            }
            let _ = err.flush();
        }
    };
    let job = client
        .follow_logs(id, timestamps, |event| match event {
            Followed::State(new) => {
                state = new.to_string();
                status(&state, false);
            }
            Followed::Line(line) => {
                status(&state, true);
                println!("{line}");
                status(&state, false);
            }
        })
        .await
        .map_err(message)?;
    status(&state, true);
    Ok(job)
}

/// Waits until the job ends, or `timeout` passes (then returns it as is).
pub(super) async fn wait_for(
    client: &Client,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Job, String> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .min(WAIT_SLICE_SECS),
            None => WAIT_SLICE_SECS,
        };
        let job: Job = client
            .json(
                Method::GET,
                &format!("/v1/jobs/{id}/wait?timeout_secs={slice}"),
                None,
            )
            .await
            .map_err(message)?;
        if job.state.is_terminal() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(job);
        }
    }
}

pub async fn logs(
    client: &Client,
    id: &str,
    follow: bool,
    timestamps: bool,
) -> Result<bool, String> {
    if follow {
        let job = follow_job(client, id, true, timestamps).await?;
        return Ok(job.state == State::Succeeded);
    }
    print!(
        "{}",
        client
            .text(&format!("/v1/jobs/{id}/logs?timestamps={timestamps}"))
            .await
            .map_err(message)?
    );
    Ok(true)
}

/// Waits for job `id` to end and prints it: the job once it ended, `None`
/// when `timeout` passed first (the job is printed as it then is).
pub async fn wait(
    client: &Client,
    id: &str,
    timeout: Option<u64>,
    as_json: bool,
) -> Result<Option<Job>, String> {
    let job = wait_for(client, id, timeout.map(Duration::from_secs)).await?;
    report(&job, as_json);
    Ok(job.state.is_terminal().then_some(job))
}
