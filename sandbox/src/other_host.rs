//! "Another host": a second listener, on another loopback address, that serves the same
//! data as the vendor to anyone (as a CDN a vendor redirects to would) and records every
//! request it receives, so a test can prove no credential ever reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api;
use super::server::{SandboxError, SandboxHandle, bind_loopback, serve};

/// One request another host received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query.
    pub target: String,
    /// Every header, name lowercased, in order.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The whole request as text, for searching it for a secret.
    pub fn text(&self) -> String {
        let mut text = format!("{} {}\n", self.method, self.target);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\n"));
        }
        text
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A running other host; stops when dropped.
pub struct OtherHost {
    addr: SocketAddr,
    log: Log,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl OtherHost {
    /// Serves `vendor`'s data on `addr` (a loopback address, e.g. `127.0.0.2:0`), with
    /// no credentials asked and no attack made.
    pub async fn start(vendor: &SandboxHandle, addr: SocketAddr) -> Result<Self, SandboxError> {
        let (listener, addr) = bind_loopback(addr).await?;
        let log = Log::default();
        let router = api::open_router(vendor.vendor().clone())
            .layer(middleware::from_fn_with_state(Arc::clone(&log), record));
        let (shutdown, signal) = watch::channel(false);
        let task = tokio::spawn(serve(listener, router, vendor.vendor().clone(), signal));
        Ok(Self {
            addr,
            log,
            shutdown,
            task: Some(task),
        })
    }

    /// `http://<addr>`: the origin to redirect to.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops serving and waits until it has stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl std::fmt::Debug for OtherHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtherHost")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn record(State(log): State<Log>, request: Request, next: Next) -> Response {
    let received = Received {
        method: request.method().to_string(),
        target: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    log.lock().unwrap_or_else(|e| e.into_inner()).push(received);
    next.run(request).await
}
