//! The OpenAPI description of the HTTP API, served at `/v1/openapi.json`,
//! generated from the handlers' annotations and the Rust types they take
//! and return: a field added to a type appears here without a second
//! edit. A test walks every operation against a live server.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

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
        api::hook,
        api::project_hook,
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
    serde_json::to_value(doc).unwrap_or_default()
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
        let state = &doc["components"]["schemas"]["State"]["enum"];
        assert!(
            state.as_array().unwrap().iter().any(|s| s == "timed_out"),
            "{state}"
        );
    }
}
