//! `/live`: server-sent events telling open pages that the database changed, so they
//! redraw. One cheap look a second (the write-ahead log's position moves with every
//! commit), and a message only when it moved.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use crate::App;

/// How often the database is looked at for each open page.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The event stream; it ends when the server stops.
pub(crate) async fn stream(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = (app, None::<String>);
    let events = futures::stream::unfold(state, |(app, mut seen)| async move {
        let mut stopping = app.stopping.clone();
        loop {
            if *stopping.borrow() {
                return None;
            }
            tokio::select! {
                _ = stopping.changed() => return None,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            let Some(position) = position(&app).await else {
                continue;
            };
            let moved = seen.as_ref().is_some_and(|before| *before != position);
            let first = seen.is_none();
            seen = Some(position.clone());
            if moved || first {
                let event = Event::default().data(position);
                return Some((Ok(event), (app, seen)));
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Where the database's write-ahead log is; `None` when it cannot be read (a standby, a
/// hiccup), and the page then waits for the next look.
async fn position(app: &App) -> Option<String> {
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&app.pool)
        .await
        .ok()
}
