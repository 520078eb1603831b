//! The REST destination: records written to a vendor's API, so that a lost
//! acknowledgement never becomes a duplicate or an overwrite of someone else's change.
//!
//! Each stream has a [`WriteMode`]:
//!
//! - `put` writes `PUT {path}/{id}`: an upsert by id, the same however often it is sent.
//! - `post` writes `POST {path}` with an `Idempotency-Key` the caller derives with
//!   [`idempotency_key`] from the run, the step and the record: a retry after a lost
//!   answer carries the same key, and the vendor answers it from memory instead of
//!   creating the record again.
//! - `patch` writes `PATCH {path}/{id}` with `If-Match` and the record's last-seen
//!   `ETag`. A `412` means the record changed since: the current one is fetched, and if
//!   it already holds this write (its answer was lost) the write is done; otherwise the
//!   stream's [`ConflictPolicy`] decides.
//!
//! Erasure ([`erase`]) is a write too: a person's record deleted or anonymised, only
//! while it still holds their identifier, with `If-Match` where the vendor has ETags.
//!
//! A `409` or `422` refuses one record, not the page: it comes back as
//! [`Outcome::Rejected`], for the record's dead letter. Writes take tokens from the
//! vendor's rate budget like reads (shared with any reads of the same vendor and
//! credentials), with the same 429 handling. What is never done is to send a write again
//! by itself after an answer that did not arrive: that error comes back to the caller,
//! who sends it again under the same key.

mod config;
mod erase;
mod write;

pub use config::{ConflictPolicy, DestinationConfig, MAX_BATCH_SIZE, StreamPlan, WriteMode};
pub use erase::{EraseMode, ErasePlan, Erased, erase};
pub use write::{Destination, MAX_DEST_ID, Outcome, RecordWrite, idempotency_key};
