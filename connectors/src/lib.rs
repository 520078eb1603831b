//! Talking to SaaS vendors for cairn.
//!
//! This crate is everything between a workflow and a vendor's API: the HTTP client
//! every source uses, auth and secrets, the shared rate budget, pagination, the
//! declarative REST source and the `Source` trait, the REST destination, and the
//! warehouse the sync workflows land into.
//!
//! The sandbox vendor it is all tested and benchmarked against is a crate of its own,
//! `cairn-sandbox`, so that a worker does not carry a web server.
//!
//! # Layout
//!
//! - [`http`]: [`http::HttpClient`], the one client every source uses: timeouts,
//!   pooling, compression, auth, the shared rate budget, telemetry, categorised errors;
//!   credentials only for the source's origin, bounded bodies, capped waits.
//! - [`headers`]: `[headers]`, plain or from a secret source.
//! - [`auth`]: bearer tokens, API keys, OAuth2 client credentials with refresh.
//! - [`secret`]: credentials that never print themselves and are masked wherever they
//!   are echoed, read from the worker's environment or files.
//! - [`error`]: [`error::HttpError`] and its categories, mapped to the engine's classes.
//! - [`telemetry`]: `Retry-After`, `X-RateLimit-*` and `Sforce-Limit-Info` parsing.
//! - [`budget`]: the per-credential token bucket shared through Postgres.
//! - [`paginate`]: one normalised cursor for every vendor paging style, and a
//!   [`paginate::Traversal`] that errors on repeated cursors, empty pages with a
//!   next link and totals that disagree, instead of looping.
//! - [`record`]: a vendor's records kept exactly as sent (its JSON text, beside a parsed
//!   view), and listing bodies read so that one unreadable record costs only itself.
//! - [`source`]: the [`source::Source`] trait sync workflows read vendors through:
//!   streams, a page at a cursor (optionally since a watermark), the ids listing.
//! - [`destination`]: the REST destination — records written to a vendor with
//!   `PUT`, idempotency-keyed `POST` or `If-Match` `PATCH`, so that a lost answer never
//!   becomes a duplicate or an overwrite.
//! - [`rest`]: the declarative REST source — a TOML file per API, no Rust code;
//!   ready profiles for the sandbox in `examples/sources/`.
//! - [`checksum`]: the record-set checksum that proves a warehouse equals a vendor.
//! - [`watermark`]: what a cursor field holds (`timestamp`, `integer`, `string`) and
//!   which values a watermark may move on.
//! - [`warehouse`]: the Postgres warehouse sink — a typed table per stream, idempotent
//!   page upserts, schema drift to quarantine with alerts, delete reconciliation.

pub mod auth;
pub mod budget;
pub mod checksum;
pub mod destination;
pub mod error;
pub mod headers;
pub mod http;
pub mod paginate;
pub mod record;
pub mod rest;
pub mod secret;
pub mod source;
pub mod telemetry;
pub mod tokens;
pub mod warehouse;
pub mod watermark;

pub use tokens::SEALED_COLUMNS;

/// The connectors' tables of the `cairn` schema (rate budgets, the warehouse registry,
/// quarantine, reconciliation ids, OAuth tokens), migrated after the engine's with
/// [`cairn_runner::migrate_with`].
pub static MIGRATIONS: std::sync::LazyLock<cairn_runner::Migrations> =
    std::sync::LazyLock::new(|| {
        cairn_runner::Migrations::new(sqlx::migrate!("./migrations"), "_migrations_warehouse")
    });
