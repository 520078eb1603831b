//! Requests as rows: opening one (the row, its first audit entry and its two runs),
//! listing, showing and extending them.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgPool, Row};

use cairn_runner::seal::{Column, Sealer};
use cairn_runner::{Client, RunId, StartOptions};

use super::audit::{self, AuditKey, Event};
use super::{CLOCK, Kind, PRIORITY, Phase, REQUEST, Regulation, RequestSource, Subject};
use cairn_connectors::warehouse::alerts::{NewAlert, raise_alerts, resolve_alerts};

/// The subject's identifiers, sealed when keys are configured.
pub const SUBJECTS: Column = Column {
    table: "dsr_requests",
    plain: "subject",
    sealed: "subject_sealed",
    what: "a privacy request's subject",
};

/// Access reports, sealed when keys are configured.
pub const REPORTS: Column = Column {
    table: "dsr_requests",
    plain: "report",
    sealed: "report_sealed",
    what: "a privacy request's report",
};

/// The shares of the window at which the clock alerts by default.
pub const DEFAULT_ALERTS: [f64; 3] = [0.5, 0.8, 1.0];

/// Why a request cannot be opened, shown or changed.
#[derive(Debug, thiserror::Error)]
pub enum DsrError {
    /// The input is wrong (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// No request has this id.
    #[error("no privacy request {0:?} (cairn dsr list shows them)")]
    NotFound(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A value could not be sealed or opened.
    #[error("{0}")]
    Seal(String),
    /// A run could not be started.
    #[error("starting its run: {0}")]
    Engine(#[from] cairn_runner::EngineError),
}

/// What `cairn dsr open` asks for.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// The person.
    pub subject: Subject,
    /// Access or erasure.
    pub kind: Kind,
    /// The law, which sets the deadline.
    pub regulation: Regulation,
    /// The sources to search.
    pub sources: Vec<RequestSource>,
    /// The shares of the window the clock alerts at, each in (0, 1].
    pub alerts: Vec<f64>,
    /// How long the report is kept after the request closes.
    pub retention: TimeDelta,
}

/// The input of a [`REQUEST`] run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestInput {
    /// The request's id.
    pub request: String,
    /// Access or erasure.
    pub kind: Kind,
    /// The sources to search.
    pub sources: Vec<RequestSource>,
}

/// The input of a [`CLOCK`] run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockInput {
    /// The request's id.
    pub request: String,
    /// The shares of the window it alerts at.
    pub alerts: Vec<f64>,
}

/// A request just opened.
#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    /// Its id.
    pub id: String,
    /// Its deadline.
    pub deadline: DateTime<Utc>,
    /// The run that answers it.
    pub run_id: RunId,
    /// The run that keeps its clock.
    pub clock_run_id: RunId,
}

/// Opens a request: checks it, stores its row (the subject sealed) with an `opened`
/// audit entry in one transaction, then starts its two runs at [`PRIORITY`].
pub async fn open(
    pool: &PgPool,
    sealer: &Sealer,
    key: &AuditKey,
    request: OpenRequest,
) -> Result<Opened, DsrError> {
    request.subject.check().map_err(DsrError::Invalid)?;
    if request.sources.is_empty() {
        return Err(DsrError::Invalid(
            "name the sources to search: --source FILE (repeatable)".to_owned(),
        ));
    }
    if request.alerts.is_empty()
        || request
            .alerts
            .iter()
            .any(|share| !(share.is_finite() && *share > 0.0 && *share <= 1.0))
    {
        return Err(DsrError::Invalid(
            "alert shares are fractions of the window above 0 and at most 1, e.g. 0.5,0.8,1"
                .to_owned(),
        ));
    }
    let id = format!("dsr_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let received = Utc::now();
    let deadline = request.regulation.deadline(received);
    let subject =
        serde_json::to_string(&request.subject).map_err(|e| DsrError::Seal(e.to_string()))?;
    let kept = sealer
        .store(&SUBJECTS, &subject)
        .map_err(|e| DsrError::Seal(e.to_string()))?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO cairn.dsr_requests
            (id, kind, regulation, window_days, received_at, deadline, phase, subject_hash, subject,
             subject_sealed, retention_secs)
         VALUES ($1, $2, $3, $4, $5, $6, 'received', $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(request.kind.as_str())
    .bind(request.regulation.name())
    .bind(i32::try_from((deadline - received).num_days()).unwrap_or(i32::MAX))
    .bind(received)
    .bind(deadline)
    .bind(key.identifier("email", &request.subject.email))
    .bind(kept.plain())
    .bind(kept.sealed())
    .bind(request.retention.num_seconds())
    .execute(&mut *tx)
    .await?;
    let ids: Vec<String> = request
        .subject
        .ids
        .iter()
        .map(|(source, value)| format!("{source}/{}", key.identifier("id", value)))
        .collect();
    audit::append(
        &mut tx,
        key,
        Event {
            request: &id,
            action: "opened",
            source: "",
            outcome: "ok",
            detail: json!({
                "kind": request.kind.as_str(),
                "regulation": request.regulation.name(),
                "deadline": deadline.to_rfc3339(),
                "subject": key.identifier("email", &request.subject.email),
                "ids": ids,
                "sources": request.sources.len(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    let client = Client::new(pool.clone()).with_sealer(sealer.clone());
    let options = |name: &str| StartOptions {
        idempotency_key: Some(format!("{name}:{id}")),
        priority: PRIORITY,
        ..StartOptions::default()
    };
    let run = client
        .start(
            REQUEST,
            &RequestInput {
                request: id.clone(),
                kind: request.kind,
                sources: request.sources,
            },
            &options(REQUEST),
        )
        .await?;
    let clock = client
        .start(
            CLOCK,
            &ClockInput {
                request: id.clone(),
                alerts: request.alerts,
            },
            &options(CLOCK),
        )
        .await?;
    sqlx::query("UPDATE cairn.dsr_requests SET run_id = $2, clock_run_id = $3 WHERE id = $1")
        .bind(&id)
        .bind(run.run_id)
        .bind(clock.run_id)
        .execute(pool)
        .await?;
    Ok(Opened {
        id,
        deadline,
        run_id: run.run_id,
        clock_run_id: clock.run_id,
    })
}

/// One request, as `cairn dsr list` and `show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Its id.
    pub id: String,
    /// Access or erasure.
    pub kind: String,
    /// The law.
    pub regulation: String,
    /// Where it stands; `overdue` when past its deadline and not closed.
    pub phase: Phase,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// When it must be answered by.
    pub deadline: DateTime<Utc>,
    /// Seconds until the deadline (negative past it); `None` once closed.
    pub time_left_secs: Option<i64>,
    /// The share of the window gone, 0 to 1 and beyond.
    pub elapsed_share: f64,
    /// Records found (vendors and warehouse).
    pub found: i32,
    /// Records erased.
    pub erased: i32,
    /// Records that could not be erased.
    pub unerased: i32,
    /// How it closed.
    pub outcome: Option<String>,
    /// When it closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// The run that answers it.
    pub run_id: Option<uuid::Uuid>,
}

const SUMMARY_COLUMNS: &str = "id, kind, regulation, phase, received_at, deadline, found, erased, \
     unerased, outcome, closed_at, run_id";

fn summary(row: &sqlx::postgres::PgRow, now: DateTime<Utc>) -> Result<Summary, sqlx::Error> {
    let received_at: DateTime<Utc> = row.try_get("received_at")?;
    let deadline: DateTime<Utc> = row.try_get("deadline")?;
    let closed_at: Option<DateTime<Utc>> = row.try_get("closed_at")?;
    let stored = Phase::parse(row.try_get::<&str, _>("phase")?);
    let end = closed_at.unwrap_or(now);
    let window = (deadline - received_at).num_milliseconds().max(1) as f64;
    let phase = if closed_at.is_none() && now > deadline && stored != Phase::Failed {
        Phase::Overdue
    } else {
        stored
    };
    Ok(Summary {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        regulation: row.try_get("regulation")?,
        phase,
        received_at,
        deadline,
        time_left_secs: closed_at.is_none().then(|| (deadline - now).num_seconds()),
        elapsed_share: (end - received_at).num_milliseconds() as f64 / window,
        found: row.try_get("found")?,
        erased: row.try_get("erased")?,
        unerased: row.try_get("unerased")?,
        outcome: row.try_get("outcome")?,
        closed_at,
        run_id: row.try_get("run_id")?,
    })
}

/// Every request, oldest deadline first; only the open ones past their deadline when
/// `overdue`.
pub async fn list(pool: &PgPool, overdue: bool) -> Result<Vec<Summary>, DsrError> {
    let filter = if overdue {
        "WHERE closed_at IS NULL AND deadline < now() AND phase <> 'failed'"
    } else {
        ""
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM cairn.dsr_requests {filter} ORDER BY deadline, id"
    )))
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(|row| summary(row, now))
        .collect::<Result<_, _>>()?)
}

/// A deadline extension.
#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    /// When it was granted.
    pub extended_at: DateTime<Utc>,
    /// By how many days.
    pub days: i32,
    /// Why.
    pub reason: String,
}

/// One request in full, for `cairn dsr show`.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// The row.
    #[serde(flatten)]
    pub summary: Summary,
    /// Its extensions, oldest first.
    pub extensions: Vec<Extension>,
    /// Its audit entries: how many, and the last one's action and outcome.
    pub audit_entries: i64,
    /// Whether its report can be exported (compiled and not purged).
    pub report_available: bool,
    /// When the report is purged.
    pub report_purge_after: Option<DateTime<Utc>>,
    /// Discovery progress as its run last reported it.
    pub progress: Option<serde_json::Value>,
}

/// The request `id` in full.
pub async fn show(pool: &PgPool, id: &str) -> Result<Detail, DsrError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, report_purge_after,
                (report IS NOT NULL OR report_sealed IS NOT NULL) AS report_available,
                (SELECT count(*) FROM cairn.dsr_audit a WHERE a.request_id = r.id) AS audit_entries,
                (SELECT progress FROM cairn.runs WHERE id = r.run_id) AS progress
           FROM cairn.dsr_requests r WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| DsrError::NotFound(id.to_owned()))?;
    let extensions = sqlx::query(
        "SELECT extended_at, days, reason FROM cairn.dsr_extensions WHERE request_id = $1 ORDER BY extended_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(Extension {
            extended_at: row.try_get("extended_at")?,
            days: row.try_get("days")?,
            reason: row.try_get("reason")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(Detail {
        summary: summary(&row, Utc::now())?,
        extensions,
        audit_entries: row.try_get("audit_entries")?,
        report_available: row.try_get("report_available")?,
        report_purge_after: row.try_get("report_purge_after")?,
        progress: row.try_get("progress")?,
    })
}

/// Extends request `id`'s deadline by `days` for `reason`, within what its regulation
/// allows; records it, audits it, and tells its clock.
pub async fn extend(
    pool: &PgPool,
    key: &AuditKey,
    id: &str,
    days: u32,
    reason: &str,
) -> Result<DateTime<Utc>, DsrError> {
    if days == 0 || days > 3660 {
        return Err(DsrError::Invalid("--days is between 1 and 3660".to_owned()));
    }
    if reason.trim().is_empty() {
        return Err(DsrError::Invalid(
            "an extension needs --reason: the law asks for the reason to be given to the person"
                .to_owned(),
        ));
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT regulation, received_at, deadline, closed_at, clock_run_id
           FROM cairn.dsr_requests WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| DsrError::NotFound(id.to_owned()))?;
    if row
        .try_get::<Option<DateTime<Utc>>, _>("closed_at")?
        .is_some()
    {
        return Err(DsrError::Invalid(format!(
            "{id} is closed; its deadline no longer runs"
        )));
    }
    let regulation: Regulation = row
        .try_get::<&str, _>("regulation")?
        .parse()
        .map_err(DsrError::Invalid)?;
    let received: DateTime<Utc> = row.try_get("received_at")?;
    let deadline: DateTime<Utc> = row.try_get("deadline")?;
    let extended = deadline + TimeDelta::days(i64::from(days));
    if let Some(limit) = regulation.limit(received)
        && extended > limit
    {
        return Err(DsrError::Invalid(format!(
            "{} allows extending {id} to {} at the latest; {days} more days would reach {}",
            regulation.name(),
            limit.to_rfc3339(),
            extended.to_rfc3339()
        )));
    }
    sqlx::query(
        "UPDATE cairn.dsr_requests SET deadline = $2,
                window_days = GREATEST(1, EXTRACT(DAY FROM $2 - received_at)::int) WHERE id = $1",
    )
    .bind(id)
    .bind(extended)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO cairn.dsr_extensions (request_id, extended_at, days, reason) VALUES ($1, now(), $2, $3)",
    )
    .bind(id)
    .bind(i32::try_from(days).unwrap_or(i32::MAX))
    .bind(reason.trim())
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        key,
        Event {
            request: id,
            action: "extended",
            source: "",
            outcome: "ok",
            detail: json!({"days": days, "deadline": extended.to_rfc3339()}),
        },
    )
    .await?;
    tx.commit().await?;
    if let Some(clock) = row.try_get::<Option<uuid::Uuid>, _>("clock_run_id")? {
        Client::new(pool.clone())
            .send_event(
                RunId::from(clock),
                "changed",
                &json!({"deadline": extended}),
            )
            .await?;
    }
    Ok(extended)
}

/// The subject of request `id`, opened with `sealer`.
pub async fn subject(
    conn: &mut sqlx::PgConnection,
    sealer: &Sealer,
    id: &str,
) -> Result<Subject, DsrError> {
    let row = sqlx::query("SELECT subject, subject_sealed FROM cairn.dsr_requests WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| DsrError::NotFound(id.to_owned()))?;
    let text = sealer
        .read(
            &SUBJECTS,
            row.try_get("subject")?,
            row.try_get::<Option<&[u8]>, _>("subject_sealed")?,
        )
        .map_err(|e| DsrError::Seal(e.to_string()))?
        .ok_or_else(|| DsrError::Seal(format!("{id}: its subject was purged")))?;
    serde_json::from_str(&text).map_err(|e| DsrError::Seal(e.to_string()))
}

/// The report of request `id` as JSON text, opened with `sealer`.
pub async fn report(pool: &PgPool, sealer: &Sealer, id: &str) -> Result<String, DsrError> {
    let row = sqlx::query(
        "SELECT report, report_sealed, report_purged_at FROM cairn.dsr_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| DsrError::NotFound(id.to_owned()))?;
    if let Some(purged) = row.try_get::<Option<DateTime<Utc>>, _>("report_purged_at")? {
        return Err(DsrError::Invalid(format!(
            "{id}'s report was purged on {} (after its retention window)",
            purged.to_rfc3339()
        )));
    }
    sealer
        .read(
            &REPORTS,
            row.try_get("report")?,
            row.try_get::<Option<&[u8]>, _>("report_sealed")?,
        )
        .map_err(|e| DsrError::Seal(e.to_string()))?
        .ok_or_else(|| DsrError::Invalid(format!("{id}'s report is not compiled yet")))
}

/// Closes request `id` in `conn`'s transaction when nothing is left to erase (phase
/// `done`, outcome `fulfilled`, its report kept for its retention), and returns its
/// clock run to tell; otherwise leaves it open in `fulfilling` with outcome `partial`
/// and a `dsr_unerased` alert, its clock still running.
pub async fn close(
    conn: &mut sqlx::PgConnection,
    key: &AuditKey,
    id: &str,
) -> Result<Option<uuid::Uuid>, cairn_runner::Error> {
    let row = sqlx::query(
        "UPDATE cairn.dsr_requests SET
                phase = CASE WHEN unerased = 0 THEN 'done' ELSE 'fulfilling' END,
                outcome = CASE WHEN unerased = 0 THEN 'fulfilled' ELSE 'partial' END,
                closed_at = CASE WHEN unerased = 0 THEN now() END,
                report_purge_after = CASE WHEN unerased = 0
                    THEN now() + make_interval(secs => retention_secs) END
          WHERE id = $1
          RETURNING unerased, clock_run_id, deadline",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let unerased: i32 = row.try_get("unerased")?;
    let deadline: DateTime<Utc> = row.try_get("deadline")?;
    if unerased > 0 {
        raise_alerts(
            conn,
            &[NewAlert {
                kind: "dsr_unerased".to_owned(),
                source: "dsr".to_owned(),
                stream: id.to_owned(),
                detail: String::new(),
                message: format!(
                    "privacy request {id}: {unerased} record(s) could not be erased; they are \
                     on the dead-letter list (cairn dlq list), and the request is due {}",
                    deadline.to_rfc3339()
                ),
            }],
        )
        .await
        .map_err(|e| cairn_runner::Error::transient(e.to_string()))?;
    } else {
        resolve_alerts(conn, "dsr_unerased", "dsr", id)
            .await
            .map_err(|e| cairn_runner::Error::transient(e.to_string()))?;
    }
    let outcome = if unerased == 0 { "done" } else { "partial" };
    audit::append(
        conn,
        key,
        Event {
            request: id,
            action: "phase",
            source: "",
            outcome: if unerased == 0 { "done" } else { "fulfilling" },
            detail: json!({"outcome": outcome, "unerased": unerased}),
        },
    )
    .await?;
    Ok(if unerased == 0 {
        row.try_get("clock_run_id")?
    } else {
        None
    })
}

/// After an erasure child finished: closes the request if its run already ended with
/// records left (`partial`) and none is left now, telling its clock.
pub async fn settle(
    ctx: &cairn_runner::Context,
    key: &AuditKey,
    id: &str,
) -> Result<(), cairn_runner::Error> {
    let clock = ctx
        .transaction("settle the request", |tx| async move {
            let mut conn = tx.conn().await?;
            let waiting: Option<i32> = sqlx::query_scalar(
                "SELECT unerased FROM cairn.dsr_requests
                  WHERE id = $1 AND outcome = 'partial' AND closed_at IS NULL FOR UPDATE",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            match waiting {
                Some(0) => close(&mut conn, key, id).await,
                _ => Ok(None),
            }
        })
        .await?;
    if let Some(clock) = clock {
        super::discover::tell_clock(ctx, clock).await?;
    }
    Ok(())
}

/// Purges the reports (and the subjects' identifiers) of closed requests whose
/// retention has passed, auditing each; how many went. What stays is the request's
/// row without personal values: its kind, dates, counts, outcome and the keyed hash.
pub async fn purge_reports(pool: &PgPool, key: &AuditKey) -> Result<u64, DsrError> {
    let mut tx = pool.begin().await?;
    let purged: Vec<String> = sqlx::query_scalar(
        "UPDATE cairn.dsr_requests
            SET report = NULL, report_sealed = NULL, subject = NULL, subject_sealed = NULL,
                report_purged_at = now()
          WHERE report_purge_after < now() AND report_purged_at IS NULL
          RETURNING id",
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &purged {
        audit::append(
            &mut tx,
            key,
            Event {
                request: id,
                action: "report_purged",
                source: "",
                outcome: "ok",
                detail: json!({}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(purged.len() as u64)
}

/// How many closed requests' reports are past their retention and not purged yet.
pub async fn reports_due(pool: &PgPool) -> Result<i64, DsrError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM cairn.dsr_requests
          WHERE report_purge_after < now() AND report_purged_at IS NULL",
    )
    .fetch_one(pool)
    .await?)
}
