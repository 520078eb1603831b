//! `cairn ui` and `cairn worker --http`: the dashboard and `/metrics`, alone or beside a
//! worker.

use std::net::SocketAddr;
use std::process::ExitCode;

use cairn_ui::{Auth, Dashboard, Metrics, Options};
use sqlx::PgPool;

use super::{Failure, Outcome, connect};

/// The dashboard's options from the environment: the action token and the metrics.
pub(crate) fn options() -> Result<Options, Failure> {
    let auth = Auth::from_env().map_err(|err| Failure::usage(err.to_string()))?;
    let metrics = Metrics::install().map_err(Failure::failed)?;
    Ok(Options { auth, metrics })
}

/// Binds `bind` (loopback unless the operator says otherwise) and says where the
/// dashboard is.
pub(crate) async fn listen(
    bind: &str,
    options: &Options,
) -> Result<tokio::net::TcpListener, Failure> {
    let addr: SocketAddr = bind.parse().map_err(|_| {
        Failure::usage(format!(
            "--bind {bind:?} is not an address and port, e.g. 127.0.0.1:8080"
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| Failure::failed(format!("cannot listen on {addr}: {err}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !bound.ip().is_loopback() {
        eprintln!(
            "warning: the dashboard listens on {bound}, beyond this machine: anyone who can \
             reach it can read runs, errors and sync state{}",
            if options.auth.enabled() {
                ""
            } else {
                "; actions stay off without CAIRN_UI_TOKEN"
            }
        );
    }
    outln!(
        "dashboard on http://{bound}/ (metrics at /metrics; actions {})",
        if options.auth.enabled() {
            "need CAIRN_UI_TOKEN"
        } else {
            "off: CAIRN_UI_TOKEN is not set"
        }
    );
    Ok(listener)
}

/// Serves the dashboard of `pool` on `listener` until `shutdown`.
pub(crate) async fn serve(
    pool: PgPool,
    options: Options,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    Dashboard::new(pool, options)
        .serve(listener, shutdown)
        .await
        .map_err(|err| Failure::failed(format!("the dashboard stopped: {err}")))
}

/// `cairn ui`.
pub(crate) async fn run(url: Option<&str>, bind: &str) -> Outcome {
    let options = options()?;
    let pool = connect(url, 4).await?;
    crate::migrate(&pool).await?;
    let listener = listen(bind, &options).await?;
    serve(pool, options, listener, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
