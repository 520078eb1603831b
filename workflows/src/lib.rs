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
//! - [`dsr`]: privacy requests (access, erasure) across every source, on the legal
//!   clock, with a hash-chained audit trail.
//! - [`sync`]: incremental sync, backfill and delete reconciliation of a vendor's
//!   streams into a Postgres warehouse.
//!
//! [`register_builtin`] registers them all under their stable names.

pub mod compose;
pub mod dsr;
pub mod ledger;
pub mod sync;
pub mod tour;

/// The sync workflows' tables of the `cairn` schema (each stream's watermark and backfill
/// state), migrated after the engine's and the connectors' with
/// [`cairn_runner::migrate_with`].
pub static MIGRATIONS: std::sync::LazyLock<cairn_runner::Migrations> =
    std::sync::LazyLock::new(|| {
        cairn_runner::Migrations::new(sqlx::migrate!("./migrations"), "_migrations_sync")
    });

use cairn_runner::Registry;
use cairn_runner::seal::{Column, ENGINE_COLUMNS, QUARANTINED_RECORDS};

/// Every column of the `cairn` schema whose values are sealed when keys are configured:
/// the engine's, the warehouse quarantine's, the token store's and the pipelines'. What
/// `cairn keys rotate` re-seals.
pub fn sealed_columns() -> Vec<Column> {
    let mut columns = ENGINE_COLUMNS.to_vec();
    columns.push(QUARANTINED_RECORDS);
    columns.extend_from_slice(cairn_connectors::SEALED_COLUMNS);
    columns.push(sync::pipeline::DESTINATION_REJECTS);
    columns.push(dsr::request::SUBJECTS);
    columns.push(dsr::request::REPORTS);
    columns
}

/// Registers every built-in workflow whose name `registry` does not hold yet (a
/// workflow registered under a built-in's name first keeps its place), and the purges of
/// the records they set aside (quarantined records, writes a destination refused) that
/// workers run once those are older than [`cairn_runner::Retention::set_aside`].
pub fn register_builtin(registry: &mut Registry) -> &mut Registry {
    macro_rules! builtin {
        ($($name:expr => $workflow:expr),* $(,)?) => {
            $(if !registry.contains($name) {
                registry.register($name, $workflow);
            })*
        };
    }
    builtin! {
        tour::NAME => tour::tour,
        compose::NAME => compose::compose,
        ledger::NAME => ledger::ledger,
        sync::INCREMENTAL => sync::incremental,
        sync::BACKFILL => sync::backfill,
        sync::RECONCILE => sync::reconcile,
        sync::FILL => sync::fill,
        sync::PIPELINE => sync::pipeline,
        dsr::REQUEST => dsr::discover::request,
        dsr::CLOCK => dsr::clock::clock,
        dsr::erase::ERASE => dsr::erase::erase,
    }
    let set_aside = registry.provided_mut::<cairn_runner::SetAside>();
    set_aside.add(
        "quarantine",
        std::sync::Arc::new(|pool, before| {
            Box::pin(async move {
                cairn_connectors::warehouse::purge_quarantine(&pool, before, false)
                    .await
                    .map_err(Into::into)
            })
        }),
    );
    set_aside.add(
        "dsr_reports",
        std::sync::Arc::new(|pool, _before| {
            // Each request's report has its own retention, set when it closed.
            // A worker without the audit key (a deployment without privacy requests)
            // has nothing to purge; one with reports due needs it.
            Box::pin(async move {
                match dsr::AuditKey::from_env() {
                    Ok(key) => Ok(dsr::request::purge_reports(&pool, &key).await?),
                    Err(_) if dsr::request::reports_due(&pool).await? == 0 => Ok(0),
                    Err(missing) => Err(missing.into()),
                }
            })
        }),
    );
    set_aside.add(
        "destination_rejects",
        std::sync::Arc::new(|pool, before| {
            Box::pin(async move {
                sync::pipeline::purge_rejects(&pool, before, false)
                    .await
                    .map_err(Into::into)
            })
        }),
    );
    registry
}
