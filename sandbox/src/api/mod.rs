//! The HTTP surface: one router, the same records behind every API style.

mod admin;
mod graphql;
mod hubspot;
mod ids;
mod offset;
mod records;
mod salesforce;
mod stripe;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime};
use serde_json::json;

use super::auth;
use super::dest;
use super::guard;
use super::hostile;
use super::stream::Stream;
use super::vendor::Vendor;

pub(crate) use salesforce::{QueryStore, salesforce_error};

/// Every route, with the API ones behind the guard (auth, limits, faults) and
/// all of them counted in the stats.
pub(crate) fn router(vendor: Vendor) -> Router {
    let api = api_routes()
        .route_layer(middleware::from_fn_with_state(vendor.clone(), guard::guard))
        .route_layer(middleware::from_fn_with_state(
            vendor.clone(),
            hostile::attack,
        ));
    Router::new()
        .merge(api)
        .route("/oauth/token", post(auth::token))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/streams/{stream}/mutate", post(admin::mutate))
        .route("/admin/dest/{stream}", get(dest::admin))
        .layer(middleware::from_fn_with_state(vendor.clone(), guard::count))
        .with_state(vendor)
}

/// The API routes with no guard and no attack: what "another host" holding the same
/// data (a CDN a vendor redirects to) serves, to anyone.
pub(crate) fn open_router(vendor: Vendor) -> Router {
    api_routes().with_state(vendor)
}

fn api_routes() -> Router<Vendor> {
    Router::new()
        .route("/crm/v3/objects/{stream}", get(hubspot::list))
        .route("/crm/v3/objects/{stream}/search", post(hubspot::search))
        .route(
            "/crm/v3/objects/{stream}/{id}",
            get(records::get)
                .patch(records::patch)
                .delete(records::delete),
        )
        .route("/services/data/v59.0/query", get(salesforce::query))
        .route(
            "/services/data/v59.0/query/{locator}",
            get(salesforce::more),
        )
        .route("/v1/{stream}", get(stripe::list))
        .route("/v1/{stream}/search", get(stripe::search))
        .route(
            "/v1/{stream}/{id}",
            get(records::get)
                .patch(records::patch)
                .delete(records::delete),
        )
        .route(
            "/services/data/v59.0/sobjects/{stream}/{id}",
            get(records::get)
                .patch(records::patch)
                .delete(records::delete),
        )
        .route("/graphql", post(graphql::query))
        .route("/api/v1/{stream}", get(offset::offset))
        .route("/rest/{stream}", get(offset::linked))
        .route("/ids/{stream}", get(ids::list))
        .route("/dest/{stream}", get(dest::list).post(dest::post))
        .route("/dest/{stream}/batch", post(dest::batch))
        .route(
            "/dest/{stream}/{id}",
            get(dest::get).put(dest::put).patch(dest::patch),
        )
}

/// A JSON error in the shape most of the API uses.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

/// A refusal from a handler, rendered in the plain or the Salesforce shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    salesforce: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            salesforce: false,
        }
    }

    pub(crate) fn salesforce(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            salesforce: true,
            ..Self::new(status, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.salesforce {
            salesforce_error(self.status, self.code, &self.message)
        } else {
            error(self.status, self.code, &self.message)
        }
    }
}

pub(crate) fn stream(name: &str) -> Result<Stream, ApiError> {
    name.parse()
        .map_err(|unknown: super::stream::UnknownStream| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_stream", unknown.to_string())
        })
}

/// A record id from a cursor parameter.
pub(crate) fn id(param: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .filter(|value| !value.is_empty())
        .map(|value| {
            value.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    format!("{param} must be a record id, got {value:?}"),
                )
            })
        })
        .transpose()
}

/// A requested page size, clamped to `1..=max` as vendors do.
pub(crate) fn limit(requested: Option<usize>, default: usize, max: usize) -> usize {
    requested.unwrap_or(default).clamp(1, max)
}

/// A JSON string literal for splicing into a hand-built body.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// `prefix`, the records joined by commas, `suffix`: a page body built by
/// copying pre-serialized records.
pub(crate) fn json_page(prefix: &str, records: &[Bytes], suffix: &str) -> Response {
    let size = prefix.len() + suffix.len() + records.iter().map(|r| r.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(prefix.as_bytes());
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.extend_from_slice(suffix.as_bytes());
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// An instant in Unix milliseconds from the forms vendors accept: RFC 3339,
/// Salesforce's `2026-01-01T00:00:00.000+0000`, or digits meaning epoch
/// milliseconds (HubSpot).
pub(crate) fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.timestamp_millis());
    }
    if let Ok(instant) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(instant.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::parse_instant;

    #[test]
    fn instants_in_every_vendor_form() {
        let expected = Some(1_767_225_600_000);
        assert_eq!(parse_instant("2026-01-01T00:00:00Z"), expected);
        assert_eq!(parse_instant("2026-01-01T00:00:00.000+0000"), expected);
        assert_eq!(parse_instant("1767225600000"), expected);
        assert_eq!(parse_instant("yesterday"), None);
    }
}
