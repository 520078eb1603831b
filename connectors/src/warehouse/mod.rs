//! The Postgres warehouse sink: one typed table per stream, landed a page at a time.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_connectors::record::Record;
//! use cairn_connectors::warehouse::{StreamSpec, Warehouse};
//! use serde_json::json;
//!
//! let warehouse = Warehouse::new("crm", "crm")?; // source `crm`, schema `crm`
//! let contacts = StreamSpec::new("contacts", "id").with_cursor("updated_at");
//! let page = [Record::from_value(
//!     json!({"id": "1", "email": "ada@example.com", "updated_at": "2026-01-01T00:00:00Z"}),
//! )];
//! let mut tx = pool.begin().await?; // in a workflow: `ctx.transaction(.., |tx| ..)`
//! let report = warehouse.upsert_page(&mut tx, &contacts, &page, chrono::Utc::now()).await?;
//! tx.commit().await?;
//! println!("{} upserted, {} quarantined", report.upserted, report.quarantined);
//! # Ok(()) }
//! ```
//!
//! # Tables
//!
//! Each source lands in a schema of its own (by default named after it), one table per
//! stream, so two sources never share a table: a table belongs to the source that
//! created it, and another source's landing, reconciliation or checksum is refused.
//!
//! `<schema>.<stream>` holds the primary key (as text), one typed column per field —
//! `text`, `bigint`, `numeric`, `boolean`, `timestamptz`, or `jsonb` for objects or
//! arrays (one kind per column, recorded in its comment), decided by the field's first
//! non-null value — and the bookkeeping columns
//! `_raw` (the record as received), `_synced_at`, `_source_updated_at` (the cursor field
//! as an instant) and `_deleted_at` (set by reconciliation). The engine side lives in
//! the `cairn` schema: the schema registry (`warehouse_tables`, `warehouse_columns`),
//! `quarantine`, `alerts` and `reconcile_ids`.
//!
//! # Rules
//!
//! - **Idempotent upserts**: a page lands in one statement; a row is rewritten only when
//!   the record changed and is not older by cursor, so re-applying a page changes
//!   nothing and a stale version never overwrites a newer one.
//! - **Schema drift**: a new field becomes a column (`ALTER TABLE ... ADD
//!   COLUMN`); a removed field, a type change or a rename sends the record to
//!   `cairn.quarantine` with its reason and raises an alert ([`alerts`]); the table
//!   keeps its shape until someone maps the change. The rest of the page lands.
//! - **Names** ([`ident`]): vendor names reach SQL only through [`quote_ident`]; names
//!   it refuses or that clash are mapped deterministically to a prefix and a hash, and
//!   the mapping is kept in the registry.
//! - **Reconciliation** ([`reconcile`]): deletes are applied from a complete id set
//!   only; an incomplete one is refused with an alert unless forced.
//!
//! The shape of each table is cached per [`Warehouse`] and checked against the
//! registry's version (one small query per page), so DDL and registry writes happen only
//! when the shape changes.

pub mod admin;
pub mod alerts;
mod classify;
pub mod error;
pub mod ident;
mod land;
pub mod reconcile;
mod schema;
pub mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_runner::seal::Sealer;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgConnection};

pub use admin::{StreamTable, drop_schema, last_landed, purge_quarantine, stream_table};
pub use alerts::{Alert, NewAlert, list_alerts, raise_alerts, resolve_alerts};
pub use classify::MAX_COLUMNS;
pub use error::WarehouseError;
pub use ident::quote_ident;
pub use reconcile::{Checks, ReconcileOutcome};
pub use types::ColumnType;

use crate::record::{Record, Unreadable};
use crate::watermark::{CursorType, DEFAULT_MAX_FUTURE_SKEW_SECS};
use classify::{Drift, classify};
use land::SetAside;
use schema::{Changed, Shape};

/// How often a page is re-classified when other writers change the table's shape
/// between reading it and locking it.
const SHAPE_ATTEMPTS: usize = 5;

/// The warehouse sink for one source and its target schema. Cheap to clone: clones share
/// the cache of table shapes.
#[derive(Clone, Debug)]
pub struct Warehouse {
    source: Arc<str>,
    schema: Arc<str>,
    shapes: Arc<Mutex<HashMap<String, Arc<Shape>>>>,
    sealer: Sealer,
}

/// A stream as the warehouse sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// The stream's name; its table is named after it.
    pub name: String,
    /// The field holding each record's unique id (a string or a number).
    pub primary_key: String,
    /// The field ordering versions of a record (an RFC 3339 timestamp or Unix seconds);
    /// without one, the latest page wins.
    pub cursor_field: Option<String>,
    /// What the cursor field holds: a record whose cursor does not read as this type is
    /// quarantined.
    #[serde(default)]
    pub cursor_type: CursorType,
    /// How far ahead of now a timestamp cursor may lie before its record is quarantined.
    #[serde(default = "default_skew")]
    pub max_future_skew_secs: u64,
    /// How far the vendor's clock may lag ours, in seconds: a stored cursor counts no
    /// later than its row's sync less this, so a correction stamped just before our sync
    /// time (or in the same second) still lands.
    #[serde(default = "default_lag")]
    pub clock_lag_secs: u64,
}

fn default_lag() -> u64 {
    DEFAULT_CLOCK_LAG_SECS
}

/// How far a vendor's clock is taken to lag ours unless a stream says otherwise.
pub const DEFAULT_CLOCK_LAG_SECS: u64 = 5;

fn default_skew() -> u64 {
    DEFAULT_MAX_FUTURE_SKEW_SECS
}

impl StreamSpec {
    /// A stream keyed by `primary_key`, without a cursor field.
    pub fn new(name: impl Into<String>, primary_key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            primary_key: primary_key.into(),
            cursor_field: None,
            cursor_type: CursorType::default(),
            max_future_skew_secs: DEFAULT_MAX_FUTURE_SKEW_SECS,
            clock_lag_secs: DEFAULT_CLOCK_LAG_SECS,
        }
    }

    /// The same stream with versions ordered by `field`, a timestamp.
    pub fn with_cursor(mut self, field: impl Into<String>) -> Self {
        self.cursor_field = Some(field.into());
        self
    }

    /// The same stream with a cursor of type `cursor_type`, timestamps refused beyond
    /// `max_future_skew_secs` ahead of now.
    pub fn with_cursor_type(mut self, cursor_type: CursorType, max_future_skew_secs: u64) -> Self {
        self.cursor_type = cursor_type;
        self.max_future_skew_secs = max_future_skew_secs;
        self
    }
}

/// What [`Warehouse::upsert_page`] did with a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageReport {
    /// Rows inserted or rewritten.
    pub upserted: u64,
    /// Records that landed without writing: identical to, or older than, the stored row.
    pub unchanged: u64,
    /// Records sent to quarantine.
    pub quarantined: u64,
    /// Records dropped because the page holds a newer version of the same key.
    pub superseded: u64,
    /// Records that landed with a NUL or an unpaired surrogate escape replaced by U+FFFD.
    #[serde(default)]
    pub repaired: u64,
    /// The highest cursor value among the records that landed (by the stream's cursor
    /// type), as the vendor wrote it: what may move the watermark.
    #[serde(default)]
    pub watermark: Option<String>,
    /// Columns added to the table (column names, which may differ from field names).
    pub columns_added: Vec<String>,
    /// The details of the alerts raised (deduplicated).
    pub alerts: Vec<String>,
}

impl Warehouse {
    /// A sink landing the streams of the source named `source` in `schema` (created on
    /// first use). Quarantined records and alerts are keyed by the source and stream.
    pub fn new(source: &str, schema: &str) -> Result<Self, WarehouseError> {
        quote_ident(schema)?;
        Ok(Self {
            source: source.into(),
            schema: schema.into(),
            shapes: Arc::default(),
            sealer: Sealer::process(),
        })
    }

    /// Seals quarantined records with `sealer` (a run's: [`Context::sealer`]) rather than
    /// with this process's keys.
    ///
    /// [`Context::sealer`]: cairn_runner::Context::sealer
    #[must_use]
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = sealer;
        self
    }

    /// The target schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The source whose streams it lands.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The source that writes `<schema>.<stream>`, if the table exists and has an owner.
    pub async fn owner(
        &self,
        conn: &mut PgConnection,
        stream: &str,
    ) -> Result<Option<String>, WarehouseError> {
        Ok(schema::version(conn, &self.schema, stream)
            .await?
            .and_then(|(_, owner)| owner))
    }

    /// Lands one page inside the caller's transaction: creates the table on first use,
    /// adds columns for new fields, quarantines drifted records (with their reason) and
    /// raises alerts, and upserts the rest by primary key in one statement.
    ///
    /// Idempotent: re-applying a page changes no row, and a record older (by cursor
    /// field) than the stored row does not overwrite it. Run it in the same transaction
    /// as the cursor advance (a transactional step) so a page takes effect exactly once.
    pub async fn upsert_page(
        &self,
        conn: &mut PgConnection,
        stream: &StreamSpec,
        records: &[Record],
        synced_at: DateTime<Utc>,
    ) -> Result<PageReport, WarehouseError> {
        for _ in 0..SHAPE_ATTEMPTS {
            let current = self.shape(conn, &stream.name).await?;
            if current.as_ref().is_some_and(|shape| shape.owner.is_none()) {
                schema::claim(conn, &self.schema, &stream.name, &self.source).await?;
            }
            if let Some(shape) = &current
                && shape.primary_key != stream.primary_key
            {
                return Err(WarehouseError::PrimaryKeyChanged {
                    stream: stream.name.clone(),
                    registered: shape.primary_key.clone(),
                    requested: stream.primary_key.clone(),
                });
            }
            let plan = classify(current.as_deref(), stream, records);
            let mut report = PageReport {
                quarantined: plan.quarantine.len() as u64,
                superseded: plan.superseded,
                repaired: plan.repaired,
                watermark: plan.land.iter().fold(None, |high, landing| {
                    stream.cursor_type.later(high, landing.cursor_text.clone())
                }),
                ..PageReport::default()
            };
            let needs_table = current.is_none() && !plan.land.is_empty();
            let shape = if needs_table || !plan.change.is_empty() {
                let changed = schema::change(
                    conn,
                    (&self.source, &self.schema),
                    &stream.name,
                    &stream.primary_key,
                    current.as_deref(),
                    &plan.change,
                )
                .await
                .inspect_err(|_| self.forget(&stream.name))?;
                match changed {
                    Changed::Done(shape, added) => {
                        report.columns_added = added;
                        let shape = Arc::new(shape);
                        self.remember(&stream.name, &shape);
                        Some(shape)
                    }
                    Changed::Stale => {
                        self.forget(&stream.name);
                        continue;
                    }
                }
            } else {
                current
            };

            if !plan.quarantine.is_empty() {
                let set_aside: Vec<SetAside> = plan
                    .quarantine
                    .iter()
                    .map(|q| SetAside::quarantined(records, q))
                    .collect();
                report.alerts = self
                    .quarantine(conn, &stream.name, &set_aside, &plan.quarantine, synced_at)
                    .await?;
            }
            let notes = notices(&self.source, &stream.name, &plan);
            raise_alerts(conn, &notes).await?;
            report.alerts.extend(notes.into_iter().map(|a| a.detail));
            if let Some(shape) = shape.filter(|_| !plan.land.is_empty()) {
                report.upserted = land::upsert(
                    conn,
                    (&stream.name, stream.clock_lag_secs),
                    &shape,
                    records,
                    &plan.land,
                    synced_at,
                )
                .await
                .inspect_err(|e| {
                    if e.is_shape_mismatch() {
                        self.forget(&stream.name);
                    }
                })?;
                report.unchanged = plan.land.len() as u64 - report.upserted;
                land::clear_quarantine(conn, &self.schema, &stream.name, &plan.land).await?;
            }
            return Ok(report);
        }
        Err(WarehouseError::ShapeContention {
            stream: stream.name.clone(),
        })
    }

    /// Quarantines records of a page that could not be read at all (nested too deep,
    /// say), in the caller's transaction, with an alert; the rest of the page lands
    /// through [`upsert_page`](Self::upsert_page).
    pub async fn quarantine_unreadable(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        unreadable: &[Unreadable],
        synced_at: DateTime<Utc>,
    ) -> Result<u64, WarehouseError> {
        if unreadable.is_empty() {
            return Ok(0);
        }
        let set_aside: Vec<SetAside> = unreadable.iter().map(SetAside::unreadable).collect();
        let drifts: Vec<classify::Quarantined> = unreadable
            .iter()
            .map(|u| classify::Quarantined {
                index: 0,
                key: None,
                drifts: vec![Drift {
                    kind: "invalid_record",
                    detail: u.reason.clone(),
                }],
            })
            .collect();
        self.quarantine(conn, stream, &set_aside, &drifts, synced_at)
            .await?;
        Ok(unreadable.len() as u64)
    }

    /// Stages one page of the vendor's id set for the reconciliation `reconcile_id`
    /// (e.g. the run id). Idempotent, so a page staged again after a retry counts once.
    pub async fn stage_ids(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        reconcile_id: &str,
        ids: &[String],
    ) -> Result<(), WarehouseError> {
        reconcile::stage(conn, stream, reconcile_id, ids).await
    }

    /// Applies the staged id set: marks live rows absent from it deleted and undeletes
    /// rows present in it, then drops the staging. Refuses — changing nothing, raising
    /// an `incomplete_id_set` alert and keeping the staging — when the set holds fewer
    /// distinct ids than the vendor's total, or fewer than `(1 - max_missing_share)`
    /// times the live rows, unless `force`.
    pub async fn apply_deletes(
        &self,
        conn: &mut PgConnection,
        stream: &StreamSpec,
        reconcile_id: &str,
        checks: Checks,
    ) -> Result<ReconcileOutcome, WarehouseError> {
        let shape = self.shape(conn, &stream.name).await?;
        reconcile::apply(
            conn,
            (&self.source, &stream.name),
            shape.as_deref(),
            reconcile_id,
            checks,
        )
        .await
    }

    /// How many rows of a stream's table were last synced before `at` (none when it has
    /// no table): the rows a column added now has no value for.
    pub async fn count_rows_synced_before(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, WarehouseError> {
        match self.shape(conn, stream).await? {
            None => Ok(0),
            Some(shape) => sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {} WHERE \"_synced_at\" < $1",
                shape.table
            )))
            .bind(at)
            .fetch_one(conn)
            .await
            .map_err(WarehouseError::db(stream, "counting rows synced before")),
        }
    }

    /// The checksum of a stream's live rows, computed from `_raw` exactly as the
    /// sandbox computes its own ([`checksum_records`](crate::checksum::checksum_records)),
    /// so a test or an audit can assert warehouse == vendor.
    pub async fn checksum(
        &self,
        conn: &mut PgConnection,
        stream: &str,
    ) -> Result<String, WarehouseError> {
        let rows: Vec<Value> = match self.shape(conn, stream).await? {
            None => Vec::new(),
            Some(shape) => sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT \"_raw\" FROM {} WHERE \"_deleted_at\" IS NULL",
                shape.table
            )))
            .fetch_all(conn)
            .await
            .map_err(WarehouseError::db(stream, "reading live rows"))?,
        };
        crate::checksum::checksum_records(&rows).map_err(|source| WarehouseError::Checksum {
            stream: stream.to_owned(),
            source,
        })
    }

    /// The current shape of a stream's table, from the cache when its version is still
    /// the registry's.
    async fn shape(
        &self,
        conn: &mut PgConnection,
        stream: &str,
    ) -> Result<Option<Arc<Shape>>, WarehouseError> {
        let registered = schema::version(conn, &self.schema, stream).await?;
        if let Some((_, Some(owner))) = &registered
            && **owner != *self.source
        {
            return Err(WarehouseError::TableOwned {
                table: format!("{}.{stream}", self.schema),
                owner: owner.clone(),
                requester: self.source.to_string(),
            });
        }
        let version = registered.map(|(version, _)| version);
        let cached = self.cached(stream);
        match (version, cached) {
            (None, _) => {
                self.forget(stream);
                Ok(None)
            }
            (Some(v), Some(shape)) if shape.version == v => Ok(Some(shape)),
            (Some(_), _) => {
                let shape = schema::load(conn, &self.schema, stream)
                    .await?
                    .map(Arc::new);
                match &shape {
                    Some(shape) => self.remember(stream, shape),
                    None => self.forget(stream),
                }
                Ok(shape)
            }
        }
    }

    /// Quarantines records and raises one alert per distinct drift; returns the details.
    async fn quarantine(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        set_aside: &[SetAside],
        quarantined: &[classify::Quarantined],
        synced_at: DateTime<Utc>,
    ) -> Result<Vec<String>, WarehouseError> {
        land::quarantine(
            conn,
            (&self.source, &self.schema),
            stream,
            set_aside,
            (synced_at, &self.sealer),
        )
        .await?;
        let mut counts: Vec<(&Drift, u64)> = Vec::new();
        for drift in quarantined.iter().flat_map(|q| &q.drifts) {
            match counts.iter_mut().find(|(d, _)| *d == drift) {
                Some((_, n)) => *n += 1,
                None => counts.push((drift, 1)),
            }
        }
        let alerts: Vec<NewAlert> = counts
            .iter()
            .map(|(drift, n)| NewAlert {
                kind: match drift.kind {
                    "invalid_record" | "invalid_cursor" => drift.kind,
                    _ => "schema_drift",
                }
                .to_owned(),
                source: self.source.to_string(),
                stream: stream.to_owned(),
                detail: drift.detail.clone(),
                message: if matches!(drift.kind, "invalid_record" | "invalid_cursor") {
                    format!(
                        "{n} record(s) of stream {stream:?} quarantined in cairn.quarantine: {}",
                        drift.detail
                    )
                } else {
                    format!(
                        "{n} record(s) of stream {stream:?} quarantined in cairn.quarantine: {}; \
                         the table keeps its shape until this is mapped",
                        drift.detail
                    )
                },
            })
            .collect();
        raise_alerts(conn, &alerts).await?;
        Ok(alerts.into_iter().map(|a| a.detail).collect())
    }

    fn cached(&self, stream: &str) -> Option<Arc<Shape>> {
        self.lock().get(stream).cloned()
    }

    fn remember(&self, stream: &str, shape: &Arc<Shape>) {
        self.lock().insert(stream.to_owned(), Arc::clone(shape));
    }

    fn forget(&self, stream: &str) {
        self.lock().remove(stream);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Shape>>> {
        // The map is always consistent between statements; a panic elsewhere cannot
        // leave it half-written.
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Alerts about what landed changed: records repaired by the NUL and surrogate rule, and
/// fields past the column cap kept in `_raw` only.
fn notices(source: &str, stream: &str, plan: &classify::Plan) -> Vec<NewAlert> {
    let mut notes = Vec::new();
    if plan.repaired > 0 {
        notes.push(NewAlert {
            kind: "repaired_record".to_owned(),
            source: source.to_owned(),
            stream: stream.to_owned(),
            detail: "NUL characters or unpaired surrogate escapes replaced by U+FFFD".to_owned(),
            message: format!(
                "{} record(s) of stream {stream:?} held a NUL character or an unpaired UTF-16 \
                 surrogate escape, which PostgreSQL cannot store; each was replaced by U+FFFD \
                 and the records landed",
                plan.repaired
            ),
        });
    }
    if let Some(first) = plan.raw_only.first() {
        notes.push(NewAlert {
            kind: "too_many_fields".to_owned(),
            source: source.to_owned(),
            stream: stream.to_owned(),
            detail: format!("more than {MAX_COLUMNS} fields"),
            message: format!(
                "stream {stream:?} has more than {MAX_COLUMNS} fields; {} more (first {}) are \
                 kept in `_raw` only, without a column of their own",
                plan.raw_only.len(),
                ident::display_name(first)
            ),
        });
    }
    notes
}
