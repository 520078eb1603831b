//! One record by id, in every style: `GET` (with an `ETag`), `PATCH` (top-level fields
//! merged) and `DELETE`, both honouring `If-Match` (`412` on a stale version) — what
//! an erasure needs. Paths: HubSpot `/crm/v3/objects/{stream}/{id}`, Stripe
//! `/v1/{stream}/{id}`, Salesforce `/services/data/v59.0/sobjects/{stream}/{id}`.
//!
//! Knobs ([`Vendor::hold_records`], [`Vendor::race_writes`]): records under a legal
//! hold refuse `PATCH` and `DELETE` with `409`; a raced write finds the record changed
//! just before it (its `If-Match` then fails).

use std::hash::{Hash, Hasher};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{ApiError, stream};
use crate::stream::Stream;
use crate::vendor::Vendor;

/// The version of a record as served: a hash of its JSON.
fn etag(json: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

fn missing(stream: Stream, record: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("no {} with id {record:?}", stream.name()),
    )
}

fn with_etag(json: Bytes) -> Response {
    let tag = etag(&json);
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::ETAG, tag),
        ],
        Body::from(json),
    )
        .into_response()
}

fn parse(stream: Stream, record: &str) -> Result<u64, ApiError> {
    record.parse().map_err(|_| missing(stream, record))
}

/// `GET`: the record with its `ETag`, or 404.
pub(crate) async fn get(
    State(vendor): State<Vendor>,
    Path((name, record)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let id = parse(stream, &record)?;
    let json = vendor
        .read(stream)
        .get(id)
        .ok_or_else(|| missing(stream, &record))?;
    Ok(with_etag(json))
}

/// Checks what a write needs before it applies: the record exists, is not held, and
/// (a raced write first changes it) matches `If-Match`.
fn check_write(
    vendor: &Vendor,
    stream: Stream,
    id: u64,
    record: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if vendor.is_held(stream, id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "RECORD_LOCKED",
            format!(
                "{} {record} is under a legal hold and cannot be changed",
                stream.name()
            ),
        ));
    }
    if vendor.take_race() {
        vendor.touch_record(stream, id);
    }
    let current = vendor
        .read(stream)
        .get(id)
        .ok_or_else(|| missing(stream, record))?;
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && wanted != "*"
        && wanted != etag(&current)
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED",
            "the record changed since the version given in If-Match",
        ));
    }
    Ok(())
}

/// `DELETE`: 204, 404, 409 (held) or 412 (stale `If-Match`).
pub(crate) async fn delete(
    State(vendor): State<Vendor>,
    Path((name, record)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let id = parse(stream, &record)?;
    check_write(&vendor, stream, id, &record, &headers)?;
    if vendor.remove_record(stream, id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(missing(stream, &record))
    }
}

/// `PATCH`: the record's top-level fields merged with the body's; 200 with the record.
pub(crate) async fn patch(
    State(vendor): State<Vendor>,
    Path((name, record)): Path<(String, String)>,
    headers: HeaderMap,
    Json(fields): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    let id = parse(stream, &record)?;
    check_write(&vendor, stream, id, &record, &headers)?;
    let json = vendor
        .merge_record(stream, id, &fields)
        .ok_or_else(|| missing(stream, &record))?;
    Ok(with_etag(json))
}
