//! Projects over HTTP: two projects' tokens and the admin's against the
//! real API and service (simulated builder), on SQLite and PostgreSQL —
//! every scope's 403, another project's job a 404 exactly like a missing
//! one, list isolation, admin-only reload, per-project secrets, expiry,
//! and each rule a project's submissions must meet. With real builds
//! (podman, BuildKit, a registry with a password): per-project registry
//! credentials and layer caches. `oidc`: tokens exchanged for a CI
//! system's ID token.

use std::collections::BTreeMap;
use std::path::PathBuf;

use helix_build::config::{Config, ProjectConfig, TokenConfig};
use helix_build::job::{Job, JobRequest, State};
use helix_build::provenance::dsse::PublicKey;
use helix_build::provenance::{Policy, verify};
use helix_build::secrets::SecretSource;
use helix_build::service::Service;
use helix_build::{api, app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common;
use crate::common::LogText as _;

mod oidc;

const ADMIN: &str = "admin-token-0123456789";
const A_ALL: &str = "team-a-all-scopes-token";
const A_READ: &str = "team-a-read-only-token";
const A_SUBMIT: &str = "team-a-submit-only-token";
const A_EXPIRED: &str = "team-a-expired-token-xx";
const B_ALL: &str = "team-b-all-scopes-token";

fn token(secret: &str, scopes: &[&str], expires: Option<&str>) -> TokenConfig {
    TokenConfig {
        expires: expires.map(str::to_string),
        ..helix_fixtures::config::token(secret, scopes)
    }
}

/// The test config with an admin token, secrets `a_key` and `b_key`, and
/// projects team-a (tokens of each scope, one expired; secret `a_key`)
/// and team-b (every scope, from a file; secret `b_key`).
fn two_projects(dir: &tempfile::TempDir, store_url: Option<String>) -> Config {
    let mut config = common::config(dir, 2, 100);
    config.token = Some(ADMIN.into());
    config.store_url = store_url;
    let mut secret = |name: &str, value: &str| {
        let path = dir.path().join(format!("{name}.secret"));
        std::fs::write(&path, value).unwrap();
        config.secrets.insert(
            name.to_string(),
            SecretSource {
                file: Some(path),
                ..SecretSource::default()
            },
        );
    };
    secret("a_key", "value-of-a");
    secret("b_key", "value-of-b");
    let all = ["jobs:submit", "jobs:read", "jobs:cancel"];
    let b_token = dir.path().join("b.token");
    std::fs::write(&b_token, format!("{B_ALL}\n")).unwrap();
    config.projects = BTreeMap::from([
        (
            "team-a".to_string(),
            ProjectConfig {
                tokens: vec![
                    token(A_ALL, &all, Some("2999-01-01T00:00:00Z")),
                    token(A_READ, &["jobs:read"], None),
                    token(A_SUBMIT, &["jobs:submit"], None),
                    token(A_EXPIRED, &all, Some("2001-01-01T00:00:00+01:00")),
                ],
                secrets: vec!["a_key".into()],
                ..ProjectConfig::default()
            },
        ),
        (
            "team-b".to_string(),
            ProjectConfig {
                tokens: vec![TokenConfig {
                    file: Some(b_token),
                    scopes: all.iter().map(|s| s.to_string()).collect(),
                    ..TokenConfig::default()
                }],
                secrets: vec!["b_key".into()],
                ..ProjectConfig::default()
            },
        ),
    ]);
    config.validated().expect("the two-project config is valid")
}

/// The API of a service on `config`, served on a loopback port.
struct Server {
    base: String,
    http: reqwest::Client,
    _service: helix_build::service::Service,
}

impl Server {
    async fn start(config: &Config) -> Server {
        let service = app::start(config).await.expect("service starts");
        let router = api::router(service.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Server {
            base,
            http: reqwest::Client::new(),
            _service: service,
        }
    }

    /// `method path` as `token` (none: no Authorization header), with a
    /// JSON `body`: the status, the `WWW-Authenticate` header and the body.
    async fn call(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        (status, challenge, response.text().await.unwrap())
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self
            .call(Some(token), reqwest::Method::GET, path, None)
            .await;
        (status, body)
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, String) {
        let (status, _, body) = self
            .call(Some(token), reqwest::Method::POST, path, Some(body))
            .await;
        (status, body)
    }

    /// Submits a simulated job that runs for a minute as `token`: its id.
    async fn submit(&self, token: &str, extra: Value) -> String {
        let mut request = serde_json::to_value(common::simulated(60_000)).unwrap();
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = self.post(token, "/v1/jobs", request).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The ids `token` lists at `path`.
    async fn listed(&self, token: &str, path: &str) -> Vec<String> {
        let (status, body) = self.get(token, path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    }
}

fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn two_projects_are_isolated(server: &Server) {
    use reqwest::Method;
    let simulated = serde_json::to_value(common::simulated(0)).unwrap();

    // 401: no token, an unknown one, an expired one; each with the challenge.
    for token in [None, Some("not-a-token-at-all-xx"), Some(A_EXPIRED)] {
        let (status, challenge, body) = server.call(token, Method::GET, "/v1/jobs", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert!(
            challenge
                .as_deref()
                .unwrap_or_default()
                .starts_with("Bearer"),
            "{token:?}: {challenge:?}"
        );
    }
    let (_, _, expired) = server
        .call(Some(A_EXPIRED), Method::GET, "/v1/jobs", None)
        .await;
    assert!(message(&expired).contains("expired"), "{expired}");

    // 403 naming each missing scope.
    let (status, body) = server.post(A_READ, "/v1/jobs", simulated.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("jobs:submit"), "{body}");
    let (status, body) = server.get(A_SUBMIT, "/v1/jobs").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("jobs:read"), "{body}");
    let a_job = server.submit(A_ALL, json!({})).await;
    let (status, body) = server
        .post(A_READ, &format!("/v1/jobs/{a_job}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("jobs:cancel"), "{body}");
    for token in [A_ALL, B_ALL, A_READ] {
        let (status, body) = server.post(token, "/v1/builders/reload", json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(message(&body).contains("admin"), "{body}");
    }
    let (status, body) = server.post(ADMIN, "/v1/builders/reload", json!({})).await;
    assert!(
        status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
        "{status}: {body}"
    );

    // The project is on the job; the other project's job is a 404 exactly
    // as a job that does not exist.
    let b_job = server.submit(B_ALL, json!({})).await;
    let (_, body) = server.get(A_READ, &format!("/v1/jobs/{a_job}")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["project"],
        "team-a"
    );
    for (token, other) in [(B_ALL, &a_job), (A_ALL, &b_job), (A_READ, &b_job)] {
        for (method, path) in [
            (Method::GET, ""),
            (Method::GET, "/logs"),
            (Method::GET, "/logs?follow=true"),
            (Method::GET, "/audit"),
            (Method::GET, "/provenance"),
            (Method::GET, "/sbom"),
            (Method::GET, "/wait?timeout_secs=0"),
            (Method::POST, "/cancel"),
        ] {
            if method == Method::POST && token == A_READ {
                continue;
            }
            let (status, _, body) = server
                .call(
                    Some(token),
                    method.clone(),
                    &format!("/v1/jobs/{other}{path}"),
                    None,
                )
                .await;
            let (missing_status, _, missing) = server
                .call(
                    Some(token),
                    method,
                    &format!("/v1/jobs/no-such-job{path}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
            assert_eq!(status, missing_status, "{path}");
            assert_eq!(body, missing.replace("no-such-job", other), "{path}");
        }
    }
    // Still running: the other project's cancel did nothing.
    let (_, body) = server.get(ADMIN, &format!("/v1/jobs/{a_job}")).await;
    let state = serde_json::from_str::<Value>(&body).unwrap()["state"].clone();
    assert!(state == "queued" || state == "running", "{body}");

    // Lists: each project its own; the admin every job, or one project's.
    let admin_job = server.submit(ADMIN, json!({})).await;
    let admin_for_b = server.submit(ADMIN, json!({ "project": "team-b" })).await;
    let a_list = server.listed(A_READ, "/v1/jobs").await;
    assert_eq!(a_list, [a_job.as_str()]);
    let b_list = server.listed(B_ALL, "/v1/jobs").await;
    assert_eq!(b_list, [admin_for_b.clone(), b_job.clone()]);
    assert!(
        server
            .listed(A_READ, "/v1/jobs?project=team-b")
            .await
            .is_empty()
    );
    let everything = server.listed(ADMIN, "/v1/jobs").await;
    for id in [&a_job, &b_job, &admin_job, &admin_for_b] {
        assert!(everything.contains(id), "{id} in {everything:?}");
    }
    assert_eq!(
        server.listed(ADMIN, "/v1/jobs?project=team-b").await,
        [admin_for_b.clone(), b_job.clone()]
    );
    // A cursor naming another project's job is as unknown as a missing one.
    let (status, body) = server
        .get(A_READ, &format!("/v1/jobs?cursor={b_job}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The admin's job of no project is no project's.
    let (status, _) = server.get(A_READ, &format!("/v1/jobs/{admin_job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A project token submits for its own project only; the admin names
    // configured ones only.
    let (status, body) = server
        .post(
            A_ALL,
            "/v1/jobs",
            json!({ "repo_url": "https://git.example/a.git", "project": "team-b" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .post(
            ADMIN,
            "/v1/jobs",
            json!({ "repo_url": "https://git.example/a.git", "project": "team-c" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("team-a, team-b"), "{body}");

    // Secrets: only the project's own, and the error names only those.
    let with_secret = |name: &str| {
        json!({ "repo_url": "https://git.example/a.git", "secrets": [name],
                "build_args": { "HELIX_SIMULATE_DELAY_MS": "0" } })
    };
    for name in ["b_key", "nope"] {
        let (status, body) = server.post(A_ALL, "/v1/jobs", with_secret(name)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            message(&body),
            format!("invalid job: secrets: unknown secret '{name}'; project team-a may use: a_key")
        );
    }
    let (status, body) = server.post(B_ALL, "/v1/jobs", with_secret("a_key")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        message(&body),
        "invalid job: secrets: unknown secret 'a_key'; project team-b may use: b_key"
    );
    let (status, body) = server.post(A_ALL, "/v1/jobs", with_secret("a_key")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server.post(ADMIN, "/v1/jobs", with_secret("b_key")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A project cancels its own.
    let (status, body) = server
        .post(A_ALL, &format!("/v1/jobs/{a_job}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `/metrics` tells the projects' build times apart (a bounded label:
/// only configured projects have jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_tell_the_projects_build_times_apart() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&two_projects(&dir, None)).await;
    let quick = json!({ "repo_url": "https://git.example/a.git",
                        "build_args": { "HELIX_SIMULATE_DELAY_MS": "0" } });
    let (status, body) = server.post(A_ALL, "/v1/jobs", quick).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].clone();
    let (_, body) = server
        .get(
            A_ALL,
            &format!("/v1/jobs/{}/wait?timeout_secs=30", id.as_str().unwrap()),
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "succeeded",
        "{body}"
    );
    let (status, _, metrics) = server.call(None, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let count = |labels: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("helix_build_seconds_count{labels} ")))
            .map(|n| n.parse::<u64>().unwrap())
    };
    assert_eq!(count("{project=\"team-a\"}"), Some(1), "{metrics}");
    assert_eq!(count(""), Some(0), "jobs of no project: {metrics}");
    assert_eq!(count("{project=\"team-b\"}"), None, "{metrics}");
    assert!(
        metrics.contains("helix_build_seconds_bucket{project=\"team-a\",le=\"+Inf\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projects_are_isolated_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&two_projects(&dir, None)).await;
    two_projects_are_isolated(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projects_are_isolated_on_postgres() {
    let postgres = helix_fixtures::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&two_projects(&dir, Some(postgres.url()))).await;
    two_projects_are_isolated(&server).await;
}

/// Without projects, the single `token` guards everything as before, and
/// with no token at all the API stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_projects_the_token_works_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(&dir, 1, 10);
    config.token = Some(ADMIN.into());
    let server = Server::start(&config).await;
    let (status, challenge, _) = server
        .call(None, reqwest::Method::GET, "/v1/jobs", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let id = server.submit(ADMIN, json!({})).await;
    assert_eq!(server.listed(ADMIN, "/v1/jobs").await, [id.as_str()]);
    let (status, body) = server
        .post(ADMIN, &format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let open_dir = tempfile::tempdir().unwrap();
    let open = Server::start(&common::config(&open_dir, 1, 10)).await;
    let (status, _, body) = open
        .call(None, reqwest::Method::GET, "/v1/jobs", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A config whose team-a has every rule a project can have: repositories,
/// images, builders, protected refs with a protected-only secret; team-b
/// has none but a secret of its own. `buildkit` builds in an operator's
/// engine (one that never answers: nothing here runs on it).
fn ruled_projects(dir: &tempfile::TempDir, store_url: Option<String>) -> Config {
    let mut config = common::with_engine_at(
        common::config(dir, 2, 100),
        "unix:///run/helix-test-no-engine.sock",
    );
    config.token = Some(ADMIN.into());
    config.store_url = store_url;
    config.registries.insert(
        "registry.example:5000".into(),
        helix_build::config::RegistryConfig::default(),
    );
    for name in ["a_npm", "a_deploy", "b_key"] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("value-of-{name}")).unwrap();
        config.secrets.insert(
            name.to_string(),
            SecretSource {
                file: Some(path),
                ..SecretSource::default()
            },
        );
    }
    let all = ["jobs:submit", "jobs:read", "jobs:cancel"];
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    config.projects = BTreeMap::from([
        (
            "team-a".to_string(),
            ProjectConfig {
                tokens: vec![token(A_ALL, &all, None)],
                secrets: list(&["a_npm"]),
                protected_secrets: list(&["a_deploy"]),
                protected_refs: list(&["refs/heads/main", "refs/tags/v*"]),
                repositories: Some(list(&["https://git.example/team-a/*"])),
                images: Some(list(&["registry.example:5000/team-a/"])),
                builders: Some(list(&["simulated", "podman"])),
                ..ProjectConfig::default()
            },
        ),
        (
            "team-b".to_string(),
            ProjectConfig {
                tokens: vec![token(B_ALL, &all, None)],
                secrets: list(&["b_key"]),
                ..ProjectConfig::default()
            },
        ),
    ]);
    config.validated().expect("the ruled config is valid")
}

async fn a_projects_rules_hold_at_submit(server: &Server) {
    let submission = |extra: Value| {
        let mut body = json!({
            "repo_url": "https://git.example/team-a/app.git",
            "build_args": { "HELIX_SIMULATE_DELAY_MS": "0" },
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let refused = async |token: &str, extra: Value| {
        let (status, body) = server.post(token, "/v1/jobs", submission(extra)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        message(&body)
    };
    let accepted = async |token: &str, extra: Value| {
        let (status, body) = server.post(token, "/v1/jobs", submission(extra)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };

    // Repositories: only the project's, and no `..` around the pattern.
    for url in [
        "https://git.example/team-b/app.git",
        "https://git.example/team-a/../team-b/app.git",
    ] {
        let error = refused(A_ALL, json!({ "repo_url": url })).await;
        assert!(error.starts_with("invalid job: repo_url: "), "{error}");
        assert!(
            error.ends_with("project team-a may build: https://git.example/team-a/*"),
            "{error}"
        );
    }
    // Builders.
    assert_eq!(
        refused(A_ALL, json!({ "builder": "buildah" })).await,
        "invalid job: builder: project team-a may not use builder 'buildah'; it may use: podman, simulated"
    );
    // Images: under the project's prefixes, whole components only.
    for image in [
        "registry.example:5000/team-b/app:latest",
        "registry.example:5000/team-ab/app",
    ] {
        let error = refused(A_ALL, json!({ "image": image })).await;
        assert!(error.starts_with("invalid job: image: "), "{error}");
        assert!(
            error.ends_with("project team-a may push to: registry.example:5000/team-a/"),
            "{error}"
        );
    }
    let job = accepted(
        A_ALL,
        json!({ "image": "registry.example:5000/team-a/app:1" }),
    )
    .await;
    assert_eq!(job["project"], "team-a");
    // A real builder pushes to configured registries only, whoever asks.
    for token in [A_ALL, ADMIN] {
        let error = refused(
            token,
            json!({ "builder": "podman", "image": "elsewhere.example/team-a/app:1" }),
        )
        .await;
        assert_eq!(
            error,
            "invalid job: image: \"elsewhere.example/team-a/app:1\" is in registry elsewhere.example, \
             which this server does not push to; configured: registry.example:5000"
        );
    }

    // Protected secrets: only for a protected ref, named in full; the
    // refusal names only the caller's own secrets.
    for git_ref in ["feature", "main", "refs/heads/feature"] {
        let error = refused(A_ALL, json!({ "secrets": ["a_deploy"], "ref": git_ref })).await;
        assert_eq!(
            error,
            format!(
                "invalid job: secrets: secret 'a_deploy' is for protected refs only \
                 (refs/heads/main, refs/tags/v*), and '{git_ref}' is not one (name the full ref, \
                 e.g. refs/heads/main); project team-a may use here: a_npm"
            )
        );
    }
    assert_eq!(
        refused(
            A_ALL,
            json!({ "secrets": ["b_key"], "ref": "refs/tags/v1" })
        )
        .await,
        "invalid job: secrets: unknown secret 'b_key'; project team-a may use: a_deploy, a_npm"
    );
    let release = accepted(
        A_ALL,
        json!({ "secrets": ["a_deploy", "a_npm"], "ref": "refs/tags/v1.2" }),
    )
    .await;
    assert_eq!(release["protected"], true);
    let feature = accepted(A_ALL, json!({ "secrets": ["a_npm"], "ref": "feature" })).await;
    assert_eq!(feature["protected"], false);
    // The project and the protection are stored with the job and in its
    // audit trail.
    for (job, protected) in [(&release, true), (&feature, false)] {
        let id = job["id"].as_str().unwrap();
        let (status, body) = server
            .get(A_ALL, &format!("/v1/jobs/{id}/wait?timeout_secs=30"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ended: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ended["state"], "succeeded", "{body}");
        assert_eq!(ended["protected"], protected, "{body}");
        let (status, body) = server.get(A_ALL, &format!("/v1/jobs/{id}/audit")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["project"],
            "team-a",
            "{body}"
        );
    }

    // Credentials in a repository URL: refused for everyone, never echoed,
    // never stored.
    for (token, url) in [
        (A_ALL, "https://ci:hunter2-pass@git.example/team-a/app.git"),
        (ADMIN, "https://hunter2-pass@git.example/team-a/app.git"),
        (B_ALL, "ssh://git:hunter2-pass@git.example/team-b/app.git"),
    ] {
        let (status, body) = server
            .post(token, "/v1/jobs", submission(json!({ "repo_url": url })))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            message(&body).starts_with("invalid job: repo_url: must not hold credentials"),
            "{body}"
        );
        assert!(message(&body).contains("project's secrets"), "{body}");
        assert!(!body.contains("hunter2"), "{body}");
    }
    let (_, everything) = server.get(ADMIN, "/v1/jobs?limit=1000").await;
    assert!(!everything.contains("hunter2"), "{everything}");

    // An operator's engine shares its cache between every job: no
    // project's job builds in it.
    let error = refused(B_ALL, json!({ "builder": "buildkit" })).await;
    assert!(
        error.starts_with(
            "invalid job: builder: builder 'buildkit' builds in the operator's Docker Engine, \
             whose cache every job shares, so no project's job may use it"
        ),
        "{error}"
    );

    // team-b has no rules of its own: any repository, any image.
    let job = accepted(
        B_ALL,
        json!({ "repo_url": "https://elsewhere.example/x.git", "image": "registry.example:5000/team-a/app:1" }),
    )
    .await;
    assert_eq!(job["project"], "team-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_rules_hold_at_submit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ruled_projects(&dir, None)).await;
    a_projects_rules_hold_at_submit(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_rules_hold_at_submit_on_postgres() {
    let postgres = helix_fixtures::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ruled_projects(&dir, Some(postgres.url()))).await;
    a_projects_rules_hold_at_submit(&server).await;
}

/// `skopeo login` into `registry` as `user`, writing the auth file `path`
/// as an operator (or a team) would.
fn login(path: &std::path::Path, registry: &str, user: &str, password: &str) -> PathBuf {
    helix_fixtures::run(
        path.parent().unwrap(),
        "skopeo",
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            &path.display().to_string(),
            "--username",
            user,
            "--password",
            password,
            registry,
        ],
    );
    path.to_path_buf()
}

/// A repository whose Dockerfile builds on `base` and writes `/proof`.
fn repo_on(base: &str) -> tempfile::TempDir {
    helix_fixtures::dockerfile_repo(&format!(
        "FROM {base}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo on-team-b-base > /proof\"]\n"
    ))
}

/// Submits `request` for `project` (as its token would) and waits for
/// its end: the job and its log.
async fn run_for(
    service: &Service,
    access: &helix_build::access::Access,
    project: &str,
    request: JobRequest,
) -> (Job, Vec<String>) {
    let job = service
        .submit_for(request, access.project(project))
        .await
        .unwrap();
    let job = common::finished(service, &job.id).await;
    let logs = service.logs(job.id.as_str()).await.unwrap().texts();
    eprintln!(
        "--- {project} {} ({}): {:?}\n{}",
        job.id,
        job.state,
        job.error,
        logs.join("\n")
    );
    (job, logs)
}

/// team-b's private base image, in a registry only team-b's password
/// opens: a team-a job (no credentials of its own) fails to pull it as it
/// would on a team-a laptop, though the operator's auth file could; a
/// team-b job pulls it, pushes and attaches its provenance with team-b's
/// own auth file. With podman (its storage, the host's push) and BuildKit
/// in a managed engine (its `docker` client, the engine's push).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_pulls_and_pushes_with_its_own_credentials_only() {
    const PASSWORD: &str = "team-b-Passw0rd";
    let registry = helix_fixtures::Registry::with_password("team-b", PASSWORD);
    let creds = format!("team-b:{PASSWORD}");
    let base = format!("{}/team-b/private-base:1", registry.address);
    common::push_base_image(&base, Some(&creds), &["linux/amd64"]);
    let repo = repo_on(&base);

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::with_managed_engine(common::real_config(&dir, &registry.address));
    let auth = |name: &str| {
        login(
            &dir.path().join(name),
            &registry.address,
            "team-b",
            PASSWORD,
        )
    };
    // The operator's credentials open team-b's repositories too; no
    // project's job may use them.
    config.registry_auth_file = Some(auth("operator-auth.json"));
    let images = |team: &str| Some(vec![format!("{}/{team}/", registry.address)]);
    config.projects = BTreeMap::from([
        (
            "team-a".to_string(),
            ProjectConfig {
                images: images("team-a"),
                ..ProjectConfig::default()
            },
        ),
        (
            "team-b".to_string(),
            ProjectConfig {
                images: images("team-b"),
                registry_auth: Some(auth("team-b-auth.json")),
                ..ProjectConfig::default()
            },
        ),
    ]);
    let config = config.validated().unwrap();
    let access = config.access().unwrap();
    let service = common::start(&config).await;
    for builder in ["podman", "buildkit"] {
        let request = |team: &str| JobRequest {
            image: Some(format!("{}/{team}/app", registry.address)),
            ..common::on_repo(repo.path(), builder)
        };
        let (job, logs) = run_for(&service, &access, "team-a", request("team-a")).await;
        assert_eq!(job.state, State::Failed, "{builder}");
        let error = job.error.clone().unwrap_or_default();
        // BuildKit's refusal is not yet told from a build's own failure.
        if builder == "podman" {
            assert!(error.starts_with("registry error: "), "{builder}: {error}");
            assert!(error.contains("team-b/private-base"), "{builder}: {error}");
        }
        assert!(
            error.to_ascii_lowercase().contains("unauthorized"),
            "{builder}: {error}"
        );
        assert!(
            logs.iter().any(|l| l
                == "[helix] registry credentials: none; project team-a has no registry_auth, \
                    so its pulls and pushes are anonymous"),
            "{builder}: {logs:?}"
        );

        let (job, logs) = run_for(&service, &access, "team-b", request("team-b")).await;
        assert_eq!(job.state, State::Succeeded, "{builder}: {:?}", job.error);
        assert!(
            logs.iter()
                .any(|l| l
                    == "[helix] registry credentials: project team-b's own (its registry_auth)"),
            "{builder}"
        );
        let reference = format!(
            "{}@{}",
            common::image_name(job.image_tag.as_deref().unwrap()),
            job.digest.clone().unwrap()
        );
        let (proof, _) = common::pull_as(Some(&creds), &reference, "proof");
        assert_eq!(proof, "on-team-b-base\n", "{builder}");
        let provenance = service.provenance(job.id.as_str()).await.unwrap();
        let internal = &provenance
            .statement
            .predicate
            .build_definition
            .internal_parameters;
        assert_eq!(internal.project.as_deref(), Some("team-b"), "{builder}");
        assert!(!internal.protected, "{builder}");
        // What a consumer requires of it, as `helix-build verify` checks.
        let key = PublicKey::load(&dir.path().join("provenance.pub")).unwrap();
        let client = common::registry_client(&registry.address, Some(auth("team-b-verify.json")));
        let require = |policy: Policy| {
            let (client, reference, key) = (&client, &reference, &key);
            async move { verify(client, reference, key, &policy).await.map(|_| ()) }
        };
        let repository = provenance
            .statement
            .predicate
            .build_definition
            .external_parameters
            .repository
            .clone();
        require(Policy {
            project: Some("team-b".into()),
            source_repo: Some(repository),
            ..Policy::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{builder}: {e}"));
        let other = require(Policy {
            project: Some("team-a".into()),
            ..Policy::default()
        })
        .await
        .unwrap_err();
        assert!(
            other.contains("built by project team-b, not by --project team-a"),
            "{other}"
        );
        let unprotected = require(Policy {
            protected: true,
            ..Policy::default()
        })
        .await
        .unwrap_err();
        assert!(
            unprotected.contains("is not a protected ref"),
            "{unprotected}"
        );
        let everything = format!(
            "{}\n{}",
            logs.join("\n"),
            serde_json::to_string(&job).unwrap()
        );
        assert!(!everything.contains(PASSWORD), "{builder}");
    }
}

/// A cached step that writes a marker no other build could reproduce (a
/// poisoned layer, as far as anyone else is concerned) serves the next
/// build of its own project and ref kind only: team-b's identical build
/// from the same repository, and team-a's own build of a protected ref,
/// run the step afresh. One worker: one slot, handed from scope to scope.
/// Refs named in full, as protected ones are: a branch other than the
/// default one is checked out exactly too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_cache_step_of_one_project_never_serves_another() {
    let registry = helix_fixtures::Registry::start(false);
    let repo = helix_fixtures::busybox_repo(
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox cat /proc/sys/kernel/random/uuid > /marker\"]\n",
    );
    helix_fixtures::git(repo.path(), &["branch", "feature"]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::real_config(&dir, &registry.address);
    config.workers = 1;
    // The layer cache's scopes, step by step: a whole build of the same
    // inputs would be reused instead (its scopes: `reuse::`).
    config.reuse_builds = false;
    config.projects = BTreeMap::from([
        (
            "team-a".to_string(),
            ProjectConfig {
                protected_refs: vec!["refs/heads/main".into()],
                ..ProjectConfig::default()
            },
        ),
        ("team-b".to_string(), ProjectConfig::default()),
    ]);
    let config = config.validated().unwrap();
    let access = config.access().unwrap();
    let service = common::start(&config).await;
    let build = async |project: &str, git_ref: &str| {
        let request = JobRequest {
            git_ref: Some(git_ref.into()),
            ..common::on_repo(repo.path(), "podman")
        };
        let (job, logs) = run_for(&service, &access, project, request).await;
        assert_eq!(
            job.state,
            State::Succeeded,
            "{project} {git_ref}: {:?}",
            job.error
        );
        let reference = format!(
            "{}@{}",
            common::image_name(job.image_tag.as_deref().unwrap()),
            job.digest.clone().unwrap()
        );
        let (marker, _) = common::pull(&reference, "marker");
        let cached = logs.iter().filter(|l| l.contains("Using cache")).count();
        (marker, cached, logs)
    };
    let (poisoned, cached, _) = build("team-a", "refs/heads/feature").await;
    assert_eq!(cached, 0, "cold");
    let (again, cached, _) = build("team-a", "refs/heads/feature").await;
    assert_eq!(
        (again.as_str(), cached),
        (poisoned.as_str(), 2),
        "team-a's own cache serves it"
    );

    let (b_marker, cached, logs) = build("team-b", "refs/heads/feature").await;
    assert_eq!(cached, 0, "team-b reuses no step of team-a's");
    assert_ne!(b_marker, poisoned);
    assert!(
        logs.iter()
            .any(|l| l.contains("held the layers of project team-a: emptied for project team-b")),
        "{logs:?}"
    );
    let (release, cached, logs) = build("team-a", "refs/heads/main").await;
    assert_eq!(cached, 0, "a protected ref reuses no unprotected step");
    assert!(release != poisoned && release != b_marker);
    assert!(
        logs.iter()
            .any(|l| l.contains("emptied for project team-a, protected refs")),
        "{logs:?}"
    );
}

/// [`two_projects`] with team-a limited to one running and two waiting
/// jobs.
fn team_a_limited(dir: &tempfile::TempDir, store_url: Option<String>) -> Config {
    let mut config = two_projects(dir, store_url);
    let team_a = config.projects.get_mut("team-a").unwrap();
    team_a.max_running = Some(1);
    team_a.max_queued = Some(2);
    config.validated().unwrap()
}

/// Past team-a's `max_queued` a submission gets 429 with `Retry-After`,
/// naming the project and the limit, and nothing is stored; team-b is
/// not held to team-a's limit.
async fn a_project_past_its_max_queued_is_refused(server: &Server) {
    let running = server.submit(A_ALL, json!({})).await;
    for _ in 0..500 {
        let (_, body) = server.get(A_ALL, &format!("/v1/jobs/{running}")).await;
        if body.contains("\"state\":\"running\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let waiting = [
        server.submit(A_ALL, json!({})).await,
        server.submit(A_ALL, json!({})).await,
    ];
    let mut request = serde_json::to_value(common::simulated(0)).unwrap();
    request["id"] = json!("one-too-many");
    let response = server
        .http
        .post(format!("{}/v1/jobs", server.base))
        .bearer_auth(A_ALL)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER)
    );
    let body = response.text().await.unwrap();
    assert!(
        message(&body).contains("project team-a has 2 jobs waiting")
            && message(&body).contains("projects.team-a.max_queued"),
        "{body}"
    );
    let (status, _) = server.get(ADMIN, "/v1/jobs/one-too-many").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    let mut listed = server.listed(A_ALL, "/v1/jobs").await;
    listed.sort();
    let mut expected = vec![running.clone(), waiting[0].clone(), waiting[1].clone()];
    expected.sort();
    assert_eq!(listed, expected);
    for id in &waiting {
        let (_, body) = server.get(A_ALL, &format!("/v1/jobs/{id}")).await;
        assert!(
            body.contains("\"state\":\"queued\""),
            "max_running 1: {body}"
        );
    }
    server.submit(B_ALL, json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_past_its_max_queued_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&team_a_limited(&dir, None)).await;
    a_project_past_its_max_queued_is_refused(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_past_its_max_queued_is_refused_on_postgres() {
    let postgres = helix_fixtures::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&team_a_limited(&dir, Some(postgres.url()))).await;
    a_project_past_its_max_queued_is_refused(&server).await;
}

const A_HOOK_SECRET: &str = "team-a-github-hook-secret";
const B_HOOK_SECRET: &str = "team-b-github-hook-secret";
const HOOKED_REPO: &str = "https://git.example/team-a/app.git";

/// [`two_projects`] where each project has a GitHub webhook of its own,
/// team-a's building pushes to `main` of its repositories, team-b's those
/// of its own, `main` protected in both and each project's secret
/// protected-only, named by its rule; the simulated builder's jobs run
/// for a minute.
fn with_project_hooks(dir: &tempfile::TempDir, store_url: Option<String>) -> Config {
    let mut config = two_projects(dir, store_url);
    config.builders.insert(
        "simulated".to_string(),
        helix_build::config::BuilderConfig {
            settings: BTreeMap::from([("delay_ms".to_string(), "60000".to_string())]),
            ..Default::default()
        },
    );
    for (name, secret) in [("team-a", A_HOOK_SECRET), ("team-b", B_HOOK_SECRET)] {
        let path = dir.path().join(format!("{name}.hook"));
        std::fs::write(&path, secret).unwrap();
        let project = config.projects.get_mut(name).unwrap();
        project.protected_refs = vec!["refs/heads/main".into()];
        project.protected_secrets = std::mem::take(&mut project.secrets);
        project.webhooks = BTreeMap::from([(
            "github".to_string(),
            SecretSource {
                file: Some(path),
                ..SecretSource::default()
            },
        )]);
        project.webhook_rules = vec![
            serde_json::from_value(json!({
                "repository": format!("https://git.example/{name}/*"),
                "refs": ["refs/heads/main"],
                "builder": "simulated",
                "secrets": project.protected_secrets,
            }))
            .unwrap(),
        ];
    }
    config.validated().unwrap()
}

/// A push of `commit` to `main` of the hooked repository, as GitHub's
/// delivery `delivery` signed with `secret` to `path`: the status and
/// the body.
async fn deliver(
    server: &Server,
    path: &str,
    secret: &str,
    delivery: &str,
    commit: &str,
) -> (StatusCode, Value) {
    use hmac::Mac as _;
    let body = json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "repository": { "clone_url": HOOKED_REPO },
    })
    .to_string();
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let response = server
        .http
        .post(format!("{}{path}", server.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", format!("sha256={signature}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A project's webhook makes jobs of that project, of the ref pushed
/// (protected, for a protected one) at the commit pushed; a redelivery of a
/// delivery taken answers 200 and builds nothing, a replay under a new
/// delivery id builds nothing and supersedes nothing, while a new push
/// supersedes the genuine job as before. Another project's secret does
/// not sign for it.
async fn project_webhooks_build_each_push_once(server: &Server) {
    let hook = "/v1/hooks/github/team-a";
    let commit = "4f5c8d0e3a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d";
    let (status, job) = deliver(server, hook, A_HOOK_SECRET, "delivery-1", commit).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["project"], "team-a");
    assert_eq!(job["ref"], "refs/heads/main");
    assert_eq!(job["pinned_commit"], commit, "the pushed commit is built");
    assert_eq!(job["protected"], true, "a push to team-a's protected main");
    assert_eq!(job["secrets"], json!(["a_key"]), "its protected secret");
    let genuine = job["id"].as_str().unwrap().to_string();
    assert!(genuine.starts_with("hook-github-"), "{genuine}");

    let (status, answer) = deliver(server, hook, A_HOOK_SECRET, "delivery-1", commit).await;
    assert_eq!(status, StatusCode::OK, "a redelivery: {answer}");
    assert_eq!(answer["id"], genuine.as_str());
    let (status, answer) = deliver(server, hook, A_HOOK_SECRET, "replayed-2", commit).await;
    assert_eq!(status, StatusCode::OK, "a replay: {answer}");
    assert_eq!(server.listed(A_ALL, "/v1/jobs").await, [genuine.as_str()]);
    let (_, body) = server.get(A_ALL, &format!("/v1/jobs/{genuine}")).await;
    assert!(
        body.contains("\"state\":\"running\"") || body.contains("\"state\":\"queued\""),
        "the replay superseded nothing: {body}"
    );

    let (status, answer) = deliver(server, hook, B_HOOK_SECRET, "forged-3", "1234").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, answer) = deliver(
        server,
        "/v1/hooks/github/team-b",
        B_HOOK_SECRET,
        "b-4",
        commit,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "team-b's rules: {answer}");
    for path in [
        "/v1/hooks/github/nope",
        "/v1/hooks/gitlab/team-a",
        "/v1/hooks/github",
    ] {
        let (status, answer) = deliver(server, path, A_HOOK_SECRET, "d-5", commit).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }

    let newer = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";
    let (status, job) = deliver(server, hook, A_HOOK_SECRET, "delivery-6", newer).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (_, body) = server
        .get(A_ALL, &format!("/v1/jobs/{genuine}/wait?timeout_secs=30"))
        .await;
    assert!(
        body.contains("\"state\":\"cancelled\"") && body.contains("superseded by job"),
        "a new push supersedes: {body}"
    );
    assert!(server.listed(B_ALL, "/v1/jobs").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_webhooks_build_each_push_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&with_project_hooks(&dir, None)).await;
    project_webhooks_build_each_push_once(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_webhooks_build_each_push_once_on_postgres() {
    let postgres = helix_fixtures::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&with_project_hooks(&dir, Some(postgres.url()))).await;
    project_webhooks_build_each_push_once(&server).await;
}
