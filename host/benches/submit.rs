//! Submissions over HTTP against a loopback server with the durable SQLite
//! store, 64 concurrent clients, bounded in count and time; beside it the
//! same clients calling `GET /healthz`, the floor of the HTTP stack. Prints
//! throughput and p50/p99 latency for both. Each client keeps one HTTP/1.1
//! connection open, as a CI system or load balancer in front of the server
//! would. The server's workers run the submitted jobs (simulated builder)
//! meanwhile, as they would in production. Then, once the first server's
//! workers have run its backlog, the same submissions to a second server
//! with ten projects, each client with its project's bearer token: the
//! price of projects.
//!
//! Run with `bench/run submit`.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{PROJECTS, row};
use helix_build::{api, app};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

const CLIENTS: usize = 64;
const REQUESTS: usize = 20_000;
const TIME_LIMIT: Duration = Duration::from_secs(60);
const TARGET_PER_SECOND: f64 = 5_000.0;
const TARGET_P99: Duration = Duration::from_millis(20);

pub fn main() {
    common::block_on(run());
}

/// A server on a loopback port over a service made from `config`.
async fn serve(
    config: helix_build::config::Config,
) -> (std::net::SocketAddr, helix_build::service::Service) {
    let service = app::start(&config.validated().unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = api::router(service.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, service)
}

async fn run() {
    let data = tempfile::tempdir().unwrap();
    let (address, service) = serve(common::config(&data, REQUESTS * 2)).await;
    let projects_data = tempfile::tempdir().unwrap();
    let projects = common::with_projects(common::config(&projects_data, REQUESTS * 2));
    let (projects_address, _projects) = serve(projects).await;

    println!("cores: {}", common::cores());
    let mut health = load(address, Method::GET, "/healthz", false).await;
    let mut submit = load(address, Method::POST, "/v1/jobs", false).await;
    // Its workers' backlog would share the cores with the next load.
    while service.queue_depth().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut spread = load(projects_address, Method::POST, "/v1/jobs", true).await;
    health.print("GET /healthz");
    submit.print("POST /v1/jobs (SQLite)");
    spread.print(&format!("POST /v1/jobs, {PROJECTS} projects"));
    let ratio = submit.per_second() / health.per_second();
    println!("  submit throughput / healthz throughput = {ratio:.2}");
    let p99 = submit.quantile(0.99);
    row(
        "submit",
        &format!(
            "{:.0}/s, p99 {:.1} ms",
            submit.per_second(),
            common::ms(p99)
        ),
        &format!(
            "healthz {:.0}/s, p99 {:.1} ms",
            health.per_second(),
            common::ms(health.quantile(0.99))
        ),
        &format!("{ratio:.2}x"),
        ">= 5000/s, p99 <= 20 ms",
        Some(submit.per_second() >= TARGET_PER_SECOND && p99 <= TARGET_P99),
    );
    let ratio = spread.per_second() / submit.per_second();
    let spread_p99 = spread.quantile(0.99);
    row(
        &format!("submit, {PROJECTS} projects"),
        &format!(
            "{:.0}/s, p99 {:.1} ms",
            spread.per_second(),
            common::ms(spread_p99)
        ),
        &format!(
            "no project {:.0}/s, p99 {:.1} ms",
            submit.per_second(),
            common::ms(p99)
        ),
        &format!("{ratio:.2}x"),
        ">= 0.90x, p99 <= 20 ms",
        Some(ratio >= 0.90 && spread_p99 <= TARGET_P99),
    );
}

struct Load {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        self.latencies[((self.latencies.len() - 1) as f64 * q) as usize]
    }

    fn print(&mut self, name: &str) {
        println!(
            "{name:<26} {:>6} requests {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            self.latencies.len(),
            self.per_second(),
            common::ms(self.quantile(0.50)),
            common::ms(self.quantile(0.99))
        );
    }
}

/// `REQUESTS` requests from `CLIENTS` concurrent clients, each on its own
/// kept-alive connection, stopping early at `TIME_LIMIT`; with
/// `as_projects`, client `c` sends project `c % PROJECTS`'s token.
async fn load(
    address: std::net::SocketAddr,
    method: Method,
    path: &'static str,
    as_projects: bool,
) -> Load {
    let mut connections = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        connections.push(connect(address).await);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, mut connection) in connections.into_iter().enumerate() {
        let method = method.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (client..REQUESTS).step_by(CLIENTS) {
                if started.elapsed() > TIME_LIMIT {
                    break;
                }
                let body = match method {
                    Method::POST => {
                        format!(r#"{{"id":"bench-{i}","builder":"simulated","repo_url":"https://git.example/app.git"}}"#)
                    }
                    _ => String::new(),
                };
                let mut request = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header("host", address.to_string())
                    .header("content-type", "application/json");
                if as_projects {
                    let token = common::project_token(client % PROJECTS);
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let request = request.body(Full::new(Bytes::from(body))).unwrap();
                let sent = Instant::now();
                connection.ready().await.unwrap();
                let response = connection.send_request(request).await.unwrap();
                let status = response.status();
                response.into_body().collect().await.unwrap();
                latencies.push(sent.elapsed());
                assert!(
                    status == StatusCode::OK || status == StatusCode::CREATED,
                    "{status}"
                );
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(REQUESTS);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.unwrap());
    }
    Load {
        latencies,
        elapsed: started.elapsed(),
    }
}

async fn connect(address: std::net::SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}
