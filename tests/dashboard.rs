//! The web dashboard in a real browser: Debian's Chromium, headless,
//! driven through chromedriver against the real server binary with a
//! token configured. Screenshots go to `<target>/tmp/dashboard/`.

use std::time::{Duration, Instant};

use crate::common::Server;
use crate::common::browser::Browser;
use serde_json::{Value, json};

const TOKEN: &str = "dashboard-token-0f9e7d";

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

/// Submits a simulated job `id` with `args` over the API.
fn submit(server: &Server, id: &str, args: Value) {
    let body = json!({"builder": "simulated", "id": id, "repo_url": "https://git.example/app.git", "build_args": args});
    let (status, answer) = server.raw("POST", "/v1/jobs", &body.to_string(), &auth());
    assert_eq!(status, 201, "{answer}");
}

fn state_of(server: &Server, id: &str) -> String {
    let (_, body) = server.raw("GET", &format!("/v1/jobs/{id}"), "", &auth());
    let job: Value = serde_json::from_str(&body).unwrap();
    job["state"].as_str().unwrap().to_string()
}

/// The badge's state on a job page.
const BADGE: &str = "const b = document.querySelector('h1 .state'); return b && b.dataset.state";
/// How many lines the job page's log shows.
/// Waits up to 10 s for the job page's log to show more than `than`
/// lines; how many it shows then.
async fn until_log_lines_over(browser: &Browser, than: u64) -> u64 {
    let lines = "document.querySelectorAll('#log > div').length";
    let count = browser
        .until(10, &format!("return {lines} > {than} && {lines}"))
        .await;
    count.as_u64().unwrap()
}

/// Waits up to `secs` seconds for the job page's badge to show `state`.
async fn until_state(browser: &Browser, secs: u64, state: &str) {
    let condition =
        format!("return document.querySelector('h1 .state').dataset.state === '{state}'");
    browser.until(secs, &condition).await;
}

async fn shoot(browser: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    browser.script("window.scrollTo(0, 0)", json!([])).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_submits_follows_logs_and_cancels_in_a_real_browser() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("helix.toml");
    std::fs::write(
        &config,
        format!("token = \"{TOKEN}\"\nworkers = 3\nlog_cap_lines = 60000\n"),
    )
    .unwrap();
    let server = Server::start_in(data.path(), &["--config", config.to_str().unwrap()]);
    let url = format!("http://{}", server.address);
    let browser = Browser::start(1280, 900).await;

    // Page weight: what a browser downloads for any page.
    let mut weight = 0;
    for asset in [
        "/",
        "/ui/app.js",
        "/ui/log.js",
        "/ui/submit.js",
        "/ui/app.css",
        "/ui/favicon.svg",
    ] {
        let (status, body) = server.raw("GET", asset, "", "");
        assert_eq!(status, 200, "{asset} is served without the token");
        weight += body.len();
    }
    println!("page weight (HTML + script + style, uncompressed): {weight} bytes");

    // The API needs the token, so the page asks for it.
    browser.goto(&format!("{url}/")).await;
    browser.find("#token").await.type_text(TOKEN).await;
    browser
        .find("form.signin button[type=submit]")
        .await
        .click()
        .await;
    browser.find("#filter-state").await;
    let stored: Value = browser
        .script(
            "return [location.href, sessionStorage.getItem('helix-token')]",
            json!([]),
        )
        .await;
    assert!(
        !stored[0].as_str().unwrap().contains(TOKEN),
        "never in a URL"
    );
    assert_eq!(stored[1], TOKEN, "kept for the browser session");
    let who = browser
        .until(10, "return document.getElementById('who').textContent")
        .await;
    assert_eq!(who, "admin: every project", "what the token allows");

    // An invalid submission: the server's message beside the field.
    browser.goto(&format!("{url}/#/submit")).await;
    browser
        .find("#f-repo_url")
        .await
        .type_text("not a repository")
        .await;
    browser
        .find("form.form button[type=submit]")
        .await
        .click()
        .await;
    let error = browser
        .until(
            10,
            "return document.getElementById('f-repo_url-error').textContent",
        )
        .await;
    assert!(error.as_str().unwrap().contains("repo_url"), "{error}");
    let invalid = browser
        .script(
            "return document.getElementById('f-repo_url').getAttribute('aria-invalid')",
            json!([]),
        )
        .await;
    assert_eq!(invalid, "true");

    // A valid one: the job page, whose state changes without a reload.
    browser
        .script(
            "document.getElementById('f-repo_url').value = ''",
            json!([]),
        )
        .await;
    browser
        .find("#f-repo_url")
        .await
        .type_text("https://git.example/team/app.git")
        .await;
    browser
        .find("#f-build_args")
        .await
        .type_text("HELIX_SIMULATE_DELAY_MS=1500")
        .await;
    browser
        .script(
            "document.getElementById('f-builder').value = 'simulated'",
            json!([]),
        )
        .await;
    browser.find("#f-labels").await.type_text("team=web").await;
    browser.find("#f-priority").await.type_text("7").await;
    browser.find("#f-group").await.type_text("web:main").await;
    browser.find("#f-target").await.type_text("release").await;
    browser.find("#f-no_cache").await.click().await;
    browser
        .find("form.form button[type=submit]")
        .await
        .click()
        .await;
    browser
        .until(
            10,
            "return location.hash.startsWith('#/jobs/') && document.querySelector('h1 .state')",
        )
        .await;
    browser.script("window.notReloaded = true", json!([])).await;
    let first = browser.script(BADGE, json!([])).await;
    assert!(first == "queued" || first == "running", "{first}");
    until_state(&browser, 20, "succeeded").await;
    let kept = browser
        .script("return window.notReloaded === true", json!([]))
        .await;
    assert_eq!(kept, true, "the page was not reloaded");
    // The form's every field reached the job.
    let id = browser
        .script(
            "return decodeURIComponent(location.hash.slice(7))",
            json!([]),
        )
        .await;
    let id = id.as_str().unwrap().to_string();
    let (_, body) = server.raw("GET", &format!("/v1/jobs/{id}"), "", &auth());
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["labels"], json!({"team": "web"}), "{job}");
    assert_eq!(
        (
            &job["priority"],
            &job["group"],
            &job["target"],
            &job["no_cache"]
        ),
        (
            &json!(7),
            &json!("web:main"),
            &json!("release"),
            &json!(true)
        ),
        "{job}"
    );
    // Ended, the page says so for good: the log's last scroll does not
    // bring "Following the log" back.
    let ended = "return document.getElementById('following').textContent";
    assert_eq!(
        browser
            .until(10, &format!("{ended} === 'The job ended' && 1"))
            .await,
        1
    );
    browser
        .script(
            "document.getElementById('log').dispatchEvent(new Event('scroll'))",
            json!([]),
        )
        .await;
    browser.goto(&format!("{url}/#/jobs")).await;
    browser.goto(&format!("{url}/#/jobs/{id}")).await;
    browser
        .until(
            10,
            "const l = document.getElementById('log'); return l && l.dataset.ended === 'true'",
        )
        .await;
    browser
        .script(
            "document.getElementById('log').dispatchEvent(new Event('scroll'))",
            json!([]),
        )
        .await;
    assert_eq!(browser.script(ended, json!([])).await, "The job ended");

    // The list: a short id (the full one on hover), the branch, and when.
    browser.goto(&format!("{url}/#/jobs")).await;
    let row = browser
        .until(
            10,
            &format!(
                "const r = document.querySelector('tr[data-job=\"{id}\"]'); \
                 return r && [r.querySelector('td[data-label=Job] a').textContent, \
                 r.querySelector('td[data-label=Job] a').title, \
                 r.querySelector('td[data-label=Branch]').textContent, \
                 r.querySelector('td[data-label=Created] time').textContent, \
                 r.querySelector('td[data-label=Created] time').title]"
            ),
        )
        .await;
    assert_eq!(row[0], id[..8], "{row}");
    assert_eq!(row[1], id, "{row}");
    assert_eq!(row[2], "HEAD", "{row}");
    assert!(
        row[3].as_str().unwrap().ends_with("ago") || row[3] == "just now",
        "{row}"
    );
    assert!(
        !row[4].as_str().unwrap().is_empty(),
        "absolute time on hover: {row}"
    );

    // A running job's live log: new lines arrive, in colour; scrolled up,
    // the view stops following.
    submit(
        &server,
        "live",
        json!({"HELIX_SIMULATE_DELAY_MS": "10000", "HELIX_SIMULATE_LOG_LINES": "400"}),
    );
    browser.goto(&format!("{url}/#/jobs/live")).await;
    let seen = until_log_lines_over(&browser, 5).await;
    until_log_lines_over(&browser, seen).await;
    let coloured = browser
        .script(
            "return document.querySelectorAll('#log span[class^=\"fg-3\"]').length",
            json!([]),
        )
        .await;
    assert!(coloured.as_u64().unwrap() > 0, "ANSI colours rendered");
    // Once the log overflows its box and has followed to the bottom.
    browser
        .until(10, "const l = document.getElementById('log'); return l.scrollHeight > l.clientHeight + 100 && l.scrollTop > 0")
        .await;
    browser
        .script("document.getElementById('log').scrollTop = 0", json!([]))
        .await;
    browser
        .until(
            5,
            "return document.getElementById('following').textContent.startsWith('Paused')",
        )
        .await;
    let before = browser
        .script(
            "return document.querySelectorAll('#log > div').length",
            json!([]),
        )
        .await;
    until_log_lines_over(&browser, before.as_u64().unwrap()).await;
    let paused: Value = browser
        .script("return [document.getElementById('log').scrollTop, document.getElementById('following').textContent]", json!([]))
        .await;
    assert_eq!(paused[0], 0, "scrolled up, the view stays put");
    assert!(
        paused[1].as_str().unwrap().starts_with("Paused"),
        "{paused}"
    );
    shoot(&browser, "job-laptop").await;

    // Cancel with the button.
    submit(
        &server,
        "doomed",
        json!({"HELIX_SIMULATE_DELAY_MS": "60000"}),
    );
    browser.goto(&format!("{url}/#/jobs/doomed")).await;
    until_state(&browser, 10, "running").await;
    browser.find("#cancel").await.click().await;
    until_state(&browser, 10, "cancelled").await;
    assert_eq!(state_of(&server, "doomed"), "cancelled");

    // The job list: filters, and a phone width.
    browser.goto(&format!("{url}/#/jobs")).await;
    browser
        .until(
            10,
            "return document.querySelector('tr[data-job=\"doomed\"]')",
        )
        .await;
    shoot(&browser, "jobs-laptop").await;
    browser.goto(&format!("{url}/#/jobs?state=cancelled")).await;
    let listed = browser
        .until(10, "const rows = [...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job); return rows.length ? rows : null")
        .await;
    assert_eq!(listed, json!(["doomed"]), "only the cancelled job");
    browser.resize(390, 844).await;
    browser.goto(&format!("{url}/#/jobs")).await;
    browser
        .until(10, "return document.querySelector('tr[data-job=\"live\"]')")
        .await;
    shoot(&browser, "jobs-phone").await;
    browser.goto(&format!("{url}/#/jobs/live")).await;
    until_log_lines_over(&browser, 0).await;
    shoot(&browser, "job-phone").await;
    browser.resize(1280, 900).await;

    // A 50,000-line log renders whole.
    submit(
        &server,
        "long",
        json!({"HELIX_SIMULATE_LOG_LINES": "50000"}),
    );
    let (_, _) = server.raw("GET", "/v1/jobs/long/wait?timeout_secs=60", "", &auth());
    assert_eq!(state_of(&server, "long"), "succeeded");
    browser.goto(&format!("{url}/#/builders")).await;
    browser.find("#builder-simulated").await;
    let started = Instant::now();
    browser.goto(&format!("{url}/#/jobs/long")).await;
    browser
        .until(60, "const l = document.getElementById('log'); return l && l.dataset.ended === 'true' && l.querySelectorAll('div').length >= 50000")
        .await;
    let took = started.elapsed();
    println!("a 50,000-line log rendered in {} ms", took.as_millis());
    assert!(took < Duration::from_secs(60));
}
