//! The HTTP API: thin handlers over [`Service`]. Errors are JSON
//! `{"error": {"code", "message"}}` with a status that says whose fault
//! it is. When a token or a project is configured every `/v1` route needs
//! `Authorization: Bearer <token>`, resolved to a [`Caller`] whose scopes
//! each route checks (403 naming the missing scope); another project's
//! job answers exactly as a job that does not exist (404). `/healthz`,
//! `/readyz` and `/metrics` stay open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::access::{Access, Caller, Refused, Scope};
use crate::audit::JobAudit;
use crate::hooks::{Forge, HookError, Hooked};
use crate::job::{InvalidJob, Job, JobRequest, State as JobState};
use crate::plugin::BuilderInfo;
use crate::provenance::Attestation;
use crate::service::{JobPage, Service, ServiceError};
use crate::store::JobFilter;

/// Longest `wait` a client may ask for.
const MAX_WAIT_SECS: u64 = 3600;
const DEFAULT_WAIT_SECS: u64 = 30;
/// Largest request body; a job submission is far smaller.
const MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The API over `service`, its `/v1` routes answering the callers
/// `access` accepts (everyone, as the admin, when it has no tokens).
pub fn router(service: Service, access: Access) -> Router {
    let access = Arc::new(access);
    // Outside the token: a forge signs its deliveries instead.
    let hooks = Router::new()
        .route("/v1/hooks/{forge}", post(hook))
        .route("/v1/hooks/{forge}/{project}", post(project_hook))
        .layer(Extension(access.clone()));
    let v1 = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/wait", get(wait))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/audit", get(audit))
        .route("/v1/jobs/{id}/provenance", get(provenance))
        .route("/v1/builders", get(builders))
        .route("/v1/builders/reload", post(reload_builders))
        .route("/v1/openapi.json", get(openapi))
        .route_layer(middleware::from_fn(move |request, next| {
            require_token(access.clone(), request, next)
        }));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(hooks)
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::router())
        .merge(v1)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

/// Lets a request through only with a bearer token `access` accepts,
/// handing the handlers its [`Caller`] (and `access`, for an admin naming
/// a project); 401 with `WWW-Authenticate: Bearer` otherwise.
async fn require_token(
    access: Arc<Access>,
    mut request: Request,
    next: Next,
) -> Result<Response, Response> {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = access
        .resolve(given, chrono::Utc::now())
        .map_err(|refused| {
            let (message, challenge) = match refused {
                Refused::Missing => (
                    "missing or wrong bearer token; send Authorization: Bearer <token> (HELIX_TOKEN for the CLI)",
                    "Bearer",
                ),
                Refused::Unknown => (
                    "missing or wrong bearer token; send Authorization: Bearer <token> (HELIX_TOKEN for the CLI)",
                    "Bearer error=\"invalid_token\"",
                ),
                Refused::Expired => (
                    "the bearer token has expired; ask the server's operator for a new one",
                    "Bearer error=\"invalid_token\", error_description=\"the token has expired\"",
                ),
            };
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            response
        })?;
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(access);
    Ok(next.run(request).await)
}

/// 403 unless `caller` holds `scope`; the answer names it.
fn require(caller: &Caller, scope: Scope, to: &str) -> ApiResult<()> {
    if caller.has(scope) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this token lacks the scope {scope}, which is needed to {to}"),
    ))
}

/// Checks that `caller` may see job `id` at all: another project's job
/// gets exactly the answer of a job that does not exist.
async fn visible(service: &Service, caller: &Caller, id: &str) -> ApiResult<()> {
    if caller.is_admin() {
        return Ok(());
    }
    let job = service.get(id).await?;
    if !caller.sees(&job) {
        return Err(ServiceError::NotFound(id.to_string()).into());
    }
    Ok(())
}

/// [`require`] `jobs:read`, then [`visible`].
async fn readable(service: &Service, caller: &Caller, id: &str) -> ApiResult<()> {
    require(caller, Scope::JobsRead, "read jobs")?;
    visible(service, caller, id).await
}

/// An error as the client sees it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, for programs: `invalid_job`, `not_found`, `queue_full`, …
    code: &'static str,
    /// For the person: what is wrong and what to do.
    message: String,
    /// The request field at fault, for an invalid job.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        });
        let mut response = (self.status, body).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = match &e {
            ServiceError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_job"),
            ServiceError::Duplicate(_) => (StatusCode::CONFLICT, "duplicate_id"),
            ServiceError::QueueFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            ServiceError::ProjectQueueFull { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "project_queue_full")
            }
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::AlreadyEnded { .. } => (StatusCode::CONFLICT, "already_ended"),
            ServiceError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ServiceError::Store(cause) => {
                // The edge: the detail is the operator's, not the client's.
                tracing::error!("{cause}");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            ServiceError::UnknownCursor(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ServiceError::NoProvenance { .. } => (StatusCode::NOT_FOUND, "no_provenance"),
            ServiceError::Reload(_) => (StatusCode::UNPROCESSABLE_ENTITY, "reload_failed"),
        };
        let field = match &e {
            ServiceError::Invalid(invalid) => Some(invalid.field),
            _ => None,
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
            field,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // A body that parses but does not fit the schema is as invalid as
        // one that does not parse: both are the client's to fix (400).
        let status = match &rejection {
            JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                StatusCode::BAD_REQUEST
            }
            other => other.status(),
        };
        ApiError::new(status, "bad_request", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            rejection.body_text(),
        )
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(get, path = "/healthz", summary = "liveness", security(()),
    responses((status = 200, description = "ok")))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Unlike `/healthz` (the process answers), whether it should be sent
/// work: a load balancer drains a host that answers 503 here.
#[utoipa::path(get, path = "/readyz", summary = "readiness: takes submissions and its store answers",
    security(()),
    responses((status = 200, description = "ready"),
        (status = 503, description = "stopping, or the job store cannot serve", body = ErrorBody)))]
pub(crate) async fn readyz(State(service): State<Service>) -> ApiResult<Json<serde_json::Value>> {
    service.ready().await?;
    Ok(Json(json!({ "status": "ready" })))
}

#[utoipa::path(post, path = "/v1/jobs", summary = "submit a job", request_body = JobRequest,
    responses((status = 201, description = "the job", body = Job),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, description = "the project's max_queued jobs wait already", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn submit(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Extension(access): Extension<Arc<Access>>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    require(&caller, Scope::JobsSubmit, "submit jobs")?;
    let Json(request) = body?;
    let invalid = |message: String| {
        ApiError::from(ServiceError::Invalid(InvalidJob::new("project", message)))
    };
    let project = match (&caller.project, &request.project) {
        (Some(own), Some(named)) if *named != own.name => {
            return Err(invalid(format!(
                "a token of project {} submits jobs for {} only",
                own.name, own.name
            )));
        }
        (Some(own), _) => Some(own.clone()),
        (None, Some(named)) => Some(access.project(named).cloned().ok_or_else(|| {
            let known: Vec<&str> = access.project_names().collect();
            invalid(format!(
                "no project called '{named}'; configured: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?),
        (None, None) => None,
    };
    let job = service.submit_for(request, project.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only jobs in this state.
    state: Option<JobState>,
    /// Jobs per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Only jobs of this concurrency group.
    group: Option<String>,
    /// Only jobs for this builder.
    builder: Option<String>,
    /// Only jobs whose id, repository URL or image contains this text.
    q: Option<String>,
    /// Only jobs of this project (an admin's filter; a project token
    /// lists its own project's jobs only).
    project: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs", summary = "list jobs, newest first", params(ListQuery),
    responses((status = 200, description = "a page", body = JobPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn list(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<JobPage>> {
    require(&caller, Scope::JobsRead, "read jobs")?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let project = match caller.project_name() {
        None => query.project,
        Some(own) => {
            if query.project.as_deref().is_some_and(|named| named != own) {
                // Another project's jobs: none the caller may see.
                return Ok(Json(JobPage {
                    jobs: Vec::new(),
                    next_cursor: None,
                }));
            }
            Some(own.to_string())
        }
    };
    // A cursor naming a job the caller may not see is as unknown as one
    // naming no job.
    if let Some(cursor) = query.cursor.as_deref()
        && visible(&service, &caller, cursor).await.is_err()
    {
        return Err(ServiceError::UnknownCursor(cursor.to_string()).into());
    }
    Ok(Json(
        service
            .list_page(
                &JobFilter {
                    state: query.state,
                    group: query.group,
                    builder: query.builder,
                    text: query.q.filter(|q| !q.is_empty()),
                    project,
                },
                limit,
                query.cursor.as_deref(),
            )
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", summary = "one job", params(("id" = String, Path)),
    responses((status = 200, description = "the job", body = Job),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn get_job(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    require(&caller, Scope::JobsRead, "read jobs")?;
    let job = service.get(&id).await?;
    if !caller.sees(&job) {
        return Err(ServiceError::NotFound(id).into());
    }
    Ok(Json(job))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/audit",
    summary = "every program the job's builder asked for, allowed or refused",
    description = "Each run's calls in order, with the grant that allowed each one (secrets redacted). A run's calls appear when the run ends.",
    params(("id" = String, Path)),
    responses((status = 200, description = "the audit trail", body = JobAudit),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn audit(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobAudit>> {
    readable(&service, &caller, &id).await?;
    Ok(Json(service.audit(&id).await?))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/provenance",
    summary = "the signed SLSA provenance attached to the job's image",
    description = "The DSSE envelope as pushed to the registry, where it is, the key that signed it, and its statement decoded. 404 with the reason for a job without one (a simulated builder, a build that did not succeed).",
    params(("id" = String, Path)),
    responses((status = 200, description = "the attestation", body = Attestation),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn provenance(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Attestation>> {
    readable(&service, &caller, &id).await?;
    Ok(Json(service.provenance(&id).await?))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", summary = "cancel a queued or running job",
    params(("id" = String, Path)),
    responses((status = 200, description = "the job", body = Job),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    require(&caller, Scope::JobsCancel, "cancel jobs")?;
    visible(&service, &caller, &id).await?;
    Ok(Json(service.cancel(&id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// Longest wait in seconds (default 30, at most 3600).
    timeout_secs: Option<u64>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/wait",
    summary = "the job once it ends, or as it is at the timeout",
    params(("id" = String, Path), WaitQuery),
    responses((status = 200, description = "the job", body = Job),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn wait(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Json<Job>> {
    readable(&service, &caller, &id).await?;
    let Query(query) = query?;
    let secs = query
        .timeout_secs
        .unwrap_or(DEFAULT_WAIT_SECS)
        .min(MAX_WAIT_SECS);
    Ok(Json(service.wait(&id, Duration::from_secs(secs)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// Server-sent events until the job ends, instead of the text so far.
    #[serde(default)]
    follow: bool,
    /// Each line preceded by its time, as `docker logs -t` prints it.
    #[serde(default)]
    timestamps: bool,
}

/// Plain text, or with `?follow=true` server-sent events: a `state` event
/// at each change of state, one `log` event per line as lines arrive, then
/// one `end` event carrying the finished job.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs",
    summary = "the job's log; with follow=true, server-sent `state` and `log` events, then one `end` event with the job; with timestamps=true, each line starts with its time (RFC 3339, UTC) and a space",
    params(("id" = String, Path), LogsQuery),
    responses((status = 200, description = "text/plain, or text/event-stream when following", content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn logs(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    readable(&service, &caller, &id).await?;
    let Query(query) = query?;
    if !query.follow {
        let mut text = String::new();
        for line in service.logs(&id).await? {
            text.push_str(&line.render(query.timestamps));
            text.push('\n');
        }
        return Ok(text.into_response());
    }
    let events = follow_events(service, id, query.timestamps).await?;
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn follow_events(
    service: Service,
    id: String,
    timestamps: bool,
) -> ApiResult<impl Stream<Item = Result<Event, Infallible>>> {
    let (log, states) = service.follow(&id).await?;
    let lines = log.subscribe();
    struct Follow {
        service: Service,
        id: String,
        log: Arc<crate::log::JobLog>,
        lines: tokio::sync::watch::Receiver<u64>,
        states: tokio::sync::watch::Receiver<JobState>,
        seen: u64,
        /// The state last reported, so each change is sent once.
        reported: Option<JobState>,
        ended: bool,
    }
    let start = Follow {
        service,
        id,
        log,
        lines,
        states,
        seen: 0,
        reported: None,
        ended: false,
    };
    let batches = stream::unfold(start, move |mut f| async move {
        loop {
            if f.ended {
                return None;
            }
            // Read the state before the lines, so no line written before the
            // job ended is missed.
            let state = *f.states.borrow_and_update();
            let terminal = state.is_terminal();
            let mut events = Vec::new();
            if f.reported != Some(state) && !terminal {
                f.reported = Some(state);
                events.push(Event::default().event("state").data(state.as_str()));
            }
            let (lines, seen) = f.log.since(f.seen);
            f.seen = seen;
            events.extend(
                lines
                    .into_iter()
                    .map(|l| Event::default().event("log").data(l.render(timestamps))),
            );
            if !events.is_empty() {
                return Some((events, f));
            }
            if terminal {
                f.ended = true;
                let job = f.service.get(&f.id).await.ok();
                let end = Event::default()
                    .event("end")
                    .data(serde_json::to_string(&job).unwrap_or_default());
                return Some((vec![end], f));
            }
            tokio::select! {
                _ = f.lines.changed() => {}
                _ = f.states.changed() => {}
            }
        }
    });
    Ok(futures_util::StreamExt::flat_map(batches, |events| {
        stream::iter(events.into_iter().map(Ok))
    }))
}

/// A forge's delivery to the server's hook: 202 with the job it made,
/// 200 when that push made its job before (a redelivery, a replay), 204
/// when it builds nothing, 401 for a bad or missing signature.
#[utoipa::path(post, path = "/v1/hooks/{forge}",
    summary = "a git push from GitHub, Gitea/Forgejo or GitLab, signed as the forge signs; jobs of no project",
    security(()),
    params(("forge" = String, Path, description = "github, gitea, forgejo or gitlab")),
    responses((status = 202, description = "the job the push made", body = Job),
        (status = 200, description = "the push made its job before (a redelivery or a replay): nothing new is built", body = Object),
        (status = 204, description = "a delivery that builds nothing (no rule, a deleted branch, another event)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn hook(
    State(service): State<Service>,
    Extension(access): Extension<Arc<Access>>,
    Path(forge): Path<String>,
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    delivered(&service, &access, &forge, None, &headers, &body).await
}

/// A forge's delivery to project `project`'s hook: as the server's, the
/// job that project's.
#[utoipa::path(post, path = "/v1/hooks/{forge}/{project}",
    summary = "a git push to a project's webhook (its secret and rules); the job is the project's",
    security(()),
    params(("forge" = String, Path, description = "github, gitea, forgejo or gitlab"),
        ("project" = String, Path, description = "the project whose hook it is")),
    responses((status = 202, description = "the job the push made", body = Job),
        (status = 200, description = "the push made its job before (a redelivery or a replay): nothing new is built", body = Object),
        (status = 204, description = "a delivery that builds nothing (no rule, a deleted branch, another event)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn project_hook(
    State(service): State<Service>,
    Extension(access): Extension<Arc<Access>>,
    Path((forge, project)): Path<(String, String)>,
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    delivered(&service, &access, &forge, Some(&project), &headers, &body).await
}

/// What a delivery from `forge` to `project`'s hook (`None`: the
/// server's) answers.
async fn delivered(
    service: &Service,
    access: &Access,
    forge: &str,
    project: Option<&str>,
    headers: &header::HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let error = ApiError::new;
    let forge = Forge::from_route(forge).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no forge {forge:?}: use github, gitea, forgejo or gitlab"),
        )
    })?;
    let request = match service.webhooks().receive(forge, project, headers, body) {
        Ok(Hooked::Job(request)) => *request,
        Ok(Hooked::Ignored(why)) => {
            tracing::info!(forge = forge.name(), "webhook delivery ignored: {why}");
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Err(e) => {
            let (status, code) = match &e {
                HookError::NotConfigured(_) => (StatusCode::NOT_FOUND, "not_found"),
                HookError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
                HookError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            };
            return Err(error(status, code, e.to_string()));
        }
    };
    let owner = match project {
        None => None,
        Some(name) => Some(access.project(name).ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no project {name:?} here"),
            )
        })?),
    };
    match service.submit_for(request, owner).await {
        Ok(job) => Ok((StatusCode::ACCEPTED, Json(job)).into_response()),
        // A forge retries a delivery it saw fail: this one was taken, so
        // it is answered as the success it was.
        Err(ServiceError::Duplicate(id)) => Ok((
            StatusCode::OK,
            Json(json!({
                "id": id,
                "message": format!("this push made job {id} before; a redelivery or replay builds nothing new"),
            })),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", summary = "this document",
    responses((status = 200, description = "OpenAPI 3.1")))]
pub(crate) async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

#[utoipa::path(get, path = "/metrics", summary = "Prometheus metrics", security(()),
    responses((status = 200, description = "text exposition format", content_type = "text/plain", body = String),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn metrics(State(service): State<Service>) -> ApiResult<impl IntoResponse> {
    let text = service.metrics().await?.render(&service.runtime());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

#[utoipa::path(post, path = "/v1/builders/reload",
    summary = "load the builders again from the server's config file (as SIGHUP does)",
    description = "Jobs already running finish on the component they started with; jobs that start from now on get the new ones. When a component fails to load or check, nothing changes and the 422 says why.",
    responses((status = 200, description = "the builders now loaded", body = Vec<Object>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn reload_builders(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<BuilderInfo>>> {
    require(&caller, Scope::Admin, "reload builders")?;
    let runtime = service.reload_builders().await?;
    Ok(Json(runtime.builders().map(|b| b.info().clone()).collect()))
}

#[utoipa::path(get, path = "/v1/builders",
    summary = "loaded builders: info, grants, limits, component digest, platforms they can build here",
    responses((status = 200, description = "builders", body = Vec<Object>),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn builders(State(service): State<Service>) -> Json<Vec<BuilderInfo>> {
    Json(
        service
            .runtime()
            .builders()
            .map(|b| b.info().clone())
            .collect(),
    )
}
