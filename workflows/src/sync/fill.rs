//! `sync.fill`: new columns reach old rows. When an incremental run adds a column to a
//! table that already held rows, those rows stay NULL there until the vendor changes
//! them: the incremental starts this run, which re-reads the whole stream under the same
//! rate budget, at half the source's rate so that other syncs keep the rest, and lands
//! it through the same upsert, filling the new columns of every row.

use std::time::Duration;

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::warehouse::{NewAlert, raise_alerts};
use cairn_runner::{Client, Context, Error, StartOptions};
use chrono::{DateTime, Utc};

use super::traverse::Keeps;
use super::{FILL, Sync, SyncInput, SyncReport, state};

/// The share of the source's rate limit a fill uses: it is low priority.
const FILL_SHARE: f64 = 0.5;

/// Re-reads the stream and lands every record, filling `input.fill_columns`; resolves
/// the `new_columns` alert when done.
pub async fn fill(ctx: Context, input: SyncInput) -> Result<SyncReport, Error> {
    let mut sync = Sync::open(&ctx, &input).await?;
    if let Some(rate) = sync.source.requests_per_second() {
        let per_sec = rate * FILL_SHARE;
        sync.pace = Some(Duration::from_secs_f64(1.0 / per_sec.max(0.001)));
    }
    let traversal = Traversal::new(PageCursor::start());
    sync.traverse(&ctx, traversal, Keeps::Fill).await
}

/// Starts a fill for `columns` of the stream, when rows synced before `started_at` are
/// there to fill, with an alert saying so; returns whether one was started. Idempotent:
/// the run that added the columns starts one fill, however often this is retried.
pub(crate) async fn start_fill(
    ctx: &Context,
    sync: &Sync,
    input: &SyncInput,
    columns: &[String],
    started_at: DateTime<Utc>,
) -> Result<bool, Error> {
    let key = sync.key();
    let old_rows = state::rows_synced_before(ctx.pool(), &sync.warehouse, &key, started_at).await?;
    if old_rows == 0 {
        return Ok(false);
    }
    let mut fill = input.clone();
    fill.fill_columns = columns.to_vec();
    let options = StartOptions {
        // One fill per run that added columns, however often its step is retried.
        idempotency_key: Some(format!("fill:{}", ctx.run_id())),
        ..StartOptions::default()
    };
    let started = Client::new(ctx.pool().clone())
        .start(FILL, &fill, &options)
        .await
        .map_err(Error::transient)?;
    let alert = NewAlert {
        kind: state::NEW_COLUMNS.to_owned(),
        source: key.source.clone(),
        stream: key.stream.clone(),
        detail: format!("new columns {}", columns.join(", ")),
        message: format!(
            "stream {:?} gained column(s) {}; {old_rows} row(s) synced before them are being \
             filled by run {} (a re-read at half the source's rate)",
            key.stream,
            columns.join(", "),
            started.run_id
        ),
    };
    let mut conn = ctx.pool().acquire().await?;
    raise_alerts(&mut conn, &[alert]).await?;
    Ok(true)
}
