//! The OpenAPI description of the HTTP API, served at `/v1/openapi.json`,
//! generated from the handlers' annotations and the Rust types they take
//! and return: a field added to a type appears here without a second
//! edit. [`request`] adds the submission rules' bounds, [`responses`]
//! what the router's layers answer. A test walks every operation against
//! a live server, and a bounded schemathesis run fuzzes it.

mod request;
mod responses;

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::job::SubmitPolicy;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Helix Build",
        description = "Build jobs run by sandboxed WebAssembly builders. When the server has a token, every /v1 route needs `Authorization: Bearer <token>`."
    ),
    paths(
        api::healthz,
        api::readyz,
        api::metrics,
        api::openapi,
        api::submit,
        api::list,
        api::get_job,
        api::cancel,
        api::wait,
        api::logs,
        api::audit,
        api::provenance,
        api::sbom,
        api::builders,
        api::reload_builders,
        api::token,
        api::hook,
        api::project_hook,
        api::exchange_oidc,
    ),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The `bearer` scheme the routes name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    request::constrain(&mut doc["components"]["schemas"]["JobRequest"]);
    responses::add_common(&mut doc);
    responses::link_jobs(&mut doc);
    responses::document_hook_headers(&mut doc);
    responses::describe_log_events(&mut doc);
    doc
}

/// The document as a server whose submissions `policy` checks, with the
/// projects `projects`, serves it: a submission may name only those
/// builders, secrets and projects.
pub fn document_for<'a>(policy: &SubmitPolicy, projects: impl Iterator<Item = &'a str>) -> Value {
    let mut doc = document();
    request::offer(
        &mut doc["components"]["schemas"]["JobRequest"],
        policy,
        projects,
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, JobRequest, SubmitPolicy};

    /// The keys `value` (a type serialized) has that the document's schema
    /// `name` does not list.
    fn undocumented(doc: &Value, name: &str, value: Value) -> Vec<String> {
        let properties = &doc["components"]["schemas"][name]["properties"];
        value
            .as_object()
            .unwrap()
            .keys()
            .filter(|key| properties.get(key.as_str()).is_none())
            .cloned()
            .collect()
    }

    #[test]
    fn every_field_the_types_declare_is_in_the_document() {
        let doc = document();
        let request = JobRequest {
            repo_url: "https://git.example/app.git".into(),
            ..JobRequest::default()
        };
        let policy = SubmitPolicy::for_builders("simulated", ["simulated"]);
        let job = Job::from_request(request.clone(), &policy, chrono::Utc::now()).unwrap();
        for (name, value) in [
            ("JobRequest", serde_json::to_value(&request).unwrap()),
            ("Job", serde_json::to_value(&job).unwrap()),
        ] {
            assert!(value.as_object().unwrap().len() > 10, "{name}: {value}");
            assert_eq!(
                undocumented(&doc, name, value),
                Vec::<String>::new(),
                "{name}"
            );
        }
        // What the schema says of a field comes from the type as well.
        let request_schema = &doc["components"]["schemas"]["JobRequest"];
        assert_eq!(request_schema["required"], serde_json::json!(["repo_url"]));
        assert_eq!(request_schema["properties"]["ref"]["type"][0], "string");
        let phase = &doc["components"]["schemas"]["PhaseName"]["enum"];
        assert!(
            phase
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "registry_check"),
            "{phase}"
        );
        // The rules' bounds, from the constants the rules check.
        let properties = &request_schema["properties"];
        use crate::job::limits;
        assert_eq!(properties["repo_url"]["maxLength"], limits::MAX_REPO_URL);
        assert_eq!(properties["id"]["pattern"], limits::ID_PATTERN);
        assert_eq!(
            properties["build_args"]["maxProperties"],
            limits::MAX_BUILD_ARGS
        );
        assert_eq!(properties["priority"]["minimum"], -100);
        let mut policy = SubmitPolicy::for_builders("simulated", ["podman", "simulated"]);
        let served = document_for(&policy, ["team"].into_iter());
        let offered = &served["components"]["schemas"]["JobRequest"]["properties"];
        assert_eq!(
            offered["builder"]["enum"],
            serde_json::json!(["podman", "simulated", null])
        );
        assert_eq!(
            offered["project"]["enum"],
            serde_json::json!(["team", null])
        );
        assert_eq!(offered["secrets"]["maxItems"], 0, "no secrets defined");
        policy.secrets.insert("npm_token".into());
        let served = document_for(&policy, std::iter::empty());
        let offered = &served["components"]["schemas"]["JobRequest"]["properties"]["secrets"];
        assert_eq!(offered["items"]["enum"], serde_json::json!(["npm_token"]));
        let state = &doc["components"]["schemas"]["State"]["enum"];
        assert!(
            state.as_array().unwrap().iter().any(|s| s == "timed_out"),
            "{state}"
        );
    }

    #[test]
    fn every_route_documents_what_the_layers_answer_and_builders_are_typed() {
        let doc = document();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                if operation.get("security").is_none() {
                    for status in ["401", "403"] {
                        assert!(responses.contains_key(status), "{method} {path}: {status}");
                    }
                }
            }
        }
        let submit = &doc["paths"]["/v1/jobs"]["post"]["responses"];
        for status in ["400", "413", "415", "429", "503"] {
            assert!(submit.get(status).is_some(), "POST /v1/jobs: {status}");
        }
        let builders = &doc["paths"]["/v1/builders"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert_eq!(
            builders["items"]["$ref"],
            "#/components/schemas/BuilderInfo"
        );
        let info = &doc["components"]["schemas"]["BuilderInfo"]["properties"];
        for field in [
            "name",
            "limits",
            "build_limits",
            "grants",
            "network",
            "platforms",
        ] {
            assert!(info.get(field).is_some(), "BuilderInfo.{field}");
        }
        let hook = &doc["paths"]["/v1/hooks/{forge}"]["post"]["parameters"];
        assert!(
            hook.as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "X-Hub-Signature-256"),
            "{hook}"
        );
    }
}
