//! The client commands: submit, jobs, get, cancel, logs, wait, builders.
//! Each talks to a server over HTTP and prints for a person (or `--json`
//! for a program). Exit codes: 0 when the command did what was asked (for
//! `submit --wait/--follow` and `wait`: the job succeeded), 1 otherwise.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use helix_build::audit::JobAudit;
use helix_build::client::{Client, ClientError, Followed};
use helix_build::job::{Job, JobRequest, State};
use helix_build::service::JobPage;
use reqwest::Method;
use serde_json::Value;

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

/// How long one `wait` request may block before asking again.
const WAIT_SLICE_SECS: u64 = 60;

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

/// Prints the job's log as it is written (with `timestamps`, each line's
/// time first); on a terminal, a status line under it shows the job's
/// state and the elapsed time.
async fn follow_job(
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
async fn wait_for(client: &Client, id: &str, timeout: Option<Duration>) -> Result<Job, String> {
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

fn report(job: &Job, as_json: bool) {
    if as_json {
        print_json(job);
        return;
    }
    match (&job.state, &job.image_tag, &job.error) {
        (State::Succeeded, Some(tag), _) => {
            println!("{} succeeded: {tag}", job.id);
            if let Some(digest) = &job.digest {
                println!("  digest {digest}");
            }
            for (platform, digest) in job.manifest.iter() {
                println!("  {platform} {digest}");
            }
        }
        (state, _, Some(error)) => println!("{} {state}: {error}", job.id),
        (state, _, None) => println!("{} {state}", job.id),
    }
}

pub async fn jobs(
    client: &Client,
    state: Option<String>,
    group: Option<String>,
    limit: usize,
    as_json: bool,
) -> Result<bool, String> {
    let mut path = reqwest::Url::parse("http://server/v1/jobs").expect("a fixed URL");
    {
        let mut query = path.query_pairs_mut();
        query.append_pair("limit", &limit.to_string());
        if let Some(state) = &state {
            query.append_pair("state", state);
        }
        if let Some(group) = &group {
            query.append_pair("group", group);
        }
    }
    let path = format!("{}?{}", path.path(), path.query().unwrap_or_default());
    let page: JobPage = client
        .json(Method::GET, &path, None)
        .await
        .map_err(message)?;
    if as_json {
        print_json(&page.jobs);
        return Ok(true);
    }
    let rows = page.jobs.iter().map(|job| {
        vec![
            job.id.to_string(),
            job.state.to_string(),
            job.builder.clone(),
            job.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            job.image_tag
                .clone()
                .or_else(|| job.error.clone())
                .unwrap_or_default(),
        ]
    });
    print_table(
        &["ID", "STATE", "BUILDER", "CREATED", "IMAGE / ERROR"],
        rows,
    );
    Ok(true)
}

pub async fn get(client: &Client, id: &str) -> Result<bool, String> {
    let job: Job = client
        .json(Method::GET, &format!("/v1/jobs/{id}"), None)
        .await
        .map_err(message)?;
    print_json(&job);
    Ok(true)
}

pub async fn cancel(client: &Client, id: &str, as_json: bool) -> Result<bool, String> {
    let job: Job = client
        .json(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await
        .map_err(message)?;
    report(&job, as_json);
    Ok(job.state == State::Cancelled)
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

pub async fn audit(client: &Client, id: &str, as_json: bool) -> Result<bool, String> {
    let audit: JobAudit = client
        .json(Method::GET, &format!("/v1/jobs/{id}/audit"), None)
        .await
        .map_err(message)?;
    if as_json {
        print_json(&audit);
        return Ok(true);
    }
    let rows = audit.entries.iter().map(|call| {
        let command = std::iter::once(call.program.as_str())
            .chain(call.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let result = match (&call.exit_code, &call.error) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(error)) => error.clone(),
            (None, None) => String::new(),
        };
        vec![
            call.attempt.to_string(),
            call.started_at.format("%H:%M:%S%.3f").to_string(),
            format!("{}ms", call.duration_ms),
            if call.allowed { "allowed" } else { "DENIED" }.to_string(),
            command,
            result,
        ]
    });
    print_table(
        &["RUN", "STARTED", "TOOK", "GRANTS", "COMMAND", "RESULT"],
        rows,
    );
    if audit.dropped > 0 {
        println!("({} more calls were not kept)", audit.dropped);
    }
    Ok(true)
}

pub async fn provenance(client: &Client, id: &str) -> Result<bool, String> {
    let attestation: Value = client
        .json(Method::GET, &format!("/v1/jobs/{id}/provenance"), None)
        .await
        .map_err(message)?;
    print_json(&attestation);
    Ok(true)
}

/// `helix-build verify`: checks `image`'s provenance and says what it
/// proves, or why it does not.
pub async fn verify(
    image: &str,
    key: &std::path::Path,
    builders: &[String],
    insecure: bool,
    authfile: Option<std::path::PathBuf>,
) -> Result<(), String> {
    use helix_build::config::RegistryConfig;
    use helix_build::provenance::{dsse::PublicKey, statement::sha256_hex};
    use helix_build::registry::{RegistrySettings, oci::RegistryClient};
    let key = PublicKey::load(key)?;
    let registry = image.split('/').next().unwrap_or_default().to_string();
    let registries = match insecure {
        true => BTreeMap::from([(
            registry,
            RegistryConfig {
                tls_verify: false,
                ..RegistryConfig::default()
            },
        )]),
        false => BTreeMap::new(),
    };
    let client = RegistryClient::new(std::sync::Arc::new(RegistrySettings::new(
        registries, authfile,
    )));
    let verified = helix_build::provenance::verify(&client, image, &key, builders).await?;
    let statement = &verified.statement;
    let build = &statement.predicate.build_definition;
    let parameters = &build.external_parameters;
    let run = &statement.predicate.run_details;
    println!("{}: verified", verified.image);
    println!("  signed by      key {}", key.id());
    println!("  attestation    {}", verified.attestation);
    println!(
        "  built from     {} at commit {} (ref {})",
        parameters.repository,
        statement.commit().unwrap_or("?"),
        parameters.git_ref
    );
    println!(
        "  dockerfile     {} in context {}{}",
        parameters.dockerfile,
        parameters.context,
        parameters
            .target
            .as_ref()
            .map(|t| format!(", target {t}"))
            .unwrap_or_default()
    );
    println!(
        "  builder        {} ({}), component {}",
        build.internal_parameters.builder,
        run.builder.id,
        statement.builder_digest().unwrap_or_else(|| "?".into())
    );
    println!(
        "  grants digest  {}",
        build.internal_parameters.grants_digest
    );
    println!(
        "  job            {} on {}, finished {}",
        run.metadata.invocation_id,
        run.builder.id.split(':').nth(3).unwrap_or("?"),
        run.metadata.finished_on.to_rfc3339()
    );
    for subject in &statement.subject {
        let platform = subject
            .annotations
            .get("platform")
            .map(String::as_str)
            .unwrap_or("image");
        let digest = subject
            .digest
            .get("sha256")
            .map(String::as_str)
            .unwrap_or("?");
        println!(
            "  subject        {platform:<14} sha256:{}",
            sha256_hex(digest)
        );
    }
    for base in build.resolved_dependencies.iter().skip(1) {
        if base.name.as_deref() == Some(helix_build::provenance::DOCKERFILE) {
            println!(
                "  dockerfile     {} sha256:{}",
                base.uri.as_deref().unwrap_or("?"),
                base.digest.get("sha256").map(String::as_str).unwrap_or("?")
            );
            continue;
        }
        println!(
            "  base image     {} {}",
            base.uri.as_deref().unwrap_or("?"),
            base.digest
                .get("sha256")
                .map(|d| format!("sha256:{d}"))
                .unwrap_or_else(|| "(not resolved)".into())
        );
    }
    Ok(())
}

/// The files `helix-build plugin test` was given.
pub struct TrialFiles {
    pub component: std::path::PathBuf,
    pub job: std::path::PathBuf,
    pub grants: Option<std::path::PathBuf>,
    pub grants_of: Option<String>,
    pub settings: BTreeMap<String, String>,
    pub dry_run: bool,
    pub canned: Option<std::path::PathBuf>,
}

/// `helix-build plugin test`: runs the builder once and reports each
/// call it made and how the build ended; true if it succeeded.
pub async fn plugin_test(files: TrialFiles) -> Result<bool, String> {
    use helix_build::plugin::Built;
    use helix_build::plugin_tools::trial::{Trial, run};
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let job = serde_json::from_str(&read(&files.job)?)
        .map_err(|e| format!("{}: not a job: {e}", files.job.display()))?;
    let grants = match (&files.grants, &files.grants_of) {
        (Some(path), _) => {
            toml::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(name)) if name == "podman" || name == "buildah" => {
            helix_build::builtin::default_grants(
                name,
                helix_build::network::BuildNetwork::None,
                helix_build::docker_engine::DEFAULT_ENGINE_CLIENT,
            )
        }
        (None, Some(name)) => {
            return Err(format!(
                "--grants-of {name}: no such built-in builder with grants; use podman or buildah"
            ));
        }
        (None, None) => Default::default(),
    };
    let canned = match (&files.canned, files.dry_run) {
        (Some(path), _) => {
            Some(toml::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        (None, true) => Some(Default::default()),
        (None, false) => None,
    };
    let dry = canned.is_some();
    let trial = run(Trial {
        component: files.component,
        job,
        grants,
        settings: files.settings,
        canned,
    })
    .await?;
    println!(
        "job {}: {} at {}{}",
        trial.job.id,
        trial.job.repo_url,
        trial.job.git_ref,
        trial
            .commit
            .as_ref()
            .map(|c| format!(" (checked out {c})"))
            .unwrap_or_default()
    );
    println!(
        "calls{}:",
        if dry { " (dry run: none was run)" } else { "" }
    );
    if trial.calls.is_empty() {
        println!("  (none)");
    }
    for (n, call) in trial.calls.iter().enumerate() {
        let command = std::iter::once(call.program.as_str())
            .chain(call.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        println!("  {:>3}. {command}", n + 1);
        match (&call.grant, &call.error) {
            (Some(grant), _) => println!(
                "       allowed by `{grant}`; exit {}",
                call.exit_code.unwrap_or_default()
            ),
            (None, Some(error)) => println!("       REFUSED: {error}"),
            (None, None) => {}
        }
    }
    println!("log:");
    for line in &trial.log {
        println!("  {line}");
    }
    let ok = trial.result.is_ok();
    match trial.result {
        Ok(Built::Simulated(_)) => println!("result: succeeded (simulated: no image)"),
        Ok(Built::Layout(path)) => println!(
            "result: succeeded: an OCI layout at {} (the host would push it now)",
            path.display()
        ),
        Ok(Built::LocalImage) => println!(
            "result: succeeded: the image is in the job's container storage (the host would push it now)"
        ),
        Err(outcome) => println!(
            "result: {}: {}",
            outcome.state(),
            outcome.error().unwrap_or_default()
        ),
    }
    Ok(ok)
}

pub async fn wait(
    client: &Client,
    id: &str,
    timeout: Option<u64>,
    as_json: bool,
) -> Result<bool, String> {
    let job = wait_for(client, id, timeout.map(Duration::from_secs)).await?;
    report(&job, as_json);
    Ok(job.state == State::Succeeded)
}

pub async fn builders(client: &Client, as_json: bool) -> Result<bool, String> {
    let builders: Vec<Value> = client
        .json(Method::GET, "/v1/builders", None)
        .await
        .map_err(message)?;
    if as_json {
        print_json(&builders);
        return Ok(true);
    }
    let text = |b: &Value, field: &str| b[field].as_str().unwrap_or_default().to_string();
    let rows = builders.iter().map(|b| {
        vec![
            text(b, "name"),
            text(b, "version"),
            (if b["simulated"] == true { "yes" } else { "no" }).to_string(),
            text(b, "description"),
        ]
    });
    print_table(&["NAME", "VERSION", "SIMULATED", "DESCRIPTION"], rows);
    Ok(true)
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
