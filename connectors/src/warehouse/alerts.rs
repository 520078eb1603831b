//! Alerts: what a human must look at (`cairn alerts`) — schema drift, records the
//! warehouse cannot hold, incomplete id sets.
//!
//! An open alert is unique per kind, source, stream and detail; raising it again bumps its
//! count and `last_seen` instead of adding a row. Every raise is also logged with
//! `tracing::warn!`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tracing::warn;

use super::error::WarehouseError;

/// An alert to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// What kind of problem: `schema_drift`, `invalid_record`, `incomplete_id_set`, or a
    /// kind of the caller's own (a sync workflow raises `incomplete_id_set` when fetching
    /// the id set failed).
    pub kind: String,
    /// The source it concerns.
    pub source: String,
    /// The stream it concerns.
    pub stream: String,
    /// What exactly, stable across occurrences: alerts are deduplicated on it.
    pub detail: String,
    /// The message for humans; the latest one is kept.
    pub message: String,
}

/// An open alert, as `cairn alerts` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Alert {
    /// The alert's id.
    pub id: i64,
    /// What kind of problem (see [`NewAlert::kind`]).
    pub kind: String,
    /// The source it concerns (empty for an alert from before alerts named theirs).
    pub source: String,
    /// The stream it concerns.
    pub stream: String,
    /// What exactly.
    pub detail: String,
    /// The latest message.
    pub message: String,
    /// How many times it was raised.
    pub count: i64,
    /// When it was first raised.
    pub first_seen: DateTime<Utc>,
    /// When it was last raised.
    pub last_seen: DateTime<Utc>,
}

/// Raises `alerts` in one statement on the caller's connection (so they commit with the
/// caller's transaction) and logs each one.
pub async fn raise_alerts(
    conn: &mut PgConnection,
    alerts: &[NewAlert],
) -> Result<(), WarehouseError> {
    if alerts.is_empty() {
        return Ok(());
    }
    // One statement cannot bump the same open alert twice: merge repeats first.
    let mut unique: Vec<&NewAlert> = Vec::with_capacity(alerts.len());
    for alert in alerts {
        match unique.iter_mut().find(|a| {
            (&a.kind, &a.source, &a.stream, &a.detail)
                == (&alert.kind, &alert.source, &alert.stream, &alert.detail)
        }) {
            Some(slot) => *slot = alert,
            None => unique.push(alert),
        }
    }
    for alert in &unique {
        warn!(
            kind = %alert.kind,
            source = %alert.source,
            stream = %alert.stream,
            detail = %alert.detail,
            "warehouse alert: {}",
            alert.message
        );
    }
    // Text PostgreSQL cannot store (a NUL a vendor put in an error) must not lose the
    // alert, and a secret a vendor echoed must not be stored with it.
    let column = |f: fn(&NewAlert) -> &str| {
        unique
            .iter()
            .map(|a| cairn_runner::redact::redact(f(a)).replace('\0', "\u{FFFD}"))
            .collect::<Vec<String>>()
    };
    sqlx::query(
        "INSERT INTO cairn.alerts (kind, source, stream, detail, message)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT (kind, source, stream, detail) WHERE resolved_at IS NULL DO UPDATE
            SET count = alerts.count + 1, last_seen = now(), message = EXCLUDED.message",
    )
    .bind(column(|a| &a.kind))
    .bind(column(|a| &a.source))
    .bind(column(|a| &a.stream))
    .bind(column(|a| &a.detail))
    .bind(column(|a| &a.message))
    .execute(conn)
    .await
    .map_err(WarehouseError::db(&unique[0].stream, "raising alerts"))?;
    Ok(())
}

/// Resolves the open alerts of `kind` about `source`'s `stream`, in the caller's
/// transaction: what they said is over (a backfill completed, a column filled).
pub async fn resolve_alerts(
    conn: &mut PgConnection,
    kind: &str,
    source: &str,
    stream: &str,
) -> Result<u64, WarehouseError> {
    let done = sqlx::query(
        "UPDATE cairn.alerts SET resolved_at = now()
          WHERE kind = $1 AND source = $2 AND stream = $3 AND resolved_at IS NULL",
    )
    .bind(kind)
    .bind(source)
    .bind(stream)
    .execute(conn)
    .await
    .map_err(WarehouseError::db(stream, "resolving alerts"))?;
    Ok(done.rows_affected())
}

/// The open alerts, most recently seen first.
pub async fn list_alerts(pool: &PgPool) -> Result<Vec<Alert>, WarehouseError> {
    sqlx::query_as(
        "SELECT id, kind, source, stream, detail, message, count, first_seen, last_seen
           FROM cairn.alerts WHERE resolved_at IS NULL
          ORDER BY last_seen DESC, id DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(WarehouseError::ListAlerts)
}
