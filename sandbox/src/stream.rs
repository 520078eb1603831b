//! The three streams the sandbox serves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A collection of records, as a CRM exposes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// People.
    Contacts,
    /// Organisations, referenced by contacts and deals.
    Companies,
    /// Sales opportunities, referencing a company and contacts.
    Deals,
}

impl Stream {
    /// Every stream, in a fixed order.
    pub const ALL: [Stream; 3] = [Stream::Contacts, Stream::Companies, Stream::Deals];

    /// The name used in URLs, stats and SOQL `FROM` clauses.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Contacts => "contacts",
            Stream::Companies => "companies",
            Stream::Deals => "deals",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Stream::Contacts => 0,
            Stream::Companies => 1,
            Stream::Deals => 2,
        }
    }

    /// Decorrelates the per-stream random sequences drawn from one seed.
    pub(crate) fn salt(self) -> u64 {
        match self {
            Stream::Contacts => 0x9e37_79b9_7f4a_7c15,
            Stream::Companies => 0xc2b2_ae3d_27d4_eb4f,
            Stream::Deals => 0x1656_67b1_9e37_79f9,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream name the sandbox does not serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown stream {0:?}: expected contacts, companies or deals")]
pub struct UnknownStream(pub String);

impl FromStr for Stream {
    type Err = UnknownStream;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stream::ALL
            .into_iter()
            .find(|stream| stream.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStream(s.to_owned()))
    }
}
