//! Searching a source for one person: [`RestSource::lookup`] runs a stream's
//! `lookup` (by e-mail) or `lookup_by_id`, one page at a time, and keeps only the
//! records that hold the identifier searched for.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::config::Listing;
use super::lookups::{IdentityKind, Lookup};
use super::schema::Escape;
use super::source::{RestSource, Since};
use super::template::{fill, fill_text};
use crate::destination::{self, Erased};
use crate::error::{Category, HttpError};
use crate::paginate::{JsonPath, PageCursor, Paged};
use crate::record::Record;

/// Characters of an identifier that stay as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// One page of a lookup's answer.
#[derive(Debug)]
pub struct LookupPage {
    /// The records that hold the identifier searched for.
    pub found: Vec<Found>,
    /// Records the vendor answered that do not hold it (a fuzzy search, a vendor that
    /// answers more than it was asked): counted, never kept.
    pub rejected: usize,
    /// The next page, `None` on the last.
    pub next: Option<PageCursor>,
    /// Items the vendor served on this page, kept or not.
    pub fetched: usize,
    /// The vendor's count of matches, when the lookup reads one.
    pub total: Option<u64>,
}

impl Paged for LookupPage {
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

/// A record found for a person.
#[derive(Debug)]
pub struct Found {
    /// The record's id (its primary key).
    pub id: String,
    /// The record as the vendor sent it.
    pub record: Record,
}

impl RestSource {
    /// Each stream's lookups, as (stream, what it searches by).
    pub fn lookups(&self) -> Vec<(String, IdentityKind)> {
        self.config()
            .streams
            .iter()
            .flat_map(|(name, stream)| {
                stream
                    .lookups
                    .iter()
                    .map(move |lookup| (name.clone(), lookup.kind))
            })
            .collect()
    }

    /// The dotted fields of `stream`'s records that hold a person's e-mail address
    /// (`[streams.<name>.identity] email`); empty for an unknown stream.
    pub fn identity_fields(&self, stream: &str) -> Vec<String> {
        self.config()
            .streams
            .get(stream)
            .map(|plan| {
                plan.identity_emails
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One page of `stream`'s lookup by `kind` for `value`, at `cursor`
    /// (`PageCursor::start()` first).
    ///
    /// A record is kept only where it holds `value`: an e-mail in one of the stream's
    /// identity fields (compared without regard to case or surrounding spaces), an id as
    /// its primary key. A lookup by id whose path holds `{id}` reads a 404 as "no such
    /// record". An item that cannot be read fails the page: it may be the person's.
    pub async fn lookup(
        &self,
        stream: &str,
        kind: IdentityKind,
        value: &str,
        cursor: &PageCursor,
    ) -> Result<LookupPage, HttpError> {
        let plan = self.stream(stream)?;
        let lookup = plan
            .lookups
            .iter()
            .find(|lookup| lookup.kind == kind)
            .ok_or_else(|| {
                HttpError::config(format!(
                    "{}/{stream}: no [streams.{stream}.{}] in {}",
                    self.config().name,
                    kind.table(),
                    self.config().file
                ))
            })?;
        let listing = filled(lookup, value);
        let served = match self
            .serve(stream, &listing, &cursor.position, Since::default())
            .await
        {
            Err(error)
                if error.category() == Category::NotFound
                    && kind == IdentityKind::Id
                    && lookup.listing.path.contains(kind.placeholder()) =>
            {
                return Ok(LookupPage {
                    found: Vec::new(),
                    rejected: 0,
                    next: None,
                    fetched: 0,
                    total: Some(0),
                });
            }
            served => served?,
        };
        if let Some(bad) = served.unreadable.first() {
            return Err(HttpError::malformed(
                &lookup.listing.path,
                format!(
                    "{}/{stream}: an item the lookup found cannot be read ({}); it may be the \
                     person's, so the search cannot be trusted",
                    self.config().name,
                    bad.reason
                ),
            ));
        }
        let fetched = served.items.len();
        let total = served.total;
        let wanted = normalized(value);
        let mut found = Vec::new();
        let mut rejected = 0;
        for record in served.items {
            let id = record
                .text_at(&plan.primary_key)
                .map(std::borrow::Cow::into_owned);
            let holds = match kind {
                IdentityKind::Email => holds_email(&record, &plan.identity_emails, &wanted),
                IdentityKind::Id => id.as_deref() == Some(value),
            };
            match id {
                Some(id) if holds => found.push(Found { id, record }),
                _ => rejected += 1,
            }
        }
        Ok(LookupPage {
            found,
            rejected,
            next: served.next.map(|position| cursor.at(position)),
            fetched,
            total,
        })
    }
}

impl RestSource {
    /// Whether `stream` declares how a person's record is erased.
    pub fn erases(&self, stream: &str) -> bool {
        self.config()
            .streams
            .get(stream)
            .is_some_and(|plan| plan.erase.is_some())
    }

    /// Erases record `id` of `stream` as its `[streams.<name>.erase]` says, while it
    /// still holds the person's identifier: `email` in an identity field, or an id in
    /// `ids` as its primary key. Through the source's own client: its credentials and
    /// its rate budget.
    pub async fn erase(
        &self,
        stream: &str,
        id: &str,
        email: &str,
        ids: &[String],
    ) -> Result<Erased, HttpError> {
        let plan = self.stream(stream)?;
        let erase = plan.erase.as_ref().ok_or_else(|| {
            HttpError::config(format!(
                "{}/{stream}: no [streams.{stream}.erase] in {}",
                self.config().name,
                self.config().file
            ))
        })?;
        let url = fill_text(
            &erase.path,
            &[("{id}", &utf8_percent_encode(id, SEGMENT).to_string())],
        );
        let wanted = normalized(email);
        let theirs = |current: &serde_json::Value| {
            let record = Record::from_value(current.clone());
            holds_email(&record, &plan.identity_emails, &wanted)
                || record
                    .text_at(&plan.primary_key)
                    .is_some_and(|key| key == id && ids.iter().any(|wanted| wanted == id))
        };
        destination::erase(self.client(), &url, &erase.mode, theirs).await
    }
}

/// An e-mail address as addresses are compared: trimmed, lower-cased.
pub(crate) fn normalized(email: &str) -> String {
    email.trim().to_lowercase()
}

fn holds_email(record: &Record, fields: &[JsonPath], wanted: &str) -> bool {
    fields.iter().any(|field| {
        record
            .text_at(field)
            .is_some_and(|text| normalized(&text) == wanted)
    })
}

/// The lookup's listing with `value` in its templates: percent-encoded in the path,
/// escaped as the lookup says in the query, and as a JSON string's content in the body.
fn filled(lookup: &Lookup, value: &str) -> Listing {
    let placeholder = lookup.kind.placeholder();
    let escaped = match lookup.escape {
        Escape::None => value.to_owned(),
        Escape::Soql => value.replace('\\', "\\\\").replace('\'', "\\'"),
    };
    let segment = utf8_percent_encode(value, SEGMENT).to_string();
    let mut listing = lookup.listing.clone();
    listing.path = fill_text(&listing.path, &[(placeholder, &segment)]);
    for (_, template) in &mut listing.query {
        *template = fill_text(template, &[(placeholder, &escaped)]);
    }
    listing.body = listing
        .body
        .map(|body| fill(&body, &[(placeholder, &escaped)]));
    listing
}
