//! A client of the HTTP API, for the CLI: plain HTTP/1.1 to one server,
//! with the bearer token when one is given.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
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

/// Talks to one Helix Build server.
pub struct Client {
    authority: String,
    token: Option<String>,
}

impl Client {
    /// `server` is `http://host:port` (or just `host:port`).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let uri: Uri = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        }
        .parse()
        .map_err(|e| ClientError::Protocol(format!("server address {server:?}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(ClientError::Protocol(format!(
                "server address {server:?}: only http:// is supported (the server speaks plain HTTP on loopback)"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Protocol(format!("server address {server:?} has no host")))?
            .to_string();
        Ok(Client { authority, token })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Incoming>, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            server: self.authority.clone(),
            reason,
        };
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| unreachable("connection timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = collect(response).await?;
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
        let body = collect(self.send(method, path, body).await?).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A plain-text answer.
    pub async fn text(&self, path: &str) -> Result<String, ClientError> {
        let body = collect(self.send(Method::GET, path, None).await?).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
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
        while let Some(frame) = response.body_mut().frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(data));
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

async fn collect(response: Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes())
}
