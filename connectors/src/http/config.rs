//! What a source says about reaching its vendor: the base URL, credentials, rate
//! limit, headers, timeouts and the bounds a vendor cannot push past.

use std::collections::BTreeMap;

use crate::auth::AuthConfig;
use crate::budget::RateLimitConfig;
use crate::headers::HeaderSetting;

use super::sign::{Signer, SignerHandle};
use super::waits::Waits;

/// How to reach a vendor: the part of a source's TOML that is about HTTP.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The API's root, e.g. `https://api.hubapi.com`.
    pub base_url: String,
    /// How to authenticate.
    pub auth: AuthConfig,
    /// The vendor's rate limit; requests are paced by a budget shared through Postgres.
    pub rate_limit: Option<RateLimitConfig>,
    /// Extra headers sent with every request to the source's origin.
    pub headers: BTreeMap<String, HeaderSetting>,
    /// Connect, read-idle and whole-request timeouts.
    pub timeouts: Timeouts,
    /// Hosts a redirect may lead to, besides the base URL's origin. They get no
    /// credential: no `Authorization`, no API key, no secret header, no cookie.
    pub allow_redirect_hosts: Vec<String>,
    /// The most a response body may hold once decompressed; a larger one fails the
    /// request permanently.
    pub max_response_bytes: u64,
    /// How long the vendor may make a run wait.
    pub waits: Waits,
    /// Signs every request to the source's origin, when the vendor wants signatures.
    pub signer: Option<SignerHandle>,
    /// Its requests go ahead of others' on the shared rate budget (a privacy request's
    /// lookups overtake a backfill of the same vendor); see [`RateBudget::acquire`].
    ///
    /// [`RateBudget::acquire`]: crate::budget::RateBudget::acquire
    pub urgent: bool,
}

impl HttpConfig {
    /// A configuration for `base_url` with no credentials, no rate limit and the default
    /// limits.
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            auth: AuthConfig::None,
            rate_limit: None,
            headers: BTreeMap::new(),
            timeouts: Timeouts::default(),
            allow_redirect_hosts: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            waits: Waits::default(),
            signer: None,
            urgent: false,
        }
    }

    /// With `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// Paced by `limit`, through the budget shared by every worker on the credential.
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimitConfig) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sends header `name` with every request to the source's origin.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: HeaderSetting) -> Self {
        self.headers.insert(name.into(), value);
        self
    }

    /// With `timeouts`.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Lets redirects lead to `host` too (with no credential).
    #[must_use]
    pub fn allow_redirect_host(mut self, host: impl Into<String>) -> Self {
        self.allow_redirect_hosts.push(host.into());
        self
    }

    /// Bounds a decompressed response body at `bytes`.
    #[must_use]
    pub fn with_max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Signs every request to the source's origin with `signer`.
    #[must_use]
    pub fn with_signer(mut self, signer: impl Signer + 'static) -> Self {
        self.signer = Some(SignerHandle(std::sync::Arc::new(signer)));
        self
    }

    /// Caps how long the vendor may make a run wait.
    #[must_use]
    pub fn with_waits(mut self, waits: Waits) -> Self {
        self.waits = waits;
        self
    }
}

/// The default bound on a response body: 64 MiB, far above any page a vendor serves
/// and far below what a worker can afford per request in flight.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect_secs: f64,
    /// The longest silence while reading a response: a vendor that stops sending is
    /// cut off after this long.
    pub read_secs: f64,
    /// A whole request, body included: a vendor that trickles bytes just fast enough to
    /// stay under the read timeout is cut off after this long.
    pub total_secs: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_secs: 5.0,
            read_secs: 30.0,
            total_secs: 120.0,
        }
    }
}
