//! Fixtures for real builds, shared by the tests and the benches: a
//! registry on loopback and a git repository with a `FROM scratch` build.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A docker-registry process on a free loopback port, killed on drop.
pub struct Registry {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(read_only: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 maintenance:\n    readonly:\n      enabled: {read_only}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let registry = Registry {
            child: Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry is installed"),
            address,
            _dir: dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(&registry.address).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the registry did not start on {}", registry.address);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DOCKERFILE: &str = "FROM scratch\nARG TARGETARCH\nARG GREETING=none\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $GREETING-$TARGETARCH > /hello\"]\n\
LABEL greeting=$GREETING\n";

/// A git repository with a `FROM scratch` build: busybox copied in, a `RUN`
/// step writing `/hello`, a label from a build arg. Tagged `v1`; a second
/// commit adds `failing/Dockerfile` and `slow/Dockerfile`.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub first_commit: String,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        git(path, &["init", "-q", "-b", "main"]);
        std::fs::copy("/bin/busybox", path.join("busybox")).expect("busybox-static is installed");
        std::fs::write(path.join("Dockerfile"), DOCKERFILE).unwrap();
        git(path, &["add", "-A"]);
        git(path, &["commit", "-qm", "first"]);
        git(path, &["tag", "v1"]);
        let first_commit = git(path, &["rev-parse", "HEAD"]);
        for (sub, text) in [
            (
                "failing",
                "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"false\"]\n",
            ),
            (
                "slow",
                "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"300\"]\n",
            ),
        ] {
            std::fs::create_dir(path.join(sub)).unwrap();
            std::fs::copy("/bin/busybox", path.join(sub).join("busybox")).unwrap();
            std::fs::write(path.join(sub).join("Dockerfile"), text).unwrap();
        }
        git(path, &["add", "-A"]);
        git(path, &["commit", "-qm", "second"]);
        Repo { dir, first_commit }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}

/// Runs `program` in `dir`, failing with its stderr; returns its stdout.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let identity = [
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.invalid",
    ];
    let all: Vec<&str> = identity.iter().chain(args).copied().collect();
    run(dir, "git", &all)
}

/// A PostgreSQL server of its own (Debian's packages) on a free loopback
/// port, its data in a temporary directory, with an empty database
/// `helix`; stopped on drop. PostgreSQL refuses to run as root, so when
/// this process is root it runs as the `postgres` user.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (.ci/setup installs it)")
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            let uid = run(Path::new("/"), "id", &["-u", "postgres"]);
            let gid = run(Path::new("/"), "id", &["-g", "postgres"]);
            std::os::unix::fs::chown(dir.path(), uid.parse().ok(), gid.parse().ok()).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let postgres = Postgres { dir, bin, port };
        let data = postgres.data();
        postgres.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        postgres.resume();
        let port = port.to_string();
        postgres.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "helix"],
        );
        postgres
    }

    /// The `helix` database's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/helix", self.port)
    }

    /// Stops the server, cutting every connection.
    pub fn pause(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `program` from the server's bin directory, as the `postgres` user
    /// when this process is root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
