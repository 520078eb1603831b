//! The errors of requests that failed below HTTP, or whose body could not be read, and
//! how much of a vendor's own words an error keeps.

use crate::error::{Category, HttpError};

use super::body::BodyError;

/// The category of a failure below HTTP (connect, reset, timeout).
pub(crate) fn transport_error(method: &'static str, url: &str, err: reqwest::Error) -> HttpError {
    let category = if err.is_timeout() {
        Category::Timeout
    } else if err.is_decode() {
        Category::MalformedBody
    } else {
        Category::Network
    };
    let message = if err.is_timeout() {
        "no answer in time".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    // reqwest's own message quotes the URL, query credentials included: keep only the
    // chain below it.
    let cause = std::error::Error::source(&err).map(|s| s.to_string());
    let message = match cause {
        Some(cause) => format!("{message} ({cause})"),
        None => message,
    };
    HttpError::request(category, method, url, None, message)
}

/// The longest URL shown in a message: a vendor's next link can be any length.
pub(crate) const MAX_SHOWN_URL: usize = 512;

/// The most of a vendor's error body kept in an error message.
const SNIPPET_CHARS: usize = 2048;

pub(crate) fn snippet(body: &str) -> String {
    let trimmed = body.trim();
    let mut kept: String = trimmed.chars().take(SNIPPET_CHARS).collect();
    if kept.len() < trimmed.len() {
        kept.push_str(" [truncated]");
    }
    if kept.is_empty() {
        "no details in the body".to_owned()
    } else {
        kept
    }
}

/// The error of a body that could not be read within its bound.
pub(crate) fn body_error(
    method: &'static str,
    shown: &str,
    status: u16,
    err: BodyError,
) -> HttpError {
    match err {
        BodyError::TooLarge { limit } => HttpError::request(
            Category::TooLarge,
            method,
            shown,
            Some(status),
            format!(
                "the response body is larger than max_response_bytes ({limit} bytes, counted \
                 after decompression); cairn stopped reading it. Raise max_response_bytes for \
                 this source if its pages really are this large"
            ),
        ),
        BodyError::Transport(err) => transport_error(method, shown, err),
    }
}
