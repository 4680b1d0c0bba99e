//! The forges' deliveries: the server's hooks and each project's.

use super::*;

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
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn hook(
    State(service): State<Service>,
    Path(forge): Path<String>,
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    delivered(&service, &forge, None, &headers, &body).await
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
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn project_hook(
    State(service): State<Service>,
    Path((forge, project)): Path<(String, String)>,
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    delivered(&service, &forge, Some(&project), &headers, &body).await
}

/// What a delivery from `forge` to `project`'s hook (`None`: the
/// server's) answers, by the webhooks and projects in force now.
async fn delivered(
    service: &Service,
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
    let Projects {
        access, webhooks, ..
    } = service.projects();
    let request = match webhooks.receive(forge, project, headers, body) {
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
