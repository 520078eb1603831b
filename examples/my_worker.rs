//! Your own workflows in your own binary: the whole `cairn` CLI, with your registry.
//!
//! ```text
//! cargo run --example my_worker -- worker &
//! cargo run --example my_worker -- start signup --input '{"email": "ada@example.com"}' --wait
//! ```

use std::time::Duration;

use cairn::{Context, Error, Registry, ResultExt, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Signup {
    email: String,
}

#[derive(Serialize)]
struct Welcome {
    account: i64,
}

async fn signup(ctx: Context, input: Signup) -> Result<Welcome, Error> {
    let email = input.email.trim().to_lowercase();
    if !email.contains('@') {
        return Err(Error::permanent(format!(
            "`{email}` is not an email address"
        )));
    }
    // Exactly once: the insert and the step's checkpoint commit together.
    let email = &email;
    let account: i64 = ctx
        .transaction("create account", |tx| async move {
            let mut conn = tx.conn().await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS accounts (id bigserial PRIMARY KEY, email text UNIQUE)",
            )
            .execute(&mut *conn)
            .await?;
            let id = sqlx::query_scalar("INSERT INTO accounts (email) VALUES ($1) RETURNING id")
                .bind(email)
                .fetch_one(&mut *conn)
                .await
                .permanent()?; // a duplicate email will not fix itself on retry
            Ok(id)
        })
        .await?;
    // A durable timer: no worker waits out the day, and a restart does not reset it.
    ctx.sleep(Duration::from_secs(24 * 3600)).await;
    ctx.with_retry(RetryPolicy::attempts(10))
        .step("send follow-up", || async {
            Ok(format!("sent to {email}"))
        })
        .await?;
    Ok(Welcome { account })
}

fn main() -> std::process::ExitCode {
    let mut registry = Registry::new();
    registry.register("signup", signup);
    // Your binary's own name and version in `--help` and `--version`; the built-in
    // workflows (syncs, demo) come along.
    cairn::cli::main_as(registry, env!("CARGO_BIN_NAME"), env!("CARGO_PKG_VERSION"))
}
