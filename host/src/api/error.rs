//! Errors as the client sees them: a status that says whose fault it is
//! and `{"error": {"code", "message"}}`.

use super::*;

/// An error as the client sees it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
            ServiceError::DataDiskFull => (StatusCode::SERVICE_UNAVAILABLE, "data_disk_full"),
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

pub(super) type ApiResult<T> = Result<T, ApiError>;
