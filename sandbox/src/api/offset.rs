//! Two more paginators: offset/limit with a `total`, and RFC 8288 `Link`
//! headers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, id, json_page, limit, stream};
use crate::store::{Behind, RecordFilter};
use crate::vendor::Vendor;

#[derive(Deserialize)]
pub(crate) struct OffsetQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/v1/{stream}?offset&limit` answering `{total, offset, limit,
/// items}` in id order. Offsets shift when records are deleted mid-traversal,
/// as they do at real vendors.
pub(crate) async fn offset(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<OffsetQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let max = vendor.inner().config.max_page_size;
    let limit = limit(query.limit, max, max);
    let offset = query.offset.unwrap_or(0);
    vendor.before_page(stream, (offset > 0).then_some(Behind::First(offset)));
    let (total, records) = vendor.read(stream).offset_page(offset, limit);
    Ok(json_page(
        &format!("{{\"total\":{total},\"offset\":{offset},\"limit\":{limit},\"items\":["),
        &records,
        "]}",
    ))
}

#[derive(Deserialize)]
pub(crate) struct LinkQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// Only records updated at or after this Unix second.
    updated_since: Option<i64>,
}

/// `GET /rest/{stream}?limit&cursor&updated_since` answering a bare JSON array in id
/// order; the next page, if any, is in `Link: <url>; rel="next"`, which carries the
/// filter along.
pub(crate) async fn linked(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let after = id("cursor", query.cursor.as_deref())?;
    let max = vendor.inner().config.max_page_size;
    let limit = limit(query.limit, max, max);
    let mut filter = RecordFilter::default();
    if let Some(since) = query.updated_since {
        filter.updated.above(since.saturating_mul(1000), true);
    }
    vendor.before_page(stream, after.map(Behind::UpTo));
    let page = vendor.read(stream).page(after, false, &filter, limit);
    let mut response = json_page("[", &page.records, "]");
    if let Some(last) = page.last_id.filter(|_| page.has_more) {
        let since = query
            .updated_since
            .map(|since| format!("&updated_since={since}"))
            .unwrap_or_default();
        let link = format!(
            "<{}/rest/{}?limit={limit}&cursor={last}{since}>; rel=\"next\"",
            vendor.base_url(),
            stream.name()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
