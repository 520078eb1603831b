//! One page written to the destination, in the transactional step that settles it.

use cairn_connectors::destination::{
    ConflictPolicy, Destination, Outcome, RecordWrite, WriteMode, idempotency_key,
};
use cairn_connectors::error::{Category, HttpError};
use cairn_connectors::paginate::JsonPath;
use cairn_connectors::source::Page;
use cairn_runner::{Context, Error, Tx};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::state::{self, Ack, PipelineKey, Settled};

/// How many times a write is sent at most within one attempt of its step.
const RESENDS: u32 = 5;

/// The pause before a write is sent again, times the tries so far.
const RESEND_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// What writing one page did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageWritten {
    pub(crate) applied: u64,
    pub(crate) repeated: u64,
    pub(crate) already_created: u64,
    pub(crate) rejected: u64,
    pub(crate) conflicts: u64,
}

/// How one page is written.
pub(crate) struct PageWrite<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) dest: &'a Destination,
    pub(crate) key: &'a PipelineKey,
    pub(crate) primary_key: &'a JsonPath,
    pub(crate) page: &'a Page,
    pub(crate) concurrency: usize,
    /// The watermark to keep when this page ends the traversal.
    pub(crate) watermark: Option<&'a str>,
}

impl PageWrite<'_> {
    /// Sends every record of the page the destination has not acknowledged for this
    /// step yet (each acknowledgement is recorded as it comes, so a crash re-sends only
    /// the others, under the same idempotency keys: the run, this step's position and
    /// the record), then, in the step's transaction, records what became of each and
    /// moves the watermark when this is the last page.
    pub(crate) async fn run(&self, tx: Tx) -> Result<PageWritten, Error> {
        let pool = self.ctx.pool();
        let run = self.ctx.run_id();
        let position = tx.position();
        let plan = self
            .dest
            .config()
            .stream(&self.key.dest_stream)
            .ok_or_else(|| {
                Error::permanent(format!(
                    "the destination has no stream `{}`",
                    self.key.dest_stream
                ))
                .with_category("config")
            })?;
        let mut records: Vec<(String, &serde_json::Value)> = Vec::new();
        // What cannot be written is a dead letter, never a gap: a record without an id
        // and a record that could not be read are refused by name.
        let mut unwritable: Vec<(String, Ack)> = Vec::new();
        for (at, record) in self.page.records.iter().enumerate() {
            match record.text_at(self.primary_key) {
                Some(id) => records.push((id.into_owned(), record.value())),
                None => unwritable.push((
                    format!("(record {} of the page has no id)", at + 1),
                    refused(format!("the record has no `{}`", self.primary_key)),
                )),
            }
        }
        for (at, unreadable) in self.page.unreadable.iter().enumerate() {
            unwritable.push((
                format!("(unreadable record {} of the page)", at + 1),
                refused(format!(
                    "the record could not be read: {}",
                    unreadable.reason
                )),
            ));
        }
        let mut acks = state::acks(pool, run, position).await?;
        let ids: Vec<String> = records.iter().map(|(id, _)| id.clone()).collect();
        let known = state::known(pool, self.key, &ids).await?;
        let pending: Vec<&(String, &serde_json::Value)> = records
            .iter()
            .filter(|(id, _)| !acks.contains_key(id))
            .collect();
        let run_text = run.to_string();
        let in_flight = self.concurrency.max(1);
        if let Some((_, size)) = plan.batch() {
            let batches: Vec<_> = pending
                .chunks(size)
                .map(|chunk| self.send_batch(chunk, position))
                .collect();
            let mut batches = futures::stream::iter(batches).buffer_unordered(in_flight);
            while let Some(sent) = batches.next().await {
                acks.extend(sent?);
            }
        } else {
            let sends: Vec<_> = pending
                .into_iter()
                .map(|(id, record)| {
                    self.send(ToSend {
                        mode: plan.mode(),
                        run: &run_text,
                        position,
                        id,
                        record,
                        known: known.get(id),
                    })
                })
                .collect();
            let mut sends = futures::stream::iter(sends).buffer_unordered(in_flight);
            while let Some(sent) = sends.next().await {
                let (id, ack) = sent?;
                acks.insert(id, ack);
            }
        }
        let mut settled: Vec<Settled<'_>> = records
            .iter()
            .filter_map(|(id, record)| {
                acks.get(id).map(|ack| Settled {
                    record_id: id,
                    ack,
                    record,
                })
            })
            .collect();
        settled.extend(unwritable.iter().map(|(id, ack)| Settled {
            record_id: id,
            ack,
            record: &serde_json::Value::Null,
        }));
        let mut conn = tx.conn().await?;
        state::settle(
            &mut conn,
            self.ctx.sealer(),
            self.key,
            run,
            position,
            &settled,
        )
        .await?;
        if let Some(watermark) = self.watermark {
            state::advance(&mut conn, self.key, watermark).await?;
        }
        let mut written = count(acks.values());
        written.rejected += unwritable.len() as u64;
        Ok(written)
    }
}

/// One record to send, and what is known of it.
struct ToSend<'a> {
    mode: WriteMode,
    run: &'a str,
    position: i32,
    id: &'a str,
    record: &'a serde_json::Value,
    known: Option<&'a (String, Option<String>)>,
}

impl PageWrite<'_> {
    /// Sends one record and records the destination's acknowledgement.
    async fn send(&self, send: ToSend<'_>) -> Result<(String, Ack), Error> {
        let ack = if send.mode == WriteMode::Post && send.known.is_some() {
            Ack::AlreadyCreated
        } else {
            let key = idempotency_key(send.run, send.position, &self.key.dest_stream, send.id);
            let write = RecordWrite {
                record: send.record,
                key: &key,
                etag: send.known.and_then(|(_, etag)| etag.as_deref()),
            };
            let mut tries = 0;
            loop {
                tries += 1;
                match ack_of(self.dest.write(&self.key.dest_stream, write).await) {
                    // A lost answer or a passing fault: sent again at once under the same
                    // key, so one record does not fail the whole page's step. A rate
                    // limit is the engine's to wait out.
                    Err(err) if tries < RESENDS && err.is_transient() => {
                        tokio::time::sleep(RESEND_PAUSE * tries).await;
                    }
                    answer => break answer?,
                }
            }
        };
        let run = self.ctx.run_id();
        state::record_ack(self.ctx.pool(), run, send.position, send.id, &ack).await?;
        Ok((send.id.to_owned(), ack))
    }
}

impl PageWrite<'_> {
    /// Sends `chunk` through the stream's batch endpoint (a `put` stream's, so sending
    /// it again after a lost answer lands the same records again) and records the
    /// destination's answer for each record.
    async fn send_batch(
        &self,
        chunk: &[&(String, &serde_json::Value)],
        position: i32,
    ) -> Result<Vec<(String, Ack)>, Error> {
        let records: Vec<&serde_json::Value> = chunk.iter().map(|(_, record)| *record).collect();
        let mut tries = 0;
        let outcomes = loop {
            tries += 1;
            match self.dest.write_batch(&self.key.dest_stream, &records).await {
                Ok(outcomes) => break outcomes,
                Err(err) => {
                    let err = Error::from(err);
                    if tries < RESENDS && err.is_transient() {
                        tokio::time::sleep(RESEND_PAUSE * tries).await;
                    } else {
                        return Err(err);
                    }
                }
            }
        };
        let mut acked = Vec::with_capacity(chunk.len());
        for ((id, _), outcome) in chunk.iter().zip(outcomes) {
            let ack = ack_of(Ok(outcome))?;
            state::record_ack(self.ctx.pool(), self.ctx.run_id(), position, id, &ack).await?;
            acked.push((id.clone(), ack));
        }
        Ok(acked)
    }
}

fn refused(reason: String) -> Ack {
    Ack::Refused {
        status: None,
        reason,
        alert: false,
    }
}

/// A write's answer as the acknowledgement kept for it; a failure of the call stays an
/// error (sent again later, with the same key).
fn ack_of(written: Result<Outcome, HttpError>) -> Result<Ack, Error> {
    match written {
        Ok(Outcome::Applied { id, etag, repeated }) => Ok(Ack::Applied {
            dest_id: id,
            etag,
            repeated,
        }),
        Ok(Outcome::Rejected { status, reason }) => Ok(Ack::Refused {
            status,
            reason,
            alert: false,
        }),
        Ok(Outcome::Conflict { policy, .. }) => Ok(Ack::Refused {
            status: Some(412),
            reason: format!(
                "the record changed at the destination since it was last written; the \
                 stream's policy `{}` leaves it as it is",
                policy.as_str()
            ),
            alert: policy == ConflictPolicy::SkipAndAlert,
        }),
        // A record that kept changing under a `source_wins` patch: busy, not wrong.
        Err(err) if err.category() == Category::Conflict && err.status() == Some(412) => {
            Err(Error::transient(err).with_category("conflict"))
        }
        Err(err) => Err(err.into()),
    }
}

fn count<'a>(acks: impl Iterator<Item = &'a Ack>) -> PageWritten {
    let mut written = PageWritten::default();
    for ack in acks {
        match ack {
            Ack::Applied { repeated, .. } => {
                written.applied += 1;
                written.repeated += u64::from(*repeated);
            }
            Ack::AlreadyCreated => written.already_created += 1,
            Ack::Refused { status, .. } => {
                if *status == Some(412) {
                    written.conflicts += 1;
                } else {
                    written.rejected += 1;
                }
            }
        }
    }
    written
}
