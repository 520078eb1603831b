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
    /// `X-RateLimit-Reset`: when the window resets, read by magnitude: seconds from
    /// now, epoch seconds, or epoch milliseconds.
    pub reset_at: Option<DateTime<Utc>>,
    /// `Sforce-Limit-Info: api-usage=used/total`: the daily quota.
    pub quota: Option<Quota>,
    /// A rate-limit header whose value no vendor could mean (negative, unparseable, more
    /// than [`MAX_VENDOR_WAIT_DAYS`] away): a protocol error, named here and not obeyed.
    pub absurd: Option<Absurd>,
}

/// A rate-limit header cairn refused to obey, and what it said (bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absurd {
    /// The header.
    pub header: &'static str,
    /// Its value's first bytes, for the message.
    pub value: [u8; 32],
    /// How many bytes of `value` are used.
    pub len: u8,
}

impl Absurd {
    fn new(header: &'static str, text: &str) -> Self {
        let mut value = [0; 32];
        let mut len = 0;
        for (i, c) in text.char_indices() {
            if i + c.len_utf8() > value.len() {
                break;
            }
            len = i + c.len_utf8();
        }
        value[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self {
            header,
            value,
            len: len as u8,
        }
    }

    /// The value as received (at most 32 bytes of it).
    pub fn value(&self) -> &str {
        std::str::from_utf8(&self.value[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl std::fmt::Display for Absurd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the vendor sent `{}: {}`, which is negative, unreadable or more than {} days away; \
             it is a protocol error and was not obeyed",
            self.header,
            self.value().escape_debug(),
            MAX_VENDOR_WAIT_DAYS
        )
    }
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

/// No vendor asks a client to wait longer than this; a header that does is refused.
pub const MAX_VENDOR_WAIT_DAYS: i64 = 7;

/// `X-RateLimit-Reset` values at or above this are epoch seconds (September 2001 on);
/// below, seconds from now.
const EPOCH_SECONDS_FROM: f64 = 1e9;
/// Values at or above this are epoch milliseconds (epoch seconds this large would be
/// past the year 5000).
const EPOCH_MILLIS_FROM: f64 = 1e11;

impl Telemetry {
    /// Reads the headers, judging relative times against `now`. A header that does not
    /// parse is refused (see [`Telemetry::absurd`]) rather than failing a response.
    pub fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().map(str::trim).unwrap_or("<not text>"))
        };
        let mut absurd = None;
        let mut judged =
            |header: &'static str, parsed: Result<Option<DateTime<Utc>>, ()>, raw: &str| {
                parsed.unwrap_or_else(|()| {
                    absurd.get_or_insert(Absurd::new(header, raw));
                    None
                })
            };
        let retry_after =
            text("retry-after").and_then(|v| judged("Retry-After", parse_retry_after(v, now), v));
        let reset_at = text("x-ratelimit-reset")
            .and_then(|v| judged("X-RateLimit-Reset", parse_reset(v, now), v));
        Self {
            retry_after,
            remaining: text("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_at,
            quota: text("sforce-limit-info").and_then(parse_sforce),
            absurd,
        }
    }
}

fn within_reason(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ()> {
    if at > now + Duration::days(MAX_VENDOR_WAIT_DAYS) {
        Err(())
    } else {
        // A moment already past (clock skew, a stale header) asks for no wait.
        Ok(Some(at.max(now)))
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`, as an instant;
/// `Err` for a value that is negative, unreadable or more than a week away.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ()> {
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 || seconds > (MAX_VENDOR_WAIT_DAYS * 86_400) as f64
        {
            return Err(());
        }
        return within_reason(now + Duration::milliseconds((seconds * 1000.0) as i64), now);
    }
    let at = httpdate::parse_http_date(value).map_err(|_| ())?;
    within_reason(DateTime::<Utc>::from(at), now)
}

/// `X-RateLimit-Reset` read by magnitude: seconds from now, epoch seconds, or epoch
/// milliseconds (a value in milliseconds read as seconds would park a run until the
/// year 58,000). `Err` for a value that is negative, unreadable or more than a week away.
fn parse_reset(value: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ()> {
    let number: f64 = value.parse().map_err(|_| ())?;
    if !number.is_finite() || number < 0.0 {
        return Err(());
    }
    let at = if number >= EPOCH_MILLIS_FROM {
        Utc.timestamp_millis_opt(number as i64).single().ok_or(())?
    } else if number >= EPOCH_SECONDS_FROM {
        Utc.timestamp_opt(number as i64, 0).single().ok_or(())?
    } else {
        now + Duration::milliseconds((number * 1000.0) as i64)
    };
    within_reason(at, now)
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
        assert_eq!(junk.absurd.unwrap().header, "Retry-After");
        for absurd in ["-5", "999999999", "NaN", "Wed, 21 Oct 2099 07:28:09 GMT"] {
            let t = Telemetry::parse(&headers(&[("retry-after", absurd)]), now);
            assert_eq!(t.retry_after, None, "{absurd}");
            assert_eq!(t.absurd.unwrap().value(), absurd);
        }
        let zero = Telemetry::parse(&headers(&[("retry-after", "0")]), now);
        assert_eq!((zero.retry_after, zero.absurd), (Some(now), None));
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
        let millis = Telemetry::parse(&headers(&[("x-ratelimit-reset", "1767225660000")]), now);
        assert_eq!(millis.reset_at, Some(now + Duration::seconds(60)));
        for absurd in ["-1", "later", "99999999", "4102444800"] {
            let t = Telemetry::parse(&headers(&[("x-ratelimit-reset", absurd)]), now);
            assert_eq!(t.reset_at, None, "{absurd}");
            assert_eq!(t.absurd.unwrap().header, "X-RateLimit-Reset", "{absurd}");
        }
    }
}
