//! `serve`: the build service and its HTTP API in this process, until a
//! signal stops it (SIGTERM/SIGINT) or reloads it (SIGHUP).

use std::path::PathBuf;

use axum_server::tls_rustls::RustlsConfig;
use helix_build::{api, app};

use crate::load_config;

pub async fn serve(
    config: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    insecure_no_auth: bool,
) -> Result<(), String> {
    let mut config = load_config(config)?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if !config.listen.ip().is_loopback()
        && config.token.is_none()
        && config.projects.is_empty()
        && !insecure_no_auth
    {
        return Err(format!(
            "refusing to serve {} without a token: anyone who reaches it could submit builds \
             and read every job; set `token` in the config, or pass --insecure-no-auth",
            config.listen
        ));
    }
    let shutdown = shutdown_signal()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key).await?),
        _ => None,
    };
    let service = app::start(&config).await.map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
        format!(
            "cannot listen on {}: {e} (choose another with --listen)",
            config.listen
        )
    })?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, scheme, data_dir = %config.data_dir.display(), "helix-build listening");
    // Printed on stdout so scripts (and the tests) can find an ephemeral port.
    println!("listening on {scheme}://{address}");
    let router = api::router(service.clone());
    tokio::spawn(reload_on_sighup(
        service.clone(),
        tls.clone().map(|tls| {
            (
                tls,
                config.tls_cert.clone().unwrap_or_default(),
                config.tls_key.clone().unwrap_or_default(),
            )
        }),
    ));
    let handle = axum_server::Handle::new();
    let header_timeout = std::time::Duration::from_secs(config.request_header_timeout_secs);
    let mut server = axum_server::from_tcp(listener)
        .map_err(|e| format!("cannot serve on {address}: {e}"))?
        .handle(handle.clone())
        // hyper times the headers of HTTP/1 requests only, from the moment
        // it waits for one (so idle keep-alive time counts); this bounds
        // the protocol detection before the first request too.
        .first_request_timeout(header_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(header_timeout);
    let app = router.into_make_service();
    let mut serving = match tls {
        Some(tls) => tokio::spawn(
            server
                .acceptor(axum_server::tls_rustls::RustlsAcceptor::new(tls))
                .serve(app),
        ),
        None => tokio::spawn(server.serve(app)),
    };
    tokio::select! {
        () = shutdown => {}
        ended = &mut serving => return Err(http_failed(ended)),
    }
    // The listener stays open while running jobs finish: reads, waits and
    // follows go on, submissions get 503 (the service is stopping).
    tracing::info!("shutting down: waiting for running jobs; submissions are refused");
    service.stop(app::stop_grace(&config)).await;
    handle.graceful_shutdown(Some(CLOSE_LINGER));
    match serving.await {
        Ok(Ok(())) => Ok(()),
        ended => Err(http_failed(ended)),
    }
}

/// Once the jobs have stopped, how long answers in flight (a follow's
/// `end` event, a wait's job) get before the listener's connections close.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

fn http_failed(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "HTTP server stopped unexpectedly".into(),
        Ok(Err(e)) => format!("HTTP server failed: {e}"),
        Err(e) => format!("HTTP server failed: {e}"),
    }
}

async fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<RustlsConfig, String> {
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        format!(
            "cannot use {} and {} for HTTPS: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// At every SIGHUP, loads the builders again from the config file and,
/// with HTTPS, the certificate and key (a renewed certificate, say); what
/// fails to load keeps the old in use.
async fn reload_on_sighup(
    service: helix_build::service::Service,
    tls: Option<(RustlsConfig, PathBuf, PathBuf)>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP: nothing will be reloaded on it");
        return;
    };
    while hangups.recv().await.is_some() {
        if let Err(e) = service.reload_builders().await {
            tracing::error!("{e}");
        }
        if let Some((tls, cert, key)) = &tls {
            match tls.reload_from_pem_file(cert, key).await {
                Ok(()) => tracing::info!(cert = %cert.display(), "reloaded the TLS certificate"),
                Err(e) => tracing::error!(
                    cert = %cert.display(),
                    "cannot reload the TLS certificate, keeping the old one: {e}"
                ),
            }
        }
    }
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
