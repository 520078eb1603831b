//! Stripe-like: `GET /v1/{stream}?limit&starting_after` answering
//! `{object: "list", data, has_more}`, newest first, with `created[gte]`-style
//! filters (Unix seconds). `updated[...]` filters the same way on
//! `updated_at` — not Stripe's, but it makes the style usable for incremental
//! syncs.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, id, json_page, limit, quoted, stream};
use crate::store::{Behind, Bounds, RecordFilter};
use crate::vendor::Vendor;
use axum::http::StatusCode;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    starting_after: Option<String>,
    #[serde(rename = "created[gt]")]
    created_gt: Option<i64>,
    #[serde(rename = "created[gte]")]
    created_gte: Option<i64>,
    #[serde(rename = "created[lt]")]
    created_lt: Option<i64>,
    #[serde(rename = "created[lte]")]
    created_lte: Option<i64>,
    #[serde(rename = "updated[gt]")]
    updated_gt: Option<i64>,
    #[serde(rename = "updated[gte]")]
    updated_gte: Option<i64>,
    #[serde(rename = "updated[lt]")]
    updated_lt: Option<i64>,
    #[serde(rename = "updated[lte]")]
    updated_lte: Option<i64>,
}

fn bounds(gt: Option<i64>, gte: Option<i64>, lt: Option<i64>, lte: Option<i64>) -> Bounds {
    let mut bounds = Bounds::default();
    let millis = |secs: i64| secs.saturating_mul(1000);
    if let Some(secs) = gt {
        bounds.above(millis(secs), false);
    }
    if let Some(secs) = gte {
        bounds.above(millis(secs), true);
    }
    if let Some(secs) = lt {
        bounds.below(millis(secs), false);
    }
    if let Some(secs) = lte {
        bounds.below(millis(secs), true);
    }
    bounds
}

/// `GET /v1/{stream}`: newest (highest id) first; `starting_after` is the last
/// id of the previous page.
pub(crate) async fn list(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let after = id("starting_after", query.starting_after.as_deref())?;
    let limit = limit(query.limit, 10, vendor.inner().config.max_page_size);
    let filter = RecordFilter {
        created: bounds(
            query.created_gt,
            query.created_gte,
            query.created_lt,
            query.created_lte,
        ),
        updated: bounds(
            query.updated_gt,
            query.updated_gte,
            query.updated_lt,
            query.updated_lte,
        ),
        email: None,
    };
    vendor.before_page(stream, after.map(Behind::From));
    let page = vendor.read(stream).page(after, true, &filter, limit);
    let url = quoted(&format!("/v1/{}", stream.name()));
    Ok(json_page(
        &format!("{{\"object\":\"list\",\"url\":{url},\"data\":["),
        &page.records,
        &format!("],\"has_more\":{}}}", page.has_more),
    ))
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    query: String,
    limit: Option<usize>,
    page: Option<String>,
}

/// The address of a Stripe search query `email:'...'` (the one clause the sandbox
/// understands), with `\'` and `\\` unescaped.
fn searched_email(query: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the sandbox searches by `email:'...'` only, got {query:?}"),
        )
    };
    let quoted = query
        .trim()
        .strip_prefix("email:'")
        .and_then(|rest| rest.strip_suffix('\''))
        .ok_or_else(invalid)?;
    let mut email = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => email.push(chars.next().ok_or_else(invalid)?),
            '\'' => return Err(invalid()),
            other => email.push(other),
        }
    }
    Ok(email)
}

/// `GET /v1/{stream}/search?query=email:'...'&page`: Stripe's search, answering
/// `{object: "search_result", data, has_more, next_page}` in id order; `page` is the
/// `next_page` of the previous answer.
pub(crate) async fn search(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let filter = RecordFilter {
        email: Some(searched_email(&query.query)?),
        ..RecordFilter::default()
    };
    let after = id("page", query.page.as_deref())?;
    let limit = limit(query.limit, 10, vendor.inner().config.max_page_size);
    let data = vendor.read(stream);
    let total = data.count(&filter);
    let page = data.page(after, false, &filter, limit);
    drop(data);
    let next = match page.last_id.filter(|_| page.has_more) {
        Some(last) => quoted(&last.to_string()),
        None => "null".to_owned(),
    };
    Ok(json_page(
        &format!("{{\"object\":\"search_result\",\"total_count\":{total},\"data\":["),
        &page.records,
        &format!("],\"has_more\":{},\"next_page\":{next}}}", page.has_more),
    ))
}
