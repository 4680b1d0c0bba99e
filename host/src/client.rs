//! A client of the HTTP API, for the CLI: HTTP or HTTPS (the system's
//! roots, plus a CA file if given) to one server, with the bearer token
//! when one is given.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::job::Job;

/// Why a request to the server did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the server at {server}: {reason} (start it with `helix-build serve`, or set --server / HELIX_SERVER)"
    )]
    Unreachable { server: String, reason: String },
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// What following a job reports before it ends.
pub enum Followed<'a> {
    /// The job is now in this state (`queued`, `running`).
    State(&'a str),
    /// A log line.
    Line(&'a str),
}

/// How long connecting may take; a request itself may take long (`wait`,
/// a followed log).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Talks to one Helix Build server.
pub struct Client {
    /// `http(s)://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `server` is `http://host:port`, `https://host:port` (or just
    /// `host:port`, meaning http); `ca_file` (PEM) is trusted besides the
    /// system's roots, for a server with a private CA.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let base = match server.contains("://") {
            true => server.trim_end_matches('/').to_string(),
            false => format!("http://{}", server.trim_end_matches('/')),
        };
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Protocol(format!("server address {server:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::Protocol(format!(
                "server address {server:?}: give http://host:port or https://host:port"
            )));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy();
        if let Some(file) = ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| ClientError::Protocol(format!("CA file {}: {e}", file.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Protocol(format!("CA file {}: {e}", file.display())))?;
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot set up HTTPS: {e}")))?;
        Ok(Client { base, token, http })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            server: self.base.clone(),
            reason: error_chain(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let error: Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(ClientError::Api {
            status,
            code: error["error"]["code"]
                .as_str()
                .unwrap_or("error")
                .to_string(),
            message: error["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&body))),
        })
    }

    /// A JSON request and its decoded JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        self.send(method, path, body)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A plain-text answer.
    pub async fn text(&self, path: &str) -> Result<String, ClientError> {
        self.send(Method::GET, path, None)
            .await?
            .text()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Follows a job: calls `on_event` with every state change and every log
    /// line as they arrive (with `timestamps`, each preceded by its time),
    /// and returns the job once it has ended.
    pub async fn follow_logs(
        &self,
        id: &str,
        timestamps: bool,
        mut on_event: impl FnMut(Followed<'_>),
    ) -> Result<Job, ClientError> {
        let mut response = self
            .send(
                Method::GET,
                &format!("/v1/jobs/{id}/logs?follow=true&timestamps={timestamps}"),
                None,
            )
            .await?;
        let mut pending = String::new();
        let mut event = String::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = data.strip_prefix(' ').unwrap_or(data);
                    match event.as_str() {
                        "end" => {
                            return serde_json::from_str(data)
                                .map_err(|e| ClientError::Protocol(e.to_string()));
                        }
                        "state" => on_event(Followed::State(data)),
                        _ => on_event(Followed::Line(data)),
                    }
                }
            }
        }
        Err(ClientError::Protocol(
            "the log stream ended before the job did".into(),
        ))
    }
}

/// `error` and its causes: reqwest's own message ("error sending
/// request") hides the useful part (refused, certificate unknown).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
