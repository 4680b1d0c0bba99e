//! `POST /v1/tokens/oidc`: a CI system's ID token exchanged for a
//! short-lived token of the project whose rule takes it (see
//! [`crate::oidc`]). Outside the bearer token: the ID token is the
//! credential.

use super::*;
use crate::oidc::{ExchangeError, Issued};

/// The exchange's request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExchangeRequest {
    /// The ID token (a JWT) the CI system gave the job, for this server's
    /// audience.
    id_token: String,
}

#[utoipa::path(post, path = "/v1/tokens/oidc",
    summary = "exchange a CI system's OIDC ID token for a short-lived project token bound to its repository and ref",
    security(()), request_body = ExchangeRequest,
    responses((status = 201, description = "the token and what it allows", body = Issued),
        (status = 400, body = ErrorBody),
        (status = 401, description = "an ID token this server does not take", body = ErrorBody),
        (status = 403, description = "no project's rule takes its repository and ref", body = ErrorBody),
        (status = 404, description = "this server exchanges no ID tokens", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, description = "the issuer's keys could not be fetched", body = ErrorBody)))]
pub(crate) async fn exchange_oidc(
    State(service): State<Service>,
    body: Result<Json<ExchangeRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Issued>)> {
    let Projects {
        access, exchange, ..
    } = service.projects();
    let exchange = exchange.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server exchanges no ID tokens: its config has no [oidc]",
        )
    })?;
    let Json(request) = body?;
    let issued = exchange
        .exchange(&request.id_token, &access, chrono::Utc::now())
        .await
        .map_err(|e| {
            let (status, code) = match &e {
                ExchangeError::Malformed(_) => (StatusCode::BAD_REQUEST, "bad_request"),
                ExchangeError::Invalid(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
                ExchangeError::NoRule(_) => (StatusCode::FORBIDDEN, "forbidden"),
                ExchangeError::IssuerUnreachable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "issuer_unreachable")
                }
            };
            ApiError::new(status, code, e.to_string())
        })?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Holds an issued token's submission to its binding: its repository,
/// and its ref (filled in when the request names none); 403 naming both
/// otherwise.
pub(super) fn bind(request: &mut JobRequest, caller: &Caller) -> ApiResult<()> {
    let Some(bound) = &caller.bound else {
        return Ok(());
    };
    let git_ref = request.git_ref.get_or_insert_with(|| bound.git_ref.clone());
    if request.repo_url == bound.repo_url && *git_ref == bound.git_ref {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "this token (issued for {} of issuer {}) submits only {} at {} (a commit on it may be pinned), not {} at {git_ref}",
            bound.subject, bound.issuer, bound.repo_url, bound.git_ref, request.repo_url
        ),
    ))
}
