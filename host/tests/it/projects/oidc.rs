//! The OIDC token exchange over HTTP, against issuers that stand in for
//! GitHub Actions' and GitLab's on loopback (each a locally made key, an
//! RSA and a P-256 one, served as a JWKS, one through a discovery
//! document): an ID token of a rule's repository and ref becomes a token
//! of that project, bound to them; every other token is refused, each in
//! its class.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use helix_build::config::{IssuerConfig, OidcConfig, OidcRuleConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

const AUDIENCE: &str = "https://helix.test";
const WEB_REPO: &str = "https://git.example/org/web.git";
const DATA_REPO: &str = "https://git.example/grp/data.git";

/// A signing key of a stand-in issuer, and its public half as a JWK.
struct Key {
    encoding: EncodingKey,
    algorithm: Algorithm,
    jwk: Value,
}

/// An RSA key made by openssl, as GitHub signs (RS256).
fn rsa_key(dir: &std::path::Path, kid: &str) -> Key {
    let pem = dir.join(format!("{kid}.pem"));
    let der = dir.join(format!("{kid}.der"));
    let pem_text = pem.to_str().unwrap();
    helix_fixtures::run(
        dir,
        "openssl",
        &["genrsa", "-traditional", "-out", pem_text, "2048"],
    );
    helix_fixtures::run(
        dir,
        "openssl",
        &[
            "rsa",
            "-in",
            pem_text,
            "-traditional",
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ],
    );
    let modulus = helix_fixtures::run(
        dir,
        "openssl",
        &["rsa", "-in", pem_text, "-noout", "-modulus"],
    );
    let n = hex::decode(modulus.trim().strip_prefix("Modulus=").unwrap()).unwrap();
    Key {
        encoding: EncodingKey::from_rsa_der(&std::fs::read(&der).unwrap()),
        algorithm: Algorithm::RS256,
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"}),
    }
}

/// A P-256 key, as a GitLab instance may sign (ES256).
fn ec_key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed point");
    Key {
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        algorithm: Algorithm::ES256,
        jwk: json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
    }
}

/// A stand-in issuer on a loopback port: its discovery document and
/// JWKS, and how often its keys were asked for.
struct Issuer {
    url: String,
    key_fetches: Arc<AtomicUsize>,
}

impl Issuer {
    async fn serve(keys: &[&Key]) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let key_fetches = Arc::new(AtomicUsize::new(0));
        let counted = key_fetches.clone();
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    axum::Json(jwks)
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Issuer { url, key_fetches }
    }

    /// An ID token of this issuer signed with `key`: `claims` over
    /// `iss`, `aud`, `sub` and a life of ten minutes.
    fn token(&self, key: &Key, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut all = json!({"iss": self.url, "aud": AUDIENCE, "sub": "repo:org/web:ref:refs/heads/main",
            "iat": now, "nbf": now - 5, "exp": now + 600});
        all.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        let mut header = Header::new(key.algorithm);
        header.kid = key.jwk["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(&header, &all, &key.encoding).unwrap()
    }
}

/// Project web takes GitHub's ID tokens of `org/web` at main and `v*`
/// tags (main protected); project data takes GitLab's of `grp/data` at
/// any branch or tag, its keys named by `jwks_url`.
fn exchanging(dir: &tempfile::TempDir, github: &Issuer, gitlab: &Issuer) -> Config {
    let mut config = common::config(dir, 2, 100);
    config.token = Some(ADMIN.into());
    let key = dir.path().join("oidc.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef-test-key\n").unwrap();
    let issuer = |url: &str, jwks_url: Option<String>| IssuerConfig {
        url: url.to_string(),
        audience: AUDIENCE.into(),
        jwks_url,
    };
    config.oidc = Some(OidcConfig {
        token_key: SecretSource {
            file: Some(key),
            ..SecretSource::default()
        },
        token_ttl_secs: 900,
        issuers: BTreeMap::from([
            ("github".to_string(), issuer(&github.url, None)),
            (
                "gitlab".to_string(),
                issuer(&gitlab.url, Some(format!("{}/jwks", gitlab.url))),
            ),
        ]),
    });
    let rule = |issuer: &str, repository: &str, refs: &[&str], repo_url: &str| OidcRuleConfig {
        issuer: issuer.into(),
        repository: repository.into(),
        refs: refs.iter().map(|r| r.to_string()).collect(),
        repo_url: repo_url.into(),
        scopes: vec!["jobs:submit".into(), "jobs:read".into()],
    };
    config.projects = BTreeMap::from([
        (
            "web".to_string(),
            ProjectConfig {
                protected_refs: vec!["refs/heads/main".into()],
                oidc: vec![rule(
                    "github",
                    "org/web",
                    &["refs/heads/main", "refs/tags/v*"],
                    WEB_REPO,
                )],
                ..ProjectConfig::default()
            },
        ),
        (
            "data".to_string(),
            ProjectConfig {
                oidc: vec![rule(
                    "gitlab",
                    "grp/*",
                    &["refs/heads/*", "refs/tags/*"],
                    DATA_REPO,
                )],
                ..ProjectConfig::default()
            },
        ),
    ]);
    config.validated().unwrap()
}

/// POSTs `id_token` for exchange: the status and the body.
async fn exchange(server: &Server, id_token: &str) -> (StatusCode, Value) {
    let (status, _, body) = server
        .call(
            None,
            reqwest::Method::POST,
            "/v1/tokens/oidc",
            Some(json!({ "id_token": id_token })),
        )
        .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_from_a_stand_in_issuer_becomes_a_token_of_its_rules_project_bound_to_its_repository_and_ref()
 {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec) = (rsa_key(dir.path(), "rsa-1"), ec_key("ec-1"));
    let github = Issuer::serve(&[&rsa]).await;
    let gitlab = Issuer::serve(&[&ec]).await;
    let server = Server::start(&exchanging(&dir, &github, &gitlab)).await;
    let simulated = serde_json::to_value(common::simulated(60_000)).unwrap();
    let on = |repo: &str, extra: Value| {
        let mut request = simulated.clone();
        request["repo_url"] = repo.into();
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        request
    };

    let github_token = github.token(
        &rsa,
        json!({"repository": "org/web", "ref": "refs/heads/main"}),
    );
    let (status, issued) = exchange(&server, &github_token).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["project"], "web");
    assert_eq!(issued["repo_url"], WEB_REPO);
    assert_eq!(issued["ref"], "refs/heads/main");
    assert_eq!(issued["scopes"], json!(["jobs:submit", "jobs:read"]));
    let web = issued["token"].as_str().unwrap().to_string();
    assert!(web.starts_with("hxo_"), "{web}");
    let expires: chrono::DateTime<chrono::Utc> =
        issued["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left <= chrono::Duration::seconds(900) && left > chrono::Duration::seconds(800));

    // Its jobs: the bound repository at the bound ref (filled in), which is
    // protected; a commit pinned on it is its to name.
    let (status, body) = server.post(&web, "/v1/jobs", on(WEB_REPO, json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&job["project"], &job["ref"], &job["protected"]),
        (&json!("web"), &json!("refs/heads/main"), &json!(true))
    );
    let web_job = job["id"].as_str().unwrap().to_string();
    let pinned =
        json!({"ref": "refs/heads/main", "commit": "4f5c8d0e3a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d"});
    let (status, body) = server.post(&web, "/v1/jobs", on(WEB_REPO, pinned)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (repo, extra) in [
        (DATA_REPO, json!({})),
        (WEB_REPO, json!({"ref": "refs/heads/dev"})),
        (WEB_REPO, json!({"ref": "main"})),
    ] {
        let (status, body) = server.post(&web, "/v1/jobs", on(repo, extra.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{repo} {extra}: {body}");
        assert!(
            message(&body).contains(&format!("submits only {WEB_REPO} at refs/heads/main")),
            "{body}"
        );
    }
    let (status, body) = server
        .post(&web, &format!("/v1/jobs/{web_job}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no jobs:cancel: {body}");
    assert!(message(&body).contains("jobs:cancel"), "{body}");
    let (status, _) = server.post(&web, "/v1/builders/reload", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no admin");

    // GitLab's shape (project_path; a short ref with its type), ES256, keys
    // from `jwks_url`: a token of project data, which sees none of web's.
    let gitlab_token = gitlab.token(
        &ec,
        json!({"sub": "project_path:grp/data:ref_type:tag:ref:v2", "project_path": "grp/data", "ref": "v2", "ref_type": "tag"}),
    );
    let (status, issued) = exchange(&server, &gitlab_token).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(
        (&issued["project"], &issued["ref"]),
        (&json!("data"), &json!("refs/tags/v2"))
    );
    let data = issued["token"].as_str().unwrap().to_string();
    let (status, _) = server.get(&data, &format!("/v1/jobs/{web_job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another project's job");
    assert!(server.listed(&data, "/v1/jobs").await.is_empty());
    assert!(server.listed(&web, "/v1/jobs").await.contains(&web_job));
    assert!(server.listed(ADMIN, "/v1/jobs").await.contains(&web_job));

    // Refused, each in its class.
    let now = chrono::Utc::now().timestamp();
    let other_rsa = rsa_key(dir.path(), "rsa-1-forged");
    let forged = Key {
        jwk: rsa.jwk.clone(),
        ..other_rsa
    };
    let main = json!({"repository": "org/web", "ref": "refs/heads/main"});
    let with = |extra: Value| {
        let mut claims = main.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &with(json!({"iss": github.url, "aud": AUDIENCE, "sub": "s", "exp": now + 600})),
        &EncodingKey::from_secret(b"anything"),
    )
    .unwrap();
    for (token, status, says) in [
        (
            github.token(&rsa, with(json!({"aud": "https://elsewhere.test"}))),
            StatusCode::UNAUTHORIZED,
            "not valid here",
        ),
        (
            github.token(
                &rsa,
                with(json!({"exp": now - 3600, "nbf": now - 7200, "iat": now - 7200})),
            ),
            StatusCode::UNAUTHORIZED,
            "not valid here",
        ),
        (
            github.token(&forged, main.clone()),
            StatusCode::UNAUTHORIZED,
            "not valid here",
        ),
        (
            github.token(
                &rsa,
                with(json!({"iss": "https://token.actions.githubusercontent.com"})),
            ),
            StatusCode::UNAUTHORIZED,
            "is not trusted by this server",
        ),
        (
            github.token(&ec, main.clone()),
            StatusCode::UNAUTHORIZED,
            "has no key \"ec-1\"",
        ),
        (hs256, StatusCode::UNAUTHORIZED, "signed with HS256"),
        (
            github.token(&rsa, with(json!({"repository": "org/other"}))),
            StatusCode::FORBIDDEN,
            "no project's oidc rule takes repository \"org/other\"",
        ),
        (
            github.token(&rsa, with(json!({"ref": "refs/heads/feature"}))),
            StatusCode::FORBIDDEN,
            "at refs/heads/feature from issuer github",
        ),
        (
            gitlab.token(&ec, json!({"project_path": "grp/data", "ref": "main"})),
            StatusCode::FORBIDDEN,
            "names no repository",
        ),
        (
            "not.a-jwt".to_string(),
            StatusCode::BAD_REQUEST,
            "id_token: not a signed JWT",
        ),
    ] {
        let (got, body) = exchange(&server, &token).await;
        assert_eq!(got, status, "{says}: {body}");
        let text = body["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{says}: {body}");
    }
    let (status, _, body) = server
        .call(
            None,
            reqwest::Method::POST,
            "/v1/tokens/oidc",
            Some(json!({"token": "x"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a body without id_token: {body}"
    );
    assert!(body.contains("id_token"), "{body}");
    assert_eq!(
        github.key_fetches.load(Ordering::SeqCst),
        1,
        "the issuer's keys are fetched once and kept"
    );

    // A server without [oidc] exchanges nothing.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Server::start(&two_projects(&plain_dir, None)).await;
    let (status, body) = exchange(&plain, &github_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
