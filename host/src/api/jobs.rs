//! The job routes: submit, list, read, cancel, wait, logs (and their
//! live follow), audit and provenance.

use super::*;

/// Longest `wait` a client may ask for.
const MAX_WAIT_SECS: u64 = 3600;
const DEFAULT_WAIT_SECS: u64 = 30;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

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
    let Json(mut request) = body?;
    tokens::bind(&mut request, &caller)?;
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
    /// The previous page's `next_cursor`; empty or absent: the first page.
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
    let Query(mut query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("limit must be 1 to {MAX_PAGE}, got {limit}"),
        ));
    }
    // An empty cursor is none: the first page.
    query.cursor = query.cursor.filter(|c| !c.is_empty());
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

#[utoipa::path(get, path = "/v1/jobs/{id}/sbom",
    summary = "the signed SPDX SBOMs attached to the job's image, one per platform",
    description = "Per platform of the image: the packages its dpkg and apk databases list, as an SPDX 2.3 document in a signed in-toto statement (predicate type https://spdx.dev/Document), where it is in the registry (as a DSSE envelope and as a Sigstore bundle) and the key that signed it. 404 with the reason for a job without one, as for provenance.",
    params(("id" = String, Path)),
    responses((status = 200, description = "the SBOMs", body = JobSbom),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(crate) async fn sbom(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobSbom>> {
    readable(&service, &caller, &id).await?;
    Ok(Json(service.sbom(&id).await?))
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
    #[param(minimum = 0, maximum = 3600)]
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
    let secs = query.timeout_secs.unwrap_or(DEFAULT_WAIT_SECS);
    if secs > MAX_WAIT_SECS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("timeout_secs must be at most {MAX_WAIT_SECS}, got {secs}"),
        ));
    }
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
    responses((status = 200, description = "text/plain, or text/event-stream when following",
            content((String = "text/plain"), (String = "text/event-stream"))),
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
