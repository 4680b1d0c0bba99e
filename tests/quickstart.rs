//! The README's quick start, run as written: its shell block, from a
//! fresh directory, with this build's `helix-build` first on `PATH`. It
//! uses the ports the README names (the registry's 5000, the server's
//! 8080), so it needs them free; it ends with the image in the registry.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The first `sh` block after the README's "### Quick start".
fn quick_start() -> &'static str {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("### Quick start").expect("a quick start")..];
    let start = section.find("```sh\n").expect("a shell block") + "```sh\n".len();
    &section[start..start + section[start..].find("```").unwrap()]
}

/// Stops what the block left running (the registry and the server, in
/// its process group) however the test ends.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .status();
    }
}

#[test]
fn the_readme_quick_start_runs_as_written_and_pushes_its_image() {
    for port in [5000, 8080] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the README's quick start uses 127.0.0.1:{port}, which something here holds"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_helix-build"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.path().join("quickstart.out");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", quick_start()])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HELIX_DATA_DIR", data.path())
        .env_remove("HELIX_SERVER")
        .env_remove("HELIX_TOKEN")
        .env_remove("HELIX_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("quickstart.err")).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let _group = Group(child.id() as i32);
    let status = child.wait().unwrap();
    let took = started.elapsed();
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "the quick start failed ({status}):\n{}\n{}\nserver log:\n{}",
        read("quickstart.out"),
        read("quickstart.err"),
        read("quickstart/server.log")
    );
    println!("the quick start took {} s", took.as_secs());
    assert!(
        read("quickstart.out").contains("\"Digest\""),
        "skopeo saw it"
    );

    // The registry holds the image, as the registry itself answers.
    let mut registry = TcpStream::connect("127.0.0.1:5000").unwrap();
    write!(
        registry,
        "HEAD /v2/team/hello/manifests/1 HTTP/1.0\r\nHost: 127.0.0.1:5000\r\n\
         Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.docker.distribution.manifest.list.v2+json\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    registry.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}
