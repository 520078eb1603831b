//! Two more paginators: offset/limit with a `total`, and RFC 8288 `Link`
//! headers.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiError, id, json_page, limit, stream};
use crate::sandbox::store::{Behind, TimeFilter};
use crate::sandbox::vendor::Vendor;

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
}

/// `GET /rest/{stream}?limit&cursor` answering a bare JSON array; the next
/// page, if any, is in `Link: <url>; rel="next"`.
pub(crate) async fn linked(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let after = id("cursor", query.cursor.as_deref())?;
    let max = vendor.inner().config.max_page_size;
    let limit = limit(query.limit, max, max);
    vendor.before_page(stream, after.map(Behind::UpTo));
    let page = vendor
        .read(stream)
        .page(after, false, &TimeFilter::default(), limit);
    let mut response = json_page("[", &page.records, "]");
    if let Some(last) = page.last_id.filter(|_| page.has_more) {
        let link = format!(
            "<{}/rest/{}?limit={limit}&cursor={last}>; rel=\"next\"",
            vendor.base_url(),
            stream.name()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
