//! `submit`: the job request built from the command line, sent, and optionally followed or waited for.

use std::collections::BTreeMap;

use helix_build::client::Client;
use helix_build::job::{Job, JobRequest, State};
use reqwest::Method;

use super::follow::{follow_job, wait_for};
use super::{message, print_json, report};

/// What `submit` sends.
#[derive(clap::Args)]
pub struct Submission {
    /// Git repository URL.
    #[arg(long)]
    pub repo: String,
    /// Branch, tag or commit (default: the repository's default branch).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Dockerfile path inside the repository.
    #[arg(short = 'f', long = "file")]
    pub dockerfile: Option<String>,
    /// NAME=VALUE, repeatable.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// os/arch[/variant], repeatable or comma-separated.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Builder name (default: the server's `default_builder`).
    #[arg(long)]
    pub builder: Option<String>,
    /// Image reference to push to.
    #[arg(long)]
    pub image: Option<String>,
    /// Your own job id.
    #[arg(long)]
    pub id: Option<String>,
    /// Directory of the repository to build (the Dockerfile path is
    /// relative to it).
    #[arg(long)]
    pub context: Option<String>,
    /// Stage of a multi-stage Dockerfile to build.
    #[arg(long)]
    pub target: Option<String>,
    /// KEY=VALUE set on the image, repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Build every step afresh.
    #[arg(long)]
    pub no_cache: bool,
    /// Name of a build secret the server defines, for
    /// `RUN --mount=type=secret,id=NAME`; repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Seconds the job may wait for a worker before it ends `expired`
    /// (default: the server's `queue_ttl_secs`).
    #[arg(long)]
    pub queue_ttl: Option<u64>,
    /// -100 to 100; higher runs first (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Concurrency group: at most --max-running of its jobs run at once.
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: how many of its jobs may run at once (default 1).
    #[arg(long)]
    pub max_running: Option<u32>,
    /// With --group: cancel the group's queued and running jobs.
    #[arg(long)]
    pub cancel_in_progress: bool,
}

impl Submission {
    /// The request the server is sent.
    fn request(self) -> Result<JobRequest, String> {
        Ok(JobRequest {
            id: self.id,
            repo_url: self.repo,
            git_ref: self.git_ref,
            dockerfile_path: self.dockerfile,
            build_args: pairs("--build-arg", "NAME=VALUE", &self.build_args)?,
            platforms: self
                .platforms
                .iter()
                .flat_map(|p| p.split(','))
                .map(|p| p.trim().to_string())
                .collect(),
            builder: self.builder,
            image: self.image,
            context: self.context,
            target: self.target,
            labels: pairs("--label", "KEY=VALUE", &self.labels)?,
            no_cache: self.no_cache,
            secrets: self.secrets,
            queue_ttl_secs: self.queue_ttl,
            priority: self.priority,
            group: self.group,
            max_running: self.max_running,
            cancel_in_progress: self.cancel_in_progress,
            project: None,
        })
    }
}

/// `NAME=VALUE` arguments of `flag` as a map.
fn pairs(flag: &str, shape: &str, args: &[String]) -> Result<BTreeMap<String, String>, String> {
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .ok_or_else(|| format!("{flag} {arg:?} must be {shape}"))
        })
        .collect()
}

pub async fn submit(
    client: &Client,
    s: Submission,
    wait: bool,
    follow: bool,
    as_json: bool,
) -> Result<bool, String> {
    let request = serde_json::to_value(s.request()?).map_err(|e| e.to_string())?;
    let job: Job = client
        .json(Method::POST, "/v1/jobs", Some(&request))
        .await
        .map_err(message)?;
    if !wait && !follow {
        if as_json {
            print_json(&job);
        } else {
            println!("{}", job.id);
        }
        return Ok(true);
    }
    if !as_json {
        eprintln!("submitted {} on builder '{}'", job.id, job.builder);
    }
    let job = if follow {
        follow_job(client, job.id.as_str(), !as_json, false).await?
    } else {
        wait_for(client, job.id.as_str(), None).await?
    };
    report(&job, as_json);
    Ok(job.state == State::Succeeded)
}
