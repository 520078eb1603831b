//! The writable side, for the API-to-API direction: conditional `PUT` with
//! `ETag`/`If-Match` and `POST` with `Idempotency-Key`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::api::error;
use super::vendor::Vendor;

struct Item {
    body: Map<String, Value>,
    version: u64,
}

impl Item {
    fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    fn to_json(&self, id: &str) -> Value {
        let mut body = self.body.clone();
        body.insert("id".to_owned(), Value::from(id));
        body.insert("version".to_owned(), Value::from(self.version));
        Value::Object(body)
    }
}

/// A response to a `POST` kept for replay under its idempotency key.
struct Replay {
    request: Value,
    status: StatusCode,
    etag: String,
    body: Value,
}

/// Items written by clients, and the idempotency keys they used.
#[derive(Default)]
pub(crate) struct ItemStore {
    items: BTreeMap<String, Item>,
    next_id: u64,
    replays: HashMap<String, Replay>,
}

fn with_etag(status: StatusCode, etag: &str, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn matches(condition: &str, etag: &str) -> bool {
    condition
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

fn object(body: Value) -> Option<Map<String, Value>> {
    match body {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn not_an_object() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "an item must be a JSON object",
    )
}

/// `GET /items`.
pub(crate) async fn list(State(vendor): State<Vendor>) -> Response {
    let store = vendor.items();
    let data: Vec<Value> = store
        .items
        .iter()
        .map(|(id, item)| item.to_json(id))
        .collect();
    Json(json!({ "data": data })).into_response()
}

/// `GET /items/{id}`.
pub(crate) async fn get(State(vendor): State<Vendor>, Path(id): Path<String>) -> Response {
    let store = vendor.items();
    match store.items.get(&id) {
        Some(item) => with_etag(StatusCode::OK, &item.etag(), item.to_json(&id)),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such item"),
    }
}

/// `PUT /items/{id}`: creates or replaces. `If-Match` must name the current
/// `ETag` (or `*` for any existing item) and `If-None-Match: *` insists the
/// item is new; otherwise 412.
pub(crate) async fn put(
    State(vendor): State<Vendor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let Some(body) = object(body) else {
        return not_an_object();
    };
    let mut store = vendor.items();
    let current = store.items.get(&id);
    let current_etag = current.map(Item::etag);
    if let Some(condition) = header_str(&headers, header::IF_MATCH) {
        let ok = current_etag
            .as_deref()
            .is_some_and(|etag| matches(condition, etag));
        if !ok {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not name the item's current ETag",
            );
        }
    }
    if let Some(condition) = header_str(&headers, header::IF_NONE_MATCH)
        && current_etag
            .as_deref()
            .is_some_and(|etag| matches(condition, etag))
    {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-None-Match matched the item",
        );
    }
    let (status, version) = match current {
        Some(item) => (StatusCode::OK, item.version + 1),
        None => (StatusCode::CREATED, 1),
    };
    let item = Item { body, version };
    let (etag, json) = (item.etag(), item.to_json(&id));
    store.items.insert(id, item);
    with_etag(status, &etag, json)
}

/// `POST /items`: creates an item with a new id. A repeated `Idempotency-Key`
/// with the same body replays the first response (with
/// `Idempotent-Replayed: true`) instead of creating another; with a different
/// body it is refused with 422.
pub(crate) async fn post(
    State(vendor): State<Vendor>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut store = vendor.items();
    if let Some(replay) = key.as_ref().and_then(|key| store.replays.get(key)) {
        if replay.request != request {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            );
        }
        let mut response = with_etag(replay.status, &replay.etag, replay.body.clone());
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return response;
    }
    let Some(body) = object(request.clone()) else {
        return not_an_object();
    };
    store.next_id += 1;
    let id = format!("item-{}", store.next_id);
    let item = Item { body, version: 1 };
    let (etag, json) = (item.etag(), item.to_json(&id));
    store.items.insert(id, item);
    if let Some(key) = key {
        store.replays.insert(
            key,
            Replay {
                request,
                status: StatusCode::CREATED,
                etag: etag.clone(),
                body: json.clone(),
            },
        );
    }
    with_etag(StatusCode::CREATED, &etag, json)
}
