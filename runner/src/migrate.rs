//! The `cairn` schema, owned by the crates that use it: the engine's tables here, the
//! warehouse's in the connectors crate, the syncs' in the workflows crate. Each crate's
//! migrations are recorded in a bookkeeping table of their own, so each numbers its
//! migrations as it likes and none holds another's.
//!
//! Databases made before the schema was split went through one chain of migrations
//! (embedded here as [`LEGACY`], frozen at version 20). Such a database is brought to
//! the end of that chain, which is exactly what every crate's first migration creates,
//! and that first migration is recorded as applied instead of run.

use std::borrow::Cow;

use sqlx::migrate::{Migrate, Migrator};

use crate::EngineError;

/// One crate's schema migrations, with the bookkeeping table they are recorded in.
pub struct Migrations {
    migrator: Migrator,
}

/// The version of each crate's first migration: the schema of the end of [`LEGACY`].
const BASELINE: i64 = 1;

impl Migrations {
    /// `migrator`'s migrations, recorded in table `table` of the `cairn` schema. Its
    /// version 1 must create what the crate's tables were at the end of [`LEGACY`].
    pub fn new(mut migrator: Migrator, table: &'static str) -> Self {
        migrator.dangerous_set_table_name(table);
        Self { migrator }
    }

    fn table(&self) -> &str {
        &self.migrator.table_name
    }

    /// Records this crate's first migration as applied without running it: a database
    /// that went through [`LEGACY`] already holds what it creates.
    async fn adopt_legacy(&self, conn: &mut sqlx::PgConnection) -> Result<(), EngineError> {
        conn.ensure_migrations_table(self.table()).await?;
        let applied = conn.list_applied_migrations(self.table()).await?;
        if !applied.is_empty() {
            return Ok(());
        }
        for migration in self.migrator.iter().filter(|m| m.version <= BASELINE) {
            conn.skip(self.table(), migration).await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations")
            .field("table", &self.table())
            .field(
                "versions",
                &self.migrator.iter().map(|m| m.version).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The engine's migrations.
pub static ENGINE: std::sync::LazyLock<Migrations> = std::sync::LazyLock::new(|| {
    Migrations::new(sqlx::migrate!("./migrations"), "_migrations_engine")
});

/// The one chain of migrations of every database made before the schema was split by
/// crate, frozen: new migrations go to the crate whose tables they change.
pub static LEGACY: Migrator = sqlx::migrate!("./legacy");

/// Creates or upgrades the engine's tables of the `cairn` schema. Idempotent, and safe
/// to call from several processes at once: migrations apply in one transaction under an
/// advisory lock. A program that syncs migrates the connectors' and the workflows'
/// tables too, with [`migrate_with`] (as `cairn::migrate` does).
pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), EngineError> {
    migrate_with(pool, &[]).await
}

/// [`migrate`], then `others` (other crates' migrations), in order, in the same
/// transaction.
pub async fn migrate_with(pool: &sqlx::PgPool, others: &[&Migrations]) -> Result<(), EngineError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('cairn.migrate'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS cairn")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL search_path TO cairn")
        .execute(&mut *tx)
        .await?;
    let legacy: bool =
        sqlx::query_scalar("SELECT to_regclass('cairn._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await?;
    if legacy {
        LEGACY.run(&mut *tx).await?;
    }
    for set in std::iter::once(&*ENGINE).chain(others.iter().copied()) {
        if legacy {
            set.adopt_legacy(&mut tx).await?;
        }
        set.migrator.run(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// [`LEGACY`] up to `version`: a database as an older cairn left it, for upgrade tests.
pub fn legacy_up_to(version: i64) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            LEGACY
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}
