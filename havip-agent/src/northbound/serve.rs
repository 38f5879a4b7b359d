//! The one HTTP/1.1 server loop behind the API socket and the metrics port,
//! each run with its own [`ServerLimits`] in its own task: a flood of one never
//! takes a slot, a descriptor budget or a thread of the other.
//!
//! hyper reads each request's headers under a timeout, which also ends a
//! keep-alive connection left idle; connections beyond the limit are
//! answered `503` at once and closed, never left queued in the backlog.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use axum::{serve::Listener, Router};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Semaphore,
    time::timeout,
};

/// How long a refused connection gets to take its `503`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Refusals being written at once; beyond this a connection is just closed.
const MAX_REFUSALS: usize = 64;
/// The largest request head read (hyper's read buffer): 64 KiB.
const MAX_HEAD: usize = 64 << 10;

/// A server's limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// What it serves, for the log.
    pub name: &'static str,
    /// Open connections at most; more are answered [`ServerLimits::busy`].
    pub max_connections: usize,
    /// For a request's headers to arrive, and for the next request on an
    /// idle keep-alive connection.
    pub header_timeout: Duration,
    /// A connection's whole life, if bounded (not on the API: event
    /// followers stay).
    pub lifetime: Option<Duration>,
    /// The body of the `503` for a connection beyond the limit, and its
    /// media type.
    pub busy: (&'static str, String),
}

impl ServerLimits {
    fn refusal(&self) -> Vec<u8> {
        let (ty, body) = &self.busy;
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {ty}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Serves `app` on `listener` within `limits`, until the listener fails.
/// (axum's `Listener::accept` retries after an error such as EMFILE.)
pub async fn serve<L>(mut listener: L, app: Router, limits: ServerLimits) -> Result<()>
where
    L: Listener,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS));
    let refusal: Arc<[u8]> = limits.refusal().into();
    loop {
        let (io, _) = listener.accept().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                server = limits.name,
                max = limits.max_connections,
                "connection refused: at the limit"
            );
            // Answered, not queued: the client learns at once.
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                let refusal = refusal.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let mut io = io;
                    let _ = timeout(REFUSAL_TIMEOUT, async {
                        io.write_all(&refusal).await?;
                        io.shutdown().await?;
                        // Read what the client sent, so closing does not reset the answer.
                        let mut sink = [0u8; 4096];
                        while io.read(&mut sink).await? > 0 {}
                        Ok::<_, std::io::Error>(())
                    })
                    .await;
                });
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(io), service);
            let result = match limits.lifetime {
                Some(life) => timeout(life, conn).await.unwrap_or(Ok(())),
                None => conn.await,
            };
            if let Err(e) = result {
                tracing::debug!(server = limits.name, error = %e, "connection ended");
            }
        });
    }
}
