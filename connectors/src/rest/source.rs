//! [`RestSource`]: a [`Source`] driven by a [`RestConfig`].

use std::cmp::Ordering;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::header::LINK;
use serde_json::Value;
use sqlx::PgPool;
use url::Url;

use super::config::{Listing, RestConfig, SINCE_PLACEHOLDER, StreamPlan};
use super::incremental::render;
use super::schema::RequestMethod;
use super::template::{fill, fill_text};
use crate::error::HttpError;
use crate::http::{Call, HttpClient};
use crate::paginate::{
    JsonPath, PageCursor, PageView, PaginationError, Position, check_page, kind_of,
};
use crate::record::listing::{self, Items};
use crate::record::{Record, Unreadable};
use crate::source::{IdPage, Page, Source, StreamInfo, compare_watermarks, pagination_error};

/// A REST API read as configured by a source file.
///
/// Cheap to share: it holds the validated config and one [`HttpClient`]
/// (connections, tokens and the rate budget are shared by every stream).
#[derive(Clone)]
pub struct RestSource {
    config: RestConfig,
    client: HttpClient,
}

/// What reading since a watermark adds to a request, replacing the listing's own.
#[derive(Default)]
pub(super) struct Since {
    /// Query parameters.
    query: Vec<(String, String)>,
    /// The one parameter set to the watermark: a query parameter of a `GET`, a body
    /// path of a `POST`.
    param: Option<(String, String)>,
    /// A `POST` listing's whole body.
    body: Option<Value>,
}

/// One listing page as served, before it becomes records or ids.
pub(super) struct Served {
    /// The items that could be read, in the order served.
    pub(super) items: Vec<Record>,
    /// The items that could not.
    pub(super) unreadable: Vec<Unreadable>,
    pub(super) next: Option<Position>,
    pub(super) total: Option<u64>,
}

impl RestSource {
    /// A source for `config`. A `[rate_limit]` needs `pool`, where the budget
    /// shared by every worker lives.
    pub async fn new(config: RestConfig, pool: Option<PgPool>) -> Result<Self, HttpError> {
        let client =
            HttpClient::with_secret_params(config.http.clone(), pool, config.secret_params.clone())
                .await?;
        Ok(Self { config, client })
    }

    /// The configuration it runs.
    pub fn config(&self) -> &RestConfig {
        &self.config
    }

    /// Its HTTP client.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    pub(super) fn stream(&self, name: &str) -> Result<&StreamPlan, HttpError> {
        self.config.streams.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.config.stream_names().collect();
            HttpError::config(format!(
                "{}: no stream {name:?} in {} (it has {})",
                self.config.name,
                self.config.file,
                known.join(", ")
            ))
        })
    }

    /// Refuses a stored URL position on another origin than the base URL (a
    /// checkpoint from before the base URL changed, or an edited one): the
    /// client would send our credentials there.
    fn check_origin(&self, stream: &str, url: &str) -> Result<(), HttpError> {
        let base = Url::parse(self.client.base_url()).ok();
        let target = Url::parse(url).ok();
        match (base, target) {
            (Some(base), Some(target)) if base.origin() == target.origin() => Ok(()),
            _ => Err(self.paging_error(
                stream,
                "",
                PaginationError::ForeignUrl {
                    next: url.to_owned(),
                    page: self.client.base_url().to_owned(),
                },
            )),
        }
    }

    fn paging_error(&self, stream: &str, url: &str, error: PaginationError) -> HttpError {
        pagination_error(&self.config.name, stream, url, error)
    }

    /// Fetches one page of `listing` at `position`; `since` holds what a first-page or
    /// token request reads since a watermark, replacing the listing's own of the same name.
    pub(super) async fn serve(
        &self,
        stream: &str,
        listing: &Listing,
        position: &Position,
        since: Since,
    ) -> Result<Served, HttpError> {
        if !listing.paginator.accepts(position) {
            return Err(self.paging_error(
                stream,
                "",
                PaginationError::ForeignCursor {
                    position: position.clone(),
                },
            ));
        }
        let mut response = match position {
            Position::Url(url) => {
                self.check_origin(stream, url)?;
                self.client.get(url, &[]).await?
            }
            _ => {
                let replaced = |name: &String| {
                    since.query.iter().any(|(query, _)| query == name)
                        || (listing.method == RequestMethod::Get
                            && since.param.iter().any(|(param, _)| param == name))
                };
                let mut query: Vec<(String, String)> = listing
                    .query
                    .iter()
                    .filter(|(name, _)| !replaced(name))
                    .cloned()
                    .collect();
                query.extend(since.query);
                match listing.method {
                    RequestMethod::Get => {
                        query.extend(since.param);
                        query.extend(listing.paginator.param(position));
                        self.client.get(&listing.path, &query).await?
                    }
                    RequestMethod::Post => {
                        let body =
                            self.request_body(stream, listing, position, since.body, since.param)?;
                        let mut call = Call::json(reqwest::Method::POST, &listing.path, body);
                        call.query = &query;
                        self.client.call(&call).await?
                    }
                }
            }
        };
        let shown = std::mem::take(&mut response.url);
        let malformed = |message: String| {
            HttpError::malformed(&shown, format!("{}/{stream}: {message}", self.config.name))
        };
        let body = listing::read(&response.body, &listing.items_path)
            .map_err(|err| malformed(format!("the body cannot be read: {err}")))?;
        if let Some(problem) = partial_answer(&body.envelope) {
            return Err(malformed(problem));
        }
        let total = match listing
            .total_path
            .as_ref()
            .map(|p| (p, p.get(&body.envelope)))
        {
            None | Some((_, None | Some(Value::Null))) => None,
            Some((path, Some(value))) => Some(value.as_u64().ok_or_else(|| {
                malformed(format!(
                    "the total at `{path}` is {}, not a count",
                    kind_of(value)
                ))
            })?),
        };
        let served = match body.items {
            Items::Found(items) => items,
            // A lookup by id may answer with the record itself.
            Items::NotArray("an object") if listing.one_record => {
                let text = response
                    .body
                    .strip_prefix(b"\xEF\xBB\xBF")
                    .unwrap_or(&response.body);
                vec![
                    serde_json::from_slice(text)
                        .map_err(|err| malformed(format!("the record cannot be read: {err}")))?,
                ]
            }
            Items::NotArray(kind) => {
                return Err(malformed(format!(
                    "{} is {kind}, not an array",
                    describe(&listing.items_path),
                )));
            }
            Items::Missing => {
                return Err(malformed(format!(
                    "the body has no `{}` array",
                    listing.items_path
                )));
            }
        };
        let count = served.len();
        let mut items = Vec::with_capacity(count);
        let mut unreadable = Vec::new();
        let mut last_readable = false;
        for item in served {
            match Record::parse(item) {
                Ok(record) => {
                    items.push(record);
                    last_readable = true;
                }
                Err(bad) => {
                    unreadable.push(bad);
                    last_readable = false;
                }
            }
        }
        let link: Vec<String> = response
            .headers
            .get_all(LINK)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect();
        let url = Url::parse(&shown).map_err(|error| malformed(format!("page URL: {error}")))?;
        let view = PageView {
            url: &url,
            link: &link,
            body: &body.envelope,
            items: count,
            last: items.last().filter(|_| last_readable),
            total,
            secret_params: &self.config.secret_params,
        };
        let next = listing
            .paginator
            .next(position, &view)
            .and_then(|next| check_page(position, count, next.as_ref()).map(|()| next))
            .map_err(|error| self.paging_error(stream, &shown, error))?;
        Ok(Served {
            items,
            unreadable,
            next,
            total,
        })
    }

    /// The JSON body of a `POST` listing's request at `position`: the listing's body (or
    /// the incremental one), with the watermark and the page token at their paths.
    fn request_body(
        &self,
        stream: &str,
        listing: &Listing,
        position: &Position,
        since_body: Option<Value>,
        since_param: Option<(String, String)>,
    ) -> Result<bytes::Bytes, HttpError> {
        let mut body = since_body
            .or_else(|| listing.body.clone())
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let token = listing.paginator.param(position).map(|(param, token)| {
            let value = match position {
                Position::Offset(offset) => Value::from(*offset),
                _ => Value::from(token),
            };
            (param, value)
        });
        let params = since_param
            .map(|(param, value)| (param, Value::from(value)))
            .into_iter()
            .chain(token);
        for (param, value) in params {
            let placed = param
                .parse::<JsonPath>()
                .is_ok_and(|path| path.set(&mut body, value));
            if !placed {
                return Err(HttpError::config(format!(
                    "{}/{stream}: the body of {} has no place for `{param}` (a value on its \
                     path is not a table)",
                    self.config.name, listing.path
                )));
            }
        }
        serde_json::to_vec(&body)
            .map(bytes::Bytes::from)
            .map_err(|error| {
                HttpError::config(format!("{}/{stream}: the body: {error}", self.config.name))
            })
    }

    /// What a request at `cursor` sends to read since its watermark.
    fn since_params(
        &self,
        name: &str,
        stream: &StreamPlan,
        cursor: &PageCursor,
    ) -> Result<Since, HttpError> {
        let Some(since) = &cursor.since else {
            return Ok(Since::default());
        };
        let Some(incremental) = &stream.incremental else {
            return Err(HttpError::config(format!(
                "{}: stream {name:?} has no [streams.{name}.incremental] table in {}, so it cannot read since a watermark",
                self.config.name, self.config.file
            )));
        };
        if matches!(cursor.position, Position::Url(_)) {
            return Ok(Since::default());
        }
        let value = render(since, incremental.format).map_err(|message| {
            HttpError::config(format!("{}/{name}: {message}", self.config.name))
        })?;
        let placed = [(SINCE_PLACEHOLDER, value.as_str())];
        Ok(Since {
            query: incremental
                .query
                .iter()
                .map(|(param, template)| (param.clone(), fill_text(template, &placed)))
                .collect(),
            param: incremental
                .param
                .clone()
                .map(|param| (param, value.clone())),
            body: incremental.body.as_ref().map(|body| fill(body, &placed)),
        })
    }

    async fn page(&self, name: &str, cursor: &PageCursor) -> Result<Page, HttpError> {
        let stream = self.stream(name)?;
        let since = self.since_params(name, stream, cursor)?;
        let served = self
            .serve(name, &stream.listing, &cursor.position, since)
            .await?;
        let fetched = served.items.len() + served.unreadable.len();
        let cursor_value = |record: &Record| {
            stream
                .cursor_field
                .as_ref()
                .and_then(|field| record.text_at(field))
                .map(std::borrow::Cow::into_owned)
        };
        let client_filter = stream
            .incremental
            .as_ref()
            .is_some_and(|incremental| incremental.client_filter);
        let records: Vec<Record> = match (&cursor.since, client_filter) {
            (Some(since), true) => served
                .items
                .into_iter()
                .filter(|record| {
                    // A record without a readable cursor value cannot be
                    // proven old, so it is kept.
                    cursor_value(record)
                        .is_none_or(|value| compare_watermarks(&value, since) != Ordering::Less)
                })
                .collect(),
            _ => served.items,
        };
        // The vendor's own high-water mark of the page, from values that place a record:
        // the warehouse quarantines the others, and they must not move it.
        let now = chrono::Utc::now();
        let watermark = records
            .iter()
            .map(cursor_value)
            .filter(|value| {
                stream
                    .cursor_type
                    .check("", value.as_deref(), now, stream.max_future_skew_secs)
                    .is_ok()
            })
            .fold(None, |a, b| stream.cursor_type.later(a, b));
        Ok(Page {
            records,
            unreadable: served.unreadable,
            fetched,
            next: served.next.map(|position| cursor.at(position)),
            total: served.total,
            watermark,
        })
    }

    async fn ids(&self, name: &str, cursor: &PageCursor) -> Result<IdPage, HttpError> {
        let stream = self.stream(name)?;
        if cursor.since.is_some() {
            return Err(HttpError::config(format!(
                "{}/{name}: an ids listing is always complete; start it with PageCursor::start(), not since a watermark",
                self.config.name
            )));
        }
        let (listing, id_field) = match &stream.ids {
            Some((listing, id_field)) => (listing, id_field.as_ref()),
            None => (&stream.listing, Some(&stream.primary_key)),
        };
        let served = self
            .serve(name, listing, &cursor.position, Since::default())
            .await?;
        if let Some(bad) = served.unreadable.first() {
            return Err(HttpError::malformed(
                listing.path.as_str(),
                format!(
                    "{}/{name}: an item of the ids listing cannot be read ({}), so the id set \
                     cannot be trusted",
                    self.config.name, bad.reason
                ),
            ));
        }
        let ids = served
            .items
            .iter()
            .map(|item| {
                let id = match id_field {
                    Some(field) if item.value().is_object() => item.text_at(field),
                    _ => item.text_at(&JsonPath::root()),
                };
                id.map(std::borrow::Cow::into_owned).ok_or_else(|| {
                    HttpError::malformed(
                        listing.path.as_str(),
                        format!(
                            "{}/{name}: an item of the ids listing has no id{}",
                            self.config.name,
                            id_field.map(|f| format!(" at `{f}`")).unwrap_or_default()
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(IdPage {
            ids,
            next: served.next.map(|position| cursor.at(position)),
            total: served.total,
        })
    }
}

/// Why a page answered with success is not a whole answer: a top-level `errors` array
/// that is not empty is how GraphQL (and some REST APIs) say that part of the data is
/// missing, and a partial page taken as whole is a silent gap.
fn partial_answer(envelope: &Value) -> Option<String> {
    let errors = envelope
        .get("errors")?
        .as_array()
        .filter(|errors| !errors.is_empty())?;
    let first = errors.first().map(|error| match error.get("message") {
        Some(Value::String(message)) => message.clone(),
        _ => error.to_string(),
    });
    let mut first = first.unwrap_or_default();
    if first.len() > 200 {
        let mut end = 200;
        while !first.is_char_boundary(end) {
            end -= 1;
        }
        first.truncate(end);
        first.push('…');
    }
    Some(format!(
        "the answer carries {} error(s) beside its data, so its page may be partial: {first:?}",
        errors.len()
    ))
}

/// A listing's items path, for messages.
fn describe(path: &JsonPath) -> String {
    if path.is_root() {
        "the body".to_owned()
    } else {
        format!("`{path}`")
    }
}

impl Source for RestSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn streams(&self) -> Vec<StreamInfo> {
        self.config
            .streams
            .iter()
            .map(|(name, stream)| StreamInfo {
                name: name.clone(),
                primary_key: stream.primary_key.to_string(),
                cursor_field: stream.cursor_field.as_ref().map(ToString::to_string),
                cursor_type: stream.cursor_type,
                max_future_skew_secs: stream.max_future_skew_secs,
                incremental: stream.incremental.is_some(),
                max_pages: stream.max_pages,
            })
            .collect()
    }

    fn requests_per_second(&self) -> Option<f64> {
        self.config
            .http()
            .rate_limit
            .as_ref()
            .map(|limit| limit.requests_per_second)
    }

    fn fetch_page<'a>(
        &'a self,
        stream: &'a str,
        cursor: &'a PageCursor,
    ) -> BoxFuture<'a, Result<Page, HttpError>> {
        self.page(stream, cursor).boxed()
    }

    fn list_ids<'a>(
        &'a self,
        stream: &'a str,
        cursor: &'a PageCursor,
    ) -> BoxFuture<'a, Result<IdPage, HttpError>> {
        self.ids(stream, cursor).boxed()
    }
}

impl std::fmt::Debug for RestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSource")
            .field("name", &self.config.name)
            .field("file", &self.config.file)
            .field("base_url", &self.client.base_url())
            .finish_non_exhaustive()
    }
}
