//! The `helix-build` command.

mod cli;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use helix_build::config::{Config, StoreLocation};
use helix_build::provenance::dsse::SigningKey;
use helix_build::store::SqliteStore;
use helix_build::{plugin, plugin_tools};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "helix-build",
    version,
    about = "Build orchestration with sandboxed WebAssembly builders"
)]
struct Cli {
    /// The server the client commands talk to.
    #[arg(
        long,
        global = true,
        env = "HELIX_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// A CA certificate (PEM) trusted besides the system's, for a server
    /// whose HTTPS certificate a private CA signed (client commands).
    #[arg(long, global = true, env = "HELIX_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print JSON instead of text (client commands).
    #[arg(long, global = true)]
    json: bool,
    /// The API token the client commands send (a project token, or the
    /// server's admin `token`).
    #[arg(long, global = true, env = "HELIX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the build service and its HTTP API.
    Serve {
        /// Config file (TOML). Without one, every setting has its default.
        #[arg(long, env = "HELIX_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding the config file's `listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve a non-loopback address without a `token`: anyone who can
        /// reach it can submit builds and read every job.
        #[arg(long)]
        insecure_no_auth: bool,
        /// How the server writes its own log (to stderr).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Copy the embedded (SQLite) store to FILE, consistently, while the
    /// server runs (run it on the server's host, with its config).
    Backup {
        file: PathBuf,
        /// The server's config file, to find its store.
        #[arg(long, env = "HELIX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Make an Ed25519 key pair for signing provenance: PREFIX.key (the
    /// server's `provenance_key`, readable by its owner only) and
    /// PREFIX.pub (what consumers verify with).
    Keygen {
        #[arg(default_value = "helix-provenance")]
        prefix: PathBuf,
    },
    /// Check an image's provenance in its registry: signed by KEY, about
    /// this image's digest, and meeting the policy the other flags give
    /// (builder component, repository, ref, protected, project). Exits
    /// non-zero with the reason otherwise.
    Verify {
        /// `registry/repository:tag` or `registry/repository@sha256:…`.
        image: String,
        /// The signer's public key (PEM), as `keygen` wrote it.
        #[arg(long)]
        key: PathBuf,
        /// Accept only builds by a builder component with this digest
        /// (`sha256:…`); repeat for several.
        #[arg(long = "builder-digest")]
        builder_digests: Vec<String>,
        /// Accept only builds from this repository URL.
        #[arg(long)]
        source_repo: Option<String>,
        /// Accept only builds of this ref (as the job named it, e.g.
        /// `refs/heads/main`).
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Accept only builds of one of the project's protected refs.
        #[arg(long)]
        protected: bool,
        /// Accept only builds by this project's jobs.
        #[arg(long)]
        project: Option<String>,
        /// Speak plain HTTP to the image's registry.
        #[arg(long)]
        insecure: bool,
        /// Registry credentials (a containers auth.json).
        #[arg(long, env = "REGISTRY_AUTH_FILE")]
        authfile: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(ClientCommand),
    /// Work with builder plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// Commands that talk to a running server.
#[derive(Subcommand)]
enum ClientCommand {
    /// Submit a build job.
    Submit {
        #[command(flatten)]
        job: Box<cli::Submission>,
        /// Wait for the job to end; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// Show the log as it is written; exit 0 only if the job succeeded.
        #[arg(long)]
        follow: bool,
    },
    /// List jobs, newest first.
    Jobs {
        #[command(flatten)]
        filter: cli::JobsFilter,
    },
    /// Show one job as JSON.
    Get { id: String },
    /// Cancel a queued or running job.
    Cancel { id: String },
    /// Show a job's log.
    Logs {
        id: String,
        /// Keep printing lines until the job ends.
        #[arg(short, long)]
        follow: bool,
        /// Show each line's time (RFC 3339, UTC), as `docker logs -t` does.
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Show every program a job's builder asked for, allowed or refused,
    /// and the grant that allowed it.
    Audit { id: String },
    /// Show the signed SLSA provenance attached to a job's image (JSON).
    Provenance { id: String },
    /// Wait for a job to end; exit 0 if it succeeded, 1 if it ended
    /// otherwise, 124 if --timeout passed first.
    Wait {
        id: String,
        /// Give up after this many seconds: print the job as it is and exit
        /// 124 (as timeout(1) does).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// List the server's builders.
    Builders,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Check that a .wasm file is a builder this host can load, and show
    /// its info and imports.
    Check {
        /// The component file.
        file: PathBuf,
    },
    /// Make a builder project NAME (in the current directory): sources,
    /// the WIT it targets, a build script, a README, grants, a job and a
    /// server config to try it with.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: plugin_tools::scaffold::Lang,
        /// Where to make it (default: here).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a builder once without a server: its job in a temporary
    /// workspace (with the host's checkout, for a real builder), printing
    /// every program it asks for, whether the grants allow it, and the
    /// result. Exits 0 only if the build succeeded.
    Test {
        /// The component file.
        file: PathBuf,
        /// The job, as JSON (what `POST /v1/jobs` takes).
        #[arg(long)]
        job: PathBuf,
        /// The grants (TOML, as a `[builders.X.grants]` table holds them);
        /// none when absent (and no --grants-of): every program is refused.
        #[arg(long, conflicts_with = "grants_of")]
        grants: Option<PathBuf>,
        /// The grants of a built-in builder (`podman` or `buildah`), with
        /// build steps on no network.
        #[arg(long)]
        grants_of: Option<String>,
        /// A setting the builder reads (`NAME=VALUE`); repeatable.
        #[arg(long = "setting", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Answer allowed programs instead of running them: exit 0 and no
        /// output, unless --canned says otherwise.
        #[arg(long)]
        dry_run: bool,
        /// Canned answers per program (TOML: `[programs.podman]` with
        /// `exit_code`, `stdout`, `stderr`); implies --dry-run.
        #[arg(long)]
        canned: Option<PathBuf>,
        /// Build this local directory instead of checking out the job's
        /// repository (as the checkout would leave it; no commit).
        #[arg(long)]
        source: Option<PathBuf>,
    },
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| format!("'{text}' is not NAME=VALUE"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.command {
        Command::Serve {
            log_format: LogFormat::Json,
            ..
        } => logs.json().init(),
        _ => logs.init(),
    }
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            insecure_no_auth,
            log_format: _,
        } => serve::serve(config, listen, insecure_no_auth)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => check_plugin(&file).await.map(|()| ExitCode::SUCCESS),
        Command::Plugin {
            command: PluginCommand::New { name, lang, dir },
        } => plugin_tools::scaffold::create(&dir, &name, lang).map(|files| {
            for file in &files {
                println!("{}", file.display());
            }
            println!(
                "made builder {name}: `{}/build.sh` builds it; see its README.md",
                dir.join(&name).display()
            );
            ExitCode::SUCCESS
        }),
        Command::Plugin {
            command:
                PluginCommand::Test {
                    file,
                    job,
                    grants,
                    grants_of,
                    settings,
                    dry_run,
                    canned,
                    source,
                },
        } => cli::plugin_test(cli::TrialFiles {
            component: file,
            job,
            grants,
            grants_of,
            settings: settings.into_iter().collect(),
            dry_run,
            canned,
            source,
        })
        .await
        .map(succeeded),
        Command::Backup { file, config } => backup(config, &file).map(|()| ExitCode::SUCCESS),
        Command::Keygen { prefix } => keygen(&prefix).map(|()| ExitCode::SUCCESS),
        Command::Verify {
            image,
            key,
            builder_digests,
            source_repo,
            git_ref,
            protected,
            project,
            insecure,
            authfile,
        } => {
            let policy = helix_build::provenance::Policy {
                builder_digests,
                source_repo,
                git_ref,
                protected,
                project,
            };
            cli::verify(&image, &key, &policy, insecure, authfile)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Client(command) => {
            let token = cli.token.filter(|t| !t.is_empty());
            client_command(
                command,
                &cli.server,
                token,
                cli.ca_file.as_deref(),
                cli.json,
            )
            .await
        }
    };
    result.unwrap_or_else(|message| {
        eprintln!("helix-build: {message}");
        ExitCode::FAILURE
    })
}

/// 0 when the command did what was asked, 1 when not.
fn succeeded(done: bool) -> ExitCode {
    if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn load_config(config: Option<PathBuf>) -> Result<Config, String> {
    match config {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string()),
        None => Config::default().validated().map_err(|e| e.to_string()),
    }
}

fn keygen(prefix: &std::path::Path) -> Result<(), String> {
    let key = SigningKey::generate()?;
    let (private, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    key.write(&private, &public)?;
    println!(
        "{}: the private key (set `provenance_key` to it; keep it secret)\n{}: the public key, \
         for `helix-build verify --key`\nkey id {}",
        private.display(),
        public.display(),
        key.id()
    );
    Ok(())
}

fn backup(config: Option<PathBuf>, file: &std::path::Path) -> Result<(), String> {
    let config = load_config(config)?;
    match config.store().map_err(|e| e.to_string())? {
        StoreLocation::Sqlite(db) => {
            let copied = SqliteStore::backup(&db, file).map_err(|e| e.to_string())?;
            println!(
                "{}: a consistent copy of {} ({copied} jobs)",
                file.display(),
                db.display()
            );
            Ok(())
        }
        StoreLocation::Postgres(_) => Err(
            "the store is PostgreSQL: back it up with the database's own tools (pg_dump, or its \
             continuous archiving); `backup` copies the embedded SQLite store"
                .into(),
        ),
    }
}

async fn client_command(
    command: ClientCommand,
    server: &str,
    token: Option<String>,
    ca_file: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode, String> {
    let client =
        helix_build::client::Client::new(server, token, ca_file).map_err(|e| e.to_string())?;
    let done = match command {
        ClientCommand::Submit { job, wait, follow } => {
            cli::submit(&client, *job, wait, follow, json).await
        }
        ClientCommand::Jobs { filter } => cli::jobs(&client, filter, json).await,
        ClientCommand::Get { id } => cli::get(&client, &id).await,
        ClientCommand::Cancel { id } => cli::cancel(&client, &id, json).await,
        ClientCommand::Logs {
            id,
            follow,
            timestamps,
        } => cli::logs(&client, &id, follow, timestamps).await,
        ClientCommand::Audit { id } => cli::audit(&client, &id, json).await,
        ClientCommand::Provenance { id } => cli::provenance(&client, &id).await,
        ClientCommand::Wait { id, timeout } => {
            return cli::wait(&client, &id, timeout, json)
                .await
                .map(|waited| match waited {
                    Some(job) => succeeded(job.state == helix_build::job::State::Succeeded),
                    None => ExitCode::from(cli::WAIT_TIMED_OUT),
                });
        }
        ClientCommand::Builders => cli::builders(&client, json).await,
    };
    done.map(succeeded)
}

async fn check_plugin(file: &std::path::Path) -> Result<(), String> {
    let inspection = plugin::inspect(file).await.map_err(|e| e.to_string())?;
    let info = &inspection.info;
    let support = match info.contract == format!("helix:build@{}", plugin::WIT_VERSION) {
        true => "this host's own contract".to_string(),
        false => format!(
            "an older contract this host (helix:build@{}) adapts: jobs with a context, target, \
             labels, no_cache or build secrets are refused",
            plugin::WIT_VERSION
        ),
    };
    println!(
        "{}: a builder for {} ({support})",
        file.display(),
        info.contract
    );
    println!("  name:        {} {}", info.plugin_name, info.version);
    println!("  description: {}", info.description);
    println!(
        "  simulated:   {}",
        if info.simulated { "yes" } else { "no" }
    );
    println!("  digest:      {}", info.component_digest);
    println!("  imports:");
    for import in &inspection.imports {
        println!("    {import}");
    }
    Ok(())
}
