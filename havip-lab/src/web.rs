//! A real TCP service behind the HAVIP: a tiny HTTP server in each member
//! that says who served the request, and a client that fetches from it.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{netns, probe::Worker};

pub const PORT: u16 = 80;
/// How long the accept loop sleeps between checks for stop.
const TICK: Duration = Duration::from_millis(20);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `HTTP/1.0 200` with body `served by <name>` until dropped.
pub struct WebServer {
    _worker: Worker,
}

impl WebServer {
    pub fn start(ns: &str, name: &str) -> Result<Self> {
        let listener = netns::run_in(ns, || {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).context("binding TCP port 80")?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .with_context(|| format!("starting the web server in {name}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, body) = (stop.clone(), format!("served by {name}\n"));
        let worker = Worker::spawn(stop, move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        // One bad client must not stop the service.
                        let _ = answer(conn, &body);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
                    Err(_) => thread::sleep(TICK),
                }
            }
        });
        Ok(Self { _worker: worker })
    }
}

fn answer(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut req = [0u8; 1024];
    let _ = conn.read(&mut req)?;
    let resp =
        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    conn.write_all(resp.as_bytes())
}

/// One HTTP GET from inside `ns` to `addr`; returns who served it.
pub fn fetch(ns: &str, addr: Ipv4Addr) -> Result<String> {
    crate::probe::ensure_test_range(addr)?;
    let conn = netns::run_in(ns, move || {
        let conn = TcpStream::connect_timeout(&SocketAddr::from((addr, PORT)), IO_TIMEOUT)
            .with_context(|| format!("connecting to {addr}:{PORT}"))?;
        Ok(conn)
    })?;
    read_response(conn, addr)
}

fn read_response(mut conn: TcpStream, addr: Ipv4Addr) -> Result<String> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp).with_context(|| format!("reading the answer of {addr}"))?;
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        bail!("no HTTP answer from {addr}: {resp:?}")
    };
    if !head.starts_with("HTTP/1.0 200") {
        bail!("{addr} answered {head:?}");
    }
    let who = body.trim().strip_prefix("served by ").with_context(|| format!("unexpected body {body:?}"))?;
    Ok(who.to_owned())
}
