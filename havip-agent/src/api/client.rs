//! The API's client side (used by `havipctl`): HTTP/1.1 over the agent's
//! Unix socket, one connection per request.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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

pub struct Client {
    socket: PathBuf,
}

/// A request body and its media type.
pub enum Body {
    None,
    Json(Vec<u8>),
    Toml(String),
}

impl Body {
    pub fn json(v: &impl Serialize) -> Result<Self> {
        Ok(Self::Json(serde_json::to_vec(v)?))
    }
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
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
        let resp = sender.send_request(req.body(Full::new(bytes))?).await.context("sending the request")?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the error")?.to_bytes();
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => bail!("{}", e.error),
            Err(_) => bail!("{status}: {}", String::from_utf8_lossy(&bytes).trim()),
        }
    }

    /// Sends a request and reads a JSON answer.
    pub async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Body) -> Result<T> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
        serde_json::from_slice(&bytes).with_context(|| format!("reading the answer to {path}"))
    }

    /// Sends a GET and yields the answer's lines as they arrive (NDJSON).
    pub async fn lines(&self, path: &str) -> Result<impl Stream<Item = Result<String>>> {
        let resp = self.send(Method::GET, path, Body::None).await?;
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
