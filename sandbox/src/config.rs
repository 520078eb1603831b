//! What a sandbox serves and how it misbehaves.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use super::hostile::Hostile;
use super::stream::Stream;
use cairn_connectors::secret::Secret;

/// Everything a [`Sandbox`](super::Sandbox) is started with.
///
/// The [`Default`] is a well-behaved vendor: 1,000 records per stream, no
/// authentication, no rate limit, no quota and no faults, so a test switches on
/// exactly the misbehaviour it is about with struct update syntax:
///
/// ```
/// use cairn_sandbox::{RateLimit, SandboxConfig};
///
/// let config = SandboxConfig {
///     records_per_stream: 50,
///     rate_limit: Some(RateLimit::new(10.0, 5)),
///     ..SandboxConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// How many records each of `contacts`, `companies` and `deals` starts with.
    pub records_per_stream: usize,
    /// Seeds every random choice: the data, the mutations, the faults drawn and
    /// the tokens issued. Same seed, same vendor.
    pub seed: u64,
    /// The instant the generated history ends at (records were created and
    /// updated over the year before it). `None` means the clock's time at
    /// start; set it to make the checksums repeatable across runs.
    pub as_of: Option<DateTime<Utc>>,
    /// The largest page any listing returns; larger `limit`s are clamped, as
    /// vendors do. The ids-only listing allows ten times this.
    pub max_page_size: usize,
    /// A token bucket in front of the API; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Requests handled at once beyond which the API answers 429; `None` for
    /// no cap.
    pub max_concurrent: Option<usize>,
    /// How API clients must authenticate.
    pub auth: AuthConfig,
    /// Transient faults injected into API responses.
    pub faults: FaultConfig,
    /// How the writable side (`/dest`) misbehaves (all off by default).
    pub writes: WriteFaults,
    /// API requests allowed per UTC day, Salesforce style: every API response
    /// then carries `Sforce-Limit-Info` and a spent quota answers 403
    /// `REQUEST_LIMIT_EXCEEDED`. `None` for no quota.
    pub daily_quota: Option<u64>,
    /// Added before every API response, to make a demo look like a remote API.
    pub latency: Duration,
    /// How listings bend the rules of JSON and paging (all off by default).
    pub quirks: Quirks,
    /// Only this stream gets records; the others start empty (a benchmark of a million
    /// records of one stream needs no others).
    pub only: Option<Stream>,
    /// Records carry only `id`, `created_at` and `updated_at`: for benchmarks of id sets,
    /// where a record's body would only cost memory.
    pub lean: bool,
    /// Attacks on the client (all off by default).
    pub hostile: Hostile,
    /// Where time comes from; tests pass a [`ManualClock`](super::ManualClock).
    pub clock: Clock,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            records_per_stream: 1_000,
            seed: 42,
            as_of: None,
            max_page_size: 100,
            rate_limit: None,
            max_concurrent: None,
            auth: AuthConfig::None,
            faults: FaultConfig::default(),
            writes: WriteFaults::default(),
            daily_quota: None,
            latency: Duration::ZERO,
            quirks: Quirks::default(),
            only: None,
            lean: false,
            hostile: Hostile::default(),
            clock: Clock::system(),
        }
    }
}

impl SandboxConfig {
    /// Checks the values that no vendor could serve with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_page_size == 0 {
            return Err(ConfigError::ZeroPageSize);
        }
        if let Some(limit) = &self.rate_limit {
            if !(limit.rate_per_sec.is_finite() && limit.rate_per_sec > 0.0) {
                return Err(ConfigError::Rate(limit.rate_per_sec));
            }
            if limit.burst == 0 {
                return Err(ConfigError::ZeroBurst);
            }
        }
        if self.max_concurrent == Some(0) {
            return Err(ConfigError::ZeroConcurrency);
        }
        if self.daily_quota == Some(0) {
            return Err(ConfigError::ZeroQuota);
        }
        if !(0.0..=1.0).contains(&self.faults.rate) {
            return Err(ConfigError::FaultRate(self.faults.rate));
        }
        for (name, rate) in self.writes.rates() {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::WriteRate(name, rate));
            }
        }
        if self.faults.rate > 0.0 && self.faults.kinds.is_empty() {
            return Err(ConfigError::NoFaultKinds);
        }
        match &self.auth {
            AuthConfig::None => {}
            AuthConfig::OAuth(oauth) => {
                if oauth.client_id.is_empty() || oauth.client_secret.expose().is_empty() {
                    return Err(ConfigError::EmptyCredential("OAuth client id and secret"));
                }
                if oauth.token_ttl.is_zero() {
                    return Err(ConfigError::ZeroTokenTtl);
                }
            }
            AuthConfig::ApiKey(key) => {
                if key.expose().is_empty() {
                    return Err(ConfigError::EmptyCredential("API key"));
                }
            }
            AuthConfig::Signed(key) => {
                if key.expose().is_empty() {
                    return Err(ConfigError::EmptyCredential("signing key"));
                }
            }
        }
        Ok(())
    }
}

/// The ways real listings bend JSON and paging, each a fault knob for a sync test:
/// nothing here is a transient fault; a listing misbehaves this way on every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Every JSON body starts with a UTF-8 byte-order mark.
    pub bom: bool,
    /// Records leave out their null fields instead of sending `null` (HubSpot does).
    pub omit_nulls: bool,
    /// Each page after the first repeats this many records of the page before
    /// (keyset listings); offset listings shift their window back by as many, so their
    /// tail is never served.
    pub page_overlap: usize,
    /// Listings end after serving this many records, while totals still count them all:
    /// a pagination bug that stops early.
    pub stop_after: Option<usize>,
}

/// A token bucket: `burst` requests at once, refilled at `rate_per_sec`.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub rate_per_sec: f64,
    /// The bucket's size: requests that may go out back to back.
    pub burst: u32,
    /// How a 429 says when to come back.
    pub retry_after: RetryAfterStyle,
}

impl RateLimit {
    /// A bucket whose 429s say `Retry-After` in seconds.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            rate_per_sec,
            burst,
            retry_after: RetryAfterStyle::Seconds,
        }
    }
}

/// The `Retry-After` header of a 429, in the forms vendors really send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryAfterStyle {
    /// Retry-After: 2 (delay-seconds, rounded up).
    #[default]
    Seconds,
    /// Retry-After: Sun, 22 Nov 2026 21:00:02 GMT (an HTTP-date).
    HttpDate,
    /// No Retry-After at all; the client must back off on its own.
    Absent,
}

/// How API clients authenticate.
#[derive(Clone, Debug, Default)]
pub enum AuthConfig {
    /// Anyone may call.
    #[default]
    None,
    /// OAuth2 client credentials at `POST /oauth/token`, then
    /// `Authorization: Bearer <token>`.
    OAuth(OAuthConfig),
    /// A fixed key in `X-API-Key` or `Authorization: Bearer`.
    ApiKey(Secret),
    /// Each request signed with this key: see [`signature`](super::signature).
    Signed(Secret),
}

/// The one OAuth2 client the sandbox knows.
#[derive(Clone, Debug)]
pub struct OAuthConfig {
    /// The client id a token request must carry.
    pub client_id: String,
    /// The client secret a token request must carry.
    pub client_secret: Secret,
    /// How long an issued token works; after that the API answers 401.
    pub token_ttl: Duration,
}

/// Transient faults: each API request draws one with probability `rate`,
/// its kind picked uniformly from `kinds`.
///
/// 500 and 503 answer before the request is handled. The others replace the
/// response of a request that *was* handled, so a write took effect even though
/// the client saw a failure — which is what idempotency keys are for.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability in `[0, 1]` that a request gets a fault.
    pub rate: f64,
    /// The faults to draw from.
    pub kinds: Vec<FaultKind>,
    /// How long a [`FaultKind::Slow`] response takes; pick it above the client's
    /// timeout.
    pub slow_delay: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            slow_delay: Duration::from_secs(30),
        }
    }
}

/// How the writable side misbehaves: shares of requests (or of records) in `[0, 1]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteFaults {
    /// Writes applied whose answer is lost: the connection is reset instead.
    pub ack_loss: f64,
    /// Writes refused with 503 before they are applied.
    pub unavailable: f64,
    /// Writes to an existing record that "another user" edits just before they land,
    /// so that an `If-Match` the client sends is stale (412).
    pub concurrent_edits: f64,
    /// Records refused with 409 on every attempt (the same records every time).
    pub conflict_share: f64,
    /// Records refused with 422 on every attempt (the same records every time).
    pub invalid_share: f64,
    /// Records whose creation (`POST`) is answered with an id no client should keep: 64
    /// KiB long, with control characters (the same records every time). The record is
    /// created all the same.
    pub unusable_ids: f64,
}

impl WriteFaults {
    fn rates(&self) -> [(&'static str, f64); 6] {
        [
            ("ack_loss", self.ack_loss),
            ("unavailable", self.unavailable),
            ("concurrent_edits", self.concurrent_edits),
            ("conflict_share", self.conflict_share),
            ("invalid_share", self.invalid_share),
            ("unusable_ids", self.unusable_ids),
        ]
    }
}

/// One kind of transient fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// 500 Internal Server Error, before handling.
    #[value(name = "500")]
    InternalError,
    /// 502 Bad Gateway, after handling.
    #[value(name = "502")]
    BadGateway,
    /// 503 Service Unavailable, before handling.
    #[value(name = "503")]
    Unavailable,
    /// 504 Gateway Timeout, after handling.
    #[value(name = "504")]
    GatewayTimeout,
    /// The TCP connection is reset (RST) instead of answering, after handling.
    Reset,
    /// The response is delayed by the slow delay (--slow-ms), after handling.
    Slow,
    /// The headers promise the whole body, half of it arrives, the connection
    /// closes (after handling).
    Truncated,
    /// A complete response whose body is not valid JSON, after handling.
    Malformed,
}

impl FaultKind {
    /// Every kind, the default set drawn from.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::InternalError,
        FaultKind::BadGateway,
        FaultKind::Unavailable,
        FaultKind::GatewayTimeout,
        FaultKind::Reset,
        FaultKind::Slow,
        FaultKind::Truncated,
        FaultKind::Malformed,
    ];

    /// The name stats report it under (also its flag value).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::InternalError => "500",
            FaultKind::BadGateway => "502",
            FaultKind::Unavailable => "503",
            FaultKind::GatewayTimeout => "504",
            FaultKind::Reset => "reset",
            FaultKind::Slow => "slow",
            FaultKind::Truncated => "truncated",
            FaultKind::Malformed => "malformed",
        }
    }
}

/// A configuration no sandbox can run with.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// Pages must hold at least one record.
    #[error("the maximum page size must be at least 1")]
    ZeroPageSize,
    /// The refill rate must be a positive number.
    #[error("the rate limit must be a positive number of requests per second, got {0}")]
    Rate(f64),
    /// A bucket of size zero admits nothing.
    #[error("the rate limit's burst must be at least 1")]
    ZeroBurst,
    /// A concurrency cap of zero admits nothing.
    #[error("the concurrent request cap must be at least 1")]
    ZeroConcurrency,
    /// A quota of zero admits nothing.
    #[error("the daily quota must be at least 1 request")]
    ZeroQuota,
    /// A probability outside `[0, 1]`.
    #[error("the fault rate must be between 0 and 1, got {0}")]
    FaultRate(f64),
    /// A write fault's share outside `[0, 1]`.
    #[error("the write fault `{0}` must be between 0 and 1, got {1}")]
    WriteRate(&'static str, f64),
    /// Faults switched on with nothing to draw.
    #[error("a fault rate above 0 needs at least one fault kind")]
    NoFaultKinds,
    /// Credentials that anyone could match.
    #[error("the {0} must not be empty")]
    EmptyCredential(&'static str),
    /// Tokens that expire as they are issued.
    #[error("the OAuth token TTL must be above zero")]
    ZeroTokenTtl,
    /// A command-line flag that only means something with another one.
    #[error("{flag} only applies with {needs}")]
    FlagWithout {
        /// The flag given.
        flag: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// A command-line flag that a mode requires.
    #[error("{mode} needs {flag}")]
    MissingFlag {
        /// The mode chosen.
        mode: &'static str,
        /// The flag it needs.
        flag: &'static str,
    },
}
