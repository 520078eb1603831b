//! HubSpot-like: `GET /crm/v3/objects/{stream}?limit&after` answering
//! `{results, paging.next.after}`, and `POST .../search` filtering on
//! `updatedAt`/`createdAt` and on `email` (`EQ`, without regard to case).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, id, json_page, limit, parse_instant, quoted, stream};
use crate::store::{Behind, Bounds, RecordFilter};
use crate::vendor::Vendor;

/// HubSpot's default page size.
const DEFAULT_LIMIT: usize = 10;

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

fn paging(vendor: &Vendor, stream: &str, limit: usize, next: Option<u64>) -> String {
    match next {
        None => "]}".to_owned(),
        Some(after) => {
            let link = format!(
                "{}/crm/v3/objects/{stream}?limit={limit}&after={after}",
                vendor.base_url()
            );
            format!(
                "],\"paging\":{{\"next\":{{\"after\":\"{after}\",\"link\":{}}}}}}}",
                quoted(&link)
            )
        }
    }
}

/// `GET /crm/v3/objects/{stream}`: every record in id order; `after` is the
/// last id of the previous page.
pub(crate) async fn list(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let after = id("after", query.after.as_deref())?;
    let limit = limit(
        query.limit,
        DEFAULT_LIMIT,
        vendor.inner().config.max_page_size,
    );
    vendor.before_page(stream, after.map(Behind::UpTo));
    let page = vendor
        .read(stream)
        .page(after, false, &RecordFilter::default(), limit);
    let next = page.last_id.filter(|_| page.has_more);
    Ok(json_page(
        "{\"results\":[",
        &page.records,
        &paging(&vendor, stream.name(), limit, next),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchRequest {
    #[serde(default)]
    filter_groups: Vec<FilterGroup>,
    limit: Option<usize>,
    after: Option<Value>,
}

#[derive(Deserialize)]
struct FilterGroup {
    filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    value: Value,
}

fn bad(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

fn filter(request: &SearchRequest) -> Result<RecordFilter, ApiError> {
    let mut filter = RecordFilter::default();
    let group = match request.filter_groups.as_slice() {
        [] => return Ok(filter),
        [group] => group,
        _ => return Err(bad("the sandbox supports one filter group")),
    };
    for condition in &group.filters {
        if condition.property_name == "email" {
            match (&condition.operator[..], &condition.value) {
                ("EQ", Value::String(email)) => filter.email = Some(email.clone()),
                _ => return Err(bad("email is searched with EQ and a string")),
            }
            continue;
        }
        let bounds: &mut Bounds = match condition.property_name.as_str() {
            "updatedAt" | "hs_lastmodifieddate" | "lastmodifieddate" => &mut filter.updated,
            "createdAt" | "createdate" => &mut filter.created,
            other => return Err(bad(&format!("cannot filter on {other:?}"))),
        };
        let text = match &condition.value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return Err(bad("a filter value must be a string or a number")),
        };
        let instant =
            parse_instant(&text).ok_or_else(|| bad(&format!("{text:?} is not an instant")))?;
        match condition.operator.as_str() {
            "GTE" => bounds.above(instant, true),
            "GT" => bounds.above(instant, false),
            "LTE" => bounds.below(instant, true),
            "LT" => bounds.below(instant, false),
            other => return Err(bad(&format!("unsupported operator {other:?}"))),
        }
    }
    Ok(filter)
}

/// `POST /crm/v3/objects/{stream}/search`: records matching the filters, in
/// id order, with their `total`; `after` is the last id of the previous page.
pub(crate) async fn search(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Json(request): Json<SearchRequest>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let filter = filter(&request)?;
    let after = match &request.after {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => id("after", Some(text))?,
        Some(Value::Number(number)) => id("after", Some(&number.to_string()))?,
        Some(_) => return Err(bad("after must be a string")),
    };
    let limit = limit(
        request.limit,
        DEFAULT_LIMIT,
        vendor.inner().config.max_page_size,
    );
    vendor.before_page(stream, after.map(Behind::UpTo));
    let data = vendor.read(stream);
    let total = data.count(&filter);
    let page = data.page(after, false, &filter, limit);
    drop(data);
    let suffix = match page.last_id.filter(|_| page.has_more) {
        Some(after) => format!("],\"paging\":{{\"next\":{{\"after\":\"{after}\"}}}}}}"),
        None => "]}".to_owned(),
    };
    Ok(json_page(
        &format!("{{\"total\":{total},\"results\":["),
        &page.records,
        &suffix,
    ))
}
