//! Built-in cairn workflows, written only with the public APIs of `cairn-runner` (and,
//! as they arrive, `cairn-connectors`): if a built-in needs something private, the
//! public API is missing it.
//!
//! # Modules
//!
//! - [`tour`]: the README's first workflow: several steps, a transactional step, a
//!   durable sleep and a flaky step that succeeds on retry.
//! - [`compose`]: every composition primitive in one run (recorded time and ids,
//!   branches, a durable sleep, children, a published value, an awaited event).
//! - [`ledger`]: a configurable chain of steps that leaves one ledger row per step
//!   execution, so tests and benchmarks can count exactly what ran.
//! - [`sync`]: incremental sync, backfill and delete reconciliation of a vendor's
//!   streams into a Postgres warehouse.
//!
//! [`register_builtin`] registers them all under their stable names.

pub mod compose;
pub mod ledger;
pub mod sync;
pub mod tour;

use cairn_runner::Registry;

/// Registers every built-in workflow.
pub fn register_builtin(registry: &mut Registry) -> &mut Registry {
    registry
        .register(tour::NAME, tour::tour)
        .register(compose::NAME, compose::compose)
        .register(ledger::NAME, ledger::ledger)
        .register(sync::INCREMENTAL, sync::incremental)
        .register(sync::BACKFILL, sync::backfill)
        .register(sync::RECONCILE, sync::reconcile)
        .register(sync::FILL, sync::fill)
}
