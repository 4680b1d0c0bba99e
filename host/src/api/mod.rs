//! The HTTP API: thin handlers over [`Service`]. Errors are JSON
//! `{"error": {"code", "message"}}` with a status that says whose fault
//! it is. When a token or a project is configured every `/v1` route needs
//! `Authorization: Bearer <token>`, resolved to a [`Caller`] whose scopes
//! each route checks (403 naming the missing scope); another project's
//! job answers exactly as a job that does not exist (404). `/healthz`,
//! `/readyz` and `/metrics` stay open; a forge's delivery and an OIDC ID
//! token exchanged carry credentials of their own.
//!
//! `jobs.rs` holds the job routes, `hooks.rs` the forges' deliveries,
//! `tokens.rs` the OIDC token exchange, `error.rs` how errors answer;
//! here: the router, the token check and the server's own routes.

mod error;
mod hooks;
mod jobs;
mod tokens;

pub use error::ApiError;
use error::ApiResult;
pub(crate) use error::ErrorBody;
pub(crate) use hooks::*;
pub(crate) use jobs::*;
pub(crate) use tokens::*;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, Query, Request, State};
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
use crate::provenance::sbom::JobSbom;
use crate::service::{JobPage, Projects, Service, ServiceError};
use crate::store::JobFilter;

/// Largest request body; a job submission is far smaller.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API over `service`, its `/v1` routes answering the callers its
/// projects' tokens accept now (everyone, as the admin, when there are
/// none): a reload changes them for the next request.
pub fn router(service: Service) -> Router {
    // Outside the token: a forge signs its deliveries instead.
    let hooks = Router::new()
        .route("/v1/hooks/{forge}", post(hook))
        .route("/v1/hooks/{forge}/{project}", post(project_hook));
    // Outside the token too: the ID token is the credential.
    let exchange = Router::new().route("/v1/tokens/oidc", post(exchange_oidc));
    let v1 = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/wait", get(wait))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/audit", get(audit))
        .route("/v1/jobs/{id}/provenance", get(provenance))
        .route("/v1/jobs/{id}/sbom", get(sbom))
        .route("/v1/builders", get(builders))
        .route("/v1/builders/reload", post(reload_builders))
        .route("/v1/token", get(token))
        .route("/v1/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(
            service.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(hooks)
        .merge(exchange)
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::router())
        .merge(v1)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            count_request,
        ))
        .with_state(service)
}

/// Counts every request for `/metrics` by method, matched route template
/// and status, and times it to its response's head.
async fn count_request(State(service): State<Service>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let response = next.run(request).await;
    service.http_counts().observe(
        method.as_str(),
        route.as_deref().unwrap_or(crate::service::UNMATCHED),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Lets a request through only with a bearer token the service's
/// projects accept now, handing the handlers its [`Caller`] (and the
/// [`Access`] it was resolved with, for an admin naming a project); 401
/// with `WWW-Authenticate: Bearer` otherwise.
async fn require_token(
    State(service): State<Service>,
    mut request: Request,
    next: Next,
) -> Result<Response, Response> {
    let access = service.projects().access;
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

#[utoipa::path(get, path = "/v1/openapi.json", summary = "this document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub(crate) async fn openapi(
    State(service): State<Service>,
    Extension(access): Extension<Arc<Access>>,
) -> Json<serde_json::Value> {
    Json(crate::openapi::document_for(
        &service.submit_policy(),
        access.project_names(),
    ))
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
    responses((status = 200, description = "the builders now loaded", body = Vec<BuilderInfo>),
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

/// What the caller's token allows, for a client to show (the dashboard).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenInfo {
    /// The token's project; `null` for the admin.
    project: Option<String>,
    /// Its scopes (`admin`, or some of `jobs:submit`, `jobs:read`,
    /// `jobs:cancel`).
    scopes: Vec<String>,
    /// Every configured project, for the admin only (empty otherwise).
    projects: Vec<String>,
}

#[utoipa::path(get, path = "/v1/token", summary = "what the caller's token allows",
    responses((status = 200, description = "its project and scopes", body = TokenInfo),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn token(
    Extension(caller): Extension<Caller>,
    Extension(access): Extension<Arc<Access>>,
) -> Json<TokenInfo> {
    let projects = match caller.is_admin() {
        true => access.project_names().map(String::from).collect(),
        false => Vec::new(),
    };
    Json(TokenInfo {
        project: caller.project_name().map(String::from),
        scopes: caller.scopes().map(|s| s.as_str().to_string()).collect(),
        projects,
    })
}

#[utoipa::path(get, path = "/v1/builders",
    summary = "loaded builders: info, grants, limits, component digest, platforms they can build here",
    responses((status = 200, description = "builders", body = Vec<BuilderInfo>),
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
