//! What the end-to-end tests share: the real `helix-build serve`
//! process, driven over plain HTTP/1.1.

pub mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A `helix-build serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    /// `http` or `https`.
    pub scheme: String,
    /// Its data dir, where the server keeps what a stop must release.
    data: std::path::PathBuf,
    pub _data: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(extra_args: &[&str]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut server = Server::start_in(data.path(), extra_args);
        server._data = Some(data);
        server
    }

    /// A server keeping its data in `data`, which outlives it.
    pub fn start_in(data: &std::path::Path, extra_args: &[&str]) -> Server {
        Server::spawn(
            Command::new(env!("CARGO_BIN_EXE_helix-build")),
            data,
            extra_args,
        )
    }

    /// A server run from `dir` (where relative paths in its config
    /// start), keeping its data in `dir/data`.
    pub fn start_in_dir(dir: &std::path::Path, extra_args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_helix-build"));
        command.current_dir(dir);
        Server::spawn(command, &dir.join("data"), extra_args)
    }

    fn spawn(mut command: Command, data: &std::path::Path, extra_args: &[&str]) -> Server {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("HELIX_DATA_DIR", data)
            .env_remove("HELIX_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (scheme, address) = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|url| url.split_once("://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Server {
            scheme: scheme.to_string(),
            address: address.parse().unwrap(),
            child,
            data: data.to_path_buf(),
            _data: None,
        }
    }

    /// One HTTP/1.1 request; returns the status and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let body = body.map(Value::to_string).unwrap_or_default();
        self.raw(method, path, &body, "")
    }

    /// A request with a raw body and extra header lines (each ending in CRLF).
    pub fn raw(&self, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
        let (status, _, body) = self.exchange(method, path, body, headers);
        (status, body)
    }

    /// Like `raw`, with the response head (status line and headers) too.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &str,
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _ = write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
            self.address,
            body.len()
        );
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, head.to_string(), body)
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, body) = self.request(method, path, body);
        let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, value)
    }
}

impl Drop for Server {
    /// Stops the server as its operator would (SIGTERM), which must leave
    /// nothing of its runs behind; killed only if it has not stopped
    /// within 30 s. One the test killed leaves that to the next start on
    /// its data dir; when none came, its empty control groups are removed
    /// here, as that start would have (a test of a host lost for good
    /// otherwise left them on the machine), and so are those of one that
    /// had to be killed here.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            remove_server_groups(&self.data);
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals the child this server started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    if !std::thread::panicking() {
                        assert_nothing_left(&self.data);
                    }
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_server_groups(&self.data);
    }
}

/// Removes the empty control groups a killed server on `data` left, as
/// the next start on its data dir would.
fn remove_server_groups(data: &std::path::Path) {
    for dir in server_groups(data) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// What a server stopped on `data` (or started on it again after a crash
/// and then stopped) must have released: no file system mounted in its
/// data dir, no loop device over a file in it, no control group of its
/// own in any hierarchy.
pub fn assert_nothing_left(data: &std::path::Path) {
    let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let inside = format!(" {}/", data.display());
    let mounted: Vec<&str> = mounts.lines().filter(|l| l.contains(&inside)).collect();
    assert!(mounted.is_empty(), "left mounted: {mounted:#?}");

    let loops: Vec<String> = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|dev| std::fs::read_to_string(dev.path().join("loop/backing_file")).ok())
        .filter(|file| file.starts_with(&format!("{}/", data.display())))
        .collect();
    assert!(loops.is_empty(), "loop devices left over: {loops:#?}");

    let groups = server_groups(&data);
    assert!(groups.is_empty(), "control groups left over: {groups:#?}");
}

/// The control groups of a server on `data`, in every hierarchy.
fn server_groups(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|hierarchy| {
            hierarchy
                .path()
                .join(helix_build::cgroup::server_group(&data))
        })
        .filter(|dir| dir.exists())
        .collect()
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}
