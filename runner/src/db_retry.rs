//! The one way the engine waits out its own database: a statement that fails with a
//! transient error (the server restarting, a connection cut, a serialization failure)
//! is tried again with jittered exponential backoff, for as long as the caller can
//! still use the answer, typically while its lease could still be held.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::RetryPolicy;
use crate::error::is_transient_db_error;

/// Why a statement did not go through.
#[derive(Debug)]
pub(crate) enum DbFailure {
    /// The database stayed unreachable (or kept failing transiently) past the deadline.
    Outlasted(sqlx::Error),
    /// The database refused the statement for a reason retrying cannot change.
    Refused(sqlx::Error),
}

/// Runs `statement` until it succeeds, the database refuses it, or `within` has passed
/// in transient failures; `what` names it in the warnings.
pub(crate) async fn retry_db<T, S, Fut>(
    what: &str,
    within: Duration,
    mut statement: S,
) -> Result<T, DbFailure>
where
    S: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let give_up = Instant::now() + within;
    let backoff = RetryPolicy::default().backoff(Duration::from_millis(50), Duration::from_secs(2));
    let mut failures = 0u32;
    loop {
        match statement().await {
            Ok(answer) => return Ok(answer),
            Err(err) if !is_transient_db_error(&err) => return Err(DbFailure::Refused(err)),
            Err(err) if Instant::now() >= give_up => return Err(DbFailure::Outlasted(err)),
            Err(err) => {
                failures += 1;
                let delay = backoff.delay(failures);
                warn!(error = %err, ?delay, "{what}: the database did not answer; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
