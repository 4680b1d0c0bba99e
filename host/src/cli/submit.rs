//! `submit`: the job request built from the command line, sent, and optionally followed or waited for.

use std::collections::BTreeMap;

use helix_build::client::Client;
use helix_build::job::{Job, JobRequest, State};
use reqwest::Method;

use super::follow::{follow_job, wait_for};
use super::{message, print_json, report};

/// What `submit` sends. Flags follow `docker build`/`buildx build` where
/// the meaning is the same: `-t`, `-f`, `--build-arg`, `--secret id=`,
/// `--target`, `--label`, `--platform`, `--no-cache`, and the repository
/// as the positional argument with docker's `URL#REF:DIR` form. (No
/// `--push`: every job pushes its image.)
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("repository").required(true).args(["location", "repo"])))]
pub struct Submission {
    /// Git repository URL to build, as `docker build` takes one:
    /// `URL`, `URL#REF` or `URL#REF:DIR` (DIR is the context).
    #[arg(value_name = "REPO")]
    pub location: Option<String>,
    /// Git repository URL (the same as REPO).
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit (default: the repository's default branch).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// The full commit id to build, which must be on --ref (as
    /// Buildkite's --commit beside --branch): a CI build of the exact
    /// commit pushed, a protected job when the ref is protected.
    #[arg(long)]
    pub commit: Option<String>,
    /// Dockerfile path inside the repository.
    #[arg(short = 'f', long = "file")]
    pub dockerfile: Option<String>,
    /// NAME=VALUE, or NAME to take the value from this environment (as
    /// docker does; skipped when unset); repeatable.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// os/arch[/variant], repeatable or comma-separated.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Builder name (default: the server's `default_builder`).
    #[arg(long)]
    pub builder: Option<String>,
    /// Image reference to push to (docker's `-t`/`--tag`; one per job).
    #[arg(short = 't', long, visible_alias = "tag")]
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
    /// A build secret the server defines, for `RUN --mount=type=secret,id=NAME`:
    /// `NAME` or docker's `id=NAME`; repeatable. The value is the
    /// server's, so docker's `src=` and `env=` have no meaning here.
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
        let location = self.location.or(self.repo).unwrap_or_default();
        let (repo_url, git_ref, context) = split_location(&location, self.git_ref, self.context)?;
        Ok(JobRequest {
            id: self.id,
            repo_url,
            git_ref,
            commit: self.commit,
            dockerfile_path: self.dockerfile,
            build_args: build_args(&self.build_args, |name| std::env::var(name).ok())?,
            platforms: self
                .platforms
                .iter()
                .flat_map(|p| p.split(','))
                .map(|p| p.trim().to_string())
                .collect(),
            builder: self.builder,
            image: self.image,
            context,
            target: self.target,
            labels: pairs("--label", "KEY=VALUE", &self.labels)?,
            no_cache: self.no_cache,
            secrets: self
                .secrets
                .iter()
                .map(|s| secret_name(s))
                .collect::<Result<_, _>>()?,
            queue_ttl_secs: self.queue_ttl,
            priority: self.priority,
            group: self.group,
            max_running: self.max_running,
            cancel_in_progress: self.cancel_in_progress,
            project: None,
        })
    }
}

/// Docker's `URL#REF:DIR` as (URL, ref, context), each part given at most
/// once: in the fragment or as `--ref`/`--context`.
fn split_location(
    location: &str,
    git_ref: Option<String>,
    context: Option<String>,
) -> Result<(String, Option<String>, Option<String>), String> {
    let Some((url, fragment)) = location.split_once('#') else {
        return Ok((location.to_string(), git_ref, context));
    };
    let (fragment_ref, fragment_dir) = match fragment.split_once(':') {
        Some((r, dir)) => (r, Some(dir)),
        None => (fragment, None),
    };
    let one = |flag: &str, fragment: Option<&str>, given: Option<String>| match (fragment, given) {
        (Some(f), Some(g)) if !f.is_empty() => Err(format!(
            "the repository names {flag} {f:?} after '#' and {flag} {g:?} is given too; give it once"
        )),
        (Some(f), None) if !f.is_empty() => Ok(Some(f.to_string())),
        (_, given) => Ok(given),
    };
    Ok((
        url.to_string(),
        one("--ref", Some(fragment_ref), git_ref)?,
        one("--context", fragment_dir, context)?,
    ))
}

/// `--build-arg` values: `NAME=VALUE`, or `NAME` with the value `env`
/// has for it (skipped when it has none, as docker does).
fn build_args(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((name, value)) => {
                values.insert(name.to_string(), value.to_string());
            }
            None if arg.is_empty() => return Err("--build-arg needs NAME=VALUE or NAME".into()),
            None => {
                if let Some(value) = env(arg) {
                    values.insert(arg.clone(), value);
                }
            }
        }
    }
    Ok(values)
}

/// A `--secret` as the name the server knows: `NAME` or `id=NAME`.
fn secret_name(arg: &str) -> Result<String, String> {
    let mut id = None;
    for part in arg.split(',') {
        match part.split_once('=') {
            None if !arg.contains(',') => return Ok(arg.to_string()),
            Some(("id", name)) if !name.is_empty() => id = Some(name.to_string()),
            Some(("src" | "source" | "env" | "type", _)) => {
                return Err(format!(
                    "--secret {arg:?}: the server holds the secrets' values, so only id=NAME                      (or NAME) is taken; `{part}` has no meaning here"
                ));
            }
            _ => return Err(format!("--secret {arg:?} must be NAME or id=NAME")),
        }
    }
    id.ok_or_else(|| format!("--secret {arg:?} must be NAME or id=NAME"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_url_fragment_names_the_ref_and_the_context() {
        let split = |location: &str, r: Option<&str>, c: Option<&str>| {
            split_location(location, r.map(String::from), c.map(String::from))
        };
        let url = "https://git.example/app.git";
        assert_eq!(
            split(url, Some("v1"), None),
            Ok((url.to_string(), Some("v1".into()), None))
        );
        assert_eq!(
            split(&format!("{url}#main"), None, None),
            Ok((url.to_string(), Some("main".into()), None))
        );
        assert_eq!(
            split(&format!("{url}#v2:services/api"), None, None),
            Ok((
                url.to_string(),
                Some("v2".into()),
                Some("services/api".into())
            ))
        );
        assert_eq!(
            split(&format!("{url}#:services/api"), Some("dev"), None),
            Ok((
                url.to_string(),
                Some("dev".into()),
                Some("services/api".into())
            ))
        );
        let twice = split(&format!("{url}#main"), Some("dev"), None).unwrap_err();
        assert!(
            twice.contains("--ref \"main\"") && twice.contains("\"dev\""),
            "{twice}"
        );
        let twice = split(&format!("{url}#main:a"), None, Some("b")).unwrap_err();
        assert!(twice.contains("--context"), "{twice}");
    }

    #[test]
    fn a_build_arg_without_a_value_takes_it_from_the_environment_or_is_skipped() {
        let env = |name: &str| (name == "FROM_ENV").then(|| "env value".to_string());
        let args = ["A=1", "FROM_ENV", "UNSET", "B=x=y"].map(String::from);
        let values = build_args(&args, env).unwrap();
        assert_eq!(
            values.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "x=y".into()),
                ("FROM_ENV".into(), "env value".into()),
            ]
        );
        assert!(build_args(&[String::new()], env).is_err());
    }

    #[test]
    fn a_secret_is_named_as_docker_or_plainly_and_sources_are_refused() {
        assert_eq!(secret_name("npm"), Ok("npm".into()));
        assert_eq!(secret_name("id=npm"), Ok("npm".into()));
        for refused in ["id=npm,src=./token", "id=npm,env=TOKEN", "src=x"] {
            let error = secret_name(refused).unwrap_err();
            assert!(error.contains("only id=NAME"), "{refused}: {error}");
        }
        assert!(secret_name("id=").is_err());
        assert!(secret_name("id=a,junk").is_err());
    }
}
