//! The API's client side (used by `havipctl`): HTTP/1.1 over the agent's
//! Unix socket, one connection per request. Errors are typed: a refusal
//! ([`ClientError::Refused`]) keeps the HTTP status and the rule's name, so a
//! caller can tell "the agent said no" from "the agent is not there".

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use futures::{Stream, TryStreamExt};
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::{
    body::{Bytes, Incoming},
    Method, Request, Response,
};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{io::AsyncBufReadExt, net::UnixStream};
use tokio_util::io::StreamReader;

use super::view::ErrorBody;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent answered with an error: a refusal names its rule.
    #[error("{error}")]
    Refused {
        /// The HTTP status (400 malformed, 404 no such object, 409 a rule, 500).
        status: u16,
        /// The rule's name (`Rule::name`), when a rule refused.
        rule: Option<String>,
        /// The agent's message (a refusal's [`Refusal`](havip_model::Refusal) text, or the failure).
        error: String,
    },
    /// The agent could not be reached, or the exchange broke off.
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

/// `Result` with a [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A client of one agent's API socket.
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
}

/// A request body and its media type.
pub enum Body {
    /// No body (GET, DELETE, PUT of a membership).
    None,
    /// `application/json` bytes.
    Json(Vec<u8>),
    /// `application/toml` text: a declarative file for `/v1/apply`.
    Toml(String),
}

impl Body {
    /// `v` as a JSON body.
    pub fn json(v: &impl Serialize) -> Result<Self> {
        Ok(Self::Json(serde_json::to_vec(v).context("writing the request")?))
    }
}

impl Client {
    /// A client of the agent serving `socket`; connects on each request.
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned(), timeout: None }
    }

    /// Bounds every exchange by `timeout`: connecting, sending, and reading
    /// the whole answer ([`Client::lines`]: until the answer begins). Past
    /// it the exchange fails as [`ClientError::Transport`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout: Some(timeout), ..self }
    }

    async fn bounded<T>(&self, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
        match self.timeout {
            None => f.await,
            Some(t) => tokio::time::timeout(t, f).await.map_err(|_| {
                ClientError::Transport(anyhow::anyhow!(
                    "the agent at {} did not {what} within {t:?} (--timeout)",
                    self.socket.display()
                ))
            })?,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Body) -> Result<Response<Incoming>> {
        let stream = UnixStream::connect(&self.socket).await.with_context(|| {
            format!("connecting to the agent at {} (is havip-agent running?)", self.socket.display())
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
        tokio::spawn(conn);
        let (ty, bytes) = match body {
            Body::None => (None, Bytes::new()),
            Body::Json(b) => (Some("application/json"), b.into()),
            Body::Toml(t) => (Some("application/toml"), t.into()),
        };
        let mut req = Request::builder().method(method).uri(path).header("host", "havip");
        if let Some(ty) = ty {
            req = req.header("content-type", ty);
        }
        let req = req.body(Full::new(bytes)).context("building the request")?;
        let resp = sender.send_request(req).await.context("sending the request")?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the error")?.to_bytes();
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ClientError::Refused { status: status.as_u16(), rule: e.rule, error: e.error },
            Err(_) => ClientError::Refused {
                status: status.as_u16(),
                rule: None,
                error: format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()),
            },
        })
    }

    /// Sends a request and reads a JSON answer.
    pub async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Body) -> Result<T> {
        self.bounded("answer", async {
            let resp = self.send(method, path, body).await?;
            let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
            Ok(serde_json::from_slice(&bytes).with_context(|| format!("reading the answer to {path}"))?)
        })
        .await
    }

    /// Sends a GET and yields the answer's lines as they arrive (NDJSON).
    pub async fn lines(&self, path: &str) -> Result<impl Stream<Item = anyhow::Result<String>>> {
        let resp = self.bounded("answer", self.send(Method::GET, path, Body::None)).await?;
        let bytes = BodyStream::new(resp.into_body())
            .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
            .map_err(std::io::Error::other);
        let lines = StreamReader::new(Box::pin(bytes)).lines();
        Ok(futures::stream::unfold(lines, |mut lines| async move {
            match lines.next_line().await {
                Ok(Some(line)) => Some((Ok(line), lines)),
                Ok(None) => None,
                Err(e) => Some((Err(anyhow::Error::from(e).context("reading events")), lines)),
            }
        }))
    }
}
