//! cairn's dashboard: server-rendered pages of what the engine and the syncs are doing
//! (runs and their steps, schedules, rate budgets, dead letters, quarantine, alerts,
//! syncs), redrawn as the database changes, and Prometheus metrics at `/metrics`.
//!
//! `cairn ui` serves it alone; `cairn worker --http ADDR` mounts it beside a worker, whose
//! own step counters then appear in `/metrics` too. Pages only read. The few actions
//! (cancel a run, retry a dead letter, pause or resume a schedule) need the token set in
//! `CAIRN_UI_TOKEN` and are refused from other sites (see [`auth`]).

mod actions;
mod assets;
pub mod auth;
mod format;
mod layout;
mod live;
pub mod metrics;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use cairn_runner::{Client, DeadLetters, Schedules};
use sqlx::PgPool;

pub use auth::{Auth, TokenError};
pub use metrics::Metrics;

/// What a dashboard serves with.
#[derive(Clone)]
pub struct Options {
    /// Who may act: built from `CAIRN_UI_TOKEN` (or without one: nobody).
    pub auth: Auth,
    /// The process's metrics, for `/metrics`.
    pub metrics: Metrics,
}

/// The state every handler shares.
pub(crate) struct App {
    pub(crate) pool: PgPool,
    pub(crate) client: Client,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) schedules: Schedules,
    pub(crate) auth: Auth,
    pub(crate) metrics: Metrics,
}

/// A dashboard ready to serve.
pub struct Dashboard {
    router: Router,
}

impl Dashboard {
    /// The dashboard of the cairn database behind `pool`.
    pub fn new(pool: PgPool, options: Options) -> Self {
        let app = Arc::new(App {
            client: Client::new(pool.clone()),
            dead_letters: DeadLetters::new(pool.clone()),
            schedules: Schedules::new(pool.clone()),
            pool,
            auth: options.auth,
            metrics: options.metrics,
        });
        Self {
            router: routes(app),
        }
    }

    /// The routes, to serve or to mount in a router of one's own.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then lets requests under way
    /// finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/runs", get(pages::runs::list))
        .route("/runs/{id}", get(pages::run::show))
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/schedules", get(pages::schedules::list))
        .route("/schedules/{name}/pause", post(actions::pause))
        .route("/schedules/{name}/resume", post(actions::resume))
        .route("/budgets", get(pages::budgets::list))
        .route("/dead-letters", get(pages::dead_letters::list))
        .route("/dead-letters/{id}/retry", post(actions::retry))
        .route("/quarantine", get(pages::quarantine::list))
        .route("/alerts", get(pages::alerts::list))
        .route("/syncs", get(pages::syncs::list))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/live", get(live::position))
        .route("/metrics", get(metrics::scrape))
        .route("/assets/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(guard_headers))
        .with_state(app)
}

/// Headers every answer carries: scripts and styles only from the dashboard itself (an
/// escaped string could never run anyway; this is the second wall), no framing (a
/// button cannot be clicked through another site's page), no referrer leaving. The
/// referrer policy is `same-origin`, not `no-referrer`: under the latter a browser sends
/// `Origin: null` with every form post, and the origin check would refuse them all.
async fn guard_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
