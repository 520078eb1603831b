//! `/quarantine`: records the warehouse could not hold as they came, with why.

use std::sync::Arc;

use axum::extract::State;
use chrono::Utc;
use maud::{Markup, html};

use super::PageError;
use crate::App;
use crate::auth::Viewer;
use crate::format::{cut, text, when};
use crate::layout::{Nav, page};

/// Records listed.
const SHOWN: i64 = 200;

/// `GET /quarantine`.
pub(crate) async fn list(State(app): State<Arc<App>>, viewer: Viewer) -> Result<Markup, PageError> {
    let records = app.dead_letters.quarantined(None, None, SHOWN).await?;
    let now = Utc::now();
    let body = html! {
        div #live {
            @if records.is_empty() {
                p.none { "No quarantined records." }
            } @else {
                table.quarantine {
                    thead { tr {
                        th.num { "Id" } th { "Source" } th { "Stream" } th { "Record" } th { "Kind" } th { "Why" }
                        th.num { "Times" } th { "Last seen" }
                    } }
                    tbody {
                        @for record in &records {
                            tr data-record=(record.id) {
                                td.num { (record.id) }
                                td { (record.source) }
                                td { (record.schema_name) "." (record.stream) }
                                td.mono {
                                    (record.record_id.as_deref().unwrap_or("?"))
                                    pre.json { (cut(&text(&record.record_text), 400)) }
                                }
                                td { (record.kind) }
                                td { (text(&record.reason)) }
                                td.num { (record.times) }
                                td { (when(record.last_seen, now)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Quarantine", Nav::Quarantine, &viewer, body))
}
