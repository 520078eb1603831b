//! The declarative REST source: a new REST API becomes syncable with a TOML
//! file and no Rust code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_connectors::paginate::PageCursor;
//! use cairn_connectors::rest::{RestConfig, RestSource};
//! use cairn_connectors::source::read_stream;
//!
//! let config = RestConfig::from_file("examples/sources/sandbox-hubspot.toml")?
//!     .with_base_url("http://127.0.0.1:8787")?;
//! let source = RestSource::new(config, None).await?;
//! let all = read_stream(&source, "contacts", PageCursor::start()).await?;
//! let changed = read_stream(&source, "contacts", PageCursor::since(all.watermark.unwrap())).await?;
//! println!("{} records, {} changed since", all.records.len(), changed.records.len());
//! # Ok(())
//! # }
//! ```
//!
//! # The file
//!
//! Every table refuses fields it does not know, and every error names the
//! file, line, column and dotted field (`contacts.toml:14:1:
//! `streams.contacts.paginator.next_path`: a `cursor` paginator needs ...`).
//!
//! ```toml
//! name = "crm"                          # required: names the source in logs and errors
//! base_url = "https://api.example.com"  # required: paths and next links resolve against it
//! secret_params = ["session"]           # query parameters scrubbed from stored cursors,
//!                                       # besides access_token, api_key, key, sig, ...
//! allow_redirect_hosts = ["cdn.example.com"]  # optional: redirects may go there, with no credential
//! allow_insecure_http = false           # plain http to a host other than this machine
//! max_response_bytes = 67108864         # optional: the most a body holds, decompressed (64 MiB)
//! max_rate_limit_wait = "1h"            # optional: the most a 429 parks a run
//! max_quota_wait = "1d"                 # optional: the most a spent daily quota parks a run
//!
//! [auth]                 # optional (default none): kind = none | bearer | basic | api_key | oauth2,
//! kind = "bearer"        # see `auth::AuthConfig`; credentials come from the worker's env or files
//! token = { env = "CRM_TOKEN" }
//!
//! [rate_limit]           # optional: a budget shared by every worker through Postgres
//! requests_per_second = 10
//! burst = 20
//!
//! [headers]              # optional: sent with every request to the source's origin
//! "Sforce-Query-Options" = "batchSize=200"
//! X-Partner-Token = { env = "PARTNER_TOKEN" }  # a credential-like name needs a source
//!
//! [warehouse]            # optional: the schema the source's tables land in; by default
//! schema = "crm"         # the name, lower-cased, with `_` for anything but a-z, 0-9, _
//!                        # (`sandbox-stripe` lands in `sandbox_stripe`)
//!
//! [timeouts]             # optional, seconds
//! connect_secs = 5.0     # establishing a connection
//! read_secs = 30.0       # the longest silence while reading
//! total_secs = 120.0     # a whole request, body included
//!
//! [streams.contacts]                    # one table per stream
//! path = "/v3/contacts"                 # required: relative to base_url, or absolute
//! query = { limit = "100" }             # optional: parameters of every first-page request
//! records_path = "results"              # required: dotted path of the records array ("" = the body)
//! primary_key = "id"                    # required: dotted path of a record's id
//! cursor_field = "updated_at"           # optional: where watermarks are read from
//! cursor_type = "timestamp"             # timestamp (the default) | integer | string
//! max_future_skew = "1d"                # timestamps further ahead of now are refused
//!                                       # (30s, 15m, 12h, 1d or seconds; default 1d)
//! total_path = "total"                  # optional: the vendor's total, checked against the count
//!
//! max_pages = 100000                    # optional: the most pages one run reads of it
//! # method = "post"                     # optional: get (the default) | post, for a search
//! # body = { limit = 100 }              # endpoint or GraphQL: the JSON body of a post listing,
//!                                       # where `param`s are dotted body paths
//!
//! [streams.contacts.incremental]        # optional: read only what changed (needs cursor_field)
//! param = "updated_since"               # a parameter set to the watermark, or
//! # query = { q = "SELECT ... WHERE LastModifiedDate >= {since}" }  # templates replacing `query` ones
//! # body = { filters = [{ field = "updated_at", op = "GTE", value = "{since}" }] }  # a post listing's
//! format = "raw"                        # raw | rfc3339 | unix_seconds | unix_millis
//! client_filter = false                 # true: drop records before the watermark client side
//!                                       # (alone, for listings that cannot filter)
//!
//! [streams.contacts.paginator]          # required
//! kind = "cursor"                       # see below
//! param = "after"
//! next_path = "paging.next.after"
//!
//! [streams.contacts.ids]                # optional: an ids-only listing for delete reconciliation;
//! path = "/v3/contacts/ids"             # without it, ids come from the records listing
//! query = { limit = "1000" }
//! ids_path = "ids"                      # required: the ids array
//! id_field = "id"                       # optional: when the items are objects
//! total_path = "total"                  # optional
//! [streams.contacts.ids.paginator]
//! kind = "cursor"
//! param = "after"
//! next_path = "next_after"
//! ```
//!
//! A stream can say how one person's records are found there, for privacy requests
//! (`cairn dsr`): where its records hold an e-mail address, and a search by e-mail
//! (`lookup`) or by id (`lookup_by_id`). A lookup is a listing of its own (`path`,
//! `method`, `query`, `body`, `records_path`, `total_path`, an optional `paginator`,
//! single page by default) with `{email}` or `{id}` where the value goes:
//! percent-encoded in the path, as it is in query values unless `escape = "soql"` (a
//! value inside a SOQL string literal), and inside its JSON string in a body. What the
//! vendor answers is kept only where the record holds the value (an identity field equal
//! to the address without regard to case; the primary key equal to the id), so a fuzzy
//! search never hands over someone else's record; see [`RestSource::lookup`].
//!
//! ```toml
//! [streams.contacts.identity]
//! email = ["email", "properties.email"]  # dotted fields; needed by a lookup by e-mail
//!
//! [streams.contacts.lookup]
//! path = "/services/data/v59.0/query"
//! query = { q = "SELECT Id FROM Contact WHERE Email = '{email}'" }
//! escape = "soql"
//! records_path = "records"
//! [streams.contacts.lookup.paginator]
//! kind = "next_url"
//! next_path = "nextRecordsUrl"
//!
//! [streams.contacts.lookup_by_id]       # a 404 means "no such record"
//! path = "/v1/customers/{id}"
//! records_path = ""                      # the body is the record
//! ```
//!
//! Paginator kinds and the fields each reads (a field another kind reads is
//! an error, so a typo cannot be silently ignored):
//!
//! | `kind` | fields | pages by |
//! | --- | --- | --- |
//! | `none` | — | one page holds everything |
//! | `cursor` | `param`, `next_path` (both required) | a token in the body, sent back in `param` |
//! | `page_token` | `param` = `"pageToken"`, `next_path` = `"nextPageToken"` | the same, with Google's defaults |
//! | `offset` | `param` = `"offset"` | records served so far; ends on an empty page or at `total_path` |
//! | `link_header` | — | `Link: <url>; rel="next"` |
//! | `next_url` | `next_path` (required) | a URL in the body (Salesforce `nextRecordsUrl`) |
//! | `stripe` | `param` = `"starting_after"`, `has_more_path` = `"has_more"`, `id_field` = the primary key | the last record's id while `has_more` |
//! | `graphql` | `param` = `"variables.after"`, `next_path` (the end cursor), `has_more_path` (both required) | `pageInfo.endCursor` while `pageInfo.hasNextPage` |
//!
//! A `post` listing sends its `body` as JSON; a paginator's `param` and an incremental
//! `param` are dotted paths into it (an offset goes as a number, a token as a string),
//! and it cannot page by next URLs. GraphQL is a `post` listing:
//!
//! ```toml
//! [streams.contacts]
//! path = "/graphql"
//! method = "post"
//! body = { query = "query($first: Int, $after: String) { contacts(first: $first, after: $after) { nodes { id email updated_at } pageInfo { endCursor hasNextPage } } }", variables = { first = 100 } }
//! records_path = "data.contacts.nodes"
//! primary_key = "id"
//! [streams.contacts.paginator]
//! kind = "graphql"
//! next_path = "data.contacts.pageInfo.endCursor"
//! has_more_path = "data.contacts.pageInfo.hasNextPage"
//! ```
//!
//! A successful answer whose body has a non-empty top-level `errors` array (GraphQL's
//! partial data) is refused as malformed rather than landed as a whole page.
//!
//! # Incremental semantics
//!
//! The watermark only moves on values it understands: a record whose cursor is
//! missing, does not read as the stream's `cursor_type`, holds a NUL or (a timestamp)
//! lies more than `max_future_skew` ahead of now is quarantined with its reason when
//! its page lands, raises an alert, and never moves the watermark; see
//! [`watermark`](crate::watermark).
//!
//! The watermark is the largest `cursor_field` value read; the next read
//! passes it as an **inclusive** lower bound, so records sharing it are read
//! again (and deduplicated by the primary-key upsert) instead of skipped; see
//! [`source`](crate::source). A vendor filter that is only exclusive would
//! skip them: prefer its `>=` form. Next URLs handed out by the vendor
//! (`link_header`, `next_url`) already carry the filter and are followed as
//! they are.
//!
//! Ready profiles for the sandbox's styles are in `examples/sources/`.

pub(crate) mod config;
mod incremental;
mod locate;
mod lookup;
mod lookups;
mod paginators;
pub(crate) mod schema;
mod secrets;
mod source;
mod template;

pub use config::{ConfigError, RestConfig};
pub use lookup::{Found, LookupPage};
pub use lookups::IdentityKind;
pub use schema::{Escape, SinceFormat};
pub use source::RestSource;
