//! A user's project on cairn, written only through its public API:
//!
//! - a trial subscription as a durable workflow: open the account exactly once, send
//!   one welcome email, wait two weeks, then give the customer two days to upgrade;
//! - [`linked_crm`], a connector written in Rust (a vendor that pages by `Link` header
//!   and wants signed requests) that cairn's built-in sync workflows run.
//!
//! Its tests run both for real on PostgreSQL with cairn's test kit: the trial's two
//! weeks pass in milliseconds on a skippable clock and a worker crashes between the
//! welcome email and its checkpoint (`tests/trial.rs`); the connector syncs the sandbox
//! vendor into the warehouse, also through this crate's binary killed mid-sync with
//! SIGKILL (`tests/linked_crm.rs`).

pub mod linked_crm;

use std::time::Duration;

// cairn's own sqlx: no second version to keep in step.
use cairn::sqlx;
use cairn::{Context, Error, Registry};
use serde::{Deserialize, Serialize};

/// The registered name of [`trial`].
pub const TRIAL: &str = "trial";

/// How long a trial lasts before the customer is asked to upgrade.
pub const TRIAL_LENGTH: Duration = Duration::from_secs(14 * 86_400);

/// How long the customer has to upgrade once the trial is over.
pub const GRACE: Duration = Duration::from_secs(2 * 86_400);

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The customer upgraded to this plan.
    Converted {
        /// The plan they chose.
        plan: String,
    },
    /// No upgrade came within the grace period.
    Expired,
}

/// Creates the tables the workflow writes.
pub async fn prepare(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    for statement in [
        "CREATE TABLE IF NOT EXISTS trial_accounts (
             id bigserial PRIMARY KEY, email text NOT NULL, outcome text)",
        "CREATE TABLE IF NOT EXISTS welcome_emails (
             run_id uuid PRIMARY KEY, email text NOT NULL, sent_at timestamptz NOT NULL)",
    ] {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// The trial of the customer with `email`.
#[cairn::workflow]
pub async fn trial(ctx: Context, email: String) -> Result<Outcome, Error> {
    let email = &email;
    // Exactly once: the insert commits with the step's checkpoint.
    let account: i64 = ctx
        .transaction("open account", |tx| async move {
            let mut conn = tx.conn().await?;
            Ok(
                sqlx::query_scalar("INSERT INTO trial_accounts (email) VALUES ($1) RETURNING id")
                    .bind(email)
                    .fetch_one(&mut conn)
                    .await?,
            )
        })
        .await?;
    // At least once: a crash after the send and before the checkpoint sends again, so
    // the send itself is made idempotent by the run's id.
    let run = ctx.run_id();
    let pool = ctx.pool().clone();
    ctx.step("send welcome", || async {
        sqlx::query(
            "INSERT INTO welcome_emails (run_id, email, sent_at) VALUES ($1, $2, now())
             ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(run)
        .bind(email)
        .execute(&pool)
        .await?;
        Ok(())
    })
    .await?;
    ctx.sleep(TRIAL_LENGTH).await;
    let plan: Option<String> = ctx.wait_for_event("upgraded", GRACE).await?;
    let outcome = match plan {
        Some(plan) => Outcome::Converted { plan },
        None => Outcome::Expired,
    };
    let shown = match &outcome {
        Outcome::Converted { plan } => plan.clone(),
        Outcome::Expired => "expired".to_owned(),
    };
    let shown = &shown;
    ctx.transaction("close trial", |tx| async move {
        let mut conn = tx.conn().await?;
        sqlx::query("UPDATE trial_accounts SET outcome = $2 WHERE id = $1")
            .bind(account)
            .bind(shown)
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
    .await?;
    Ok(outcome)
}

/// Registers this crate's workflows, and its Rust source with its signing key read
/// from [`linked_crm::SIGNING_KEY_ENV`].
pub fn register(registry: &mut Registry) -> Result<(), Error> {
    registry.register(TRIAL, trial);
    let key = cairn::connectors::secret::SecretSource::Env(linked_crm::SIGNING_KEY_ENV.to_owned());
    linked_crm::register(registry, key)
}
