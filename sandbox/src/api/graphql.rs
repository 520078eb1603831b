//! GraphQL: `POST /graphql` with `{query, variables}` where the query's first field
//! names the stream, e.g. `query($first: Int, $after: String) { contacts(first: $first,
//! after: $after) { nodes { id } pageInfo { endCursor hasNextPage } } }`, answering
//! `{data: {<stream>: {totalCount, nodes, pageInfo: {endCursor, hasNextPage}}}}` in id
//! order. Variables: `first` (page size), `after` (the end cursor of the previous page),
//! `updatedSince` (RFC 3339 or epoch milliseconds, inclusive), `email` (records with
//! that address, without regard to case). Every node is served
//! whole, whatever the selection asks for.
//!
//! [`Hostile::partial_graphql`](crate::Hostile::partial_graphql) makes answers drop their
//! last node and say so in `errors`, with status 200, as a resolver that failed does.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ApiError, id, json_page, limit, parse_instant, quoted};
use crate::store::{Behind, RecordFilter};
use crate::stream::Stream;
use crate::vendor::Vendor;

#[derive(Deserialize)]
pub(crate) struct GraphqlRequest {
    query: String,
    #[serde(default)]
    variables: Map<String, Value>,
}

fn bad(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "GRAPHQL_VALIDATION_FAILED",
        message,
    )
}

/// The stream the query's first field names.
fn queried_stream(query: &str) -> Result<Stream, ApiError> {
    let selection = query
        .split_once('{')
        .map(|(_, rest)| rest.trim_start())
        .ok_or_else(|| bad("the query has no selection set"))?;
    let field: String = selection
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    field
        .parse()
        .map_err(|_| bad(&format!("Cannot query field {field:?} on type \"Query\"")))
}

fn text(variables: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match variables.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(bad(&format!("Variable \"${name}\" must be a string"))),
    }
}

/// `POST /graphql`.
pub(crate) async fn query(
    State(vendor): State<Vendor>,
    Json(request): Json<GraphqlRequest>,
) -> Result<Response, ApiError> {
    let stream = queried_stream(&request.query)?;
    let variables = &request.variables;
    let after = id("after", text(variables, "after")?.as_deref())?;
    let first = match variables.get("first") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("Variable \"$first\" must be a positive integer"))?,
        ),
    };
    let limit = limit(first, 10, vendor.inner().config.max_page_size);
    let mut filter = RecordFilter {
        email: text(variables, "email")?,
        ..RecordFilter::default()
    };
    if let Some(since) = text(variables, "updatedSince")? {
        let instant =
            parse_instant(&since).ok_or_else(|| bad(&format!("{since:?} is not an instant")))?;
        filter.updated.above(instant, true);
    }
    vendor.before_page(stream, after.map(Behind::UpTo));
    let data = vendor.read(stream);
    let total = data.count(&filter);
    let mut page = data.page(after, false, &filter, limit);
    drop(data);
    let partial = vendor
        .hostile()
        .partial_graphql
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
        && page.records.len() > 1;
    let errors = if partial {
        page.records.pop();
        ",\"errors\":[{\"message\":\"Cannot return null for non-nullable field\",\"path\":[\"nodes\"]}]"
    } else {
        ""
    };
    let end_cursor = page
        .last_id
        .map_or_else(|| "null".to_owned(), |last| quoted(&last.to_string()));
    Ok(json_page(
        &format!(
            "{{\"data\":{{\"{}\":{{\"totalCount\":{total},\"nodes\":[",
            stream.name()
        ),
        &page.records,
        &format!(
            "],\"pageInfo\":{{\"endCursor\":{end_cursor},\"hasNextPage\":{}}}}}}}{errors}}}",
            page.has_more
        ),
    ))
}
