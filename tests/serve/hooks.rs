//! Webhooks in (GitHub, Gitea, GitLab: signed pushes build once) and
//! notifications out (job ends, signed, retried, filtered by state, and
//! sent after a restart when they were owed).

use super::*;

/// The hex HMAC-SHA256 of `body` with `secret`, as GitHub and Gitea sign.
fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A push of `git_ref` at commit `after` to `url`, with the fields each
/// forge's documentation gives its push event (GitHub and Gitea name the
/// URL `repository.clone_url`, GitLab `repository.git_http_url`).
fn push_payload(forge: &str, git_ref: &str, after: &str, url: &str) -> String {
    let url_field = if forge == "gitlab" {
        "git_http_url"
    } else {
        "clone_url"
    };
    json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "repository": { "name": "app", url_field: url },
        "commits": [],
    })
    .to_string()
}

/// The header lines `forge` sends with `body` (signed with `secret`) as
/// delivery `delivery`.
fn forge_headers(forge: &str, secret: &str, body: &str, delivery: &str) -> String {
    match forge {
        "github" => format!(
            "X-GitHub-Event: push\r\nX-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: sha256={}\r\n",
            hmac_hex(secret, body)
        ),
        "gitea" => format!(
            "X-Gitea-Event: push\r\nX-Gitea-Delivery: {delivery}\r\nX-Gitea-Signature: {}\r\n",
            hmac_hex(secret, body)
        ),
        _ => format!(
            "X-Gitlab-Event: Push Hook\r\nX-Gitlab-Event-UUID: {delivery}\r\nX-Gitlab-Token: {secret}\r\n"
        ),
    }
}

#[test]
fn webhooks_build_signed_pushes_once_and_refuse_bad_signatures_and_other_branches() {
    let data = tempfile::tempdir().unwrap();
    let secret_file = |forge: &str| {
        let path = data.path().join(format!("{forge}.secret"));
        std::fs::write(&path, format!("{forge}-hook-secret")).unwrap();
        path
    };
    let config = data.path().join("helix.toml");
    std::fs::write(
        &config,
        format!(
            "token = \"a-token-the-forges-never-send\"\n\
             [webhooks]\n\
             github = {{ file = \"{}\" }}\n\
             gitea = {{ file = \"{}\" }}\n\
             gitlab = {{ file = \"{}\" }}\n\
             [[webhook_rules]]\n\
             repository = \"https://git.example/team/*\"\n\
             refs = [\"refs/heads/main\"]\n\
             builder = \"simulated\"\n",
            secret_file("github").display(),
            secret_file("gitea").display(),
            secret_file("gitlab").display()
        ),
    )
    .unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    let commit = "4f5c8d0e3a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d";
    let url = "https://git.example/team/app.git";
    for forge in ["github", "gitea", "gitlab"] {
        let secret = format!("{forge}-hook-secret");
        let path = format!("/v1/hooks/{forge}");
        let delivery = format!("72d3162e-cc78-11e3-81ab-4c9367dc09{}", forge.len());
        let body = push_payload(forge, "refs/heads/main", commit, url);

        let (status, answer) = server.raw(
            "POST",
            &path,
            &body,
            &forge_headers(forge, &secret, &body, &delivery),
        );
        assert_eq!(status, 202, "{forge}: {answer}");
        let job: Value = serde_json::from_str(&answer).unwrap();
        let id = job["id"].as_str().unwrap().to_string();
        assert!(id.starts_with(&format!("hook-{forge}-")), "{forge}: {id}");
        assert_eq!(job["ref"], "refs/heads/main");
        assert_eq!(
            job["pinned_commit"], commit,
            "{forge}: the pushed commit is built"
        );
        assert_eq!(job["repo_url"], url);
        assert_eq!(job["group"], format!("{url}:main"));
        assert_eq!(job["cancel_in_progress"], true);

        let (status, answer) = server.raw(
            "POST",
            &path,
            &body,
            &forge_headers(forge, &secret, &body, &delivery),
        );
        assert_eq!(status, 200, "{forge}: a redelivery: {answer}");
        assert!(
            answer.contains(&format!("made job {id} before")),
            "{answer}"
        );
        let replayed = forge_headers(forge, &secret, &body, "a-new-delivery-id");
        let (status, answer) = server.raw("POST", &path, &body, &replayed);
        assert_eq!(status, 200, "{forge}: a replay: {answer}");

        let forged = forge_headers(forge, "not-the-secret", &body, "another-delivery");
        let (status, answer) = server.raw("POST", &path, &body, &forged);
        assert_eq!(status, 401, "{forge}: a wrong signature: {answer}");
        let unsigned = forge_headers(forge, &secret, &body, "yet-another")
            .lines()
            .filter(|l| !l.contains("Signature") && !l.contains("Token"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>();
        let (status, answer) = server.raw("POST", &path, &body, &unsigned);
        assert_eq!(status, 401, "{forge}: no signature: {answer}");
        assert!(answer.contains("not signed"), "{answer}");

        let feature = push_payload(forge, "refs/heads/feature", commit, url);
        let headers = forge_headers(forge, &secret, &feature, &format!("feature-{forge}"));
        let (status, answer) = server.raw("POST", &path, &feature, &headers);
        assert_eq!(status, 204, "{forge}: a branch no rule builds: {answer}");
    }
    let (status, _) = server.raw("POST", "/v1/hooks/bitbucket", "{}", "");
    assert_eq!(status, 404);
}

/// One request a [`Receiver`] took.
#[derive(Debug, Clone)]
struct Received {
    /// Header names in lower case.
    headers: std::collections::HashMap<String, String>,
    body: String,
}

/// A webhook receiver on a loopback port: records each request and
/// answers it with the next status of its script (then 200s).
struct Receiver {
    address: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(listener: std::net::TcpListener, script: Vec<u16>) -> Receiver {
        let address = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut headers = std::collections::HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    match line.trim_end().split_once(": ") {
                        Some((name, value)) => {
                            headers.insert(name.to_ascii_lowercase(), value.to_string())
                        }
                        None => break,
                    };
                }
                let length = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = script.next().unwrap_or(200);
                log.lock().unwrap().push(Received {
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { address, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The requests taken so far, once there are at least `count` (waits
    /// up to `secs` seconds for them).
    fn wait_for(&self, count: usize, secs: u64) -> Vec<Received> {
        for _ in 0..secs * 10 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{count} notification(s) expected, got {:?}",
            self.received.lock().unwrap()
        );
    }
}

/// Checks one notification: signed with `secret`, about `id` ending in
/// `state`; returns its delivery id.
fn assert_notified(received: &Received, secret: &str, id: &str, state: &str) -> String {
    assert_eq!(
        received.headers["x-helix-signature-256"],
        format!("sha256={}", hmac_hex(secret, &received.body)),
        "signed with the target's secret"
    );
    assert_eq!(received.headers["x-helix-event"], format!("job.{state}"));
    assert_eq!(received.headers["content-type"], "application/json");
    let job: Value = serde_json::from_str(&received.body).unwrap();
    assert_eq!(
        (job["id"].as_str(), job["state"].as_str()),
        (Some(id), Some(state))
    );
    received.headers["x-helix-delivery"].clone()
}

fn notification_config(data: &std::path::Path, targets: &[(String, &str)]) -> String {
    let secret = data.join("notify.secret");
    std::fs::write(&secret, "notify-secret").unwrap();
    let mut config = String::from("workers = 2\n");
    for (url, states) in targets {
        config.push_str(&format!(
            "[[notifications]]\nurl = \"{url}\"\nsecret = {{ file = \"{}\" }}\n{states}\n",
            secret.display()
        ));
    }
    let path = data.join("helix.toml");
    std::fs::write(&path, config).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn job_ends_are_notified_signed_retried_and_filtered_by_state() {
    let data = tempfile::tempdir().unwrap();
    // The first request fails: the notification is sent again.
    let all = Receiver::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![500],
    );
    let failures = Receiver::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), vec![]);
    let config = notification_config(
        data.path(),
        &[
            (all.url("/all"), ""),
            (failures.url("/failures"), "states = [\"failed\"]"),
        ],
    );
    let server = Server::start_in(data.path(), &["--config", &config]);
    submit(&server, "notify-ok", json!({}));
    let (_, job) = server.json("GET", "/v1/jobs/notify-ok/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "succeeded", "{job}");
    let received = all.wait_for(2, 30);
    assert_eq!(received.len(), 2, "refused once, then taken: {received:?}");
    let first = assert_notified(&received[0], "notify-secret", "notify-ok", "succeeded");
    let second = assert_notified(&received[1], "notify-secret", "notify-ok", "succeeded");
    assert_eq!(first, second, "a retry keeps its delivery id");

    submit(
        &server,
        "notify-bad",
        json!({"HELIX_SIMULATE_FAIL": "RUN make: exit 2"}),
    );
    let (_, job) = server.json("GET", "/v1/jobs/notify-bad/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "failed", "{job}");
    let told = failures.wait_for(1, 30);
    assert_eq!(told.len(), 1, "only the failure: {told:?}");
    let delivery = assert_notified(&told[0], "notify-secret", "notify-bad", "failed");
    assert_ne!(delivery, first, "each job's notification has its own id");
    let received = all.wait_for(3, 30);
    assert_notified(&received[2], "notify-secret", "notify-bad", "failed");
}

#[test]
fn a_notification_owed_when_the_server_is_killed_is_sent_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    // Nothing listens at the receiver's address yet: every try is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = port.local_addr().unwrap();
    drop(port);
    let config = notification_config(data.path(), &[(format!("http://{address}/hook"), "")]);
    let mut server = Server::start_in(data.path(), &["--config", &config]);
    submit(&server, "owed", json!({}));
    let (_, job) = server.json("GET", "/v1/jobs/owed/wait?timeout_secs=30", None);
    assert_eq!(job["state"], "succeeded", "{job}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let receiver = Receiver::start(std::net::TcpListener::bind(address).unwrap(), vec![]);
    let _server = Server::start_in(data.path(), &["--config", &config]);
    // Due within the first retry's wait (at most 5 s), or the lease (120 s)
    // if the kill came while a try was in flight.
    let received = receiver.wait_for(1, 150);
    assert_eq!(received.len(), 1, "{received:?}");
    assert_notified(&received[0], "notify-secret", "owed", "succeeded");
}
