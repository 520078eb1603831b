//! The one cursor every paginator's position is normalised into.

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

/// Where a traversal of one stream stands: the page to fetch next, and the
/// incremental lower bound the traversal was started with.
///
/// It is stored in workflow checkpoints, so it holds no secret: URLs the vendor
/// hands out are scrubbed of credentials ([`scrub_url`]) before they become a
/// position, and auth is added again by the HTTP client on every request.
///
/// `since` lives in the cursor rather than being passed with every page so that
/// one traversal uses one filter from its first page to its last. Changing the
/// filter halfway through a keyset traversal (after id 500, updated since T2
/// instead of T1) would silently skip records updated between T1 and T2 that
/// sit after id 500.
///
/// ```
/// use cairn_connectors::paginate::{PageCursor, Position};
///
/// let cursor = PageCursor::since("2026-05-01T00:00:00Z");
/// let next = cursor.at(Position::Token("500".to_owned()));
/// assert_eq!(next.since.as_deref(), Some("2026-05-01T00:00:00Z"));
/// let stored = serde_json::to_string(&next).unwrap();
/// assert_eq!(serde_json::from_str::<PageCursor>(&stored).unwrap(), next);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PageCursor {
    /// The inclusive lower bound on the stream's cursor field (a watermark as
    /// read from records, e.g. `2026-05-01T00:00:00Z`), or `None` for a full
    /// read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The page to fetch.
    pub position: Position,
}

impl PageCursor {
    /// The first page of a full read.
    pub fn start() -> Self {
        Self::default()
    }

    /// The first page of an incremental read: records whose cursor field is at
    /// or after `watermark`.
    pub fn since(watermark: impl Into<String>) -> Self {
        Self {
            since: Some(watermark.into()),
            position: Position::Start,
        }
    }

    /// The same traversal at another position.
    pub fn at(&self, position: Position) -> Self {
        Self {
            since: self.since.clone(),
            position,
        }
    }
}

/// A page of a listing, in the form every paginator kind reduces to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Position {
    /// The first page.
    #[default]
    Start,
    /// A token sent back in a query parameter: a cursor or `after` value, a
    /// page token, or Stripe's `starting_after` id.
    Token(String),
    /// The number of records to skip (offset/limit paging).
    Offset(u64),
    /// A URL the vendor gave for the next page (a `Link: rel="next"` header,
    /// Salesforce's `nextRecordsUrl`), absolute and scrubbed of credentials.
    Url(String),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Start => f.write_str("the first page"),
            Position::Token(token) => write!(f, "token {token:?}"),
            Position::Offset(offset) => write!(f, "offset {offset}"),
            Position::Url(url) => write!(f, "URL {url}"),
        }
    }
}

/// Query parameters that carry credentials at some vendor and never belong in a
/// stored cursor. Compared case-insensitively; a source adds its own names.
pub const SECRET_PARAMS: [&str; 10] = [
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "client_secret",
    "key",
    "password",
    "refresh_token",
    "sig",
    "signature",
];

/// `url` without user info and without the query parameters named in
/// [`SECRET_PARAMS`] or `extra` (case-insensitively). The order of the other
/// parameters is kept, since some vendors sign or compare next links verbatim.
pub fn scrub_url(url: &Url, extra: &[String]) -> Url {
    let secret = |name: &str| {
        SECRET_PARAMS
            .iter()
            .any(|secret| secret.eq_ignore_ascii_case(name))
            || extra.iter().any(|secret| secret.eq_ignore_ascii_case(name))
    };
    let mut scrubbed = url.clone();
    // Both setters only fail for URLs that cannot carry credentials at all
    // (`data:`, `mailto:`), which then have none to remove.
    let _ = scrubbed.set_username("");
    let _ = scrubbed.set_password(None);
    if url.query().is_some() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| !secret(name))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        if kept.is_empty() {
            scrubbed.set_query(None);
        } else {
            scrubbed.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    scrubbed
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use url::Url;

    use super::{PageCursor, Position, scrub_url};

    #[test]
    fn cursors_serialize_as_tagged_positions() {
        let cursor = PageCursor::start().at(Position::Offset(50));
        assert_eq!(
            serde_json::to_value(&cursor).expect("serializes"),
            json!({"position": {"kind": "offset", "value": 50}})
        );
        let start: PageCursor =
            serde_json::from_value(json!({"position": {"kind": "start"}})).expect("parses");
        assert_eq!(start, PageCursor::start());
    }

    #[test]
    fn scrubbing_removes_credentials_and_keeps_the_rest_in_order() {
        let url = Url::parse(
            "https://user:pw@api.example.com/rest/contacts?limit=25&API_KEY=s3cret&cursor=9&token=x",
        )
        .expect("a URL");
        let scrubbed = scrub_url(&url, &["token".to_owned()]);
        assert_eq!(
            scrubbed.as_str(),
            "https://api.example.com/rest/contacts?limit=25&cursor=9"
        );
        let only_secret = Url::parse("https://a.example/x?access_token=t").expect("a URL");
        assert_eq!(scrub_url(&only_secret, &[]).as_str(), "https://a.example/x");
    }
}
