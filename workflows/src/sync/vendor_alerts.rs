//! Alerts for what a vendor did to a fetch that an operator must act on or know about:
//! credentials it refused, and a wait it asked for beyond the source's cap.

use cairn_connectors::error::{Category, HttpError};
use cairn_connectors::warehouse::{NewAlert, raise_alerts};
use cairn_runner::Context;
use tracing::warn;

use super::state::StreamKey;

/// The alert kind of credentials the vendor refused.
pub const AUTH_FAILED: &str = "auth_failed";
/// The alert kind of a vendor that blocks a source longer than it may park a run.
pub const BLOCKED: &str = "rate_limit_blocked";

/// Raises the alert `err` calls for, if any. Best effort: the fetch fails or parks as
/// it would anyway, and a database too busy for an alert only costs the alert.
pub(crate) async fn raise(ctx: &Context, key: &StreamKey, err: &HttpError) {
    let alert = if err.category() == Category::AuthDrift {
        NewAlert {
            kind: AUTH_FAILED.to_owned(),
            source: key.source.clone(),
            stream: key.stream.clone(),
            detail: "the vendor refused the source's credentials".to_owned(),
            message: format!(
                "source {:?} cannot authenticate, so its syncs fail until its credentials are \
                 fixed: {err}",
                key.source
            ),
        }
    } else if let (Some(asked), Some(retry)) = (err.asked_until(), err.retry_time()) {
        NewAlert {
            kind: BLOCKED.to_owned(),
            source: key.source.clone(),
            stream: key.stream.clone(),
            detail: "blocked beyond the wait cap".to_owned(),
            message: format!(
                "source {:?} is blocked by the vendor until {} ({}); its runs park only until \
                 {} (the source's wait cap) and then try again",
                key.source,
                asked.to_rfc3339(),
                err.category(),
                retry.to_rfc3339()
            ),
        }
    } else {
        return;
    };
    let raised = match ctx.pool().acquire().await {
        Ok(mut conn) => raise_alerts(&mut conn, &[alert])
            .await
            .map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(error) = raised {
        warn!(%error, "cannot raise an alert about a vendor failure");
    }
}
