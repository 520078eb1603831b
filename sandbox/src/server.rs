//! Serving the router on 127.0.0.1 with graceful shutdown, on connections
//! the fault injector can reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower_service::Service;

use super::api;
use super::config::{ConfigError, SandboxConfig};
use super::vendor::Vendor;

/// How long shutdown lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The sandbox vendor: a fake SaaS API served over real HTTP.
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn_sandbox::SandboxError> {
/// use cairn_sandbox::{Sandbox, SandboxConfig};
///
/// let sandbox = Sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
/// let url = format!("{}/crm/v3/objects/contacts?limit=100", sandbox.base_url());
/// # let _ = url;
/// sandbox.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Sandbox;

impl Sandbox {
    /// Generates the data, binds `addr` (a loopback address; port 0 picks a
    /// free one) and serves until the handle is shut down or dropped.
    pub async fn start(
        config: SandboxConfig,
        addr: SocketAddr,
    ) -> Result<SandboxHandle, SandboxError> {
        config.validate()?;
        let (listener, addr) = bind_loopback(addr).await?;
        let vendor = Vendor::new(config, format!("http://{addr}"));
        let router = api::router(vendor.clone());
        let (shutdown, signal) = watch::channel(false);
        let task = tokio::spawn(serve(listener, router, vendor.clone(), signal));
        tracing::info!(%addr, "sandbox vendor listening");
        Ok(SandboxHandle {
            addr,
            vendor,
            shutdown,
            task: Some(task),
        })
    }
}

/// Binds `addr`, which must be a loopback address (port 0 picks a free one), and says
/// which address it got.
pub(crate) async fn bind_loopback(
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), SandboxError> {
    if !addr.ip().is_loopback() {
        return Err(SandboxError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr, source })?;
    Ok((listener, addr))
}

/// Why a sandbox did not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The configuration cannot be served.
    #[error("invalid sandbox configuration")]
    Config(#[from] ConfigError),
    /// The sandbox only ever listens on loopback.
    #[error("the sandbox binds loopback addresses only, not {0}")]
    NotLoopback(SocketAddr),
    /// The address could not be bound (in use, or not permitted).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// A running sandbox. Dropping it stops the server too (in the background);
/// [`SandboxHandle::shutdown`] waits until it has stopped.
pub struct SandboxHandle {
    addr: SocketAddr,
    vendor: Vendor,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SandboxHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.vendor.base_url()
    }

    /// The data, stats and admin operations, in-process.
    pub fn vendor(&self) -> &Vendor {
        &self.vendor
    }

    /// Stops accepting, lets in-flight requests finish for up to a second,
    /// then closes every connection.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "sandbox server task failed");
        }
    }
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    vendor: Vendor,
    mut signal: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(
                        stream,
                        router.clone(),
                        vendor.clone(),
                        signal.clone(),
                    ));
                }
                Err(error) => {
                    // Typically out of file descriptors: give in-flight
                    // connections a moment to close rather than spin.
                    tracing::warn!(%error, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = signal.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    vendor: Vendor,
    mut signal: watch::Receiver<bool>,
) {
    let _open = vendor.inner().stats.connected();
    // Small JSON pages over keep-alive: Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let reset = ResetSwitch::default();
    let io = TokioIo::new(Connection {
        stream,
        reset: reset.clone(),
    });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(reset.clone());
        let mut router = router.clone();
        async move { router.call(request.map(Body::new)).await }
    });
    let connection = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = signal.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "sandbox connection ended with an error");
    }
}

/// Set by the fault injector to have a connection reset instead of answered.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResetSwitch(Arc<AtomicBool>);

impl ResetSwitch {
    pub(crate) fn trip(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_tripped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A TCP stream whose next write, once its [`ResetSwitch`] trips, aborts the
/// connection with an RST: linger zero, then hyper drops the socket on the
/// write error.
struct Connection {
    stream: TcpStream,
    reset: ResetSwitch,
}

impl Connection {
    fn abort(&self) -> io::Error {
        if let Err(error) = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(%error, "could not arm the connection reset");
        }
        io::Error::new(io::ErrorKind::ConnectionReset, "reset by fault injection")
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset.is_tripped() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.reset.is_tripped() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.is_tripped() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
