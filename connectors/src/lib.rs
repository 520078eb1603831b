//! Talking to SaaS vendors for cairn.
//!
//! This crate is everything between a workflow and a vendor's API. For now it
//! holds the sandbox vendor that the rest is built, tested and benchmarked
//! against; the HTTP client, auth, pagination, the `Source` trait and the
//! warehouse sink join it as they land.
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
//! - [`sandbox`]: a fake CRM over real HTTP on 127.0.0.1 — HubSpot-,
//!   Salesforce- and Stripe-like listings, offset and `Link` paging, an ids
//!   listing, idempotent writes, an admin API that mutates data and schema,
//!   and switchable rate limits, auth expiry, quotas and transient faults.
//!   Served by `cairn mock-vendor`.

pub mod sandbox;
