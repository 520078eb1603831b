//! Data subject requests: privacy law's access and erasure requests, answered on the
//! legal clock with an audit trail.
//!
//! A request ([`open`]) names a person (an e-mail address and, where known, their ids
//! at some sources), a kind ([`Kind`]) and a regulation ([`Regulation`]) whose window
//! sets the deadline. It becomes two durable runs at high priority:
//!
//! - [`REQUEST`] searches every source that declares a lookup
//!   (`[streams.<name>.lookup]`, `lookup_by_id`) and the warehouse tables cairn synced
//!   (by the streams' `[streams.<name>.identity]` fields), each lookup in its own branch
//!   and each page a checkpointed step, so a 429 parks only that lookup and a crash
//!   resumes at the page it was on; then it compiles the access report (sealed when keys
//!   are configured), and for an erasure erases what it found;
//! - [`CLOCK`] waits on durable timers for the configured shares of the window (50%,
//!   80%, 100% by default) and raises a `dsr_deadline` alert at each one the request
//!   has not closed by; an extension moves its timers.
//!
//! Every state change and external call is appended to the [`audit`] trail, in the
//! transaction that makes it.

pub mod audit;
pub mod clock;
pub mod discover;
pub mod erase;
pub mod metrics;
pub mod report;
pub mod request;
mod warehouse;

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

pub use audit::{AuditKey, AuditKeyError};
pub use request::{DsrError, OpenRequest, open};

/// The workflow that answers a request: discovery, report, erasure.
pub const REQUEST: &str = "dsr.request";
/// The workflow that keeps a request's legal clock.
pub const CLOCK: &str = "dsr.clock";
/// The priority of a request's runs: ahead of syncs and backfills on the same queue.
pub const PRIORITY: i32 = 100;

/// What the person asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A copy of their data.
    Access,
    /// Their data erased.
    Erasure,
}

impl Kind {
    /// Its name, as the CLI and the tables write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Erasure => "erasure",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "access" => Ok(Kind::Access),
            "erasure" => Ok(Kind::Erasure),
            other => Err(format!(
                "{other:?} is not a kind of request: access or erasure"
            )),
        }
    }
}

/// The law a request is answered under, which sets its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regulation {
    /// GDPR art. 12(3): one month, extendable by two further months.
    Gdpr,
    /// CCPA §1798.130: 45 days, extendable once by 45 more.
    Ccpa,
    /// A window of this many days (an internal policy, another law), with no limit on
    /// extensions beyond their being recorded.
    Days(u32),
}

impl Regulation {
    /// Its name: `gdpr`, `ccpa` or `<n>d`.
    pub fn name(self) -> String {
        match self {
            Regulation::Gdpr => "gdpr".to_owned(),
            Regulation::Ccpa => "ccpa".to_owned(),
            Regulation::Days(days) => format!("{days}d"),
        }
    }

    /// The deadline of a request received at `received`.
    pub fn deadline(self, received: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Regulation::Gdpr => received
                .checked_add_months(Months::new(1))
                .unwrap_or(received + TimeDelta::days(31)),
            Regulation::Ccpa => received + TimeDelta::days(45),
            Regulation::Days(days) => received + TimeDelta::days(i64::from(days)),
        }
    }

    /// The latest deadline extensions may reach, if the law sets one.
    pub fn limit(self, received: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Regulation::Gdpr => received.checked_add_months(Months::new(3)),
            Regulation::Ccpa => Some(received + TimeDelta::days(90)),
            Regulation::Days(_) => None,
        }
    }
}

impl std::str::FromStr for Regulation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "gdpr" => Ok(Regulation::Gdpr),
            "ccpa" => Ok(Regulation::Ccpa),
            other => other
                .trim_end_matches('d')
                .parse::<u32>()
                .ok()
                .filter(|days| (1..=3660).contains(days))
                .map(Regulation::Days)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a regulation: gdpr, ccpa, or a window in days (1 to 3660)"
                    )
                }),
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Opened; its run has not begun.
    Received,
    /// Its sources and the warehouse are being searched.
    Discovering,
    /// The report is compiled (an access request's answer).
    Compiled,
    /// An erasure is being carried out.
    Fulfilling,
    /// Closed.
    Done,
    /// Its run failed; it needs a person.
    Failed,
    /// Past its deadline and not closed (shown, never stored).
    Overdue,
}

impl Phase {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Received => "received",
            Phase::Discovering => "discovering",
            Phase::Compiled => "compiled",
            Phase::Fulfilling => "fulfilling",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Overdue => "overdue",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "discovering" => Phase::Discovering,
            "compiled" => Phase::Compiled,
            "fulfilling" => Phase::Fulfilling,
            "done" => Phase::Done,
            "failed" => Phase::Failed,
            _ => Phase::Received,
        }
    }
}

/// The person a request is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Their e-mail address.
    pub email: String,
    /// Their ids at sources, as (source name, id).
    #[serde(default)]
    pub ids: Vec<(String, String)>,
}

/// The most an e-mail address or an id may hold, in bytes.
pub const MAX_IDENTIFIER: usize = 320;

impl Subject {
    /// Checks what a person is searched by: an address of the form `local@domain` and
    /// ids without control characters, none longer than [`MAX_IDENTIFIER`]. Quotes are
    /// allowed (`o'brien@example.com` is an address); lookups escape them.
    pub fn check(&self) -> Result<(), String> {
        let email = self.email.trim();
        let valid = email.len() <= MAX_IDENTIFIER
            && !email.chars().any(|c| c.is_control() || c.is_whitespace())
            && email.rsplit_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if !valid {
            return Err(format!(
                "--email {:?} is not an e-mail address (local@domain, at most {MAX_IDENTIFIER} bytes, no spaces)",
                self.email
            ));
        }
        for (source, id) in &self.ids {
            if source.is_empty()
                || id.is_empty()
                || id.len() > MAX_IDENTIFIER
                || id.chars().any(char::is_control)
            {
                return Err(format!(
                    "--id {source}:{id:?} is not an id: write source:value, the value at most \
                     {MAX_IDENTIFIER} bytes without control characters"
                ));
            }
        }
        Ok(())
    }
}

/// A source a request searches: a declarative source file, carried in the run's input
/// as the sync workflows carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSource {
    /// The source's TOML text.
    pub toml: String,
    /// The file it was read from, for messages.
    pub file: String,
    /// Overrides its base URL (a sandbox).
    #[serde(default)]
    pub base_url: Option<String>,
}

/// Opens a request's source as its run's input carries it, as (name, warehouse schema,
/// source). Its requests are urgent: they go ahead of syncs on the vendor's shared rate
/// budget.
pub(crate) async fn open_source(
    ctx: &cairn_runner::Context,
    source: &RequestSource,
) -> Result<(String, String, cairn_connectors::rest::RestSource), cairn_runner::Error> {
    let config_error = |e: cairn_connectors::rest::ConfigError| {
        cairn_runner::Error::permanent(e).with_category("config")
    };
    let mut config = cairn_connectors::rest::RestConfig::parse(&source.toml, &source.file)
        .map_err(config_error)?
        .urgent();
    if let Some(url) = &source.base_url {
        config = config.with_base_url(url).map_err(config_error)?;
    }
    let name = config.name().to_owned();
    let schema = config.warehouse_schema().to_owned();
    let source = cairn_connectors::rest::RestSource::new(config, Some(ctx.pool().clone())).await?;
    Ok((name, schema, source))
}
