//! What every operation can answer besides what its handler says, added
//! in one place from what the router does around the handlers: the token
//! check (401, 403), the JSON body (400, 413, 415), the query string
//! (400); the links from a submitted job to the routes about it; the
//! events of a followed log; and the headers the forges' deliveries carry.

use serde_json::{Map, Value, json};

/// An error answer of `description`.
fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds the answers the router's layers give to each operation.
pub(super) fn add_common(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|p| p.values_mut())
    {
        let guarded = operation.get("security").is_none();
        let has_body = operation.get("requestBody").is_some();
        let has_query = operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        let mut extra = Vec::new();
        if guarded {
            extra.push((
                "401",
                "no or a wrong bearer token (`WWW-Authenticate: Bearer`)",
            ));
            extra.push(("403", "the token lacks the scope the route needs"));
        }
        if has_body {
            extra.push((
                "400",
                "the body is not the JSON the route takes, or is invalid",
            ));
            extra.push(("413", "the body is over 1 MiB"));
        }
        if operation["requestBody"]["content"]
            .get("application/json")
            .is_some()
        {
            extra.push((
                "415",
                "the body is not sent as `Content-Type: application/json`",
            ));
        }
        if has_query {
            extra.push(("400", "a query parameter is unknown or out of its range"));
        }
        if let Some(responses) = operation["responses"].as_object_mut() {
            for (status, description) in extra {
                responses
                    .entry(status)
                    .or_insert_with(|| error(description));
            }
        }
    }
}

/// Links from `POST /v1/jobs`'s answer to the routes about the job, so a
/// client (or a fuzzer) finds them from the job it made (not provenance:
/// only some builds have one).
pub(super) fn link_jobs(doc: &mut Value) {
    let links: Map<String, Value> = ["get_job", "cancel", "wait", "logs", "audit"]
        .into_iter()
        .map(|operation| {
            (
                operation.to_string(),
                json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}}),
            )
        })
        .collect();
    doc["paths"]["/v1/jobs"]["post"]["responses"]["201"]["links"] = Value::Object(links);
}

/// The headers each forge's delivery carries: which identify it and which
/// authenticate it.
const HOOK_HEADERS: [(&str, &str); 11] = [
    (
        "X-GitHub-Event",
        "GitHub: the event (`push`; others are ignored)",
    ),
    (
        "X-GitHub-Delivery",
        "GitHub: the delivery's id (a redelivery has the same)",
    ),
    (
        "X-Hub-Signature-256",
        "GitHub: `sha256=` and the HMAC-SHA256 of the body with the hook's secret",
    ),
    ("X-Gitea-Event", "Gitea: the event"),
    ("X-Gitea-Delivery", "Gitea: the delivery's id"),
    (
        "X-Gitea-Signature",
        "Gitea and Forgejo: the hex HMAC-SHA256 of the body with the hook's secret",
    ),
    (
        "X-Forgejo-Event",
        "Forgejo: the event (X-Gitea-Event is read too)",
    ),
    ("X-Forgejo-Delivery", "Forgejo: the delivery's id"),
    ("X-Gitlab-Event", "GitLab: the event (`Push Hook`)"),
    (
        "X-Gitlab-Token",
        "GitLab: the hook's secret token, compared in constant time",
    ),
    ("X-Gitlab-Event-UUID", "GitLab: the delivery's id"),
];

/// Documents [`HOOK_HEADERS`] on both hook routes.
pub(super) fn document_hook_headers(doc: &mut Value) {
    let headers: Vec<Value> = HOOK_HEADERS
        .iter()
        .map(|(name, description)| {
            json!({"name": name, "in": "header", "required": false,
                   "description": description, "schema": {"type": "string"}})
        })
        .collect();
    for path in ["/v1/hooks/{forge}", "/v1/hooks/{forge}/{project}"] {
        if let Some(parameters) = doc["paths"][path]["post"]["parameters"].as_array_mut() {
            parameters.extend(headers.iter().cloned());
        }
    }
}

/// Each server-sent event of `GET /v1/jobs/{id}/logs?follow=true`.
pub(super) fn describe_log_events(doc: &mut Value) {
    let events = &mut doc["paths"]["/v1/jobs/{id}/logs"]["get"]["responses"]["200"]["content"]["text/event-stream"];
    events["schema"] = json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["state", "log", "end"],
                      "description": "`state`: the job's new state; `log`: one line; `end`: the finished job, as JSON"},
            "data": {"type": "string"}
        }
    });
}
