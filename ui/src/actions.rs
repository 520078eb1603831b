//! What the dashboard can change: cancel a run, retry a dead letter, pause or resume a
//! schedule. Each checks [`crate::auth::authorize`] first and answers with a redirect
//! back to the page it was asked from.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use cairn_runner::RunId;
use serde::Deserialize;
use tracing::info;

use crate::App;
use crate::auth::authorize;

/// An action's form: only the session's CSRF token. A bearer client may send no body
/// at all, so any body is read and an unreadable one counts as none.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for ActionForm {
    type Rejection = std::convert::Infallible;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .unwrap_or_default();
        Ok(serde_urlencoded::from_bytes(&body).unwrap_or_default())
    }
}

fn refused(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, crate::format::text(&message.to_string())).into_response()
}

fn run_id(raw: &str) -> Result<RunId, String> {
    RunId::from_str(raw).map_err(|_| format!("{raw:?} is not a run id"))
}

/// `POST /runs/{id}/cancel`.
pub(crate) async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    if let Err(refusal) = authorize(&app.auth, &headers, form.csrf.as_deref()) {
        return refusal.into_response();
    }
    let id = match run_id(&id) {
        Ok(id) => id,
        Err(message) => return refused(StatusCode::NOT_FOUND, message),
    };
    match app.client.cancel(id).await {
        Ok(status) => {
            info!(run = %id, %status, "cancel requested from the dashboard");
            Redirect::to(&format!("/runs/{id}")).into_response()
        }
        Err(err) if err.is_bad_input() => refused(StatusCode::CONFLICT, err),
        Err(err) => refused(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}

/// `POST /dead-letters/{id}/retry`.
pub(crate) async fn retry(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: ActionForm,
) -> Response {
    if let Err(refusal) = authorize(&app.auth, &headers, form.csrf.as_deref()) {
        return refusal.into_response();
    }
    let id = match run_id(&id) {
        Ok(id) => id,
        Err(message) => return refused(StatusCode::NOT_FOUND, message),
    };
    match app.dead_letters.retry(id).await {
        Ok(retried) => {
            info!(run = %id, kept = retried.kept_steps, "retry requested from the dashboard");
            Redirect::to(&format!("/runs/{id}")).into_response()
        }
        Err(err) if err.is_bad_input() => refused(StatusCode::CONFLICT, err),
        Err(err) => refused(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}

/// `POST /schedules/{name}/pause`.
pub(crate) async fn pause(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: ActionForm,
) -> Response {
    set_enabled(&app, &headers, &name, form, false).await
}

/// `POST /schedules/{name}/resume`.
pub(crate) async fn resume(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: ActionForm,
) -> Response {
    set_enabled(&app, &headers, &name, form, true).await
}

async fn set_enabled(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    form: ActionForm,
    on: bool,
) -> Response {
    if let Err(refusal) = authorize(&app.auth, headers, form.csrf.as_deref()) {
        return refusal.into_response();
    }
    let result = if on {
        app.schedules.resume(name).await
    } else {
        app.schedules.pause(name).await
    };
    match result {
        Ok(_) => {
            info!(
                schedule = name,
                enabled = on,
                "schedule changed from the dashboard"
            );
            Redirect::to("/schedules").into_response()
        }
        Err(err) if err.is_bad_input() => refused(StatusCode::NOT_FOUND, err),
        Err(err) => refused(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}
