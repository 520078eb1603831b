//! A connector written in Rust: a CRM whose API answers bare JSON arrays, pages by
//! `Link: <url>; rel="next"` headers and wants every request signed with an HMAC. No
//! TOML source can say that, so it is a [`Source`] of its own, registered under
//! [`SOURCE`]; cairn's sync workflows (incremental, backfill, reconcile, status) run it
//! with the same fetch steps, watermarks and warehouse checks as any TOML source.
//!
//! What it writes itself is only what is particular to this vendor: the URLs, the
//! signature and reading a page. cairn's HTTP client still bounds bodies and waits,
//! paces requests by the shared rate budget and keeps credentials (the signature
//! included) on the vendor's origin; the sync's traversal still refuses a paging loop.
//!
//! The vendor it talks to is cairn's sandbox started with `--auth signed`:
//!
//! - `GET /rest/{stream}?limit&updated_since` (Unix seconds, inclusive), then the URL in
//!   the response's `Link` header;
//! - `GET /ids/{stream}?limit&after` answering `{ids, next_after}`, for reconciliation;
//! - each request carries `X-Signature-Timestamp` (Unix seconds) and `X-Signature`, the
//!   hex HMAC-SHA256 of `GET\n{path}\n{query}\n{timestamp}` under the signing key.

use std::future::Future;
use std::pin::Pin;

use cairn::connectors::error::HttpError;
use cairn::connectors::http::sign::{Signer, Unsigned};
use cairn::connectors::http::{HttpClient, HttpConfig};
use cairn::connectors::paginate::{JsonPath, PageCursor, Position};
use cairn::connectors::record::Record;
use cairn::connectors::record::listing::{self, Items};
use cairn::connectors::secret::{Secret, SecretSource};
use cairn::connectors::source::{IdPage, Page, Source, StreamInfo, parse_instant};
use cairn::connectors::watermark::{CursorType, DEFAULT_MAX_FUTURE_SKEW_SECS};
use cairn::workflows::sync::{Opening, add_source};
use cairn::{Error, Registry};

/// The name the source is registered under: its runs, watermarks and warehouse schema
/// (`linked_crm`) are keyed by it.
pub const SOURCE: &str = "linked-crm";

/// The environment variable the signing key is read from, on every worker.
pub const SIGNING_KEY_ENV: &str = "LINKED_CRM_SIGNING_KEY";

/// Records per page asked for.
const PAGE_SIZE: usize = 100;

/// The streams the CRM serves: each keyed by `id`, changes read by `updated_at`.
pub fn streams() -> Vec<StreamInfo> {
    ["contacts", "companies", "deals"]
        .into_iter()
        .map(|name| StreamInfo {
            name: name.to_owned(),
            primary_key: "id".to_owned(),
            cursor_field: Some("updated_at".to_owned()),
            cursor_type: CursorType::Timestamp,
            max_future_skew_secs: DEFAULT_MAX_FUTURE_SKEW_SECS,
            incremental: true,
            max_pages: None,
        })
        .collect()
}

/// Registers the source, with its signing key read from `key` on every worker (an
/// environment variable or a file in production), so `my-bin sync linked-crm
/// --base-url ...` and the sync workflows' runs naming it reach it.
pub fn register(registry: &mut Registry, key: SecretSource) -> Result<(), Error> {
    add_source(registry, SOURCE, streams(), move |opening| {
        LinkedCrm::open(opening, key.clone())
    })
}

/// Signs requests as the CRM wants. The key is a [`Secret`]: it never shows in a log
/// or an error.
struct HmacSigner {
    key: Secret,
}

impl Signer for HmacSigner {
    fn sign(&self, request: &Unsigned<'_>) -> Result<Vec<(String, String)>, String> {
        let timestamp = chrono::Utc::now().timestamp();
        let text = format!(
            "{}\n{}\n{}\n{timestamp}",
            request.method, request.path, request.query
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.key.expose().as_bytes());
        let signature: String = ring::hmac::sign(&key, text.as_bytes())
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(vec![
            ("X-Signature-Timestamp".to_owned(), timestamp.to_string()),
            ("X-Signature".to_owned(), signature),
        ])
    }
}

/// The CRM, as a [`Source`].
pub struct LinkedCrm {
    client: HttpClient,
    streams: Vec<StreamInfo>,
}

impl LinkedCrm {
    /// Builds the source for a run: the base URL from the run (`--base-url`), else
    /// from its settings' `base_url`; the signing key from `key`.
    pub async fn open(opening: Opening, key: SecretSource) -> Result<Self, HttpError> {
        let base_url = opening
            .base_url
            .or_else(|| {
                opening
                    .settings
                    .get("base_url")
                    .and_then(|url| url.as_str())
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                HttpError::config(format!(
                    "{SOURCE} needs a base URL: sync with --base-url, or give settings.base_url"
                ))
            })?;
        let key = key
            .resolve()
            .await
            .map_err(|err| HttpError::config(format!("{SOURCE}: {err}")))?;
        let config = HttpConfig::new(&base_url).with_signer(HmacSigner { key });
        let client = HttpClient::new(config, Some(opening.pool)).await?;
        Ok(Self {
            client,
            streams: streams(),
        })
    }

    fn stream(&self, name: &str) -> Result<&StreamInfo, HttpError> {
        self.streams
            .iter()
            .find(|stream| stream.name == name)
            .ok_or_else(|| HttpError::config(format!("{SOURCE} has no stream `{name}`")))
    }

    async fn page(&self, name: &str, cursor: &PageCursor) -> Result<Page, HttpError> {
        let stream = self.stream(name)?;
        let response = match &cursor.position {
            Position::Start => {
                let mut query = vec![("limit".to_owned(), PAGE_SIZE.to_string())];
                if let Some(since) = &cursor.since {
                    let at = parse_instant(since).ok_or_else(|| {
                        HttpError::config(format!(
                            "{SOURCE}/{name}: watermark {since:?} is not a time"
                        ))
                    })?;
                    query.push(("updated_since".to_owned(), at.timestamp().to_string()));
                }
                self.client.get(&format!("/rest/{name}"), &query).await?
            }
            // The Link URL already carries the filter and the page.
            Position::Url(url) => self.client.get(url, &[]).await?,
            other => {
                return Err(HttpError::config(format!(
                    "{SOURCE}/{name}: {other} is not a position this source gave"
                )));
            }
        };
        let malformed =
            |why: String| HttpError::malformed(&response.url, format!("{SOURCE}/{name}: {why}"));
        let body = listing::read(&response.body, &JsonPath::root())
            .map_err(|err| malformed(format!("the body is not a listing: {err}")))?;
        let Items::Found(items) = body.items else {
            return Err(malformed("the body is not a JSON array".to_owned()));
        };
        let fetched = items.len();
        let mut records = Vec::with_capacity(fetched);
        let mut unreadable = Vec::new();
        for item in items {
            match Record::parse(item) {
                Ok(record) => records.push(record),
                Err(bad) => unreadable.push(bad),
            }
        }
        let field = stream.cursor_field.as_deref().unwrap_or("updated_at");
        let now = chrono::Utc::now();
        // Only values that place a record move the watermark: a date far in the future
        // (or none at all) is the warehouse's to quarantine, not the next run's start.
        let watermark = records
            .iter()
            .filter_map(|record| record.field_text(field).map(|value| value.into_owned()))
            .filter(|value| {
                stream
                    .cursor_type
                    .check(field, Some(value), now, stream.max_future_skew_secs)
                    .is_ok()
            })
            .fold(None, |a, b| stream.cursor_type.later(a, Some(b)));
        let next = response
            .next_link()
            .map_err(|err| malformed(err.to_string()))?
            .map(|position| cursor.at(position));
        Ok(Page {
            records,
            unreadable,
            fetched,
            next,
            total: None,
            watermark,
        })
    }

    async fn ids(&self, name: &str, cursor: &PageCursor) -> Result<IdPage, HttpError> {
        self.stream(name)?;
        let mut query = vec![("limit".to_owned(), "1000".to_owned())];
        match &cursor.position {
            Position::Start => {}
            Position::Token(after) => query.push(("after".to_owned(), after.clone())),
            other => {
                return Err(HttpError::config(format!(
                    "{SOURCE}/{name}: {other} is not an ids position this source gave"
                )));
            }
        }
        let response = self.client.get(&format!("/ids/{name}"), &query).await?;
        let malformed =
            |why: &str| HttpError::malformed(&response.url, format!("{SOURCE}/{name}: {why}"));
        let body = response
            .json()
            .map_err(|_| malformed("the ids body is not JSON"))?;
        let ids = body
            .get("ids")
            .and_then(|ids| ids.as_array())
            .ok_or_else(|| malformed("the body has no `ids` array"))?
            .iter()
            .map(|id| match id {
                serde_json::Value::String(id) => Some(id.clone()),
                serde_json::Value::Number(id) => Some(id.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("an id is neither a string nor a number"))?;
        let next = match body.get("next_after") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(after)) => Some(after.clone()),
            Some(serde_json::Value::Number(after)) => Some(after.to_string()),
            Some(_) => return Err(malformed("`next_after` is neither a string nor a number")),
        };
        Ok(IdPage {
            ids,
            next: next.map(|after| cursor.at(Position::Token(after))),
            total: None,
        })
    }
}

/// A future a [`Source`] method returns.
type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, HttpError>> + Send + 'a>>;

impl Source for LinkedCrm {
    fn name(&self) -> &str {
        SOURCE
    }

    fn streams(&self) -> Vec<StreamInfo> {
        self.streams.clone()
    }

    fn fetch_page<'a>(&'a self, stream: &'a str, cursor: &'a PageCursor) -> Answer<'a, Page> {
        Box::pin(self.page(stream, cursor))
    }

    fn list_ids<'a>(&'a self, stream: &'a str, cursor: &'a PageCursor) -> Answer<'a, IdPage> {
        Box::pin(self.ids(stream, cursor))
    }
}
