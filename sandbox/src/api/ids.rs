//! `GET /ids/{stream}?limit&after`: every live id, for delete reconciliation.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, id, limit, stream};
use crate::vendor::Vendor;

/// Id pages are this many times larger than record pages, as id listings are
/// at real vendors.
const ID_PAGE_FACTOR: usize = 10;

#[derive(Deserialize)]
pub(crate) struct IdsQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// Answers `{ids, next_after}`; `next_after` is null on the last page.
pub(crate) async fn list(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<IdsQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let after = id("after", query.after.as_deref())?;
    let max = vendor.inner().config.max_page_size * ID_PAGE_FACTOR;
    let limit = limit(query.limit, max, max);
    let (ids, has_more) = vendor.read(stream).ids_page(after, limit);
    let next = ids.last().filter(|_| has_more).map(u64::to_string);
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    Ok(Json(json!({"ids": ids, "next_after": next})).into_response())
}
