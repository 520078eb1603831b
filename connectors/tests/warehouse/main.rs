//! The Postgres warehouse sink against a real, fresh database per test: idempotent
//! upserts, type inference, schema drift to quarantine with alerts, hostile field
//! names, delete reconciliation, and checksums equal to the sandbox vendor's.

mod checksum;
mod common;
mod drift;
mod names;
mod reconcile;
mod shape;
mod upsert;
