//! Erasing one person's record at a vendor, as privacy law's erasure asks: `DELETE` the
//! record, or `PATCH` it with anonymised values. The destination's rules for writes
//! hold: the record is read first, and erased only while it still holds the person's
//! identifier (a record that changed hands since it was found is left alone); the write
//! carries `If-Match` with the version read when the vendor has ETags, so a record
//! changed in between is read again rather than erased blind; an erasure already done
//! (the record gone, or already holding the anonymised values) is done, so a retry
//! after a lost answer is harmless.

use reqwest::Method;
use serde_json::Value;

use super::write::{body, holds, usable_etag};
use crate::error::{Category, HttpError};
use crate::http::{Call, HttpClient};

/// How often an erasure reads the record again after a `412` before giving up for now.
const MAX_ROUNDS: usize = 3;

/// How a stream's records are erased.
#[derive(Clone, Debug, PartialEq)]
pub enum EraseMode {
    /// `DELETE` the record.
    Delete,
    /// `PATCH` these fields over it (the identifying ones emptied or replaced).
    Anonymize(Value),
}

/// A stream's erasure: the record's URL (with `{id}`) and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ErasePlan {
    /// The record's path, `{id}` where its id goes (percent-encoded).
    pub path: String,
    /// Delete or anonymise.
    pub mode: EraseMode,
}

/// What became of an erasure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Erased {
    /// The vendor no longer holds the person's data in the record.
    Done {
        /// Whether it was already so (gone, or already anonymised).
        repeated: bool,
    },
    /// The record no longer holds the person's identifier: it was left alone.
    NotTheirs,
    /// The vendor refuses to erase it (a locked record, a legal hold): a person has
    /// to settle it.
    Refused {
        /// The status it answered.
        status: Option<u16>,
        /// Why, in the vendor's words (credentials removed).
        reason: String,
    },
}

/// Erases the record at `url` (already filled with its id) as `mode` says, while
/// `theirs` holds for it.
pub async fn erase(
    client: &HttpClient,
    url: &str,
    mode: &EraseMode,
    theirs: impl Fn(&Value) -> bool,
) -> Result<Erased, HttpError> {
    for _ in 0..MAX_ROUNDS {
        let (current, etag) = match client.get(url, &[]).await {
            Ok(response) => {
                let current = response
                    .json()
                    .map_err(|err| HttpError::malformed(url, format!("the record: {err}")))?;
                let etag = response
                    .headers
                    .get(reqwest::header::ETAG)
                    .and_then(usable_etag);
                (current, etag)
            }
            Err(err) if err.status() == Some(404) => return Ok(Erased::Done { repeated: true }),
            Err(err) => return refused_or(err),
        };
        if let EraseMode::Anonymize(fields) = mode
            && holds(&current, fields)
        {
            return Ok(Erased::Done { repeated: true });
        }
        if !theirs(&current) {
            return Ok(Erased::NotTheirs);
        }
        let mut call = match mode {
            EraseMode::Delete => Call {
                method: Method::DELETE,
                url,
                query: &[],
                body: None,
                headers: Vec::new(),
            },
            EraseMode::Anonymize(fields) => Call::json(Method::PATCH, url, body(fields)?),
        };
        if let Some(etag) = &etag {
            let value = reqwest::header::HeaderValue::from_str(etag)
                .map_err(|_| HttpError::malformed(url, "an unusable ETag"))?;
            call = call.header(reqwest::header::IF_MATCH, value);
        }
        match client.call(&call).await {
            Ok(_) => return Ok(Erased::Done { repeated: false }),
            Err(err) if err.status() == Some(404) => return Ok(Erased::Done { repeated: true }),
            Err(err) if err.status() == Some(412) => {}
            Err(err) => return refused_or(err),
        }
    }
    Err(HttpError::request(
        Category::Conflict,
        "DELETE",
        url,
        Some(412),
        format!(
            "the record changed at the vendor {MAX_ROUNDS} times while it was being erased; \
             trying again later"
        ),
    ))
}

/// A refusal that is the record's (409, 422, 423: locked, held, invalid), or the error
/// to handle as any other (retried, parked, or failing the step).
fn refused_or(err: HttpError) -> Result<Erased, HttpError> {
    match err.status() {
        Some(409 | 422 | 423) => Ok(Erased::Refused {
            status: err.status(),
            reason: err.to_string(),
        }),
        _ => Err(err),
    }
}
