//! What the dashboard can change: cancel a run, retry a dead letter, pause or resume a
//! schedule. Each takes [`Authorized`] first (so nothing is read or changed for a request
//! [`crate::auth::authorize`] refuses) and answers with a redirect back to the page it
//! was asked from.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use cairn_runner::RunId;
use serde::Deserialize;
use tracing::info;

use crate::App;
use crate::auth::authorize;

/// An action's form: only the session's CSRF token.
#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// A request allowed to act: a bearer token, or a signed-in session with its CSRF token
/// from the dashboard's own origin. A bearer client may send no body at all, so any body
/// is read and an unreadable one counts as none.
pub(crate) struct Authorized;

impl FromRequest<Arc<App>> for Authorized {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, app).await.unwrap_or_default();
        let form: ActionForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        authorize(&app.auth, &headers, form.csrf.as_deref())
            .map(|()| Self)
            .map_err(IntoResponse::into_response)
    }
}

/// The answer to an action: back to `page` when it was done, else why not (a conflict
/// with the thing's state, or the database).
fn answer<T, E: std::fmt::Display>(
    result: Result<T, E>,
    bad_input: impl Fn(&E) -> bool,
    page: &str,
) -> Response {
    match result {
        Ok(_) => Redirect::to(page).into_response(),
        Err(err) => {
            let status = if bad_input(&err) {
                StatusCode::CONFLICT
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, crate::format::text(&err.to_string())).into_response()
        }
    }
}

/// `POST /runs/{id}/cancel`.
pub(crate) async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<RunId>,
    _: Authorized,
) -> Response {
    let result = app.client.cancel(id).await;
    if let Ok(status) = &result {
        info!(run = %id, %status, "cancel requested from the dashboard");
    }
    answer(result, |err| err.is_bad_input(), &format!("/runs/{id}"))
}

/// `POST /dead-letters/{id}/retry`.
pub(crate) async fn retry(
    State(app): State<Arc<App>>,
    Path(id): Path<RunId>,
    _: Authorized,
) -> Response {
    let result = app.dead_letters.retry(id).await;
    if let Ok(retried) = &result {
        info!(run = %id, kept = retried.kept_steps, "retry requested from the dashboard");
    }
    answer(result, |err| err.is_bad_input(), &format!("/runs/{id}"))
}

/// `POST /schedules/{name}/pause`.
pub(crate) async fn pause(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    _: Authorized,
) -> Response {
    let result = app.schedules.pause(&name).await;
    if result.is_ok() {
        info!(schedule = name, "schedule paused from the dashboard");
    }
    answer(result, |err| err.is_bad_input(), "/schedules")
}

/// `POST /schedules/{name}/resume`.
pub(crate) async fn resume(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    _: Authorized,
) -> Response {
    let result = app.schedules.resume(&name).await;
    if result.is_ok() {
        info!(schedule = name, "schedule resumed from the dashboard");
    }
    answer(result, |err| err.is_bad_input(), "/schedules")
}
