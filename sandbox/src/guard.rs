//! The path every API request takes before its handler: credentials, the
//! concurrency cap, the token bucket, the daily quota, a hold, latency and a
//! fault draw — and the counting every request goes through.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::api::{error, salesforce_error};
use super::auth::authenticate;
use super::config::RetryAfterStyle;
use super::faults;
use super::limits::BucketState;
use super::vendor::Vendor;

/// Marks a response whose connection the fault injector resets, so the
/// stats count it as `reset` rather than the status nobody received.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionReset;

/// Counts every request by route template and outcome.
pub(crate) async fn count(State(vendor): State<Vendor>, request: Request, next: Next) -> Response {
    let _handling = vendor.inner().stats.handling();
    let route = format!(
        "{} {}",
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("<unmatched>", MatchedPath::as_str)
    );
    let response = next.run(request).await;
    if response.extensions().get::<ConnectionReset>().is_some() {
        vendor.inner().stats.record(&route, "reset");
    } else {
        vendor
            .inner()
            .stats
            .record(&route, response.status().as_str());
    }
    response
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, value);
    }
}

fn rate_headers(vendor: &Vendor, headers: &mut HeaderMap, state: BucketState) {
    if let Some(limit) = &vendor.inner().config.rate_limit {
        set(headers, "x-ratelimit-limit", limit.burst);
    }
    set(headers, "x-ratelimit-remaining", state.remaining);
    set(headers, "x-ratelimit-reset", state.reset_secs);
}

fn too_many(vendor: &Vendor, wait: Duration, state: Option<BucketState>, why: &str) -> Response {
    let inner = vendor.inner();
    inner.stats.rate_limited();
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", why);
    let style = inner
        .config
        .rate_limit
        .as_ref()
        .map_or(RetryAfterStyle::Seconds, |limit| limit.retry_after);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let headers = response.headers_mut();
    match style {
        RetryAfterStyle::Seconds => set(headers, "retry-after", secs),
        RetryAfterStyle::HttpDate => {
            let at = inner.config.clock.now() + chrono::Duration::seconds(secs as i64);
            let date = at.with_timezone(&Utc).format("%a, %d %b %Y %H:%M:%S GMT");
            set(headers, "retry-after", date);
        }
        RetryAfterStyle::Absent => {}
    }
    if let Some(state) = state {
        rate_headers(vendor, headers, state);
    }
    response
}

fn limit_info(headers: &mut HeaderMap, (used, total): (u64, u64)) {
    set(
        headers,
        "sforce-limit-info",
        format!("api-usage={used}/{total}"),
    );
}

/// The bucket's state without taking a token, for responses refused before
/// the bucket is consulted.
fn peek(vendor: &Vendor) -> Option<BucketState> {
    let inner = vendor.inner();
    let bucket = inner.bucket.as_ref()?;
    let state = bucket
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .peek(inner.config.clock.elapsed());
    Some(state)
}

/// Admits an API request or answers for it.
pub(crate) async fn guard(State(vendor): State<Vendor>, request: Request, next: Next) -> Response {
    let inner = vendor.inner();
    if let Err(failure) = authenticate(&vendor, request.method(), request.uri(), request.headers())
    {
        let mut response = failure.into_response();
        if let Some(state) = peek(&vendor) {
            rate_headers(&vendor, response.headers_mut(), state);
        }
        return response;
    }
    let _permit = match &inner.concurrency {
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return too_many(
                    &vendor,
                    Duration::from_secs(1),
                    peek(&vendor),
                    "too many concurrent requests",
                );
            }
        },
        None => None,
    };
    let bucket = match &inner.bucket {
        Some(bucket) => {
            let taken = bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_take(inner.config.clock.elapsed());
            match taken {
                Ok(state) => Some(state),
                Err(refusal) => {
                    return too_many(
                        &vendor,
                        refusal.retry_after,
                        Some(refusal.state),
                        "rate limit exceeded",
                    );
                }
            }
        }
        None => None,
    };
    let usage = match &inner.quota {
        Some(quota) => {
            let today = inner.config.clock.now().date_naive();
            let used = quota
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_use(today);
            match used {
                Ok(usage) => Some(usage),
                Err(usage) => {
                    let mut response = salesforce_error(
                        StatusCode::FORBIDDEN,
                        "REQUEST_LIMIT_EXCEEDED",
                        "TotalRequests Limit exceeded.",
                    );
                    limit_info(response.headers_mut(), usage);
                    if let Some(state) = bucket {
                        rate_headers(&vendor, response.headers_mut(), state);
                    }
                    return response;
                }
            }
        }
        None => None,
    };
    vendor.pass_hold().await;
    if !inner.config.latency.is_zero() {
        tokio::time::sleep(inner.config.latency).await;
    }
    let mut response = match faults::draw(&vendor) {
        Some(kind) => faults::inject(&vendor, kind, request, next).await,
        None => next.run(request).await,
    };
    if inner.config.quirks.bom && response.status().is_success() {
        response = faults::with_bom(response).await;
    }
    let headers = response.headers_mut();
    if let Some(state) = bucket {
        rate_headers(&vendor, headers, state);
    }
    if let Some(usage) = usage {
        limit_info(headers, usage);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::limit_info;

    #[test]
    fn limit_info_reads_like_salesforce() {
        let mut headers = HeaderMap::new();
        limit_info(&mut headers, (3, 15_000));
        assert_eq!(headers["sforce-limit-info"], "api-usage=3/15000");
    }
}
