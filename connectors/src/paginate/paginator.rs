//! The paginator kinds: how a listing is asked for a page, and how its answer
//! says where the next page is.

use serde_json::Value;
use url::Url;

use super::cursor::{Position, scrub_url};
use super::error::PaginationError;
use super::path::{JsonPath, scalar_text};
use crate::record::Record;

/// How one listing pages, as configured (see the `rest` module for the TOML).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Paginator {
    /// One page holds everything.
    Single,
    /// The body carries an opaque token for the next page (HubSpot
    /// `paging.next.after`, Google `nextPageToken`), sent back in `param`;
    /// missing, null or `""` on the last page.
    Token {
        /// The query parameter the token goes back in.
        param: String,
        /// Where the next token is in the body.
        next_path: JsonPath,
    },
    /// Offset/limit: `param` is the number of records to skip. Ends on an
    /// empty page, or once the vendor's total (when the listing has one) is
    /// reached.
    Offset {
        /// The query parameter the offset goes in.
        param: String,
    },
    /// RFC 8288: the next page's URL is in `Link: <url>; rel="next"`.
    LinkHeader,
    /// The body carries the next page's URL (Salesforce `nextRecordsUrl`),
    /// absolute or relative to the page's URL; missing or null on the last page.
    NextUrl {
        /// Where the next URL is in the body.
        next_path: JsonPath,
    },
    /// Stripe: `has_more` says whether there is a next page, asked for with the
    /// id of the page's last record in `starting_after`.
    Stripe {
        /// The query parameter the last id goes in (`starting_after`).
        param: String,
        /// Where the `has_more` flag is in the body.
        has_more_path: JsonPath,
        /// Where a record's id is (for a listing of bare ids, the item itself).
        id_field: JsonPath,
    },
    /// A GraphQL connection (Relay's cursor spec): `has_next_path` (`pageInfo.hasNextPage`)
    /// says whether there is a next page, asked for with the token at `end_cursor_path`
    /// (`pageInfo.endCursor`) in the variable `param`.
    Connection {
        /// Where the token goes back: a body path such as `variables.after`.
        param: String,
        /// Where the next token is in the body.
        end_cursor_path: JsonPath,
        /// Where the `hasNextPage` flag is in the body.
        has_next_path: JsonPath,
    },
}

/// What a paginator reads from one answered page.
#[derive(Clone, Copy, Debug)]
pub struct PageView<'a> {
    /// The URL the page was fetched from (credentials already scrubbed).
    pub url: &'a Url,
    /// The values of every `Link` header of the response.
    pub link: &'a [String],
    /// The parsed body.
    pub body: &'a Value,
    /// How many items (records or ids) the page holds, unfiltered, readable or not.
    pub items: usize,
    /// The page's last item, when it has one and it could be read.
    pub last: Option<&'a Record>,
    /// The vendor's total, when the listing reports one.
    pub total: Option<u64>,
    /// Query parameters to scrub from next URLs besides [`SECRET_PARAMS`](super::SECRET_PARAMS).
    pub secret_params: &'a [String],
}

impl Paginator {
    /// The query parameter that asks for `position`, added to the listing's
    /// own parameters; `None` for the first page and for URL positions (a URL
    /// is requested as it is).
    pub fn param(&self, position: &Position) -> Option<(String, String)> {
        match (self, position) {
            (
                Paginator::Token { param, .. }
                | Paginator::Stripe { param, .. }
                | Paginator::Connection { param, .. },
                Position::Token(token),
            ) => Some((param.clone(), token.clone())),
            (Paginator::Offset { param }, Position::Offset(offset)) => {
                Some((param.clone(), offset.to_string()))
            }
            _ => None,
        }
    }

    /// Whether `position` is one this paginator produces, so that a cursor from
    /// another listing (or an edited source file) is refused instead of being
    /// quietly read as the first page.
    pub fn accepts(&self, position: &Position) -> bool {
        matches!(
            (self, position),
            (_, Position::Start)
                | (
                    Paginator::Token { .. }
                        | Paginator::Stripe { .. }
                        | Paginator::Connection { .. },
                    Position::Token(_)
                )
                | (Paginator::Offset { .. }, Position::Offset(_))
                | (
                    Paginator::LinkHeader | Paginator::NextUrl { .. },
                    Position::Url(_)
                )
        )
    }

    /// The page after `current`, read from `page`; `None` on the last page.
    ///
    /// Next URLs are resolved against the page's URL, scrubbed of credentials,
    /// and refused when they point at another origin: the HTTP client would
    /// send our credentials wherever a vendor's link points.
    pub fn next(
        &self,
        current: &Position,
        page: &PageView<'_>,
    ) -> Result<Option<Position>, PaginationError> {
        match self {
            Paginator::Single => Ok(None),
            Paginator::Token { next_path, .. } => match next_path.get(page.body) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => match scalar_text(value) {
                    Some(token) if token.is_empty() => Ok(None),
                    Some(token) => Ok(Some(Position::Token(token))),
                    None => Err(PaginationError::malformed(format!(
                        "the next-page token at `{next_path}` is {}, not a string or a number",
                        kind_of(value)
                    ))),
                },
            },
            Paginator::Offset { .. } => {
                let skipped = match current {
                    Position::Offset(offset) => *offset,
                    _ => 0,
                };
                let next = skipped + page.items as u64;
                let complete = page.items == 0 || page.total.is_some_and(|t| next >= t);
                Ok((!complete).then_some(Position::Offset(next)))
            }
            Paginator::LinkHeader => page
                .link
                .iter()
                .find_map(|value| next_link(value))
                .map(|target| follow(page, &target))
                .transpose(),
            Paginator::NextUrl { next_path } => match next_path.get(page.body) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(target)) if target.is_empty() => Ok(None),
                Some(Value::String(target)) => follow(page, target).map(Some),
                Some(other) => Err(PaginationError::malformed(format!(
                    "the next-page URL at `{next_path}` is {}, not a string",
                    kind_of(other)
                ))),
            },
            Paginator::Connection {
                end_cursor_path,
                has_next_path,
                ..
            } => {
                if !flag(page.body, has_next_path)? {
                    return Ok(None);
                }
                if page.items == 0 {
                    return Err(PaginationError::EmptyPageWithNext {
                        position: current.clone(),
                        next: format!("`{has_next_path}` = true"),
                    });
                }
                match end_cursor_path.get(page.body).map(scalar_text) {
                    Some(Some(token)) if !token.is_empty() => Ok(Some(Position::Token(token))),
                    _ => Err(PaginationError::malformed(format!(
                        "`{has_next_path}` is true but `{end_cursor_path}` holds no cursor to continue after"
                    ))),
                }
            }
            Paginator::Stripe {
                has_more_path,
                id_field,
                ..
            } => {
                if !flag(page.body, has_more_path)? {
                    return Ok(None);
                }
                if page.items == 0 {
                    return Err(PaginationError::EmptyPageWithNext {
                        position: current.clone(),
                        next: format!("`{has_more_path}` = true"),
                    });
                }
                let Some(last) = page.last else {
                    return Err(PaginationError::malformed(
                        "the page's last record cannot be read, so there is no id to continue after"
                            .to_owned(),
                    ));
                };
                last.text_at(id_field)
                    .map(|id| Some(Position::Token(id.into_owned())))
                    .ok_or_else(|| {
                        PaginationError::malformed(format!(
                            "the page's last record has no `{id_field}` to continue after"
                        ))
                    })
            }
        }
    }
}

/// The next page's URL from one `Link` header value, if it has a `rel="next"`
/// link (RFC 8288: comma-separated `<uri>; param=value` links; `rel` may list
/// several relation types).
/// The boolean at `path` of a page's body: whether it says there is a next page.
fn flag(body: &Value, path: &JsonPath) -> Result<bool, PaginationError> {
    match path.get(body) {
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(PaginationError::malformed(format!(
            "`{path}` is {}, not true or false",
            kind_of(other)
        ))),
        None => Err(PaginationError::malformed(format!(
            "the body has no `{path}` flag"
        ))),
    }
}

fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim().to_owned());
        }
        rest = &rest[params_end..];
    }
    None
}

/// A vendor-given next URL as a position: resolved, same-origin, scrubbed.
fn follow(page: &PageView<'_>, target: &str) -> Result<Position, PaginationError> {
    let url = page
        .url
        .join(target)
        .map_err(|error| PaginationError::malformed(format!("next URL {target:?}: {error}")))?;
    if url.origin() != page.url.origin() {
        return Err(PaginationError::ForeignUrl {
            next: scrub_url(&url, page.secret_params).to_string(),
            page: page.url.to_string(),
        });
    }
    Ok(Position::Url(
        scrub_url(&url, page.secret_params).to_string(),
    ))
}

/// A JSON value's kind, for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use url::Url;

    use super::{PageView, Paginator, next_link};
    use crate::paginate::{PaginationError, Position};
    use crate::record::Record;

    fn view<'a>(
        url: &'a Url,
        link: &'a [String],
        body: &'a Value,
        items: &'a [Record],
    ) -> PageView<'a> {
        PageView {
            url,
            link,
            body,
            items: items.len(),
            last: items.last(),
            total: None,
            secret_params: &[],
        }
    }

    fn records(texts: &[&str]) -> Vec<Record> {
        texts
            .iter()
            .map(|text| {
                let raw = serde_json::value::RawValue::from_string((*text).to_owned());
                Record::parse(raw.unwrap()).unwrap()
            })
            .collect()
    }

    fn page_url() -> Url {
        Url::parse("http://127.0.0.1:9/rest/contacts?limit=2").expect("a URL")
    }

    #[test]
    fn link_headers_with_several_links_and_relations() {
        assert_eq!(
            next_link(
                r#"<https://a.example/p?page=1>; rel="prev", <https://a.example/p?page=3>; rel="next last""#
            ),
            Some("https://a.example/p?page=3".to_owned())
        );
        assert_eq!(
            next_link(r#"<https://a.example/p?page=1>; rel="prev""#),
            None
        );
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn next_urls_resolve_scrub_and_stay_on_origin() {
        let url = page_url();
        let paginator = Paginator::NextUrl {
            next_path: "nextRecordsUrl".parse().expect("a path"),
        };
        let body = json!({"nextRecordsUrl": "/services/data/v59.0/query/01g-25?api_key=k"});
        let next = paginator.next(&Position::Start, &view(&url, &[], &body, &[]));
        assert_eq!(
            next.expect("follows"),
            Some(Position::Url(
                "http://127.0.0.1:9/services/data/v59.0/query/01g-25".to_owned()
            ))
        );
        let foreign = json!({"nextRecordsUrl": "http://evil.example/steal"});
        assert!(matches!(
            paginator.next(&Position::Start, &view(&url, &[], &foreign, &[])),
            Err(PaginationError::ForeignUrl { .. })
        ));
    }

    #[test]
    fn tokens_end_on_missing_null_or_empty() {
        let url = page_url();
        let paginator = Paginator::Token {
            param: "after".to_owned(),
            next_path: "paging.next.after".parse().expect("a path"),
        };
        for (body, expected) in [
            (
                json!({"paging": {"next": {"after": "25"}}}),
                Some(Position::Token("25".to_owned())),
            ),
            (
                json!({"paging": {"next": {"after": 25}}}),
                Some(Position::Token("25".to_owned())),
            ),
            (json!({"paging": {"next": {"after": ""}}}), None),
            (json!({"paging": null}), None),
            (json!({}), None),
        ] {
            let next = paginator
                .next(&Position::Start, &view(&url, &[], &body, &[]))
                .expect("a token or the end");
            assert_eq!(next, expected, "{body}");
        }
        let bad = json!({"paging": {"next": {"after": [1]}}});
        assert!(matches!(
            paginator.next(&Position::Start, &view(&url, &[], &bad, &[])),
            Err(PaginationError::Malformed(_))
        ));
    }

    #[test]
    fn offsets_advance_by_what_was_served_and_stop_at_the_total() {
        let url = page_url();
        let paginator = Paginator::Offset {
            param: "offset".to_owned(),
        };
        let items = records(&[r#"{"id": "1"}"#, r#"{"id": "2"}"#]);
        let body = json!({});
        let mut page = view(&url, &[], &body, &items);
        page.total = Some(5);
        assert_eq!(
            paginator.next(&Position::Offset(2), &page).expect("next"),
            Some(Position::Offset(4))
        );
        page.total = Some(4);
        assert_eq!(
            paginator.next(&Position::Offset(2), &page).expect("end"),
            None
        );
        page.total = None;
        page.items = 0;
        assert_eq!(
            paginator.next(&Position::Offset(4), &page).expect("end"),
            None
        );
    }

    #[test]
    fn stripe_continues_after_the_last_id_while_has_more() {
        let url = page_url();
        let paginator = Paginator::Stripe {
            param: "starting_after".to_owned(),
            has_more_path: "has_more".parse().expect("a path"),
            id_field: "id".parse().expect("a path"),
        };
        let items = records(&[r#"{"id": "9"}"#, r#"{"id": 12345678901234567890123}"#]);
        let more = json!({"has_more": true});
        assert_eq!(
            paginator
                .next(&Position::Start, &view(&url, &[], &more, &items))
                .expect("next"),
            Some(Position::Token("12345678901234567890123".to_owned())),
            "the last id's exact digits"
        );
        assert!(matches!(
            paginator.next(&Position::Start, &view(&url, &[], &more, &[])),
            Err(PaginationError::EmptyPageWithNext { .. })
        ));
        let missing = json!({"data": []});
        assert!(matches!(
            paginator.next(&Position::Start, &view(&url, &[], &missing, &items)),
            Err(PaginationError::Malformed(_))
        ));
        assert_eq!(
            paginator.param(&Position::Token("8".to_owned())),
            Some(("starting_after".to_owned(), "8".to_owned()))
        );
    }
}
