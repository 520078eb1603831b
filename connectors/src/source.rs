//! The `Source` trait: what a sync needs from a vendor, whatever its API
//! looks like.
//!
//! A source lists its streams, fetches one page of a stream at a
//! [`PageCursor`], and lists a stream's ids for delete reconciliation. Sync
//! workflows fetch each page in a step of its own (a fetched page is never
//! fetched twice) and feed it to a [`Traversal`], which stops a paginator bug
//! from turning into an infinite loop.
//!
//! # Incremental reads and the boundary
//!
//! An incremental read starts at [`PageCursor::since`] with the watermark of
//! the last complete read: the largest cursor-field value seen
//! ([`Page::watermark`], merged over pages with [`later_watermark`]). The
//! bound is **inclusive** (`>=`): records that share the watermark's exact
//! value — several updated in the same second — are read again rather than
//! skipped, and the primary-key upsert makes reading them again harmless. They
//! are re-read once per run, never in a loop: a traversal ends when the
//! vendor's paging ends, and the watermark only moves forward. Keep the
//! `since` of a traversal fixed until it completes; only then does its
//! watermark become the next run's `since`.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::HttpError;
use crate::paginate::{PageCursor, Paged, PaginationError, Traversal};
use crate::record::{Record, Unreadable};
use crate::watermark::{CursorType, DEFAULT_MAX_FUTURE_SKEW_SECS};

/// A vendor API, seen as streams of records.
///
/// Dyn-compatible, so a workflow can hold a `Box<dyn Source>` built from a
/// file at run time. Methods take the stream by name; an unknown name is a
/// [`Category::Config`](crate::error::Category::Config) error.
pub trait Source: Send + Sync {
    /// The source's name, for logs and errors.
    fn name(&self) -> &str;

    /// The streams it serves.
    fn streams(&self) -> Vec<StreamInfo>;

    /// The vendor's rate limit in requests per second, when the source paces itself by
    /// one: a low-priority run (a column fill) takes a share of it.
    fn requests_per_second(&self) -> Option<f64> {
        None
    }

    /// One page of `stream` at `cursor`. The cursor's `since`, if any, filters
    /// to records whose cursor field is at or after it (see the module docs).
    fn fetch_page<'a>(
        &'a self,
        stream: &'a str,
        cursor: &'a PageCursor,
    ) -> BoxFuture<'a, Result<Page, HttpError>>;

    /// One page of `stream`'s ids, every live record's, at `cursor` (which
    /// must not carry a `since`: an id set is only useful complete).
    fn list_ids<'a>(
        &'a self,
        stream: &'a str,
        cursor: &'a PageCursor,
    ) -> BoxFuture<'a, Result<IdPage, HttpError>>;
}

/// What a stream is, as far as a sync is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's name (and its warehouse table's).
    pub name: String,
    /// The dotted path of the field that identifies a record.
    pub primary_key: String,
    /// The dotted path of the field watermarks are read from, if any.
    pub cursor_field: Option<String>,
    /// What the cursor field holds.
    #[serde(default)]
    pub cursor_type: CursorType,
    /// How far ahead of now a timestamp cursor may lie before its record is refused.
    #[serde(default = "default_skew")]
    pub max_future_skew_secs: u64,
    /// Whether the stream can read only what changed since a watermark.
    pub incremental: bool,
    /// The most pages one run may read of the stream's listing (`max_pages`); a run
    /// that reaches it stops the stream with an error rather than page without end.
    #[serde(default)]
    pub max_pages: Option<u64>,
}

fn default_skew() -> u64 {
    DEFAULT_MAX_FUTURE_SKEW_SECS
}

/// One page of records. Serializable: a workflow step returns it and the
/// engine stores it as the step's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The records, after any client-side `since` filtering, each kept exactly as the
    /// vendor sent it.
    pub records: Vec<Record>,
    /// The records that could not be read (nested too deep, say): the warehouse
    /// quarantines them while the rest of the page lands.
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// Records the vendor served on this page, before client-side filtering
    /// (what its total counts, and what tells an empty page from a filtered
    /// one).
    pub fetched: usize,
    /// The next page, `None` on the last one.
    pub next: Option<PageCursor>,
    /// The vendor's total for the listing, when it reports one.
    pub total: Option<u64>,
    /// The largest cursor-field value among [`records`](Self::records), as
    /// the vendor wrote it.
    pub watermark: Option<String>,
}

/// One page of ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdPage {
    /// The ids, as text.
    pub ids: Vec<String>,
    /// The next page, `None` on the last one.
    pub next: Option<PageCursor>,
    /// The vendor's total, when it reports one.
    pub total: Option<u64>,
}

impl Paged for Page {
    fn fetched(&self) -> usize {
        self.fetched
    }

    fn next(&self) -> Option<&PageCursor> {
        self.next.as_ref()
    }

    fn total(&self) -> Option<u64> {
        self.total
    }
}

impl Paged for IdPage {
    fn fetched(&self) -> usize {
        self.ids.len()
    }

    fn next(&self) -> Option<&PageCursor> {
        self.next.as_ref()
    }

    fn total(&self) -> Option<u64> {
        self.total
    }
}

/// Orders two cursor-field values: as instants when both read as one
/// (RFC 3339 with any offset, Salesforce's `+0000` form, Unix seconds or
/// milliseconds), as numbers when both are numbers, else as text.
/// Text order alone would put `2026-01-01T10:00:00+02:00` after
/// `2026-01-01T09:00:00Z`.
pub fn compare_watermarks(a: &str, b: &str) -> Ordering {
    if let (Some(a), Some(b)) = (parse_instant(a), parse_instant(b)) {
        return a.cmp(&b);
    }
    if let (Ok(a), Ok(b)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        return a.total_cmp(&b);
    }
    a.cmp(b)
}

/// Unix timestamps at or above this are milliseconds, below it seconds
/// (10^11 seconds is the year 5138; 10^11 milliseconds is 1973).
const MILLIS_FROM: i64 = 100_000_000_000;

/// An instant from the forms cursor fields come in: RFC 3339, Salesforce's
/// `2026-01-01T00:00:00.000+0000`, a naive `2026-01-01T00:00:00` taken as UTC,
/// or a Unix timestamp in seconds or milliseconds.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let number: i64 = text.parse().ok()?;
        return if number >= MILLIS_FROM {
            DateTime::from_timestamp_millis(number)
        } else {
            DateTime::from_timestamp(number, 0)
        };
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.to_utc());
    }
    if let Ok(instant) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(instant.to_utc());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// The later of two watermarks; `None` only when both are.
pub fn later_watermark(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if compare_watermarks(&b, &a) == Ordering::Greater {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// A pagination failure as the HTTP error a source returns.
pub fn pagination_error(
    source: &str,
    stream: &str,
    url: &str,
    error: PaginationError,
) -> HttpError {
    let message = format!("{source}/{stream}: {error}");
    match error {
        PaginationError::Malformed(_) => HttpError::malformed(url, message),
        PaginationError::ForeignCursor { .. } => HttpError::config(message),
        _ => HttpError::pagination(message),
    }
}

/// Everything one traversal of a stream read.
#[derive(Clone, Debug, PartialEq)]
pub struct Collected {
    /// Every record, in the order served.
    pub records: Vec<Record>,
    /// The largest cursor-field value seen: the next read's `since`.
    pub watermark: Option<String>,
    /// Pages fetched.
    pub pages: u64,
}

/// Reads `stream` from `start` to its last page under a [`Traversal`], in
/// memory — for tools, tests and small streams. Syncs fetch page by page in
/// workflow steps instead.
pub async fn read_stream(
    source: &dyn Source,
    stream: &str,
    start: PageCursor,
) -> Result<Collected, HttpError> {
    let mut traversal = Traversal::new(start);
    let mut collected = Collected {
        records: Vec::new(),
        watermark: None,
        pages: 0,
    };
    while let Some(cursor) = traversal.cursor().cloned() {
        let page = source.fetch_page(stream, &cursor).await?;
        traversal
            .advance(&page)
            .map_err(|error| pagination_error(source.name(), stream, "", error))?;
        collected.watermark = later_watermark(collected.watermark, page.watermark);
        collected.records.extend(page.records);
    }
    collected.pages = traversal.pages();
    Ok(collected)
}

/// Every id of `stream`, under a [`Traversal`].
pub async fn read_ids(source: &dyn Source, stream: &str) -> Result<Vec<String>, HttpError> {
    let mut traversal = Traversal::new(PageCursor::start());
    let mut ids = Vec::new();
    while let Some(cursor) = traversal.cursor().cloned() {
        let page = source.list_ids(stream, &cursor).await?;
        traversal
            .advance(&page)
            .map_err(|error| pagination_error(source.name(), stream, "", error))?;
        ids.extend(page.ids);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::{compare_watermarks, later_watermark, parse_instant};

    #[test]
    fn instants_in_every_form_compare_as_instants() {
        let cases = [
            (
                "2026-01-01T10:00:00+02:00",
                "2026-01-01T09:00:00Z",
                Ordering::Less,
            ),
            (
                "2026-01-01T00:00:00.000+0000",
                "2026-01-01T00:00:00Z",
                Ordering::Equal,
            ),
            ("1767225600000", "2026-01-01T00:00:00Z", Ordering::Equal),
            ("1767225600", "2026-01-01T00:00:00", Ordering::Equal),
            ("9.5", "10", Ordering::Less),
            ("b", "a", Ordering::Greater),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare_watermarks(a, b), expected, "{a} vs {b}");
        }
        assert!(parse_instant("soon").is_none());
    }

    #[test]
    fn the_later_watermark_wins_by_instant_not_text() {
        let a = Some("2026-01-01T10:00:00+02:00".to_owned());
        let b = Some("2026-01-01T09:00:00Z".to_owned());
        assert_eq!(later_watermark(a.clone(), b.clone()), b);
        assert_eq!(later_watermark(None, a.clone()), a);
        assert_eq!(later_watermark(None, None), None);
    }
}
