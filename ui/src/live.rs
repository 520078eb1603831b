//! `/live`: where the database's write-ahead log stands, which moves with every commit.
//! Each open page asks every two seconds (while it is visible) and redraws when the answer
//! changes.
//!
//! Polling rather than a held stream: a browser keeps at most six connections to one host
//! over HTTP/1.1, and a stream per open tab (or per page still in the back-forward cache)
//! would use them up and leave the next page waiting. A look costs one indexed-free
//! function call.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::App;

/// `GET /live`: the log's position as text; 503 when it cannot be read (a standby, a
/// hiccup), and the page then simply asks again.
pub(crate) async fn position(State(app): State<Arc<App>>) -> Response {
    match sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&app.pool)
        .await
    {
        Ok(position) => position.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
