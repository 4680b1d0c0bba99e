//! Misbehaving builder for tests: tries to leave its sandbox through WASI
//! (read `/etc/passwd`, list `/`, read the host's `HOME`, open TCP and UDP
//! sockets to the address in build arg `ESCAPE_ADDR`) and logs how each
//! attempt went. It fails with `denied` when every attempt was refused and
//! with an internal error naming what got through otherwise.

wit_bindgen::generate!({
    path: "../../../wit/current",
    world: "helix:build/builder",
});

use exports::helix::build::builder_info::{self, Metadata};
use helix::build::job_context;

struct Escape;

impl builder_info::Guest for Escape {
    fn info() -> Metadata {
        Metadata {
            name: "testing-escape".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TESTING: tries to read host files, env and the network".into(),
            simulated: true,
        }
    }
}

impl Guest for Escape {
    fn build(job: Job) -> Result<BuildOutput, BuildError> {
        let addr = job
            .build_args
            .iter()
            .find(|a| a.name == "ESCAPE_ADDR")
            .map(|a| a.value.clone())
            .unwrap_or_else(|| "127.0.0.1:80".into());
        let attempts: Vec<(&str, Result<String, String>)> = vec![
            (
                "read /etc/passwd",
                std::fs::read_to_string("/etc/passwd")
                    .map(|t| format!("{} bytes", t.len()))
                    .map_err(|e| e.to_string()),
            ),
            (
                "read /workspace/../etc/passwd",
                std::fs::read_to_string("/workspace/../etc/passwd")
                    .map(|t| format!("{} bytes", t.len()))
                    .map_err(|e| e.to_string()),
            ),
            (
                "list /",
                std::fs::read_dir("/")
                    .map(|d| format!("{} entries", d.count()))
                    .map_err(|e| e.to_string()),
            ),
            (
                "read env HOME",
                std::env::var("HOME").map_err(|e| e.to_string()),
            ),
            (
                "tcp connect",
                std::net::TcpStream::connect(&addr)
                    .map(|_| "connected".to_string())
                    .map_err(|e| e.to_string()),
            ),
            (
                "udp bind",
                std::net::UdpSocket::bind("0.0.0.0:0")
                    .map(|_| "bound".to_string())
                    .map_err(|e| e.to_string()),
            ),
        ];
        let mut escaped = Vec::new();
        for (what, result) in attempts {
            match result {
                Ok(got) => {
                    job_context::log(&format!("[escape] {what}: ALLOWED ({got})"));
                    escaped.push(what);
                }
                Err(e) => job_context::log(&format!("[escape] {what}: refused ({e})")),
            }
        }
        if escaped.is_empty() {
            Err(BuildError::Denied(
                "every escape attempt was refused".into(),
            ))
        } else {
            Err(BuildError::Internal(format!(
                "ESCAPED: {}",
                escaped.join(", ")
            )))
        }
    }
}

export!(Escape);
