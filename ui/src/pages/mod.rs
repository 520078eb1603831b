//! The dashboard's views, one file each. Every page reads the database as it stands;
//! the live script redraws each page's `#live` part when that changes.

pub(crate) mod alerts;
pub(crate) mod budgets;
pub(crate) mod dead_letters;
pub(crate) mod quarantine;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod syncs;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use crate::auth::Viewer;
use crate::layout::{Nav, page};

/// `/`: the runs.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/runs")
}

/// Any other path.
pub(crate) async fn not_found(viewer: Viewer) -> Response {
    let body = html! { p { "There is no such page. " a href="/runs" { "See the runs." } } };
    (
        StatusCode::NOT_FOUND,
        page("Not found", Nav::None, &viewer, body),
    )
        .into_response()
}

/// A page that could not be drawn: the database did not answer, or the thing asked for
/// does not exist. The message is masked like every other text shown.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for PageError {
    fn from(err: E) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("cannot read the database: {err}"),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html! { p.error { (crate::format::text(&self.message)) } };
        let title = if self.status == StatusCode::NOT_FOUND {
            "Not found"
        } else {
            "Cannot show this page"
        };
        (self.status, page(title, Nav::None, &Viewer::Off, body)).into_response()
    }
}
