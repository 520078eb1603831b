//! Salesforce-like: `GET /services/data/v59.0/query?q=SELECT ... FROM stream
//! WHERE LastModifiedDate > ...` answering `{totalSize, done, records,
//! nextRecordsUrl}`.
//!
//! The SOQL understood is `SELECT <fields> FROM <stream> [WHERE <cond> [AND
//! <cond>]...] [ORDER BY ...] [LIMIT n]`, where a condition compares
//! `LastModifiedDate`/`SystemModstamp` or `CreatedDate` with `>`, `>=`, `<`,
//! `<=` to a datetime literal, or `Email` with `=` to a string literal
//! (`'o\\'brien@example.com'`, compared without regard to case). Whatever the select list, whole records come
//! back (the same data as every other style), in id order. Page size is
//! `Sforce-Query-Options: batchSize=N`, clamped to the maximum page size.
//! Like Salesforce's, query locators are server-side cursors.

use std::sync::{Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, json_page, parse_instant, quoted};
use crate::store::{Behind, Bounds, RecordFilter};
use crate::stream::Stream;
use crate::vendor::Vendor;

const QUERY_PATH: &str = "/services/data/v59.0/query";

/// A parsed query, kept for its locator.
#[derive(Clone, Debug, PartialEq)]
struct Soql {
    stream: Stream,
    filter: RecordFilter,
    limit: Option<usize>,
}

/// Open query cursors, indexed by locator number.
#[derive(Default)]
pub(crate) struct QueryStore(Mutex<Vec<Soql>>);

impl QueryStore {
    fn open(&self, query: Soql) -> usize {
        let mut queries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queries.push(query);
        queries.len() - 1
    }

    fn get(&self, index: usize) -> Option<Soql> {
        let queries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queries.get(index).cloned()
    }
}

/// Salesforce's error body: a list of `{message, errorCode}`.
pub(crate) fn salesforce_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!([{"message": message, "errorCode": code}])),
    )
        .into_response()
}

fn malformed(message: &str) -> ApiError {
    ApiError::salesforce(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", message)
}

/// Splits SOQL into words, with runs of `<`, `>` and `=` as their own tokens
/// so `LastModifiedDate>2026-01-01T00:00:00Z` reads like the spaced form.
fn tokens(query: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut operator = false;
    let mut chars = query.chars();
    while let Some(c) = chars.next() {
        // A string literal is one token, spaces and escaped quotes included.
        if c == '\'' && current.is_empty() {
            current.push(c);
            while let Some(c) = chars.next() {
                current.push(c);
                match c {
                    '\\' => current.extend(chars.next()),
                    '\'' => break,
                    _ => {}
                }
            }
            tokens.push(std::mem::take(&mut current));
            operator = false;
            continue;
        }
        let is_operator = matches!(c, '<' | '>' | '=');
        let boundary = c.is_whitespace() || c == ',' || is_operator != operator;
        if boundary && !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        if !c.is_whitespace() && c != ',' {
            current.push(c);
            operator = is_operator;
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn parse(query: &str) -> Result<Soql, ApiError> {
    let tokens = tokens(query);
    let keyword =
        |i: usize, word: &str| tokens.get(i).is_some_and(|t| t.eq_ignore_ascii_case(word));
    if !keyword(0, "SELECT") {
        return Err(malformed("a query starts with SELECT"));
    }
    let from = (1..tokens.len())
        .find(|&i| keyword(i, "FROM"))
        .ok_or_else(|| malformed("a query needs FROM"))?;
    if from == 1 {
        return Err(malformed("SELECT needs at least one field"));
    }
    let name = tokens
        .get(from + 1)
        .ok_or_else(|| malformed("FROM needs an object name"))?;
    let stream: Stream = name.parse().map_err(|_| {
        ApiError::salesforce(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            format!("sObject type '{name}' is not supported"),
        )
    })?;
    let mut query = Soql {
        stream,
        filter: RecordFilter::default(),
        limit: None,
    };
    let mut i = from + 2;
    if keyword(i, "WHERE") {
        i += 1;
        loop {
            let (Some(field), Some(op), Some(value)) =
                (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2))
            else {
                return Err(malformed("a condition reads <field> <operator> <datetime>"));
            };
            if field.eq_ignore_ascii_case("email") {
                if op != "=" {
                    return Err(malformed("Email is compared with ="));
                }
                query.filter.email = Some(string_literal(value)?);
                i += 3;
                if keyword(i, "AND") {
                    i += 1;
                    continue;
                }
                break;
            }
            let bounds: &mut Bounds = match field.to_ascii_lowercase().as_str() {
                "lastmodifieddate" | "systemmodstamp" => &mut query.filter.updated,
                "createddate" => &mut query.filter.created,
                _ => return Err(malformed(&format!("cannot filter on {field}"))),
            };
            let instant = parse_instant(value)
                .ok_or_else(|| malformed(&format!("{value} is not a datetime")))?;
            match op.as_str() {
                ">" => bounds.above(instant, false),
                ">=" => bounds.above(instant, true),
                "<" => bounds.below(instant, false),
                "<=" => bounds.below(instant, true),
                _ => return Err(malformed(&format!("unsupported operator {op}"))),
            }
            i += 3;
            if keyword(i, "AND") {
                i += 1;
            } else {
                break;
            }
        }
    }
    if keyword(i, "ORDER") {
        i += 1;
        while i < tokens.len() && !keyword(i, "LIMIT") {
            i += 1;
        }
    }
    if keyword(i, "LIMIT") {
        let n = tokens
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed("LIMIT needs a number"))?;
        query.limit = Some(n);
        i += 2;
    }
    if let Some(extra) = tokens.get(i) {
        return Err(malformed(&format!("unexpected token {extra}")));
    }
    Ok(query)
}

/// The text of a SOQL string literal: `'...'` with `\\'` and `\\\\` escapes; an
/// unescaped quote inside is refused, as Salesforce refuses it.
fn string_literal(token: &str) -> Result<String, ApiError> {
    let inner = token
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .ok_or_else(|| malformed(&format!("{token} is not a string literal")))?;
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\'' | '\\')) => text.push(escaped),
                _ => return Err(malformed("invalid escape in a string literal")),
            },
            '\'' => return Err(malformed(&format!("unexpected quote in {token}"))),
            other => text.push(other),
        }
    }
    Ok(text)
}

fn batch_size(vendor: &Vendor, headers: &HeaderMap) -> usize {
    let max = vendor.inner().config.max_page_size;
    headers
        .get("sforce-query-options")
        .and_then(|value| value.to_str().ok())
        .and_then(|options| {
            options
                .split(',')
                .find_map(|option| option.trim().strip_prefix("batchSize="))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(max, |n| n.clamp(1, max))
}

/// Serves records of `query` after `after`, `served` of them already sent.
fn respond(
    vendor: &Vendor,
    locator: usize,
    query: Soql,
    served: usize,
    after: Option<u64>,
    batch: usize,
) -> Response {
    let data = vendor.read(query.stream);
    let matching = data.count(&query.filter);
    let total = query.limit.map_or(matching, |limit| limit.min(matching));
    let batch = batch.min(total.saturating_sub(served));
    let page = data.page(after, false, &query.filter, batch);
    drop(data);
    let served = served + page.records.len();
    let done = !page.has_more || served >= total;
    let next = match page.last_id.filter(|_| !done) {
        Some(last) => format!(
            ",\"nextRecordsUrl\":{}",
            quoted(&format!("{QUERY_PATH}/01g{locator:015}-{served}-{last}"))
        ),
        None => String::new(),
    };
    json_page(
        &format!("{{\"totalSize\":{total},\"done\":{done}{next},\"records\":["),
        &page.records,
        "]}",
    )
}

#[derive(Deserialize)]
pub(crate) struct QueryParams {
    q: Option<String>,
}

/// `GET /services/data/v59.0/query?q=...`.
pub(crate) async fn query(
    State(vendor): State<Vendor>,
    headers: HeaderMap,
    Query(params): Query<QueryParams>,
) -> Result<Response, ApiError> {
    let text = params
        .q
        .ok_or_else(|| malformed("the q parameter is required"))?;
    let query = parse(&text)?;
    vendor.before_page(query.stream, None);
    let locator = vendor.queries().open(query.clone());
    Ok(respond(
        &vendor,
        locator,
        query,
        0,
        None,
        batch_size(&vendor, &headers),
    ))
}

/// `GET /services/data/v59.0/query/{locator}`: the next batch of an open query.
pub(crate) async fn more(
    State(vendor): State<Vendor>,
    headers: HeaderMap,
    Path(locator): Path<String>,
) -> Result<Response, ApiError> {
    let invalid = || {
        ApiError::salesforce(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )
    };
    let mut parts = locator
        .strip_prefix("01g")
        .ok_or_else(invalid)?
        .split('-')
        .map(str::parse::<u64>);
    let (Some(Ok(index)), Some(Ok(served)), Some(Ok(after)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let index = usize::try_from(index).map_err(|_| invalid())?;
    let served = usize::try_from(served).map_err(|_| invalid())?;
    let query = vendor.queries().get(index).ok_or_else(invalid)?;
    vendor.before_page(query.stream, Some(Behind::UpTo(after)));
    Ok(respond(
        &vendor,
        index,
        query,
        served,
        Some(after),
        batch_size(&vendor, &headers),
    ))
}

#[cfg(test)]
mod tests {
    use super::{parse, tokens};
    use crate::stream::Stream;

    #[test]
    fn operators_split_from_glued_words() {
        assert_eq!(
            tokens("SELECT Id, Name FROM deals WHERE LastModifiedDate>=2026-01-01T00:00:00Z"),
            [
                "SELECT",
                "Id",
                "Name",
                "FROM",
                "deals",
                "WHERE",
                "LastModifiedDate",
                ">=",
                "2026-01-01T00:00:00Z"
            ]
        );
    }

    #[test]
    fn parses_filters_and_limit() {
        let query = parse(
            "select Id from contacts where LastModifiedDate > 2026-01-01T00:00:00Z \
             and CreatedDate <= 2026-02-01T00:00:00.000+0000 order by Id limit 5",
        )
        .unwrap_or_else(|_| panic!("query should parse"));
        assert_eq!(query.stream, Stream::Contacts);
        assert_eq!(query.filter.updated.lower, Some((1_767_225_600_000, false)));
        assert_eq!(query.filter.created.upper, Some((1_769_904_000_000, true)));
        assert_eq!(query.limit, Some(5));
        assert!(parse("SELECT FROM contacts").is_err());
        assert!(parse("SELECT Id FROM widgets").is_err());
    }
}
