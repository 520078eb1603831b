//! The admin API: stats, and mutations of the data and its shape.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, stream};
use crate::mutation::{Mutation, MutationError};
use crate::vendor::Vendor;

/// `GET /admin/stats`.
pub(crate) async fn stats(State(vendor): State<Vendor>) -> Response {
    Json(vendor.stats()).into_response()
}

/// `POST /admin/streams/{stream}/mutate` with a [`Mutation`] body, answering
/// the ids touched.
pub(crate) async fn mutate(
    State(vendor): State<Vendor>,
    Path(name): Path<String>,
    Json(mutation): Json<Mutation>,
) -> Result<Response, ApiError> {
    let stream = stream(&name)?;
    match vendor.mutate(stream, mutation) {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        Err(refused) => {
            let status = match refused {
                MutationError::UnknownField(_) => StatusCode::NOT_FOUND,
                MutationError::FieldExists(_) => StatusCode::CONFLICT,
                MutationError::SystemField(_)
                | MutationError::EmptyField
                | MutationError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            };
            Err(ApiError::new(
                status,
                "mutation_refused",
                refused.to_string(),
            ))
        }
    }
}
