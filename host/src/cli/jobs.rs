//! The requests about jobs and builders already on the server: `jobs`, `get`, `cancel`, `audit`, `provenance`, `builders`.

use helix_build::audit::JobAudit;
use helix_build::client::Client;
use helix_build::job::{Job, State};
use helix_build::service::JobPage;
use reqwest::Method;
use serde_json::Value;

use super::{message, print_json, print_table, report};

/// Which jobs `jobs` lists (the filters of `GET /v1/jobs`).
#[derive(clap::Args)]
pub struct JobsFilter {
    /// Only jobs in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this concurrency group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only jobs for this builder.
    #[arg(long)]
    pub builder: Option<String>,
    /// Only jobs whose id, repository URL or image contains this text.
    #[arg(long)]
    pub search: Option<String>,
    /// Only jobs of this project (admin tokens; a project's token lists
    /// its own project's jobs only).
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

pub async fn jobs(client: &Client, filter: JobsFilter, as_json: bool) -> Result<bool, String> {
    let mut path = reqwest::Url::parse("http://server/v1/jobs").expect("a fixed URL");
    {
        let mut query = path.query_pairs_mut();
        query.append_pair("limit", &filter.limit.to_string());
        let optional = [
            ("state", &filter.state),
            ("group", &filter.group),
            ("builder", &filter.builder),
            ("q", &filter.search),
            ("project", &filter.project),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
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
            // Abbreviated as git does; `get` shows it in full.
            job.commit
                .as_deref()
                .map_or("-", |c| c.get(..12).unwrap_or(c))
                .to_string(),
            job.image_tag
                .clone()
                .or_else(|| job.error.clone())
                .unwrap_or_default(),
        ]
    });
    print_table(
        &[
            "ID",
            "STATE",
            "BUILDER",
            "CREATED",
            "COMMIT",
            "IMAGE / ERROR",
        ],
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
