//! Where each stream of a source stands (`cairn sync status`), and forgetting a
//! stream's state so the next sync reads it whole (`cairn sync reset`).

use cairn_connectors::warehouse::{Alert, Warehouse, WarehouseError, quote_ident, resolve_alerts};
use cairn_runner::{Error, RunId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool};

use super::sources::{SyncTarget, input_target};
use super::state::{self, History, StreamKey};
use super::{BACKFILL, FILL, INCREMENTAL, RECONCILE};

/// One stream of a source, as `cairn sync status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// The stream.
    pub stream: String,
    /// Its warehouse table, `schema.stream`.
    pub table: String,
    /// The watermark the next incremental run starts from.
    pub watermark: Option<String>,
    /// The stream's latest sync run: incremental, backfill or reconcile.
    pub last_run: Option<LastRun>,
    /// The stream's latest column fill (new columns reaching old rows), with its progress.
    pub column_fill: Option<LastRun>,
    /// Whether its history is complete, and the backfill's progress if not.
    pub history: History,
    /// Rows not marked deleted.
    pub live_rows: i64,
    /// Rows marked deleted by reconciliation.
    pub deleted_rows: i64,
    /// Records in quarantine.
    pub quarantined: i64,
    /// Open alerts about it.
    pub alerts: Vec<Alert>,
}

/// A stream's latest sync run.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    /// The run.
    pub id: RunId,
    /// `sync.incremental`, `sync.backfill` or `sync.reconcile`.
    pub workflow: String,
    /// Where it is.
    pub status: String,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its error's message, if it failed.
    pub error: Option<String>,
    /// The progress it reported last (pages, records, the vendor's total).
    pub progress: Option<Value>,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: RunId,
    workflow: String,
    status: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    input: Value,
    error: Option<Value>,
    progress: Option<Value>,
}

/// How many of a stream name's latest runs are read to find this source's latest one.
const RUNS_LOOKED_AT: i64 = 200;

/// The status of every stream of `target`'s source, landing in its warehouse schema.
pub async fn stream_status(pool: &PgPool, target: &SyncTarget) -> Result<Vec<StreamStatus>, Error> {
    let source = target.source.as_str();
    let schema = target.schema.as_str();
    let warehouse = Warehouse::new(source, schema).map_err(Error::permanent)?;
    let mut conn = pool.acquire().await?;
    let open_alerts = cairn_connectors::warehouse::list_alerts(pool).await?;
    let mut statuses = Vec::new();
    for stream in &target.streams {
        let stream = stream.as_str();
        let key = StreamKey {
            source: source.to_owned(),
            schema: schema.to_owned(),
            stream: stream.to_owned(),
        };
        let watermark = state::watermark(&mut conn, &key).await?;
        let history = state::history(&mut conn, &key).await?;
        let (live_rows, deleted_rows) = match warehouse.owner(&mut conn, stream).await? {
            Some(owner) if owner != source => (0, 0),
            _ => rows(&mut conn, schema, stream).await?,
        };
        let quarantined: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.quarantine
              WHERE schema_name = $1 AND stream = $2",
        )
        .bind(schema)
        .bind(stream)
        .fetch_one(&mut *conn)
        .await?;
        let alerts = open_alerts
            .iter()
            .filter(|a| a.source == source && a.stream == stream)
            .cloned()
            .collect();
        let (last_run, column_fill) = last_runs(&mut conn, target, stream).await?;
        statuses.push(StreamStatus {
            stream: stream.to_owned(),
            table: format!("{schema}.{stream}"),
            watermark,
            last_run,
            column_fill,
            history,
            live_rows,
            deleted_rows,
            quarantined,
            alerts,
        });
    }
    Ok(statuses)
}

/// Every source and schema that has synced, with the streams it has synced: what the
/// dashboard shows without the sources' files.
pub async fn synced_targets(pool: &PgPool) -> Result<Vec<SyncTarget>, Error> {
    let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT source, schema_name, array_agg(stream ORDER BY stream)
           FROM cairn.sync_cursors GROUP BY source, schema_name ORDER BY source, schema_name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(source, schema, streams)| SyncTarget {
            source,
            schema,
            streams,
            credential: None,
        })
        .collect())
}

/// Live and deleted rows of `schema.stream`, zero when it has no table yet.
async fn rows(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    stream: &str,
) -> Result<(i64, i64), Error> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT table_name FROM cairn.warehouse_tables WHERE schema_name = $1 AND stream = $2",
    )
    .bind(schema)
    .bind(stream)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(table) = table else {
        return Ok((0, 0));
    };
    let quoted = |name: &str| quote_ident(name).map_err(|e: WarehouseError| Error::permanent(e));
    let sql = format!(
        "SELECT count(*) FILTER (WHERE \"_deleted_at\" IS NULL),
                count(*) FILTER (WHERE \"_deleted_at\" IS NOT NULL)
           FROM {}.{}",
        quoted(schema)?,
        quoted(&table)?
    );
    Ok(sqlx::query_as(AssertSqlSafe(sql)).fetch_one(conn).await?)
}

/// The latest sync run (incremental, backfill or reconcile) and the latest column fill
/// for `stream` of this source and schema: runs carry their source's file, so the latest
/// runs of the stream's name are read back and the first that names this source counts.
async fn last_runs(
    conn: &mut sqlx::PgConnection,
    target: &SyncTarget,
    stream: &str,
) -> Result<(Option<LastRun>, Option<LastRun>), Error> {
    let candidates: Vec<RunRow> = sqlx::query_as(
        "SELECT id, workflow, status, created_at, finished_at, input, error, progress
           FROM cairn.runs
          WHERE workflow LIKE 'sync.%' AND input->>'stream' = $1
          ORDER BY created_at DESC LIMIT $2",
    )
    .bind(stream)
    .bind(RUNS_LOOKED_AT)
    .fetch_all(conn)
    .await?;
    let ours: Vec<RunRow> = candidates
        .into_iter()
        .filter(|run| {
            input_target(&run.input)
                .is_some_and(|(source, schema)| source == target.source && schema == target.schema)
        })
        .collect();
    let latest = |workflows: &[&str]| {
        ours.iter()
            .find(|run| workflows.contains(&run.workflow.as_str()))
            .map(|run| LastRun {
                id: run.id,
                workflow: run.workflow.clone(),
                status: run.status.clone(),
                created_at: run.created_at,
                finished_at: run.finished_at,
                error: run
                    .error
                    .as_ref()
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                progress: run.progress.clone(),
            })
    };
    Ok((latest(&[INCREMENTAL, BACKFILL, RECONCILE]), latest(&[FILL])))
}

/// What [`reset_stream`] forgot.
#[derive(Debug, Clone, Serialize)]
pub struct Reset {
    /// The stream.
    pub stream: String,
    /// The watermark it had.
    pub watermark: Option<String>,
    /// Whether there was anything to forget.
    pub forgotten: bool,
}

/// Forgets `stream`'s watermark, history and backfill resume point, so that its next
/// sync reads it whole; resolves its `incomplete_history` alert. The warehouse table and
/// its rows stay.
pub async fn reset_stream(
    pool: &PgPool,
    target: &SyncTarget,
    stream: &str,
) -> Result<Reset, Error> {
    let mut tx = pool.begin().await?;
    let watermark: Option<Option<String>> = sqlx::query_scalar(
        "DELETE FROM cairn.sync_cursors
          WHERE source = $1 AND schema_name = $2 AND stream = $3
         RETURNING watermark",
    )
    .bind(&target.source)
    .bind(&target.schema)
    .bind(stream)
    .fetch_optional(&mut *tx)
    .await?;
    resolve_alerts(&mut tx, state::INCOMPLETE_HISTORY, &target.source, stream).await?;
    tx.commit().await?;
    Ok(Reset {
        stream: stream.to_owned(),
        forgotten: watermark.is_some(),
        watermark: watermark.flatten(),
    })
}

/// Forgets the sync state (watermarks, backfill progress) of every stream landing in
/// warehouse schema `schema`, as when the schema itself is dropped.
pub async fn forget_schema(pool: &PgPool, schema: &str) -> Result<u64, Error> {
    let forgotten = sqlx::query("DELETE FROM cairn.sync_cursors WHERE schema_name = $1")
        .bind(schema)
        .execute(pool)
        .await?;
    Ok(forgotten.rows_affected())
}
