//! cairn: a workflow-as-code durable task runner on PostgreSQL, built for keeping a
//! warehouse in sync with rate-limited SaaS APIs.
//!
//! This facade re-exports the engine ([`cairn_runner`]) at its root, the vendor
//! toolkit as [`connectors`], the sandbox vendor as [`sandbox`] and the built-in workflows as [`workflows`], and offers the
//! whole CLI as a function, so a project ships its own workflows in its own binary:
//!
//! ```no_run
//! use cairn::{Context, Error, Registry};
//!
//! async fn hello(ctx: Context, name: String) -> Result<String, Error> {
//!     ctx.step("greet", || async { Ok(format!("hello, {name}")) }).await
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::new();
//!     registry.register("hello", hello);
//!     cairn::cli::main(registry) // `my-bin worker`, `my-bin start hello --input '"ada"'`, ...
//! }
//! ```
//!
//! # Modules
//!
//! - [`cli`]: the command line (`migrate`, `worker`, `start`, `runs`, `demo`, ...).
//! - [`connectors`]: talking to vendors.
//! - [`sandbox`]: the sandbox vendor (`cairn mock-vendor`).
//! - [`workflows`]: the built-in workflows.
//! - [`ui`]: the dashboard and `/metrics` (`cairn ui`).

pub mod cli;
pub mod telemetry;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use cairn_connectors as connectors;
pub use cairn_macros::workflow;
pub use cairn_runner::*;
pub use cairn_sandbox as sandbox;
/// The test kit, for documenting it beside cairn (`cargo doc --features cairn/testkit`);
/// tests depend on `cairn-testkit` itself, as a dev-dependency.
#[cfg(feature = "testkit")]
pub use cairn_testkit as testkit;
pub use cairn_ui as ui;
pub use cairn_workflows as workflows;

/// Creates or upgrades the whole `cairn` schema: the engine's tables, then the
/// connectors' and the sync workflows' (what `cairn migrate` runs). Idempotent, and safe
/// to call from several processes at once.
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), EngineError> {
    migrate_with(pool, &[&connectors::MIGRATIONS, &workflows::MIGRATIONS]).await
}
