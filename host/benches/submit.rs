//! Submissions over HTTP against a loopback server with the durable SQLite
//! store, 64 concurrent clients, bounded in count and time; beside it the
//! same clients calling `GET /healthz`, the floor of the HTTP stack. Prints
//! throughput and p50/p99 latency for both.
//!
//! Each request opens its own connection (as the CLI does), so both rows
//! include connection set-up.
//!
//! Run with `cargo bench -p helix-build --bench submit`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use helix_build::client::Client;
use helix_build::config::Config;
use helix_build::{api, app};
use hyper::Method;
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const REQUESTS: usize = 4_000;
const TIME_LIMIT: Duration = Duration::from_secs(60);

fn main() {
    common::block_on(run());
}

async fn run() {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: data.path().to_path_buf(),
        workers: 2,
        queue_capacity: REQUESTS * 2,
        ..Config::default()
    };
    let service = app::start(&config.validated().unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api::router(service, None)).await });
    let client = Arc::new(Client::new(&format!("http://{address}"), None).unwrap());

    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut submit = load(client.clone(), Method::POST, "/v1/jobs").await;
    let mut health = load(client, Method::GET, "/healthz").await;
    submit.print("POST /v1/jobs (SQLite)");
    health.print("GET /healthz");
    println!(
        "  submit throughput / healthz throughput = {:.2}",
        submit.per_second() / health.per_second()
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

    fn print(&mut self, name: &str) {
        self.latencies.sort();
        let at = |q: f64| self.latencies[((self.latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{name:<26} {:>6} requests {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            self.latencies.len(),
            self.per_second(),
            at(0.50).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3
        );
    }
}

/// `REQUESTS` requests from `CLIENTS` concurrent clients, stopping early at
/// `TIME_LIMIT`.
async fn load(client: Arc<Client>, method: Method, path: &'static str) -> Load {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CLIENTS {
        let client = client.clone();
        let method = method.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..REQUESTS).step_by(CLIENTS) {
                if started.elapsed() > TIME_LIMIT {
                    break;
                }
                let body = json!({ "id": format!("bench-{i}"), "repo_url": "https://git.example/app.git" });
                let sent = Instant::now();
                let answer: Value = client
                    .json(method.clone(), path, (method == Method::POST).then_some(&body))
                    .await
                    .expect("request succeeds");
                latencies.push(sent.elapsed());
                assert!(answer.is_object());
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
