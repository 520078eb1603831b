//! Talking to SaaS vendors for cairn.
//!
//! This crate is everything between a workflow and a vendor's API: the HTTP client
//! every source uses, auth and secrets, the shared rate budget, pagination, the
//! declarative REST source and the `Source` trait, the warehouse the sync workflows
//! land into, and the sandbox vendor all of it is tested and benchmarked against.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_connectors::sandbox::{Mutation, Sandbox, SandboxConfig, Stream};
//!
//! let sandbox = Sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse()?).await?;
//! println!("paging at {}/crm/v3/objects/contacts", sandbox.base_url());
//! sandbox.vendor().mutate(Stream::Contacts, Mutation::Update { count: 10 })?;
//! let stats = sandbox.vendor().stats();
//! println!("contacts checksum {}", stats.streams["contacts"].checksum);
//! sandbox.shutdown().await;
//! # Ok(())
//! # }
//! ```
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
//! - [`rest`]: the declarative REST source — a TOML file per API, no Rust code;
//!   ready profiles for the sandbox in `examples/sources/`.
//! - [`sandbox`]: a fake CRM over real HTTP on 127.0.0.1 — HubSpot-,
//!   Salesforce- and Stripe-like listings, offset and `Link` paging, an ids
//!   listing, idempotent writes, an admin API that mutates data and schema,
//!   and switchable rate limits, auth expiry, quotas and transient faults.
//!   Served by `cairn mock-vendor`.
//! - [`watermark`]: what a cursor field holds (`timestamp`, `integer`, `string`) and
//!   which values a watermark may move on.
//! - [`warehouse`]: the Postgres warehouse sink — a typed table per stream, idempotent
//!   page upserts, schema drift to quarantine with alerts, delete reconciliation.

pub mod auth;
pub mod budget;
pub mod error;
pub mod headers;
pub mod http;
pub mod paginate;
pub mod record;
pub mod rest;
pub mod sandbox;
pub mod secret;
pub mod source;
pub mod telemetry;
pub mod warehouse;
pub mod watermark;
