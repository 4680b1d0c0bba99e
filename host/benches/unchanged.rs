//! A rebuild with unchanged inputs — the same commit submitted again under
//! another tag — through the service (podman builder, layer cache on),
//! against what its team would run by hand: `git clone`, `podman build`
//! with every layer cached and `podman push`. The service gives the job
//! the earlier build's image (see `helix_build::reuse`); the row prints
//! the median end to end and how many HTTP requests each job made to the
//! registry, counted by a proxy in front of it that every side goes
//! through.
//!
//! The fixture: the realistic multi-stage build (a ~20 MB base image in a
//! loopback registry). Needs git, podman, docker-registry and
//! busybox-static. Run with `bench/run unchanged`.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{job_through_service, median, ms, row, through_service};
use helix_build::app;
use helix_build::job::JobRequest;
use helix_fixtures::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 9;
const TARGET_MS: f64 = 300.0;

pub fn main() {
    common::block_on(bench());
}

async fn bench() {
    let registry = Registry::start(false);
    let proxy = CountingProxy::start(&registry.address).await;
    let base = format!("{}/bench/base:1", proxy.address);
    helix_fixtures::push_base_image(&base, 20);
    let repo = tempfile::tempdir().unwrap();
    helix_fixtures::realistic_repo(repo.path(), &base, 1);
    let url = format!("file://{}", repo.path().display());
    let data = tempfile::tempdir().unwrap();
    let config = common::real_build_config(&data, &proxy.address, None);
    let service = app::start(&config).await.unwrap();
    let job = |round: usize| JobRequest {
        repo_url: url.clone(),
        builder: Some("podman".into()),
        image: Some(format!("{}/bench/app:{round}", proxy.address)),
        ..JobRequest::default()
    };
    let hand = tempfile::tempdir().unwrap();
    let hand_image = |round: usize| format!("{}/bench/by-hand:{round}", proxy.address);
    // The first build of each side fills its caches.
    through_service(&service, job(0)).await;
    crate::realistic_build::by_hand(&url, &hand_image(0), hand.path(), None).await;

    let (mut helix, mut by_hand) = (Vec::new(), Vec::new());
    let (mut helix_phases, mut hand_steps) = (Vec::new(), Vec::new());
    let (mut helix_requests, mut hand_requests) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let before = proxy.requests();
        let (took, ended) = job_through_service(&service, job(round)).await;
        helix.push(took);
        helix_phases.push(ended.phases);
        helix_requests.push(proxy.requests() - before);
        let before = proxy.requests();
        let image = hand_image(round);
        let hand_run = crate::realistic_build::by_hand(&url, &image, hand.path(), None);
        let hand_run = hand_run.await;
        by_hand.push(hand_run.total);
        hand_steps.push(hand_run);
        hand_requests.push(proxy.requests() - before);
    }
    println!("cores: {}", common::cores());
    common::print_phase_table(
        "unchanged rebuild",
        "podman",
        &helix_phases,
        "podman",
        &hand_steps,
    );
    let (helix, by_hand) = (median(&mut helix), median(&mut by_hand));
    helix_requests.sort();
    hand_requests.sort();
    let (helix_requests, hand_requests) = (helix_requests[ROUNDS / 2], hand_requests[ROUNDS / 2]);
    println!(
        "  unchanged rebuild: helix {:.0} ms, {helix_requests} registry requests; \
         podman by hand (all cached) {:.0} ms, {hand_requests} registry requests",
        ms(helix),
        ms(by_hand)
    );
    row(
        "unchanged rebuild, podman",
        &format!("{:.0} ms, {helix_requests} registry requests", ms(helix)),
        &format!(
            "{:.0} ms podman by hand, {hand_requests} requests",
            ms(by_hand)
        ),
        &format!("{:.2}x", helix.as_secs_f64() / by_hand.as_secs_f64()),
        &format!("<= {TARGET_MS:.0} ms"),
        Some(ms(helix) <= TARGET_MS),
    );
}

/// A TCP proxy in front of a registry that counts the HTTP requests sent
/// through it (request lines, keep-alive connections included).
struct CountingProxy {
    address: String,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let upstream = upstream.to_string();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (counted, upstream) = (counted.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        // As the clients and the registry do: a relay that
                        // waited on Nagle's algorithm would add a delayed
                        // ACK to every request sent in two writes.
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        relay(client, server, counted).await;
                    }
                });
            }
        });
        CountingProxy { address, requests }
    }

    fn requests(&self) -> u64 {
        // Relays count as they copy; let the last one finish its count.
        std::thread::sleep(Duration::from_millis(20));
        self.requests.load(Ordering::SeqCst)
    }
}

/// Copies both ways until either side closes, counting request lines
/// (` HTTP/1.1\r\n`) in what the client sends.
async fn relay(client: TcpStream, server: TcpStream, requests: Arc<AtomicU64>) {
    const LINE_END: &[u8] = b" HTTP/1.1\r\n";
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0; 64 * 1024];
        // The end of the last chunk, so a request line split across two
        // reads is still counted once.
        let mut carry: Vec<u8> = Vec::new();
        while let Ok(n) = client_read.read(&mut buffer).await {
            if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            carry.extend_from_slice(&buffer[..n]);
            let found = carry
                .windows(LINE_END.len())
                .filter(|w| *w == LINE_END)
                .count();
            requests.fetch_add(found as u64, Ordering::SeqCst);
            let keep = carry.len().min(LINE_END.len() - 1);
            carry.drain(..carry.len() - keep);
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
