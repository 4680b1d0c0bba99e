//! The `helix-build` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use helix_build::config::Config;
use helix_build::{api, app, plugin};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "helix-build",
    version,
    about = "Build orchestration with sandboxed WebAssembly builders"
)]
struct Cli {
    /// How the server writes its own log (to stderr).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
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
    },
    /// Work with builder plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Check that a .wasm file is a builder this host can load, and show
    /// its info and imports.
    Check {
        /// The component file.
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => check_plugin(&file).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("helix-build: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let mut config = match config {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string())?,
        None => Config::default().validated().map_err(|e| e.to_string())?,
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let shutdown = shutdown_signal()?;
    let service = app::start(&config).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (choose another with --listen)",
                config.listen
            )
        })?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, data_dir = %config.data_dir.display(), "helix-build listening");
    // Printed on stdout so scripts (and the tests) can find an ephemeral port.
    println!("listening on http://{address}");
    axum::serve(
        listener,
        api::router(service.clone(), config.token.as_deref()),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|e| format!("HTTP server failed: {e}"))?;
    tracing::info!("shutting down: waiting for running jobs");
    service.stop(app::stop_grace(&config)).await;
    Ok(())
}

async fn check_plugin(file: &std::path::Path) -> Result<(), String> {
    let inspection = plugin::inspect(file).await.map_err(|e| e.to_string())?;
    let info = &inspection.info;
    println!(
        "{}: a builder for helix:build@{}",
        file.display(),
        plugin::WIT_VERSION
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

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled, so a signal arriving right
/// after start-up still shuts down gracefully.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
    let mut term = install(SignalKind::terminate())?;
    let mut interrupt = install(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
