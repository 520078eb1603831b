//! A worker's lasting identity: a name it keeps across restarts (a pod's, a systemd
//! unit's), so that a worker restarted after a crash takes its predecessor's runs back
//! at once instead of waiting out their leases.
//!
//! Taking runs back early is safe only once the predecessor is surely dead. The proof
//! is a session-level advisory lock on the name, held on a connection of its own for
//! the worker's whole life: PostgreSQL releases it the moment that session ends, and a
//! session ends when its process dies (the kernel closes the socket). So a second live
//! worker under the same name is refused, never allowed to share the runs; and the lease
//! epochs still fence any checkpoint a dead predecessor had in flight.

use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};

use crate::EngineError;

/// The longest identity accepted: it is stored as each leased run's owner.
const MAX_LEN: usize = 200;

/// How often a worker asks again for an identity another session holds.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// An identity held by this worker: dropping it ends the session, which frees the name.
pub(crate) struct Held {
    _session: PgConnection,
}

/// Checks that `name` can be a worker's identity.
pub fn check(name: &str) -> Result<(), EngineError> {
    let problem = if name.trim().is_empty() {
        Some("is empty")
    } else if name.len() > MAX_LEN {
        Some("is longer than 200 bytes")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(EngineError::Identity(format!(
            "the worker identity {name:?} {problem}"
        ))),
        None => Ok(()),
    }
}

/// Takes the identity `name`, waiting up to `patience` for a session that holds it (a
/// predecessor still shutting down) to end. Once it is held, the runs leased under the
/// name were the predecessor's, and the predecessor is gone: the worker's first claim
/// takes them back.
pub(crate) async fn hold(
    pool: &PgPool,
    name: &str,
    patience: Duration,
) -> Result<Held, EngineError> {
    check(name)?;
    let mut session = pool.acquire().await.map_err(EngineError::db)?.detach();
    let until = Instant::now() + patience;
    loop {
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(lock_key(name))
            .fetch_one(&mut session)
            .await
            .map_err(EngineError::db)?;
        if held {
            return Ok(Held { _session: session });
        }
        if Instant::now() >= until {
            return Err(EngineError::Identity(format!(
                "the worker identity {name:?} is held by another live worker (its \
                 database session holds it); two workers cannot share an identity"
            )));
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// The advisory lock's key text: names of other things cannot collide with it.
fn lock_key(name: &str) -> String {
    format!("cairn.worker-identity {name}")
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_that_cannot_be_an_owner_are_refused() {
        assert!(check("sync-1").is_ok());
        assert!(check("pod/cairn-worker-0").is_ok());
        for bad in ["", "  ", "a\nb", &"x".repeat(201)] {
            let err = check(bad).expect_err(bad).to_string();
            assert!(err.contains("worker identity"), "{err}");
        }
    }
}
