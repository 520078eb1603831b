//! The sandbox vendor: a fake CRM served over real HTTP on 127.0.0.1 that
//! misbehaves the way SaaS APIs do, so every sync capability is tested,
//! demonstrated and benchmarked against something realistic.
//!
//! Start it in-process with [`Sandbox::start`] (port 0 in tests) or from the
//! command line as `cairn mock-vendor` ([`MockVendorArgs`]). Everything random
//! — data, mutations, faults, tokens — comes from [`SandboxConfig::seed`].
//!
//! # Data
//!
//! Streams `contacts`, `companies` and `deals` ([`Stream`]) hold
//! [`SandboxConfig::records_per_stream`] records each: string `id`s ascending
//! with `created_at`, `updated_at` spread over the year before
//! [`SandboxConfig::as_of`] (whole seconds, RFC 3339 UTC), nested objects,
//! arrays and nullable fields. The admin API changes it ([`Mutation`]) and
//! reports on it ([`StatsSnapshot`], with a [`checksum`] per stream).
//!
//! # Routes
//!
//! The same records are behind every listing, so one suite covers every
//! paginator:
//!
//! | route | style |
//! | --- | --- |
//! | `GET /crm/v3/objects/{stream}?limit&after` | HubSpot: `{results, paging.next.after}` |
//! | `POST /crm/v3/objects/{stream}/search` | HubSpot search: `filterGroups` on `updatedAt`/`createdAt` (`GT`, `GTE`, `LT`, `LTE`) and `email` (`EQ`) |
//! | `GET`/`PATCH`/`DELETE` `/crm/v3/objects/{stream}/{id}`, `/v1/{stream}/{id}`, `/services/data/v59.0/sobjects/{stream}/{id}` | one record with its `ETag`; writes honour `If-Match` (412), legal holds answer 409 |
//! | `GET /v1/{stream}/search?query=email:'...'&page` | Stripe search: `{data, has_more, next_page}` |
//! | `GET /services/data/v59.0/query?q=SOQL` | Salesforce: `{totalSize, done, nextRecordsUrl, records}`; `WHERE Email = '...'` finds a person |
//! | `GET /v1/{stream}?limit&starting_after&created[gte]` | Stripe: `{data, has_more}`, newest first |
//! | `POST /graphql` | GraphQL: `{data.<stream>.nodes, pageInfo.endCursor, pageInfo.hasNextPage}` |
//! | `GET /api/v1/{stream}?offset&limit` | offset paging with `total` |
//! | `GET /rest/{stream}?limit&cursor&updated_since` | a bare array and `Link: <...>; rel="next"` |
//! | `GET /ids/{stream}?limit&after` | `{ids, next_after}`, for delete reconciliation |
//! | `GET`/`POST /dest/{stream}`, `GET`/`PUT`/`PATCH /dest/{stream}/{id}`, `POST /dest/{stream}/batch` | writes ([`dest`]): `Idempotency-Key`, `ETag`/`If-Match`, [`WriteFaults`] |
//! | `POST /oauth/token` | OAuth2 client credentials, and refresh tokens that rotate |
//! | `GET /admin/stats`, `POST /admin/streams/{stream}/mutate`, `GET /admin/dest/{stream}` | the admin API |
//!
//! # Misbehaviour
//!
//! API routes (not `/oauth/token`, not `/admin`) pass, in order: credentials
//! ([`AuthConfig`], 401), the concurrency cap (429), the token bucket
//! ([`RateLimit`], 429 with `Retry-After` as configured; when a limit is set
//! every API response, refused or not, carries `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` in seconds), the daily
//! quota (403 `REQUEST_LIMIT_EXCEEDED`), then [`SandboxConfig::latency`] and a
//! draw of transient faults ([`FaultConfig`]). Listings can also bend JSON and paging
//! on every request ([`Quirks`]: a byte-order mark, omitted nulls, pages that overlap,
//! listings that stop early), and [`Mutation::SetRawField`] makes records carry values
//! no well-behaved vendor sends (a 23-digit integer, a NUL, half an emoji, an array
//! 10,000 levels deep, a cursor that is not a date).
//!
//! # Attacks
//!
//! [`Hostile`] turns the vendor against its client: redirects to another origin or in
//! long chains, error bodies that echo the credentials sent, a token endpoint that
//! echoes the client secret, bodies of any size, gzip bombs, bodies that trickle,
//! cursors that loop or never end, and 429s with absurd waits. [`OtherHost`] listens on
//! another loopback address (127.0.0.2) as "another host", serving the same data to
//! anyone and recording every request it receives, credentials included.

mod api;
mod args;
mod auth;
mod clock;
mod config;
pub mod dest;
mod faults;
mod generate;
mod guard;
mod hostile;
mod limits;
mod mutation;
mod other_host;
mod refresh;
mod server;
pub mod signature;
mod stats;
mod store;
mod stored;
mod stream;
mod vendor;

pub use args::{AuthMode, MockVendorArgs};
pub use cairn_connectors::checksum::{self, ChecksumError, checksum_records};
pub use cairn_connectors::secret::Secret;
pub use clock::{Clock, ManualClock};
pub use config::{
    AuthConfig, ConfigError, FaultConfig, FaultKind, OAuthConfig, Quirks, RateLimit,
    RetryAfterStyle, SandboxConfig, WriteFaults,
};
pub use hostile::{Hostile, PagingAttack, Throttle};
pub use mutation::{FieldType, Mutation, MutationError, MutationOutcome};
pub use other_host::{OtherHost, Received};
pub use refresh::RefreshStats;
pub use server::{Sandbox, SandboxError, SandboxHandle};
pub use stats::{StatsSnapshot, StreamStats};
pub use stream::{Stream, UnknownStream};
pub use vendor::{Hold, Vendor};
