//! What the submission schema (`JobRequest`) says beyond its types: the
//! bounds and shapes the rules check, read from the same constants
//! ([`crate::job::limits`]), and, in the document a server serves, the
//! builders, secrets and projects it has.

use serde_json::{Value, json};

use crate::job::limits::*;
use crate::job::{MAX_ID_LEN, MAX_QUEUE_TTL_SECS, PRIORITIES, SubmitPolicy};

/// An example of a job any server takes with its simulated builder.
fn example() -> Value {
    json!({"repo_url": "https://git.example/team/app.git", "ref": "main", "builder": "simulated"})
}

/// Adds the rules' bounds to `schema`, the `JobRequest` schema.
pub(super) fn constrain(schema: &mut Value) {
    let nullable_string = |extra: Value| {
        let mut field = json!({"type": ["string", "null"]});
        merge(&mut field, extra);
        field
    };
    let fields = [
        (
            "id",
            nullable_string(
                json!({"minLength": 1, "maxLength": MAX_ID_LEN, "pattern": ID_PATTERN}),
            ),
        ),
        (
            "repo_url",
            json!({
                "minLength": 1, "maxLength": MAX_REPO_URL,
                "anyOf": [{"format": "uri", "pattern": "^(https?|ssh|git|file)://"}, {"pattern": SCP_REPO_PATTERN}],
                "description": "https://, http://, ssh://, git:// (file:// where the operator allows it) with a host, or scp-like user@host:path; no credentials, white space, '#', or hidden characters (the server parses it as git does)",
                "examples": ["https://git.example/team/app.git"],
            }),
        ),
        (
            "ref",
            nullable_string(
                json!({"minLength": 1, "maxLength": MAX_REF, "pattern": REF_PATTERN,
                "description": "Branch, tag or commit; the repository's default branch when absent. No '..', '@{', '//', leading '/' or '.', trailing '/', '.' or '.lock' (as git refuses them)."}),
            ),
        ),
        (
            "commit",
            nullable_string(json!({"pattern": COMMIT_PATTERN,
                "description": "The full commit id to build; it must be on `ref` (reachable from the ref's tip when the job checks out), so a protected ref's job builds only that ref's history. The ref's tip when absent."})),
        ),
        (
            "context",
            nullable_string(
                json!({"minLength": 1, "maxLength": MAX_PATH, "pattern": RELATIVE_PATH_PATTERN}),
            ),
        ),
        (
            "dockerfile_path",
            nullable_string(
                json!({"minLength": 1, "maxLength": MAX_PATH, "pattern": RELATIVE_PATH_PATTERN,
                "description": "Relative to `context`, without '..' parts; `Dockerfile` when absent."}),
            ),
        ),
        (
            "target",
            nullable_string(json!({"maxLength": MAX_TARGET, "pattern": TARGET_PATTERN})),
        ),
        (
            "group",
            nullable_string(json!({"minLength": 1, "maxLength": MAX_GROUP})),
        ),
        (
            "build_args",
            json!({"maxProperties": MAX_BUILD_ARGS,
                "propertyNames": {"pattern": BUILD_ARG_PATTERN},
                "additionalProperties": {"type": "string", "maxLength": MAX_BUILD_ARG_VALUE},
                "description": "Names as ARG takes them; not BUILDKIT_* nor the predefined proxy args. Values at most 64 KiB, no NUL."}),
        ),
        (
            "labels",
            json!({"maxProperties": MAX_LABELS,
                "propertyNames": {"pattern": LABEL_KEY_PATTERN},
                "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE}}),
        ),
        (
            "platforms",
            json!({"maxItems": MAX_PLATFORMS, "items": {"type": "string", "pattern": PLATFORM_PATTERN}}),
        ),
        ("secrets", json!({"maxItems": MAX_SECRETS})),
        (
            "priority",
            json!({"minimum": PRIORITIES.start(), "maximum": PRIORITIES.end()}),
        ),
        (
            "max_running",
            json!({"minimum": 1, "maximum": crate::job::MAX_RUNNING_LIMIT}),
        ),
        (
            "queue_ttl_secs",
            json!({"minimum": 1, "maximum": MAX_QUEUE_TTL_SECS}),
        ),
    ];
    for (name, constraints) in fields {
        merge(&mut schema["properties"][name], constraints);
    }
    // `max_running` means nothing without a group.
    schema["dependentRequired"] = json!({"max_running": ["group"]});
    schema["examples"] = json!([example()]);
}

/// Names `policy`'s builders and secrets, and `projects`, as the only
/// ones a submission may ask for (a project's own secrets are its
/// token's to know).
pub(super) fn offer<'a>(
    schema: &mut Value,
    policy: &SubmitPolicy,
    projects: impl Iterator<Item = &'a str>,
) {
    let or_none = |names: Vec<&str>| {
        let mut names: Vec<Value> = names.into_iter().map(Value::from).collect();
        names.push(Value::Null);
        Value::Array(names)
    };
    schema["properties"]["builder"]["enum"] =
        or_none(policy.builders.keys().map(String::as_str).collect());
    schema["properties"]["project"]["enum"] = or_none(projects.collect());
    let secrets = &mut schema["properties"]["secrets"];
    match policy.secrets.is_empty() {
        true => secrets["maxItems"] = json!(0),
        false => secrets["items"] = json!({"type": "string", "enum": policy.secrets}),
    }
}

/// Sets each key of `extra` on `into`.
fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}
