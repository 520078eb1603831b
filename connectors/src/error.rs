//! What went wrong talking to a vendor, in categories the engine can act on.
//!
//! | category | examples | engine class |
//! | --- | --- | --- |
//! | `Throttled` | 429 | rate limited until its `Retry-After` (the run is parked) |
//! | `QuotaExhausted` | Salesforce `REQUEST_LIMIT_EXCEEDED` | rate limited until the quota window resets |
//! | `PlatformFault` | 500, 502, 503, 504 | transient |
//! | `Network`, `Timeout` | reset, refused, slow | transient |
//! | `MalformedBody` | truncated or invalid JSON | transient (vendors send these under load) |
//! | `AuthDrift` | 401 after a refresh, 403 | permanent: credentials need a human |
//! | `Validation` | 400, 422 | permanent |
//! | `Conflict` | 409, 412 | permanent |
//! | `NotFound` | 404 | permanent |
//! | `Pagination` | repeated cursor, empty page with a next link | permanent |
//! | `Config` | bad base URL, unreadable secret | permanent |
//! | `Redirect` | a redirect or link to another origin, too many redirects | permanent |
//! | `TooLarge` | a body over `max_response_bytes` | permanent |

use std::fmt;

use chrono::{DateTime, Utc};

/// A category of vendor failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// The vendor rate limited us (429).
    Throttled,
    /// A daily or monthly API quota is spent.
    QuotaExhausted,
    /// Credentials were refused even after a refresh.
    AuthDrift,
    /// The vendor rejected the request as invalid (400, 422).
    Validation,
    /// The request conflicts with the resource's state (409, 412).
    Conflict,
    /// The resource does not exist (404).
    NotFound,
    /// The vendor failed (5xx).
    PlatformFault,
    /// The connection failed or was reset.
    Network,
    /// The vendor did not answer in time.
    Timeout,
    /// The body is not the JSON it should be.
    MalformedBody,
    /// The vendor's paging is broken (a repeated cursor, an empty page with a next link,
    /// a count that disagrees with its total).
    Pagination,
    /// The connector is misconfigured.
    Config,
    /// A redirect (or a link in a body) leads where credentials may not go, or too far.
    Redirect,
    /// A response body is larger than the source allows.
    TooLarge,
}

impl Category {
    /// The snake_case name recorded with failed steps and dead letters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::QuotaExhausted => "quota_exhausted",
            Self::AuthDrift => "auth",
            Self::Validation => "validation",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::PlatformFault => "platform_fault",
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::MalformedBody => "malformed_body",
            Self::Pagination => "pagination",
            Self::Config => "config",
            Self::Redirect => "redirect",
            Self::TooLarge => "too_large",
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Throttled
                | Self::QuotaExhausted
                | Self::PlatformFault
                | Self::Network
                | Self::Timeout
                | Self::MalformedBody
        )
    }

    /// The category of an HTTP status that is not a success.
    pub fn of_status(status: u16) -> Self {
        match status {
            429 => Self::Throttled,
            401 | 403 => Self::AuthDrift,
            404 | 410 => Self::NotFound,
            409 | 412 => Self::Conflict,
            400..=499 => Self::Validation,
            _ => Self::PlatformFault,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed vendor call. Its message names the method, the URL (with credentials
/// removed) and the status; it never contains a secret.
#[derive(Debug)]
pub struct HttpError {
    category: Category,
    method: &'static str,
    url: String,
    status: Option<u16>,
    message: String,
    retry_at: Option<DateTime<Utc>>,
    asked_until: Option<DateTime<Utc>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl HttpError {
    /// A failure of a request. The message may quote the vendor: it passes through the
    /// redactor here, so an echoed secret never gets further.
    pub(crate) fn request(
        category: Category,
        method: &'static str,
        url: &str,
        status: Option<u16>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            category,
            method,
            url: cairn_runner::redact::redact(url).into_owned(),
            status,
            message: cairn_runner::redact::redact(&message.into()).into_owned(),
            retry_at: None,
            asked_until: None,
            source: None,
        }
    }

    /// The same error, due to end at `at` (throttling and quotas).
    #[must_use]
    pub(crate) fn retry_at(mut self, at: DateTime<Utc>) -> Self {
        self.retry_at = Some(at);
        self
    }

    /// The same error, noting that the vendor asked to wait until `asked` (later than
    /// [`HttpError::retry_time`], which the source's cap cut short).
    #[must_use]
    pub(crate) fn with_asked_until(mut self, asked: Option<DateTime<Utc>>) -> Self {
        self.asked_until = asked;
        self
    }

    /// The same error with its cause attached.
    #[must_use]
    pub(crate) fn caused_by(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Broken paging: a repeated cursor, an empty page with a next link, or a record
    /// count that disagrees with the vendor's total.
    pub fn pagination(message: impl Into<String>) -> Self {
        Self::request(Category::Pagination, "GET", "", None, message)
    }

    /// A body without the expected shape (a missing records path, a non-array).
    pub fn malformed(url: &str, message: impl Into<String>) -> Self {
        Self::request(Category::MalformedBody, "GET", url, None, message)
    }

    /// A connector configuration problem.
    pub fn config(message: impl Into<String>) -> Self {
        Self::request(Category::Config, "", "", None, message)
    }

    /// What kind of failure this is.
    pub fn category(&self) -> Category {
        self.category
    }

    /// The HTTP status, when the vendor answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// When the vendor will accept requests again, for throttling and quotas.
    pub fn retry_time(&self) -> Option<DateTime<Utc>> {
        self.retry_at
    }

    /// When the vendor asked to be left alone until, if that was beyond the source's
    /// `max_rate_limit_wait` or `max_quota_wait` (the run retries sooner, at
    /// [`HttpError::retry_time`]).
    pub fn asked_until(&self) -> Option<DateTime<Utc>> {
        self.asked_until
    }

    /// The URL of the failed request, credentials removed.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.category)?;
        if !self.url.is_empty() {
            write!(f, ": {} {}", self.method, self.url)?;
        }
        if let Some(status) = self.status {
            write!(f, " answered {status}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(at) = self.retry_at {
            write!(f, " (retry at {}", at.to_rfc3339())?;
            if let Some(asked) = self.asked_until {
                write!(f, "; the vendor asked for {}", asked.to_rfc3339())?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<HttpError> for cairn_runner::Error {
    fn from(err: HttpError) -> Self {
        let category = err.category.as_str();
        let engine = match (err.category, err.retry_at) {
            (Category::Throttled | Category::QuotaExhausted, Some(at)) => {
                Self::rate_limited_until(at, err)
            }
            (category, _) if category.is_transient() => Self::transient(err),
            _ => Self::permanent(err),
        };
        engine.with_category(category)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_runner::ErrorClass;

    #[test]
    fn statuses_map_to_categories_and_engine_classes() {
        assert_eq!(Category::of_status(503), Category::PlatformFault);
        assert_eq!(Category::of_status(422), Category::Validation);
        assert_eq!(Category::of_status(412), Category::Conflict);
        let at = Utc::now();
        let throttled = HttpError::request(
            Category::Throttled,
            "GET",
            "http://x/y",
            Some(429),
            "slow down",
        )
        .retry_at(at);
        let engine = cairn_runner::Error::from(throttled);
        assert_eq!(engine.class(), ErrorClass::RateLimited { until: at });
        assert_eq!(engine.category(), Some("throttled"));
        let fault = HttpError::request(
            Category::PlatformFault,
            "GET",
            "http://x/y",
            Some(502),
            "bad gateway",
        );
        assert_eq!(
            cairn_runner::Error::from(fault).class(),
            ErrorClass::Transient
        );
        let auth = HttpError::request(
            Category::AuthDrift,
            "GET",
            "http://x/y",
            Some(401),
            "invalid_token",
        );
        let engine = cairn_runner::Error::from(auth);
        assert_eq!(engine.class(), ErrorClass::Permanent);
        assert_eq!(
            engine.to_string(),
            "auth: GET http://x/y answered 401: invalid_token"
        );
    }
}
