//! Rate-limit telemetry read from every response's headers.

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::header::HeaderMap;

/// What a response says about the vendor's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// `Retry-After`, as seconds or an HTTP-date, turned into an instant.
    pub retry_after: Option<DateTime<Utc>>,
    /// `X-RateLimit-Remaining`: requests left in the current window.
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`: when the window resets (epoch seconds, or seconds from now
    /// when the value is small enough to be a delay).
    pub reset_at: Option<DateTime<Utc>>,
    /// `Sforce-Limit-Info: api-usage=used/total`: the daily quota.
    pub quota: Option<Quota>,
}

/// A daily API quota as reported by the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests used so far.
    pub used: u64,
    /// Requests allowed.
    pub total: u64,
}

impl Quota {
    /// Whether no request is left.
    pub fn is_spent(&self) -> bool {
        self.used >= self.total
    }
}

/// Epoch-second values below this are delays, not instants (30 days in seconds).
const DELAY_CUTOFF: i64 = 30 * 24 * 3600;

impl Telemetry {
    /// Reads the headers, judging relative times against `now`. Unparsable headers are
    /// ignored rather than failing a response that is otherwise fine.
    pub fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        Self {
            retry_after: text("retry-after").and_then(|v| parse_retry_after(v, now)),
            remaining: text("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_at: text("x-ratelimit-reset").and_then(|v| parse_reset(v, now)),
            quota: text("sforce-limit-info").and_then(parse_sforce),
        }
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        return Some(now + Duration::milliseconds((seconds.min(1e9) * 1000.0) as i64));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(DateTime::<Utc>::from(at))
}

fn parse_reset(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let number: f64 = value.parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let whole = number as i64;
    if whole < DELAY_CUTOFF {
        Some(now + Duration::milliseconds((number * 1000.0) as i64))
    } else {
        Utc.timestamp_opt(whole, 0).single()
    }
}

/// `api-usage=25/15000` (other `key=value` pairs may follow, comma separated).
fn parse_sforce(value: &str) -> Option<Quota> {
    value.split(',').find_map(|part| {
        let usage = part.trim().strip_prefix("api-usage=")?;
        let (used, total) = usage.split_once('/')?;
        Some(Quota {
            used: used.trim().parse().ok()?,
            total: total.trim().parse().ok()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        let secs = Telemetry::parse(&headers(&[("retry-after", "30")]), now);
        assert_eq!(secs.retry_after, Some(now + Duration::seconds(30)));
        let date = Telemetry::parse(
            &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:09 GMT")]),
            now,
        );
        assert_eq!(date.retry_after, Some(now + Duration::seconds(9)));
        let junk = Telemetry::parse(&headers(&[("retry-after", "soon")]), now);
        assert_eq!(junk.retry_after, None);
    }

    #[test]
    fn remaining_reset_and_salesforce_quota() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let t = Telemetry::parse(
            &headers(&[
                ("x-ratelimit-remaining", "7"),
                ("x-ratelimit-reset", "1767225660"),
                ("sforce-limit-info", "api-usage=15000/15000"),
            ]),
            now,
        );
        assert_eq!(t.remaining, Some(7));
        assert_eq!(t.reset_at, Some(now + Duration::seconds(60)));
        assert!(t.quota.unwrap().is_spent());
        let delay = Telemetry::parse(&headers(&[("x-ratelimit-reset", "2")]), now);
        assert_eq!(delay.reset_at, Some(now + Duration::seconds(2)));
    }
}
