//! The source file as written: one serde struct per TOML table, every one
//! refusing unknown fields. Cross-field rules are checked in
//! [`config`](super::config), where the file becomes a [`RestConfig`](super::RestConfig).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::auth::AuthConfig;
use crate::budget::RateLimitConfig;
use crate::headers::HeaderSetting;
use crate::http::Timeouts;
use crate::watermark::CursorType;

/// The whole source file.
pub(crate) type SourceFile = ApiFile<StreamFile>;

/// An API as a file declares it: how to reach it, and its streams (`S`: a source's
/// streams to read, or a destination's to write). The same table, whichever way the
/// data goes, so a vendor is described alike for both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiFile<S> {
    pub(crate) name: String,
    pub(crate) base_url: String,
    #[serde(default)]
    pub(crate) auth: AuthConfig,
    #[serde(default)]
    pub(crate) rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, HeaderSetting>,
    #[serde(default)]
    pub(crate) timeouts: Timeouts,
    #[serde(default)]
    pub(crate) allow_redirect_hosts: Vec<String>,
    #[serde(default)]
    pub(crate) allow_insecure_http: bool,
    #[serde(default)]
    pub(crate) max_response_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) max_rate_limit_wait: Option<QueryValue>,
    #[serde(default)]
    pub(crate) max_quota_wait: Option<QueryValue>,
    #[serde(default)]
    pub(crate) secret_params: Vec<String>,
    #[serde(default)]
    pub(crate) warehouse: WarehouseFile,
    pub(crate) streams: BTreeMap<String, S>,
}

/// `[warehouse]`: where the source's tables land.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WarehouseFile {
    #[serde(default)]
    pub(crate) schema: Option<String>,
}

/// `[streams.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamFile {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) method: RequestMethod,
    #[serde(default)]
    pub(crate) query: BTreeMap<String, QueryValue>,
    #[serde(default)]
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) records_path: String,
    pub(crate) primary_key: String,
    #[serde(default)]
    pub(crate) cursor_field: Option<String>,
    #[serde(default)]
    pub(crate) cursor_type: Option<CursorType>,
    #[serde(default)]
    pub(crate) max_future_skew: Option<QueryValue>,
    #[serde(default)]
    pub(crate) total_path: Option<String>,
    #[serde(default)]
    pub(crate) incremental: Option<IncrementalFile>,
    pub(crate) paginator: PaginatorFile,
    #[serde(default)]
    pub(crate) ids: Option<IdsFile>,
    #[serde(default)]
    pub(crate) max_pages: Option<u64>,
    #[serde(default)]
    pub(crate) identity: Option<IdentityFile>,
    #[serde(default)]
    pub(crate) lookup: Option<LookupFile>,
    #[serde(default)]
    pub(crate) lookup_by_id: Option<LookupFile>,
    #[serde(default)]
    pub(crate) erase: Option<EraseFile>,
}

/// `[streams.<name>.erase]`: how one of a person's records is erased.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EraseFile {
    pub(crate) path: String,
    pub(crate) mode: EraseModeFile,
    #[serde(default)]
    pub(crate) anonymize: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EraseModeFile {
    Delete,
    Anonymize,
}

/// `[streams.<name>.identity]`: where a record holds a person's identifiers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityFile {
    #[serde(default)]
    pub(crate) email: Vec<String>,
}

/// `[streams.<name>.lookup]` and `[streams.<name>.lookup_by_id]`: a search for one
/// person's records, with `{email}` or `{id}` in its path, query or body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LookupFile {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) method: RequestMethod,
    #[serde(default)]
    pub(crate) query: BTreeMap<String, QueryValue>,
    #[serde(default)]
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) records_path: String,
    #[serde(default)]
    pub(crate) total_path: Option<String>,
    #[serde(default)]
    pub(crate) paginator: Option<PaginatorFile>,
    #[serde(default)]
    pub(crate) escape: Escape,
}

/// How an identifier is escaped before it fills a query template: a value inside a
/// query language's string literal (Salesforce's SOQL `q=`) needs that language's escape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Escape {
    /// As it is: for JSON bodies (where a value stays inside its string) and plain
    /// query parameters.
    #[default]
    None,
    /// SOQL string literals: `\` and `'` get a backslash.
    Soql,
}

/// `[streams.<name>.paginator]` (and `[streams.<name>.ids.paginator]`): the
/// kind, and the fields that kind reads. Kept flat rather than as a tagged
/// enum so that a field missing for its kind is reported, by `config`, at
/// its exact place.
/// How a listing is asked for: `GET` with its parameters in the query, or `POST` with
/// a JSON body (a search endpoint, a GraphQL query), where parameters are body paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RequestMethod {
    #[default]
    Get,
    Post,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaginatorFile {
    pub(crate) kind: PaginatorKind,
    #[serde(default)]
    pub(crate) param: Option<String>,
    #[serde(default)]
    pub(crate) next_path: Option<String>,
    #[serde(default)]
    pub(crate) has_more_path: Option<String>,
    #[serde(default)]
    pub(crate) id_field: Option<String>,
}

/// The paginator kinds a file may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PaginatorKind {
    None,
    Cursor,
    PageToken,
    Offset,
    LinkHeader,
    NextUrl,
    Stripe,
    Graphql,
}

impl PaginatorKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PaginatorKind::None => "none",
            PaginatorKind::Cursor => "cursor",
            PaginatorKind::PageToken => "page_token",
            PaginatorKind::Offset => "offset",
            PaginatorKind::LinkHeader => "link_header",
            PaginatorKind::NextUrl => "next_url",
            PaginatorKind::Stripe => "stripe",
            PaginatorKind::Graphql => "graphql",
        }
    }
}

/// `[streams.<name>.incremental]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncrementalFile {
    #[serde(default)]
    pub(crate) param: Option<String>,
    #[serde(default)]
    pub(crate) query: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) body: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) format: SinceFormat,
    #[serde(default)]
    pub(crate) client_filter: bool,
}

/// How a `since` watermark is written into a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinceFormat {
    /// As read from the records' cursor field.
    #[default]
    Raw,
    /// An RFC 3339 instant in UTC (`2026-05-01T00:00:00Z`).
    Rfc3339,
    /// Whole Unix seconds, rounded down (so an inclusive filter still
    /// includes the watermark's own second).
    UnixSeconds,
    /// Unix milliseconds, rounded down.
    UnixMillis,
}

/// `[streams.<name>.ids]`: a listing of ids only, for delete reconciliation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdsFile {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) method: RequestMethod,
    #[serde(default)]
    pub(crate) query: BTreeMap<String, QueryValue>,
    #[serde(default)]
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) ids_path: String,
    #[serde(default)]
    pub(crate) id_field: Option<String>,
    #[serde(default)]
    pub(crate) total_path: Option<String>,
    pub(crate) paginator: PaginatorFile,
}

/// A query parameter's value: a string, or an integer or boolean written
/// without quotes (`limit = 100`), sent as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryValue(pub(crate) String);

impl<'de> Deserialize<'de> for QueryValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;

        impl Visitor<'_> for Text {
            type Value = QueryValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<QueryValue, E> {
                Ok(QueryValue(value.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<QueryValue, E> {
                Ok(QueryValue(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<QueryValue, E> {
                Ok(QueryValue(value.to_string()))
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<QueryValue, E> {
                Ok(QueryValue(value.to_string()))
            }
        }

        deserializer.deserialize_any(Text)
    }
}
