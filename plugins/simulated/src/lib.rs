//! The simulated builder: pretends to build, produces no image.
//!
//! For exercising the service (queueing, cancellation, timeouts, the API)
//! without podman or a registry. Everything it reports is marked as a
//! simulation: its `info`, every log line, and an image tag under the
//! reserved `.invalid` domain that no registry can serve.
//!
//! Knobs, a build arg overriding the operator setting of the same meaning:
//! - `HELIX_SIMULATE_DELAY_MS` / setting `delay_ms`: how long the "build"
//!   takes (default 0). Cancellation is honoured during the delay.
//! - `HELIX_SIMULATE_FAIL`: fail the build with this message, as a user's
//!   build error would.
//! - `HELIX_SIMULATE_LOG_LINES`: log this many numbered lines, spread
//!   evenly over the delay, in ANSI colours, as a long build's output
//!   would be (for log viewers).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

wit_bindgen::generate!({
    path: "../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::job_context;
use helix::build::types::{Platform, PlatformDigest, SimulatedImage};

/// Registry host of every simulated tag: `.invalid` is reserved (RFC 2606),
/// so no one can mistake the tag for a pullable image.
const SIMULATED_REGISTRY: &str = "simulated.invalid";
/// How often the delay loop checks for cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(20);

struct Simulated;

impl builder_info::Guest for Simulated {
    fn info() -> Metadata {
        Metadata {
            name: "simulated".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SIMULATION: pretends to build and produces no image".into(),
            simulated: true,
        }
    }
}

impl Guest for Simulated {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        let platforms: Vec<String> = job.platforms.iter().map(platform_string).collect();
        log(&format!(
            "building {} at {} ({}) for {}; no image will be produced",
            job.repo_url,
            job.git_ref,
            job.dockerfile_path,
            platforms.join(",")
        ));

        let delay = delay(&job)?;
        if !delay.is_zero() {
            log(&format!("working for {} ms", delay.as_millis()));
        }
        let lines = log_lines(&job)?;
        let started = Instant::now();
        let deadline = started + delay;
        let mut logged = 0;
        loop {
            // The lines due by now: line n at n/lines of the delay.
            let elapsed = started.elapsed().as_secs_f64();
            let due = match delay.is_zero() {
                true => lines,
                false => ((elapsed / delay.as_secs_f64()) * lines as f64).min(lines as f64) as u64,
            };
            (logged + 1..=due).for_each(|n| step_output(n, lines));
            logged = logged.max(due);
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if job_context::cancelled() {
                log("cancelled; stopping");
                return Err(BuildError::Cancelled);
            }
            std::thread::sleep(left.min(CANCEL_POLL));
        }
        (logged + 1..=lines).for_each(|n| step_output(n, lines));

        if let Some(message) = build_arg(&job, "HELIX_SIMULATE_FAIL") {
            log(&format!("failing on request: {message}"));
            return Err(BuildError::Build(format!("simulated failure: {message}")));
        }

        let manifest: Vec<PlatformDigest> = if job.platforms.len() > 1 {
            job.platforms
                .iter()
                .map(|p| PlatformDigest {
                    platform: p.clone(),
                    digest: fake_digest(&[&job.id, &platform_string(p)]),
                })
                .collect()
        } else {
            Vec::new()
        };
        let image_tag = format!("{SIMULATED_REGISTRY}/helix-simulated:{}", job.id);
        log(&format!("done: {image_tag} (not a real image)"));
        Ok(BuildOutput::Simulated(SimulatedImage {
            image_tag,
            digest: Some(fake_digest(&[&job.id])),
            manifest,
        }))
    }
}

fn log(line: &str) {
    job_context::log(&format!("[simulated] {line}"));
}

fn build_arg<'a>(job: &'a Job, name: &str) -> Option<&'a str> {
    job.build_args
        .iter()
        .find(|arg| arg.name == name)
        .map(|arg| arg.value.as_str())
}

fn delay(job: &Job) -> Result<Duration, BuildError> {
    let (source, raw) = match build_arg(job, "HELIX_SIMULATE_DELAY_MS") {
        Some(raw) => ("build arg HELIX_SIMULATE_DELAY_MS", raw.to_string()),
        None => match job_context::setting("delay_ms") {
            Some(raw) => ("setting delay_ms", raw),
            None => return Ok(Duration::ZERO),
        },
    };
    raw.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| {
            BuildError::InvalidJob(format!(
                "{source} must be a whole number of milliseconds, got {raw:?}"
            ))
        })
}

/// Line `n` of `lines` of pretend build output, in one of six colours.
fn step_output(n: u64, lines: u64) {
    log(&format!("\x1b[{}mstep output {n} of {lines}\x1b[0m", 31 + n % 6));
}

fn log_lines(job: &Job) -> Result<u64, BuildError> {
    match build_arg(job, "HELIX_SIMULATE_LOG_LINES") {
        None => Ok(0),
        Some(raw) => raw.trim().parse::<u64>().map_err(|_| {
            BuildError::InvalidJob(format!(
                "build arg HELIX_SIMULATE_LOG_LINES must be a whole number, got {raw:?}"
            ))
        }),
    }
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.arch),
        None => format!("{}/{}", p.os, p.arch),
    }
}

/// A well-formed digest derived from `parts`, so that repeated runs of the
/// same job report the same value. It names no real content.
fn fake_digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"helix-simulated");
    for part in parts {
        hasher.update([0]);
        hasher.update(part.as_bytes());
    }
    let bytes = hasher.finalize();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

export!(Simulated);
