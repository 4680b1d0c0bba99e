//! The served OpenAPI document against the real server, by an outside
//! tool: a bounded schemathesis run (`st`, pinned in `.ci/setup`) with a
//! token, so every route answers as it would a client. It must find no
//! 5xx and no disagreement with the document (status codes, content
//! types, headers, response schemas), and the jobs it submits from the
//! document's request schema must be valid ones the server ran.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Server;

const TOKEN: &str = "schemathesis-token-0123456789abcdef";
/// The run's own budget; the process is killed past twice this.
const BUDGET_SECS: u64 = 40;

#[test]
fn schemathesis_finds_the_server_as_its_document_says_and_makes_valid_jobs() {
    if Command::new("st").arg("--version").output().is_err() {
        eprintln!("schemathesis (`st`) is not installed: the document is not fuzzed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("helix.toml");
    // A valid job that names no builder runs on the simulated one: its
    // repository is the fuzzer's invention, which a real build could only
    // fail to fetch, so whether it ran says nothing of the document.
    std::fs::write(
        &config,
        format!("token = \"{TOKEN}\"\ndefault_builder = \"simulated\"\n"),
    )
    .unwrap();
    let server = Server::start_in(dir.path(), &["--config", config.to_str().unwrap()]);
    let document = format!("http://{}/v1/openapi.json", server.address);
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_headers_conformance,response_schema_conformance";
    let started = Instant::now();
    let mut run = Command::new("st")
        // Its cache goes where it runs: the test's own directory.
        .current_dir(dir.path())
        .args(["run", &document, "--header"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .args(["--checks", checks, "--max-examples", "25", "--seed", "1"])
        .args([
            "--max-time",
            &BUDGET_SECS.to_string(),
            "--request-timeout",
            "10",
        ])
        // One worker: hypothesis's lambda introspection is not thread-safe.
        .args([
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while run.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(2 * BUDGET_SECS) {
            let _ = run.kill();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = run.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default();
    eprintln!("schemathesis: {summary} in {:.0?}", started.elapsed());

    // The jobs it made, as the server stored them.
    drop(server);
    let db = rusqlite::Connection::open(dir.path().join("helix.db")).unwrap();
    let ran: i64 = db
        .query_row(
            "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    eprintln!("schemathesis: {ran} of its jobs succeeded");
    assert!(ran >= 5, "only {ran} valid jobs ran:\n{report}");
}
