//! What a pipeline keeps in Postgres: its watermark, the acknowledgements of a step in
//! flight, each destination record's id and ETag, and the records a destination refused.

use std::collections::HashMap;

use cairn_runner::seal::{Column, Sealer};
use cairn_runner::{Error, RunId};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// The records a destination refused, sealed when keys are configured.
pub const DESTINATION_REJECTS: Column = Column {
    table: "destination_rejects",
    plain: "record",
    sealed: "record_sealed",
    what: "a record a destination refused",
};

/// A pipeline: a source's stream into a destination's stream.
#[derive(Clone, Debug)]
pub(crate) struct PipelineKey {
    pub(crate) source: String,
    pub(crate) stream: String,
    pub(crate) destination: String,
    pub(crate) dest_stream: String,
}

/// What became of one record's write, as acknowledged while its step runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ack {
    /// The destination holds it.
    Applied {
        dest_id: String,
        etag: Option<String>,
        repeated: bool,
    },
    /// A `post` stream's record the destination already has (created by an earlier
    /// run): it is not created again.
    AlreadyCreated,
    /// Refused for itself, or left by a conflict policy: a dead letter or an alert.
    Refused {
        status: Option<u16>,
        reason: String,
        /// Raise an alert rather than keep a dead letter (`skip_and_alert`).
        alert: bool,
    },
}

pub(crate) async fn watermark(pool: &PgPool, key: &PipelineKey) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT watermark FROM cairn.pipeline_cursors
          WHERE source = $1 AND stream = $2 AND destination = $3 AND dest_stream = $4",
    )
    .bind(&key.source)
    .bind(&key.stream)
    .bind(&key.destination)
    .bind(&key.dest_stream)
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// Moves the pipeline's watermark, in the step's transaction.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    key: &PipelineKey,
    watermark: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cairn.pipeline_cursors (source, stream, destination, dest_stream, watermark)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source, stream, destination, dest_stream) DO UPDATE
            SET watermark = EXCLUDED.watermark, updated_at = now()",
    )
    .bind(&key.source)
    .bind(&key.stream)
    .bind(&key.destination)
    .bind(&key.dest_stream)
    .bind(watermark)
    .execute(conn)
    .await?;
    Ok(())
}

/// The acknowledgements already recorded for the step at `position` of `run`.
pub(crate) async fn acks(
    pool: &PgPool,
    run: RunId,
    position: i32,
) -> Result<HashMap<String, Ack>, Error> {
    let rows: Vec<(String, sqlx::types::Json<Ack>)> = sqlx::query_as(
        "SELECT record_id, outcome FROM cairn.pipeline_acks WHERE run_id = $1 AND position = $2",
    )
    .bind(run)
    .bind(position)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id, ack)| (id, ack.0)).collect())
}

/// Records that the destination acknowledged `record_id`'s write, at once and outside
/// the step's transaction: a crash before the step commits keeps it.
pub(crate) async fn record_ack(
    pool: &PgPool,
    run: RunId,
    position: i32,
    record_id: &str,
    ack: &Ack,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cairn.pipeline_acks (run_id, position, record_id, outcome)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (run_id, position, record_id) DO UPDATE SET outcome = EXCLUDED.outcome",
    )
    .bind(run)
    .bind(position)
    .bind(record_id)
    .bind(sqlx::types::Json(ack))
    .execute(pool)
    .await?;
    Ok(())
}

/// Each of `ids` the destination already holds: its id there and last ETag.
pub(crate) async fn known(
    pool: &PgPool,
    key: &PipelineKey,
    ids: &[String],
) -> Result<HashMap<String, (String, Option<String>)>, Error> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT record_id, dest_id, etag FROM cairn.destination_records
          WHERE destination = $1 AND stream = $2 AND record_id = ANY($3)",
    )
    .bind(&key.destination)
    .bind(&key.dest_stream)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, dest_id, etag)| (id, (dest_id, etag)))
        .collect())
}

/// A record's write, settled: what the step's transaction records of it.
pub(crate) struct Settled<'a> {
    pub(crate) record_id: &'a str,
    pub(crate) ack: &'a Ack,
    pub(crate) record: &'a serde_json::Value,
}

/// Records the settled writes of a step in its transaction: the destination's ids and
/// ETags, the dead letters, the alerts; and forgets the step's acknowledgements, which
/// these now stand for.
pub(crate) async fn settle(
    conn: &mut PgConnection,
    sealer: &Sealer,
    key: &PipelineKey,
    run: RunId,
    position: i32,
    settled: &[Settled<'_>],
) -> Result<(), Error> {
    let applied: Vec<(&str, &str, Option<&str>)> = settled
        .iter()
        .filter_map(|s| match s.ack {
            Ack::Applied { dest_id, etag, .. } => {
                Some((s.record_id, dest_id.as_str(), etag.as_deref()))
            }
            _ => None,
        })
        .collect();
    if !applied.is_empty() {
        sqlx::query(
            "INSERT INTO cairn.destination_records (destination, stream, record_id, dest_id, etag)
             SELECT $1, $2, r, d, e FROM unnest($3::text[], $4::text[], $5::text[]) AS w(r, d, e)
             ON CONFLICT (destination, stream, record_id) DO UPDATE
                SET dest_id = EXCLUDED.dest_id, etag = EXCLUDED.etag, written_at = now()",
        )
        .bind(&key.destination)
        .bind(&key.dest_stream)
        .bind(applied.iter().map(|a| a.0).collect::<Vec<_>>())
        .bind(applied.iter().map(|a| a.1).collect::<Vec<_>>())
        .bind(applied.iter().map(|a| a.2).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let mut alerts = Vec::new();
    let mut unusable: Vec<&str> = Vec::new();
    for s in settled {
        if let Ack::Applied { dest_id, .. } = s.ack
            && dest_id.is_empty()
        {
            unusable.push(s.record_id);
            continue;
        }
        let Ack::Refused {
            status,
            reason,
            alert,
        } = s.ack
        else {
            continue;
        };
        if *alert {
            alerts.push(cairn_connectors::warehouse::NewAlert {
                kind: "write_conflict".to_owned(),
                source: key.destination.clone(),
                stream: key.dest_stream.clone(),
                detail: s.record_id.to_owned(),
                message: reason.clone(),
            });
            continue;
        }
        let record = s.record.to_string();
        let record = sealer
            .store(&DESTINATION_REJECTS, &record)
            .map_err(|err| Error::permanent(err).with_category("config"))?;
        sqlx::query(
            "INSERT INTO cairn.destination_rejects
                    (destination, stream, record_id, run_id, status, reason, record,
                     record_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
        )
        .bind(&key.destination)
        .bind(&key.dest_stream)
        .bind(s.record_id)
        .bind(run)
        .bind(status.map(i32::from))
        .bind(cairn_runner::redact::redact(reason).as_ref())
        .bind(record.plain())
        .bind(record.sealed())
        .execute(&mut *conn)
        .await?;
    }
    if let Some(last) = unusable.last() {
        alerts.push(cairn_connectors::warehouse::NewAlert {
            kind: "destination_id_unusable".to_owned(),
            source: key.destination.clone(),
            stream: key.dest_stream.clone(),
            detail: "created without a usable id".to_owned(),
            message: format!(
                "the destination created {} record(s) of this page (the last: {last}) but \
                 answered no id cairn can keep (missing, over {} bytes, or with control \
                 characters); they are recorded as written, so they are not created again, \
                 and their ids there are unknown",
                unusable.len(),
                cairn_connectors::destination::MAX_DEST_ID
            ),
        });
    }
    cairn_connectors::warehouse::raise_alerts(conn, &alerts)
        .await
        .map_err(|err| Error::transient(err).with_category("alerts"))?;
    sqlx::query("DELETE FROM cairn.pipeline_acks WHERE run_id = $1 AND position = $2")
        .bind(run)
        .bind(position)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets the records destinations refused that were put on the list before `before`
/// (retention: each holds a record as the source sent it). Returns how many; with
/// `dry_run`, only counts them.
pub async fn purge_rejects(
    pool: &PgPool,
    before: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
) -> Result<u64, sqlx::Error> {
    let sql = if dry_run {
        "SELECT count(*) FROM cairn.destination_rejects WHERE created_at < $1"
    } else {
        "WITH gone AS (DELETE FROM cairn.destination_rejects WHERE created_at < $1 RETURNING 1)
         SELECT count(*) FROM gone"
    };
    let n: i64 = sqlx::query_scalar(sql).bind(before).fetch_one(pool).await?;
    Ok(n.unsigned_abs())
}
