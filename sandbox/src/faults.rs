//! Transient faults, drawn per request from the seeded sequence.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use super::api::error;
use super::config::FaultKind;
use super::guard::ConnectionReset;
use super::server::ResetSwitch;
use super::vendor::Vendor;

/// Whether this request gets a fault, and which.
pub(crate) fn draw(vendor: &Vendor) -> Option<FaultKind> {
    let faults = &vendor.inner().config.faults;
    if faults.rate <= 0.0 || faults.kinds.is_empty() {
        return None;
    }
    let (roll, pick) = vendor.fault_draw();
    (roll < faults.rate).then(|| faults.kinds[pick % faults.kinds.len()])
}

async fn body_of(response: Response) -> (axum::http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    // Handlers build bodies in memory; a failure here would be the sandbox's
    // own bug, and an empty body is still a malformed one.
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    (parts, bytes)
}

/// The same response with a UTF-8 byte-order mark before its body (the `bom` quirk).
pub(crate) async fn with_bom(response: Response) -> Response {
    let (mut parts, body) = body_of(response).await;
    let mut marked = Vec::with_capacity(body.len() + 3);
    marked.extend_from_slice(b"\xEF\xBB\xBF");
    marked.extend_from_slice(&body);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(marked))
}

/// Answers `request` with the fault `kind` (see [`FaultKind`] for which ones
/// let the handler run first).
pub(crate) async fn inject(
    vendor: &Vendor,
    kind: FaultKind,
    request: Request,
    next: Next,
) -> Response {
    vendor.inner().stats.fault(kind.name());
    match kind {
        FaultKind::InternalError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "injected fault",
        ),
        FaultKind::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "injected fault",
        ),
        FaultKind::BadGateway | FaultKind::GatewayTimeout => {
            drop(next.run(request).await);
            let status = if kind == FaultKind::BadGateway {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::GATEWAY_TIMEOUT
            };
            error(status, "upstream_failure", "injected fault")
        }
        FaultKind::Reset => {
            let switch = request.extensions().get::<ResetSwitch>().cloned();
            let mut response = next.run(request).await;
            if let Some(switch) = switch {
                switch.trip();
                response.extensions_mut().insert(ConnectionReset);
            }
            response
        }
        FaultKind::Slow => {
            let response = next.run(request).await;
            tokio::time::sleep(vendor.inner().config.faults.slow_delay).await;
            response
        }
        FaultKind::Truncated => {
            let (mut parts, full) = body_of(next.run(request).await).await;
            let half = full.slice(..full.len() / 2);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
            // Pausing once between the half and the error lets hyper flush the
            // half before it sees the error and drops the connection.
            let cut = futures::stream::once(async {
                tokio::task::yield_now().await;
                Err(std::io::Error::other("body truncated by fault injection"))
            });
            let chunks = futures::stream::iter([Ok::<Bytes, std::io::Error>(half)]).chain(cut);
            Response::from_parts(parts, Body::from_stream(chunks))
        }
        FaultKind::Malformed => {
            let (mut parts, full) = body_of(next.run(request).await).await;
            let mut broken = full.slice(..full.len() / 2).to_vec();
            broken.extend_from_slice(b"<!-- upstream error -->");
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(broken))
        }
    }
}
