//! Writing one record, or one batch of records, the way its stream says.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::config::{ConflictPolicy, DestinationConfig, StreamPlan, WriteMode};
use crate::error::{Category, HttpError};
use crate::http::{Call, HttpClient, Response};

/// How often a `source_wins` patch is tried again when the record keeps changing under
/// it before the write gives up for now (the step retries it later).
const MAX_CONFLICT_ROUNDS: usize = 3;

/// The `Idempotency-Key` of a write: the same for the same run, step position, stream
/// and record, whatever attempt sends it, and different for anything else. Hashed, so
/// that no record id travels in a header.
pub fn idempotency_key(run: &str, position: i32, stream: &str, record_id: &str) -> String {
    let mut hash = Sha256::new();
    for part in [run, &position.to_string(), stream, record_id] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("cairn-{hex}")
}

/// One record to write.
#[derive(Clone, Copy, Debug)]
pub struct RecordWrite<'a> {
    /// The record, as the destination should hold it.
    pub record: &'a Value,
    /// Its idempotency key (see [`idempotency_key`]); sent by `post` streams.
    pub key: &'a str,
    /// The record's `ETag` as last seen, for a `patch` (fetched when unknown).
    pub etag: Option<&'a str>,
}

/// What became of a write.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The destination holds the write.
    Applied {
        /// The record's id at the destination (for a `post`, the one it gave).
        id: String,
        /// The version it answered with, to send in the next `If-Match`.
        etag: Option<String>,
        /// Whether the destination said it had seen this write before (a replayed
        /// idempotency key, or a patch found already applied).
        repeated: bool,
    },
    /// The destination refuses this record whatever is sent (409, 422, a record
    /// without an id, a patch of a record it does not have): a dead letter.
    Rejected {
        /// The status it answered, if it answered.
        status: Option<u16>,
        /// Why, in the destination's words (credentials removed).
        reason: String,
    },
    /// A `patch` found the record changed by someone else, and the stream's policy
    /// leaves it as it is.
    Conflict {
        /// The policy that decided: `skip_and_alert` or `dead_letter`.
        policy: ConflictPolicy,
        /// The record as the destination holds it now.
        current: Value,
    },
}

/// A REST destination, open: its configuration and its HTTP client.
#[derive(Clone)]
pub struct Destination {
    config: DestinationConfig,
    client: HttpClient,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// Opens `config`'s client. A configured rate limit needs `pool`: the budget lives
    /// in Postgres, shared with every worker and with reads of the same vendor.
    pub async fn open(config: DestinationConfig, pool: Option<PgPool>) -> Result<Self, HttpError> {
        let client =
            HttpClient::with_secret_params(config.http.clone(), pool, config.secret_params.clone())
                .await?;
        Ok(Self { config, client })
    }

    /// Its configuration.
    pub fn config(&self) -> &DestinationConfig {
        &self.config
    }

    /// Its HTTP client (for its rate budget).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    fn plan(&self, stream: &str) -> Result<&StreamPlan, HttpError> {
        self.config.stream(stream).ok_or_else(|| {
            HttpError::config(format!(
                "the destination `{}` has no stream `{stream}`",
                self.config.name
            ))
        })
    }

    /// Writes one record of `stream` as its mode says. An `Err` is a failure of the
    /// call, not of the record: transient ones may be sent again, with the same key.
    pub async fn write(&self, stream: &str, write: RecordWrite<'_>) -> Result<Outcome, HttpError> {
        let plan = self.plan(stream)?;
        match plan.mode {
            WriteMode::Post => self.post(stream, plan, write).await,
            WriteMode::Put => {
                let Some(id) = record_id(plan, write.record) else {
                    return Ok(without_id(plan));
                };
                let url = record_url(plan, &id);
                let call = Call::json(Method::PUT, &url, body(write.record)?);
                refused_or(self.client.call(&call).await, |response| {
                    applied(id, &response)
                })
            }
            WriteMode::Patch => {
                let Some(id) = record_id(plan, write.record) else {
                    return Ok(without_id(plan));
                };
                self.patch(plan, &id, write).await
            }
        }
    }

    async fn post(
        &self,
        stream: &str,
        plan: &StreamPlan,
        write: RecordWrite<'_>,
    ) -> Result<Outcome, HttpError> {
        let mut record = write.record.clone();
        if let (Some(field), Some(id)) = (&plan.source_id_field, record_id(plan, write.record))
            && let Value::Object(fields) = &mut record
        {
            fields.insert(field.clone(), Value::from(id));
        }
        let key = HeaderValue::from_str(write.key).map_err(|_| {
            HttpError::config(format!(
                "stream `{stream}`: an idempotency key must be visible ASCII"
            ))
        })?;
        let call = Call::json(Method::POST, &plan.path, body(&record)?)
            .header(HeaderName::from_static("idempotency-key"), key);
        refused_or(self.client.call(&call).await, |response| {
            // The record was created whatever its answer says; an id that is missing or
            // unfit to keep (too long, control characters) is recorded as unknown (empty),
            // which the pipeline raises an alert for, rather than stored or trusted.
            let id = response
                .json()
                .ok()
                .and_then(|body| body.get("id").and_then(id_text))
                .filter(|id| usable_id(id))
                .unwrap_or_default();
            let mut outcome = applied(id, &response);
            if let Outcome::Applied { repeated, .. } = &mut outcome {
                *repeated = response.headers.contains_key("idempotent-replayed");
            }
            outcome
        })
    }

    async fn patch(
        &self,
        plan: &StreamPlan,
        id: &str,
        write: RecordWrite<'_>,
    ) -> Result<Outcome, HttpError> {
        let url = record_url(plan, id);
        let mut etag = write.etag.map(str::to_owned);
        for _ in 0..MAX_CONFLICT_ROUNDS {
            let known = match etag.take() {
                Some(etag) => etag,
                None => match self.current(&url).await? {
                    Ok((_, Some(etag))) => etag,
                    Ok((_, None)) => {
                        return Err(HttpError::malformed(
                            &url,
                            "the destination answers without an ETag, so a patch cannot be \
                             made safely: use mode = \"put\"",
                        ));
                    }
                    Err(outcome) => return Ok(outcome),
                },
            };
            let if_match = HeaderValue::from_str(&known)
                .map_err(|_| HttpError::malformed(&url, "an unusable ETag"))?;
            let call = Call::json(Method::PATCH, &url, body(write.record)?)
                .header(reqwest::header::IF_MATCH, if_match);
            match self.client.call(&call).await {
                Err(err) if err.status() == Some(412) => {}
                answer => return refused_or(answer, |response| applied(id.to_owned(), &response)),
            }
            let (current, current_etag) = match self.current(&url).await? {
                Ok(found) => found,
                Err(outcome) => return Ok(outcome),
            };
            if holds(&current, write.record) {
                // The record already says what this write says: the write landed and
                // its answer was lost (or someone made the same change).
                return Ok(Outcome::Applied {
                    id: id.to_owned(),
                    etag: current_etag,
                    repeated: true,
                });
            }
            match plan.on_conflict {
                ConflictPolicy::SourceWins => etag = current_etag,
                policy => return Ok(Outcome::Conflict { policy, current }),
            }
        }
        Err(HttpError::request(
            Category::Conflict,
            "PATCH",
            &url,
            Some(412),
            format!(
                "the record changed at the destination {MAX_CONFLICT_ROUNDS} times while it \
                 was being written; trying again later"
            ),
        ))
    }

    /// The record at `url` and its `ETag`, or the outcome when it is not there.
    async fn current(
        &self,
        url: &str,
    ) -> Result<Result<(Value, Option<String>), Outcome>, HttpError> {
        match self.client.get(url, &[]).await {
            Ok(response) => {
                let body = response
                    .json()
                    .map_err(|err| HttpError::malformed(url, format!("the record: {err}")))?;
                let etag = response
                    .headers
                    .get(reqwest::header::ETAG)
                    .and_then(usable_etag);
                Ok(Ok((body, etag)))
            }
            Err(err) if err.status() == Some(404) => Ok(Err(Outcome::Rejected {
                status: Some(404),
                reason: "the destination has no such record to patch".to_owned(),
            })),
            Err(err) => Err(err),
        }
    }

    /// Writes `records` of a `put` stream through its batch endpoint, one answer per
    /// record in order. The vendor's answer must name every record, in order: anything
    /// else is refused as a malformed body rather than guessed at.
    pub async fn write_batch(
        &self,
        stream: &str,
        records: &[&Value],
    ) -> Result<Vec<Outcome>, HttpError> {
        let plan = self.plan(stream)?;
        let Some((path, size)) = plan.batch() else {
            return Err(HttpError::config(format!(
                "stream `{stream}` declares no batch_path"
            )));
        };
        if records.len() > size {
            return Err(HttpError::config(format!(
                "a batch of {} records is larger than the stream's batch_size {size}",
                records.len()
            )));
        }
        let ids: Vec<Option<String>> = records.iter().map(|r| record_id(plan, r)).collect();
        let sent: Vec<&Value> = records
            .iter()
            .zip(&ids)
            .filter(|(_, id)| id.is_some())
            .map(|(record, _)| *record)
            .collect();
        let mut answers = if sent.is_empty() {
            Vec::new().into_iter()
        } else {
            let payload = serde_json::json!({ "records": sent });
            let response = self
                .client
                .call(&Call::json(Method::POST, path, body(&payload)?))
                .await?;
            batch_answers(path, &response, &ids)?.into_iter()
        };
        Ok(ids
            .iter()
            .map(|id| match id {
                None => without_id(plan),
                Some(_) => answers.next().unwrap_or_else(|| without_id(plan)),
            })
            .collect())
    }
}

/// The outcomes a batch answer gives for the records with ids in `ids`, checked
/// against them.
fn batch_answers(
    path: &str,
    response: &Response,
    ids: &[Option<String>],
) -> Result<Vec<Outcome>, HttpError> {
    let malformed = |message: String| HttpError::malformed(path, message);
    let body = response
        .json()
        .map_err(|err| malformed(format!("the batch answer: {err}")))?;
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("the batch answer has no `results` array".to_owned()))?;
    let expected: Vec<&String> = ids.iter().flatten().collect();
    if results.len() != expected.len() {
        return Err(malformed(format!(
            "the batch answer has {} results for {} records",
            results.len(),
            expected.len()
        )));
    }
    results
        .iter()
        .zip(expected)
        .map(|(result, id)| {
            let answered = result.get("id").and_then(id_text);
            if answered.as_deref() != Some(id.as_str()) {
                return Err(malformed(format!(
                    "the batch answer's results are not in the records' order (expected `{}`)",
                    truncated(id)
                )));
            }
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            let status = u16::try_from(status).unwrap_or(0);
            match status {
                200..=299 => Ok(Outcome::Applied {
                    id: id.clone(),
                    etag: result
                        .get("etag")
                        .and_then(Value::as_str)
                        .and_then(|e| HeaderValue::from_str(e).ok())
                        .as_ref()
                        .and_then(usable_etag),
                    repeated: false,
                }),
                409 | 422 => Ok(Outcome::Rejected {
                    status: Some(status),
                    reason: cairn_runner::redact::redact(&truncated(
                        result
                            .get("message")
                            .or_else(|| result.get("error"))
                            .and_then(Value::as_str)
                            .unwrap_or("refused"),
                    ))
                    .into_owned(),
                }),
                _ => Err(HttpError::request(
                    Category::of_status(status),
                    "POST",
                    path,
                    Some(status),
                    format!(
                        "record `{}` of the batch was answered {status}",
                        truncated(id)
                    ),
                )),
            }
        })
        .collect()
}

/// The longest `ETag` kept: a version tag is a few dozen characters.
const MAX_ETAG: usize = 256;

/// An `ETag` header's value when it is one a client can send back: visible ASCII of a
/// sane length (a vendor's value is otherwise not trusted to travel in `If-Match`).
pub(super) fn usable_etag(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= MAX_ETAG && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_owned())
}

/// A vendor's text cut to a length fit for a message.
fn truncated(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The record's id as text: a string as it is, a number as written.
fn record_id(plan: &StreamPlan, record: &Value) -> Option<String> {
    plan.id_field.get(record).and_then(id_text)
}

/// The longest destination id cairn keeps: ids travel in URLs and rows.
pub const MAX_DEST_ID: usize = 256;

/// Whether an id a destination answered is fit to keep and to send back in a URL.
fn usable_id(id: &str) -> bool {
    id.len() <= MAX_DEST_ID && !id.chars().any(char::is_control)
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn without_id(plan: &StreamPlan) -> Outcome {
    Outcome::Rejected {
        status: None,
        reason: format!("the record has no id at `{}`", plan.id_field),
    }
}

/// `{path}/{id}`, the id as one path segment.
fn record_url(plan: &StreamPlan, id: &str) -> String {
    let segment: String = url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("{}/{segment}", plan.path.trim_end_matches('/'))
}

pub(super) fn body(value: &Value) -> Result<Bytes, HttpError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| HttpError::config(format!("a record cannot be written as JSON: {err}")))
}

/// Whether `current` already holds every field `record` sets.
pub(super) fn holds(current: &Value, record: &Value) -> bool {
    match record.as_object() {
        Some(fields) => fields
            .iter()
            .all(|(name, value)| current.get(name) == Some(value)),
        None => false,
    }
}

fn applied(id: String, response: &Response) -> Outcome {
    Outcome::Applied {
        id,
        etag: response
            .headers
            .get(reqwest::header::ETAG)
            .and_then(usable_etag),
        repeated: false,
    }
}

/// A record-level refusal (409, 422) as its outcome; any other answer through `ok`,
/// and any other failure as it is.
fn refused_or(
    answer: Result<Response, HttpError>,
    ok: impl FnOnce(Response) -> Outcome,
) -> Result<Outcome, HttpError> {
    match answer {
        Ok(response) => Ok(ok(response)),
        Err(err) if matches!(err.status(), Some(409 | 422)) => Ok(Outcome::Rejected {
            status: err.status(),
            reason: err.to_string(),
        }),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_is_the_same_for_the_same_write_only() {
        let key = idempotency_key("run-1", 4, "deals", "d-9");
        assert_eq!(key, idempotency_key("run-1", 4, "deals", "d-9"));
        assert!(key.starts_with("cairn-") && key.len() == 38, "{key}");
        for other in [
            idempotency_key("run-2", 4, "deals", "d-9"),
            idempotency_key("run-1", 5, "deals", "d-9"),
            idempotency_key("run-1", 4, "deal", "sd-9"),
            idempotency_key("run-1", 4, "deals", "d-90"),
        ] {
            assert_ne!(key, other);
        }
    }

    #[test]
    fn a_record_is_held_when_every_field_it_sets_is_there() {
        let current = serde_json::json!({"id": "a", "n": 1, "m": 2, "version": 3});
        assert!(holds(&current, &serde_json::json!({"id": "a", "n": 1})));
        assert!(!holds(&current, &serde_json::json!({"id": "a", "n": 2})));
    }
}
