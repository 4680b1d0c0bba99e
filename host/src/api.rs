//! The HTTP API: thin handlers over [`Service`]. Errors are JSON
//! `{"error": {"code", "message"}}` with a status that says whose fault
//! it is.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::job::{Job, JobRequest};
use crate::plugin::BuilderInfo;
use crate::service::{Service, ServiceError};

/// Longest `wait` a client may ask for.
const MAX_WAIT_SECS: u64 = 3600;
const DEFAULT_WAIT_SECS: u64 = 30;

pub fn router(service: Service) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/wait", get(wait))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/builders", get(builders))
        .with_state(service)
}

/// An error as the client sees it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
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
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::AlreadyEnded { .. } => (StatusCode::CONFLICT, "already_ended"),
            ServiceError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ServiceError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
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
        ApiError {
            status,
            code: "bad_request",
            message: rejection.body_text(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn submit(
    State(service): State<Service>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let Json(request) = body?;
    Ok((StatusCode::CREATED, Json(service.submit(request)?)))
}

async fn list(State(service): State<Service>) -> Json<Vec<Job>> {
    Json(service.list())
}

async fn get_job(State(service): State<Service>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(service.get(&id)?))
}

async fn cancel(State(service): State<Service>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(service.cancel(&id).await?))
}

#[derive(Deserialize)]
struct WaitQuery {
    timeout_secs: Option<u64>,
}

async fn wait(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> ApiResult<Json<Job>> {
    let secs = query
        .timeout_secs
        .unwrap_or(DEFAULT_WAIT_SECS)
        .min(MAX_WAIT_SECS);
    Ok(Json(service.wait(&id, Duration::from_secs(secs)).await?))
}

async fn logs(State(service): State<Service>, Path(id): Path<String>) -> ApiResult<String> {
    let mut text = service.logs(&id)?.join("\n");
    text.push('\n');
    Ok(text)
}

async fn builders(State(service): State<Service>) -> Json<Vec<BuilderInfo>> {
    Json(
        service
            .runtime()
            .builders()
            .map(|b| b.info().clone())
            .collect(),
    )
}
