//! `helix-build plugin new`: a builder project, in Rust or in Python, that
//! builds as generated: its sources, the WIT it targets (this host's),
//! a build script, a README, grants, a job and a server config to try it.

use std::path::{Path, PathBuf};

use crate::docker_engine::DEFAULT_ENGINE_CLIENT;
use crate::exec::Grants;
use crate::network::BuildNetwork;
use crate::plugin::WIT_VERSION;

/// The language of a new builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

/// The contract, as this host was built against it.
const WIT: [(&str, &str); 4] = [
    ("world.wit", include_str!("../../../wit/current/world.wit")),
    ("types.wit", include_str!("../../../wit/current/types.wit")),
    (
        "command-runner.wit",
        include_str!("../../../wit/current/command-runner.wit"),
    ),
    (
        "job-context.wit",
        include_str!("../../../wit/current/job-context.wit"),
    ),
];

const RUST_LIB: &str = include_str!("templates/lib.rs");
const RUST_MANIFEST: &str = include_str!("templates/Cargo.toml");
const RUST_BUILD: &str = include_str!("templates/build-rust.sh");
const PYTHON_BUILD: &str = include_str!("templates/build-python.sh");
const README: &str = include_str!("templates/README.md");
/// The Python example builder is the Python template, renamed.
const PYTHON_APP: &str = include_str!("../../../plugins/examples/python-user-policy/app.py");

/// Writes a new builder project `name` in `dir/name`; the files written.
/// Refuses a name that is not a plain lowercase name, and a directory that
/// exists.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<Vec<PathBuf>, String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(format!(
            "'{name}' is not a builder name: use lowercase letters, digits and '-', starting with a letter"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{stem}}", &name.replace('-', "_"))
            .replace("{{wit}}", WIT_VERSION)
            .replace(
                "{{lang}}",
                match lang {
                    Lang::Rust => "Rust",
                    Lang::Python => "Python",
                },
            )
            .replace(
                "{{source}}",
                match lang {
                    Lang::Rust => "src/lib.rs",
                    Lang::Python => "app.py",
                },
            )
    };
    let mut files: Vec<(PathBuf, String)> = WIT
        .iter()
        .map(|(file, text)| (PathBuf::from("wit").join(file), text.to_string()))
        .collect();
    files.push(("README.md".into(), fill(README)));
    files.push(("grants.toml".into(), grants()?));
    files.push(("helix.toml".into(), server_config(name)?));
    files.push((
        "job.json".into(),
        "{\n  \"repo_url\": \"https://git.example/team/app.git\",\n  \"ref\": \"main\"\n}\n".into(),
    ));
    // What `plugin test --source example` builds in place of job.json's
    // repository, so the README's first try needs no git server.
    files.push((
        "example/Dockerfile".into(),
        "FROM scratch\nCOPY hello.txt /hello.txt\nUSER 1000\n".into(),
    ));
    files.push(("example/hello.txt".into(), "hello\n".into()));
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(RUST_MANIFEST)));
            files.push(("src/lib.rs".into(), fill(RUST_LIB)));
            files.push(("build.sh".into(), fill(RUST_BUILD)));
        }
        Lang::Python => {
            let app = PYTHON_APP
                .replace("python-user-policy", name)
                .replace(
                    "Python: refuses images that would run as root, then builds with podman",
                    &format!("{name}: a policy, then podman"),
                )
                .replace("-d ../../../wit/current", "-d wit")
                .replace("python_user_policy.wasm", &format!("{name}.wasm"));
            files.push(("app.py".into(), app));
            files.push(("build.sh".into(), fill(PYTHON_BUILD)));
        }
    }
    let mut written = Vec::new();
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        root.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(|e| format!("cannot make build.sh executable: {e}"))?;
    Ok(written)
}

/// The built-in podman builder's grants, for builds on the host's private
/// network, as a `[builders.X.grants]` table holds them.
fn podman_grants() -> Grants {
    crate::builtin::default_grants("podman", BuildNetwork::Private, DEFAULT_ENGINE_CLIENT)
}

fn grants() -> Result<String, String> {
    let table = toml::to_string(&podman_grants()).map_err(|e| e.to_string())?;
    Ok(format!(
        "# The built-in podman builder's grants (builds on the private network).\n{table}"
    ))
}

/// A server config with the builder `name` beside this directory's
/// `name.wasm`, and its grants.
fn server_config(name: &str) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Builder {
        component: String,
        grants: Grants,
    }
    let mut builders = toml::Table::new();
    let builder = Builder {
        component: format!("{name}.wasm"),
        grants: podman_grants(),
    };
    builders.insert(
        name.to_string(),
        toml::Value::try_from(builder).map_err(|e| e.to_string())?,
    );
    let mut config = toml::Table::new();
    config.insert("default_builder".into(), toml::Value::String(name.into()));
    config.insert("builders".into(), toml::Value::Table(builders));
    let text = toml::to_string(&config).map_err(|e| e.to_string())?;
    Ok(format!(
        "# A server with the builder {name}; component paths are relative to\n# where `helix-build serve` runs (this directory).\n{text}"
    ))
}
