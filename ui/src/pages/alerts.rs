//! `/alerts`: what needs a person (schema drift, incomplete id sets, deadlines, dead
//! letters, privacy-request clocks), newest first.

use std::sync::Arc;

use axum::extract::State;
use chrono::Utc;
use maud::{Markup, html};

use super::PageError;
use crate::App;
use crate::auth::Viewer;
use crate::format::{text, when};
use crate::layout::{Nav, page};

/// `GET /alerts`.
pub(crate) async fn list(State(app): State<Arc<App>>, viewer: Viewer) -> Result<Markup, PageError> {
    let alerts = cairn_connectors::warehouse::list_alerts(&app.pool).await?;
    let now = Utc::now();
    let body = html! {
        div #live {
            @if alerts.is_empty() {
                p.none { "No open alerts." }
            } @else {
                table.alerts {
                    thead { tr {
                        th { "Kind" } th { "Source" } th { "Stream" } th { "Message" } th.num { "Times" }
                        th { "First seen" } th { "Last seen" }
                    } }
                    tbody {
                        @for alert in &alerts {
                            tr data-alert=(alert.id) {
                                td { (alert.kind) }
                                td { (alert.source) }
                                td { (alert.stream) }
                                td { (text(&alert.message)) }
                                td.num { (alert.count) }
                                td { (when(alert.first_seen, now)) }
                                td { (when(alert.last_seen, now)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Alerts", Nav::Alerts, &viewer, body))
}
