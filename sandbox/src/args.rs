//! `cairn mock-vendor`'s flags.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use super::config::{
    AuthConfig, ConfigError, FaultConfig, FaultKind, OAuthConfig, Quirks, RateLimit,
    RetryAfterStyle, SandboxConfig, WriteFaults,
};
use super::hostile::{Hostile, PagingAttack};
use cairn_connectors::secret::Secret;

/// How API clients authenticate, on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// No credentials needed.
    #[default]
    None,
    /// OAuth2 client credentials at POST /oauth/token, then a Bearer token.
    Oauth,
    /// A fixed key in X-API-Key (or Authorization: Bearer).
    ApiKey,
    /// Every request signed: an HMAC-SHA256 of it under --signing-key in X-Signature,
    /// with the Unix time it was signed at in X-Signature-Timestamp.
    Signed,
}

/// Serve the sandbox vendor: a fake CRM API (HubSpot-, Salesforce- and
/// Stripe-like listings, offset and Link paging, an ids listing, idempotent
/// writes and an admin API) on 127.0.0.1, misbehaving as asked.
#[derive(Clone, Debug, clap::Args)]
pub struct MockVendorArgs {
    /// Port to listen on (127.0.0.1 only); 0 picks a free one.
    #[arg(long, default_value_t = 8787)]
    pub port: u16,

    /// Records each stream (contacts, companies, deals) starts with.
    #[arg(long, default_value_t = 1_000)]
    pub records: usize,

    /// Seed for the data, mutations, faults and tokens: same seed, same vendor.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// End of the generated year of history (RFC 3339); defaults to now. Fix it
    /// to get the same checksums on every run.
    #[arg(long, value_name = "RFC3339")]
    pub as_of: Option<DateTime<Utc>>,

    /// Largest page any listing returns; bigger limits are clamped.
    #[arg(long, default_value_t = 100)]
    pub max_page_size: usize,

    /// Rate limit in requests per second (token bucket); off when absent.
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,

    /// Token bucket size: requests allowed back to back [default: the rate,
    /// rounded up]. Needs --rate.
    #[arg(long)]
    pub burst: Option<u32>,

    /// How a 429 says when to retry. Needs --rate.
    #[arg(long, value_enum, value_name = "STYLE")]
    pub retry_after: Option<RetryAfterStyle>,

    /// Requests handled at once beyond which the API answers 429.
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<usize>,

    /// API requests allowed per UTC day; then 403 REQUEST_LIMIT_EXCEEDED
    /// (Salesforce style, with Sforce-Limit-Info on every response).
    #[arg(long, value_name = "N")]
    pub daily_quota: Option<u64>,

    /// How API clients must authenticate.
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// OAuth client id (with --auth oauth).
    #[arg(long, env = "CAIRN_MOCK_CLIENT_ID")]
    pub client_id: Option<String>,

    /// OAuth client secret (with --auth oauth).
    #[arg(long, env = "CAIRN_MOCK_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<Secret>,

    /// Seconds an OAuth access token works before the API answers 401.
    #[arg(long, value_name = "SECS")]
    pub token_ttl: Option<u64>,

    /// The API key (with --auth api-key).
    #[arg(long, env = "CAIRN_MOCK_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// The key requests are signed with (with --auth signed).
    #[arg(long, env = "CAIRN_MOCK_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<Secret>,

    /// Probability (0 to 1) that an API request gets a transient fault.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fault_rate: f64,

    /// Faults to draw from, comma separated [default: all]. Needs --fault-rate.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KINDS")]
    pub faults: Vec<FaultKind>,

    /// How long a "slow" fault delays its response, in milliseconds. Needs
    /// --fault-rate.
    #[arg(long, value_name = "MS")]
    pub slow_ms: Option<u64>,

    /// Share (0 to 1) of writes to /dest applied and then never answered: the
    /// connection is reset instead (a lost acknowledgement).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub write_ack_loss: f64,

    /// Share (0 to 1) of writes to /dest refused with 503 before they are applied.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub write_unavailable: f64,

    /// Share (0 to 1) of writes to an existing /dest record that "another user" edits
    /// just before they land (an If-Match then gets 412).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub concurrent_edits: f64,

    /// Share (0 to 1) of /dest records refused with 409 on every attempt.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub write_conflicts: f64,

    /// Share (0 to 1) of /dest records refused with 422 on every attempt.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub write_invalid: f64,

    /// Share (0 to 1) of /dest records whose creation is answered with an unusable id
    /// (64 KiB, with control characters); the record is created all the same.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub unusable_ids: f64,

    /// Extra latency before every API response, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,

    /// Start every JSON body with a UTF-8 byte-order mark.
    #[arg(long)]
    pub bom: bool,

    /// Leave null fields out of records instead of sending null.
    #[arg(long)]
    pub omit_nulls: bool,

    /// Repeat this many records of the previous page at the start of each page (offset
    /// listings shift their window back instead, so their tail is never served).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub page_overlap: usize,

    /// End every listing after this many records while its total counts them all.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,

    /// Attack: redirect every API request to this origin (e.g. http://127.0.0.2:9000).
    #[arg(long, value_name = "ORIGIN")]
    pub redirect_to: Option<String>,

    /// Attack: redirect every API request this many times within the vendor first.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub redirect_hops: u32,

    /// Attack: answer API requests 400 with a body echoing the credentials sent.
    #[arg(long)]
    pub echo_credentials: bool,

    /// Attack: answer API requests 400 with this text as the body (markup, say).
    #[arg(long, value_name = "TEXT")]
    pub error_body: Option<String>,

    /// Attack: the token endpoint answers 401 invalid_client echoing the secret sent.
    #[arg(long)]
    pub refuse_clients: bool,

    /// Attack: answer API requests with a JSON body this many bytes long.
    #[arg(long, value_name = "BYTES")]
    pub huge_body: Option<u64>,

    /// Attack: answer API requests with a gzip body inflating to this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub gzip_bomb: Option<u64>,

    /// Attack: send API bodies one byte per this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub trickle_ms: Option<u64>,

    /// Attack: the HubSpot listing's cursors loop or never end.
    #[arg(long, value_enum)]
    pub paging_attack: Option<PagingAttack>,

    /// Attack: this many GraphQL answers drop their last node and say so only in
    /// `errors`, with status 200.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub partial_graphql: u32,
}

impl MockVendorArgs {
    /// The address to pass to [`Sandbox::start`](super::Sandbox::start).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The configuration the flags describe, refusing flags that only make
    /// sense with another one and values no sandbox can serve.
    pub fn into_config(mut self) -> Result<SandboxConfig, ConfigError> {
        let rate_limit = match self.rate {
            Some(rate) => Some(RateLimit {
                rate_per_sec: rate,
                burst: self.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u32),
                retry_after: self.retry_after.unwrap_or_default(),
            }),
            None => {
                if self.burst.is_some() {
                    return Err(without("--burst", "--rate"));
                }
                if self.retry_after.is_some() {
                    return Err(without("--retry-after", "--rate"));
                }
                None
            }
        };
        let auth = match self.auth {
            AuthMode::None => {
                refuse_credentials(&self, "--auth oauth, api-key or signed")?;
                AuthConfig::None
            }
            AuthMode::Signed => {
                let key = self.signing_key.clone();
                let key = key.ok_or(missing("--auth signed", "--signing-key"))?;
                self.signing_key = None;
                refuse_credentials(&self, "--auth oauth or --auth api-key")?;
                AuthConfig::Signed(key)
            }
            AuthMode::Oauth => {
                if self.signing_key.is_some() {
                    return Err(without("--signing-key", "--auth signed"));
                }
                if self.api_key.is_some() {
                    return Err(without("--api-key", "--auth api-key"));
                }
                AuthConfig::OAuth(OAuthConfig {
                    client_id: self
                        .client_id
                        .ok_or(missing("--auth oauth", "--client-id"))?,
                    client_secret: self
                        .client_secret
                        .ok_or(missing("--auth oauth", "--client-secret"))?,
                    token_ttl: Duration::from_secs(self.token_ttl.unwrap_or(3600)),
                })
            }
            AuthMode::ApiKey => {
                if self.signing_key.is_some() {
                    return Err(without("--signing-key", "--auth signed"));
                }
                if self.client_id.is_some() || self.client_secret.is_some() {
                    return Err(without("--client-id/--client-secret", "--auth oauth"));
                }
                if self.token_ttl.is_some() {
                    return Err(without("--token-ttl", "--auth oauth"));
                }
                AuthConfig::ApiKey(self.api_key.ok_or(missing("--auth api-key", "--api-key"))?)
            }
        };
        let defaults = FaultConfig::default();
        if self.fault_rate == 0.0 {
            if !self.faults.is_empty() {
                return Err(without("--faults", "--fault-rate"));
            }
            if self.slow_ms.is_some() {
                return Err(without("--slow-ms", "--fault-rate"));
            }
        }
        let faults = FaultConfig {
            rate: self.fault_rate,
            kinds: if self.faults.is_empty() {
                defaults.kinds
            } else {
                self.faults
            },
            slow_delay: self
                .slow_ms
                .map_or(defaults.slow_delay, Duration::from_millis),
        };
        let config = SandboxConfig {
            records_per_stream: self.records,
            seed: self.seed,
            as_of: self.as_of,
            max_page_size: self.max_page_size,
            rate_limit,
            max_concurrent: self.max_concurrent,
            auth,
            faults,
            writes: WriteFaults {
                ack_loss: self.write_ack_loss,
                unavailable: self.write_unavailable,
                concurrent_edits: self.concurrent_edits,
                conflict_share: self.write_conflicts,
                invalid_share: self.write_invalid,
                unusable_ids: self.unusable_ids,
            },
            daily_quota: self.daily_quota,
            latency: Duration::from_millis(self.latency_ms),
            only: None,
            lean: false,
            quirks: Quirks {
                bom: self.bom,
                omit_nulls: self.omit_nulls,
                page_overlap: self.page_overlap,
                stop_after: self.stop_after,
            },
            hostile: Hostile {
                redirect_to: self.redirect_to.clone(),
                redirect_hops: self.redirect_hops,
                echo_credentials: self.echo_credentials,
                error_body: self.error_body.clone(),
                refuse_clients: self.refuse_clients,
                reject_tokens: false,
                huge_body: self.huge_body,
                gzip_bomb: self.gzip_bomb,
                trickle: self.trickle_ms.map(Duration::from_millis),
                paging: self.paging_attack,
                throttle: None,
                partial_graphql: std::sync::Arc::new(self.partial_graphql.into()),
            },
            clock: Clock::system(),
        };
        config.validate()?;
        Ok(config)
    }
}

fn without(flag: &'static str, needs: &'static str) -> ConfigError {
    ConfigError::FlagWithout { flag, needs }
}

fn missing(mode: &'static str, flag: &'static str) -> ConfigError {
    ConfigError::MissingFlag { mode, flag }
}

fn refuse_credentials(args: &MockVendorArgs, needs: &'static str) -> Result<(), ConfigError> {
    let given = [
        ("--client-id", args.client_id.is_some()),
        ("--client-secret", args.client_secret.is_some()),
        ("--token-ttl", args.token_ttl.is_some()),
        ("--api-key", args.api_key.is_some()),
        ("--signing-key", args.signing_key.is_some()),
    ];
    match given.into_iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(without(flag, needs)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::MockVendorArgs;
    use crate::config::{AuthConfig, ConfigError, FaultKind};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockVendorArgs,
    }

    fn parse(args: &[&str]) -> Result<crate::SandboxConfig, ConfigError> {
        let mut argv = vec!["mock-vendor"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap_or_else(|error| panic!("{error}"))
            .args
            .into_config()
    }

    #[test]
    fn defaults_are_well_behaved() {
        let config = parse(&[]).unwrap();
        assert!(config.rate_limit.is_none());
        assert!(matches!(config.auth, AuthConfig::None));
        assert_eq!(config.faults.rate, 0.0);
        assert_eq!(config.records_per_stream, 1_000);
    }

    #[test]
    fn flags_map_onto_the_config() {
        let argv = [
            "mock-vendor",
            "--rate",
            "2.5",
            "--auth",
            "oauth",
            "--client-id",
            "c",
            "--client-secret",
            "hunter2",
            "--fault-rate",
            "0.1",
            "--faults",
            "503,reset",
        ];
        let args = Cli::try_parse_from(argv).unwrap().args;
        assert!(!format!("{args:?}").contains("hunter2"));
        let config = args.into_config().unwrap();
        let limit = config.rate_limit.as_ref().unwrap();
        assert_eq!((limit.rate_per_sec, limit.burst), (2.5, 3));
        assert_eq!(
            config.faults.kinds,
            [FaultKind::Unavailable, FaultKind::Reset]
        );
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert_eq!(
            parse(&["--burst", "3"]).unwrap_err(),
            ConfigError::FlagWithout {
                flag: "--burst",
                needs: "--rate"
            }
        );
        assert_eq!(
            parse(&["--auth", "api-key"]).unwrap_err(),
            ConfigError::MissingFlag {
                mode: "--auth api-key",
                flag: "--api-key"
            }
        );
        assert!(parse(&["--api-key", "k"]).is_err());
        assert!(parse(&["--faults", "500"]).is_err());
        assert!(parse(&["--fault-rate", "1.5"]).is_err());
    }

    #[test]
    fn every_flag_is_documented() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }
}
