//! The writable side, for the API-to-API direction: any stream name is a collection
//! that takes `PUT`, `POST` and `PATCH` with `ETag`/`If-Match` and `Idempotency-Key`,
//! and misbehaves as [`WriteFaults`] says: 503s before a write, 409/422 for some
//! records whatever is sent, "another user" editing a record just before the client's
//! write lands, and lost acknowledgements (the write is applied, then the connection is
//! reset instead of answered).
//!
//! | route | does |
//! | --- | --- |
//! | `GET /dest/{stream}` | every record, `{data}` |
//! | `GET /dest/{stream}/{id}` | one record, with its `ETag` |
//! | `PUT /dest/{stream}/{id}` | creates or replaces (`If-Match` optional) |
//! | `PATCH /dest/{stream}/{id}` | merges (RFC 7396; `If-Match` optional) |
//! | `POST /dest/{stream}` | creates with a new id; `Idempotency-Key` replays |
//! | `POST /dest/{stream}/batch` | `{records: [{id, ...}]}`: a `PUT` each, `{results}` |
//! | `GET /admin/dest/{stream}` | records, creations per record, duplicates, counters |

mod store;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::api::{ApiError, error};
use super::config::WriteFaults;
use super::guard::ConnectionReset;
use super::server::ResetSwitch;
use super::vendor::Vendor;
pub(crate) use store::Collection;
use store::{Conditions, Refused, Written};
pub use store::{EDITED_BY, EXTERNAL_ID, WriteCounts};

/// The most records one batch request may carry.
pub const MAX_BATCH: usize = 100;

/// A destination stream as a test sees it, through [`Vendor::destination`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct DestinationSnapshot {
    /// Every record by id, as `GET` shows it (with `id` and `version`).
    pub records: BTreeMap<String, Value>,
    /// Records created more than once (by id, or by [`EXTERNAL_ID`] for posts), and how
    /// many times.
    pub duplicates: BTreeMap<String, u32>,
    /// What the stream's writes did.
    pub counts: WriteCounts,
}

impl Collection {
    pub(crate) fn snapshot(&self) -> DestinationSnapshot {
        DestinationSnapshot {
            records: self
                .items()
                .map(|(id, item)| (id.clone(), item.to_json(id)))
                .collect(),
            duplicates: self
                .creations()
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, n)| (id.clone(), *n))
                .collect(),
            counts: self.counts.clone(),
        }
    }
}

/// A stream name a collection may have: what a URL path segment can carry plainly.
fn stream_name(name: &str) -> Result<&str, ApiError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if fine {
        Ok(name)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_stream",
            "a stream name is 1 to 64 letters, digits, `_` or `-`",
        ))
    }
}

/// A draw in [0, 1) fixed by the seed, `salt` and record `id`: the same records are
/// picked on every attempt.
fn roll(seed: u64, salt: &str, id: &str) -> f64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (seed, salt, id).hash(&mut hasher);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether record `id` is one the destination always refuses, and how: a share of
/// records is refused whatever is sent, the same ones on every attempt.
fn refused_record(
    faults: &WriteFaults,
    seed: u64,
    id: &str,
) -> Option<(StatusCode, &'static str, &'static str)> {
    let roll = |salt: &str| roll(seed, salt, id);
    if roll("409") < faults.conflict_share {
        return Some((
            StatusCode::CONFLICT,
            "duplicate_value",
            "another record already holds this record's unique field",
        ));
    }
    if roll("422") < faults.invalid_share {
        return Some((
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the record does not pass the destination's validation",
        ));
    }
    None
}

/// What happens to one write request before and after it is applied.
struct Draw {
    unavailable: bool,
    edit_first: bool,
    lose_ack: bool,
}

fn draw(vendor: &Vendor) -> Draw {
    let faults = &vendor.inner().config.writes;
    let roll = |rate: f64| rate > 0.0 && vendor.fault_draw().0 < rate;
    Draw {
        unavailable: roll(faults.unavailable),
        edit_first: roll(faults.concurrent_edits),
        lose_ack: roll(faults.ack_loss),
    }
}

/// A 503 before anything is applied.
fn refuse_unavailable(collection: &mut Collection) -> Response {
    collection.counts.unavailable += 1;
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "injected fault: try again later",
    )
}

/// `response`, or, when `lose` (and the connection can be reset), no answer at all: the
/// connection is reset after the write was applied.
fn lose_answer(
    collection: &mut Collection,
    lose: bool,
    reset: Option<&ResetSwitch>,
    mut response: Response,
) -> Response {
    if lose && let Some(reset) = reset {
        collection.counts.acks_lost += 1;
        reset.trip();
        response.extensions_mut().insert(ConnectionReset);
    }
    response
}

fn answer(written: Result<Written, Refused>, unusable_id: bool) -> Response {
    let (status, id, item) = match written {
        Ok(Written::Created { id, item }) => (StatusCode::CREATED, id, item),
        Ok(Written::Replayed { id, item }) => {
            let mut response = answer(Ok(Written::Created { id, item }), unusable_id);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        Ok(Written::Updated { id, item }) => (StatusCode::OK, id, item),
        Err(refused) => return refusal(refused),
    };
    let shown = if unusable_id && status == StatusCode::CREATED {
        format!("{id}\u{7}\n{}", "x".repeat(64 * 1024))
    } else {
        id
    };
    let mut response = (status, Json(item.to_json(&shown))).into_response();
    if let Ok(value) = HeaderValue::from_str(&item.etag()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such record"),
        Refused::Stale { current } => {
            let mut response = error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not name the record's current ETag",
            );
            if let Ok(value) = HeaderValue::from_str(&current) {
                response.headers_mut().insert(header::ETAG, value);
            }
            response
        }
        Refused::KeyReused => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        ),
        Refused::NotAnObject => error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "a record must be a JSON object",
        ),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The kind of write a request makes.
enum Write {
    Put { id: String, body: Value },
    Patch { id: String, body: Value },
    Post { body: Value },
}

/// Applies one write request with the faults drawn for it.
fn apply(
    vendor: &Vendor,
    stream: &str,
    write: Write,
    headers: &HeaderMap,
    reset: Option<&ResetSwitch>,
) -> Response {
    let config = &vendor.inner().config;
    let Draw {
        unavailable,
        edit_first,
        lose_ack,
    } = draw(vendor);
    let mut dest = vendor.destinations();
    let collection = dest.entry(stream.to_owned()).or_default();
    if unavailable {
        return refuse_unavailable(collection);
    }
    let record_id = match &write {
        Write::Put { id, .. } | Write::Patch { id, .. } => Some(id.clone()),
        Write::Post { body } => body.get(EXTERNAL_ID).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    };
    let unusable_id = matches!(write, Write::Post { .. })
        && record_id
            .as_deref()
            .is_some_and(|id| roll(config.seed, "id", id) < config.writes.unusable_ids);
    if let Some((status, code, message)) = record_id
        .as_deref()
        .and_then(|id| refused_record(&config.writes, config.seed, id))
    {
        collection.counts.rejected += 1;
        return error(status, code, message);
    }
    let conditions = Conditions {
        if_match: header_str(headers, "if-match"),
        if_none_match: header_str(headers, "if-none-match"),
    };
    let written = match write {
        Write::Put { id, body } => {
            if edit_first {
                collection.edit_by_other(&id);
            }
            collection.put(&id, body, conditions)
        }
        Write::Patch { id, body } => {
            if edit_first {
                collection.edit_by_other(&id);
            }
            collection.patch(&id, body, conditions)
        }
        Write::Post { body } => {
            collection.post(stream, body, header_str(headers, "idempotency-key"))
        }
    };
    if matches!(written, Err(Refused::Stale { .. })) {
        collection.counts.stale += 1;
    }
    let applied = written.is_ok();
    lose_answer(
        collection,
        applied && lose_ack,
        reset,
        answer(written, unusable_id),
    )
}

/// The body as JSON, or a 400 that says why not.
fn json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {err}"),
        )
    })
}

/// Splits a request into what the handlers need; the body is at most 1 MiB.
async fn parts(request: Request) -> Result<(HeaderMap, Option<ResetSwitch>, Value), ApiError> {
    let (parts, body) = request.into_parts();
    let reset = parts.extensions.get::<ResetSwitch>().cloned();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "a write body is at most 1 MiB",
        )
    })?;
    Ok((parts.headers, reset, json_body(&bytes)?))
}

/// `GET /dest/{stream}`.
pub(crate) async fn list(State(vendor): State<Vendor>, Path(stream): Path<String>) -> Response {
    let stream = match stream_name(&stream) {
        Ok(stream) => stream,
        Err(refused) => return refused.into_response(),
    };
    let data: Vec<Value> = vendor
        .destinations()
        .get(stream)
        .map(|c| c.items().map(|(id, item)| item.to_json(id)).collect())
        .unwrap_or_default();
    Json(json!({ "data": data })).into_response()
}

/// `GET /dest/{stream}/{id}`.
pub(crate) async fn get(
    State(vendor): State<Vendor>,
    Path((stream, id)): Path<(String, String)>,
) -> Response {
    let stream = match stream_name(&stream) {
        Ok(stream) => stream,
        Err(refused) => return refused.into_response(),
    };
    let dest = vendor.destinations();
    let Some(item) = dest.get(stream).and_then(|c| c.get(&id)) else {
        return refusal(Refused::NotFound);
    };
    answer(
        Ok(Written::Updated {
            id,
            item: item.clone(),
        }),
        false,
    )
}

/// `PUT /dest/{stream}/{id}`.
pub(crate) async fn put(
    State(vendor): State<Vendor>,
    Path((stream, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    write(&vendor, &stream, request, |body| Write::Put { id, body }).await
}

/// `PATCH /dest/{stream}/{id}`.
pub(crate) async fn patch(
    State(vendor): State<Vendor>,
    Path((stream, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    write(&vendor, &stream, request, |body| Write::Patch { id, body }).await
}

/// `POST /dest/{stream}`.
pub(crate) async fn post(
    State(vendor): State<Vendor>,
    Path(stream): Path<String>,
    request: Request,
) -> Response {
    write(&vendor, &stream, request, |body| Write::Post { body }).await
}

/// One write request to `stream`, the write made of its body by `write`.
async fn write(
    vendor: &Vendor,
    stream: &str,
    request: Request,
    write: impl FnOnce(Value) -> Write,
) -> Response {
    let result = async {
        let stream = stream_name(stream)?;
        let (headers, reset, body) = parts(request).await?;
        Ok(apply(vendor, stream, write(body), &headers, reset.as_ref()))
    };
    result.await.unwrap_or_else(ApiError::into_response)
}

/// `POST /dest/{stream}/batch`: `{records: [{id, ...}]}`, each written as a `PUT` of
/// its fields (without `id`) would be, answered `{results: [{id, status, etag |
/// error}]}` in order. A 503 or a lost answer is drawn once for the whole batch.
pub(crate) async fn batch(
    State(vendor): State<Vendor>,
    Path(stream): Path<String>,
    request: Request,
) -> Response {
    let result = async {
        let stream = stream_name(&stream)?;
        let (_, reset, body) = parts(request).await?;
        let Some(records) = body.get("records").and_then(Value::as_array) else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "a batch is {\"records\": [...]}",
            ));
        };
        if records.len() > MAX_BATCH {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "batch_too_large",
                format!("a batch holds at most {MAX_BATCH} records"),
            ));
        }
        Ok(apply_batch(&vendor, stream, records, reset.as_ref()))
    };
    result.await.unwrap_or_else(ApiError::into_response)
}

fn apply_batch(
    vendor: &Vendor,
    stream: &str,
    records: &[Value],
    reset: Option<&ResetSwitch>,
) -> Response {
    let config = &vendor.inner().config;
    let Draw {
        unavailable,
        lose_ack,
        ..
    } = draw(vendor);
    let mut dest = vendor.destinations();
    let collection = dest.entry(stream.to_owned()).or_default();
    if unavailable {
        return refuse_unavailable(collection);
    }
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        let mut record = record.clone();
        let id = match record.as_object_mut().and_then(|r| r.remove("id")) {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => {
                results.push(json!({"status": 400, "error": "invalid_body",
                                    "message": "each record needs a string `id`"}));
                continue;
            }
        };
        if let Some((status, code, message)) = refused_record(&config.writes, config.seed, &id) {
            collection.counts.rejected += 1;
            results.push(json!({"id": id, "status": status.as_u16(), "error": code,
                                "message": message}));
            continue;
        }
        match collection.put(&id, record, Conditions::default()) {
            Ok(Written::Created { item, .. }) => {
                results.push(json!({"id": id, "status": 201, "etag": item.etag()}))
            }
            Ok(Written::Updated { item, .. } | Written::Replayed { item, .. }) => {
                results.push(json!({"id": id, "status": 200, "etag": item.etag()}))
            }
            Err(refused) => results.push(json!({"id": id, "status": 400,
                                                "error": format!("{refused:?}")})),
        }
    }
    let response = Json(json!({ "results": results })).into_response();
    lose_answer(collection, lose_ack, reset, response)
}

/// `GET /admin/dest/{stream}`: what the destination holds and what its writes did.
pub(crate) async fn admin(State(vendor): State<Vendor>, Path(stream): Path<String>) -> Response {
    match stream_name(&stream) {
        Ok(stream) => Json(vendor.destination(stream)).into_response(),
        Err(refused) => refused.into_response(),
    }
}
