//! Projects reloaded with the builders (`POST /v1/builders/reload`, as
//! SIGHUP does): tokens added and removed count from the next request, a
//! config that does not load changes nothing, and accepted jobs run on.

use crate::common::Server;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-of-the-operator";
const WEB: &str = "web-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef";

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// A `[projects.NAME]` whose one token is read from a file in `dir`.
fn project(dir: &std::path::Path, name: &str, token: &str, scopes: &str) -> String {
    let file = dir.join(format!("{name}.token"));
    std::fs::write(&file, token).unwrap();
    format!(
        "[projects.{name}]\ntokens = [{{ file = \"{}\", scopes = {scopes} }}]\n",
        file.display()
    )
}

#[test]
fn projects_reload_with_the_builders_and_a_bad_config_keeps_the_old_ones() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let config = dir.join("helix.toml");
    let submit_read = r#"["jobs:submit", "jobs:read"]"#;
    let write = |projects: &[String]| {
        std::fs::write(
            &config,
            format!("token = \"{ADMIN}\"\n{}", projects.concat()),
        )
        .unwrap();
    };
    write(&[project(dir, "web", WEB, submit_read)]);
    let server = Server::start_in(dir, &["--config", config.to_str().unwrap()]);
    let status_of = |token: &str| server.raw("GET", "/v1/jobs", "", &bearer(token)).0;
    let reload = || server.raw("POST", "/v1/builders/reload", "", &bearer(ADMIN));

    let running = json!({"id": "web-long", "builder": "simulated",
        "repo_url": "https://git.example/web/app.git",
        "build_args": {"HELIX_SIMULATE_DELAY_MS": "3000"}});
    let (status, body) = server.raw("POST", "/v1/jobs", &running.to_string(), &bearer(WEB));
    assert_eq!(status, 201, "{body}");
    assert_eq!(status_of(OPS), 401, "no such token yet");

    // A project added: its token works at once.
    write(&[
        project(dir, "web", WEB, submit_read),
        project(dir, "ops", OPS, r#"["jobs:read"]"#),
    ]);
    let (status, body) = reload();
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(OPS), 200);
    let (_, token) = server.raw("GET", "/v1/token", "", &bearer(OPS));
    let token: Value = serde_json::from_str(&token).unwrap();
    assert_eq!(
        token,
        json!({"project": "ops", "scopes": ["jobs:read"], "projects": []})
    );

    // A project removed: its token is refused; its accepted job runs on.
    write(&[project(dir, "ops", OPS, r#"["jobs:read"]"#)]);
    assert_eq!(reload().0, 200);
    assert_eq!(status_of(WEB), 401);
    let (_, job) = server.raw(
        "GET",
        "/v1/jobs/web-long/wait?timeout_secs=20",
        "",
        &bearer(ADMIN),
    );
    let job: Value = serde_json::from_str(&job).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");

    // A config that does not load: refused with its error, the old
    // projects stay.
    write(&[project(dir, "ops", OPS, r#"["jobs:everything"]"#)]);
    let (status, body) = reload();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("projects.ops.tokens[0]"), "{body}");
    assert_eq!(status_of(OPS), 200);
}
