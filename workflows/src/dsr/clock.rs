//! The [`CLOCK`](super::CLOCK) workflow: a request's legal clock on durable timers.
//! It sleeps (parked, holding no worker) until each configured share of the window,
//! woken early by a `changed` event (an extension moved the deadline, the request
//! closed); at each share the request has not closed by, it raises a `dsr_deadline`
//! alert and audits it.

use cairn_connectors::warehouse::alerts::{NewAlert, raise_alerts};
use cairn_runner::{Context, Error};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::audit::{self, Event};
use super::discover::audit_key;
use super::request::ClockInput;

/// What the clock reads of its request before each wait.
#[derive(Debug, Serialize, Deserialize)]
struct Window {
    received: DateTime<Utc>,
    deadline: DateTime<Utc>,
    closed: bool,
}

/// The clock workflow.
pub async fn clock(ctx: Context, input: ClockInput) -> Result<Value, Error> {
    let key = &audit_key(&ctx)?;
    let id = input.request.as_str();
    let pool = ctx.pool();
    let mut shares = input.alerts.clone();
    shares.sort_by(f64::total_cmp);
    shares.dedup();
    let mut next = 0;
    let mut alerted = Vec::new();
    while let Some(&share) = shares.get(next) {
        let window: Window = ctx
            .step("read the deadline", || async move {
                let row = sqlx::query(
                    "SELECT received_at, deadline, closed_at IS NOT NULL AS closed
                       FROM cairn.dsr_requests WHERE id = $1",
                )
                .bind(id)
                .fetch_one(pool)
                .await?;
                Ok(Window {
                    received: row.try_get("received_at")?,
                    deadline: row.try_get("deadline")?,
                    closed: row.try_get("closed")?,
                })
            })
            .await?;
        if window.closed {
            break;
        }
        let span = (window.deadline - window.received).num_milliseconds() as f64;
        let at = window.received + chrono::TimeDelta::milliseconds((span * share) as i64);
        let now = ctx.now().await?;
        if let Ok(wait) = (at - now).to_std()
            && !wait.is_zero()
            && ctx
                .wait_for_event::<Value>("changed", wait)
                .await?
                .is_some()
        {
            continue;
        }
        let percent = (share * 100.0).round() as u32;
        ctx.transaction(format!("alert at {percent}%"), |tx| async move {
            let mut conn = tx.conn().await?;
            let open: Option<(DateTime<Utc>, String)> = sqlx::query_as(
                "SELECT deadline, phase FROM cairn.dsr_requests
                  WHERE id = $1 AND closed_at IS NULL FOR UPDATE",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((deadline, phase)) = open else {
                return Ok(());
            };
            let message = if percent >= 100 {
                format!(
                    "privacy request {id} is overdue: its deadline {} passed while it was {phase}",
                    deadline.to_rfc3339()
                )
            } else {
                format!(
                    "privacy request {id} has used {percent}% of its window and is {phase}; \
                     deadline {}",
                    deadline.to_rfc3339()
                )
            };
            raise_alerts(
                &mut conn,
                &[NewAlert {
                    kind: "dsr_deadline".to_owned(),
                    source: "dsr".to_owned(),
                    stream: id.to_owned(),
                    detail: format!("{percent}%"),
                    message,
                }],
            )
            .await
            .map_err(|e| Error::transient(e.to_string()))?;
            audit::append(
                &mut conn,
                key,
                Event {
                    request: id,
                    action: "deadline_alert",
                    source: "",
                    outcome: if percent >= 100 { "overdue" } else { "warned" },
                    detail: json!({"share": percent, "phase": phase}),
                },
            )
            .await?;
            Ok(())
        })
        .await?;
        alerted.push(percent);
        next += 1;
    }
    Ok(json!({"request": id, "alerted": alerted}))
}
