//! Pagination: one normalised cursor for every way vendors page, and the
//! checks that make a paginator bug an error instead of an infinite loop.
//!
//! Every paginator kind reduces its position to a [`Position`] inside a
//! [`PageCursor`]:
//!
//! | vendor style | [`Paginator`] | position |
//! | --- | --- | --- |
//! | cursor / `after` token (HubSpot `paging.next.after`) | [`Paginator::Token`] | [`Position::Token`] |
//! | page token (Google `nextPageToken`) | [`Paginator::Token`] | [`Position::Token`] |
//! | offset/limit with a total | [`Paginator::Offset`] | [`Position::Offset`] |
//! | `Link: <url>; rel="next"` (GitHub, RFC 8288) | [`Paginator::LinkHeader`] | [`Position::Url`] |
//! | Salesforce `nextRecordsUrl` | [`Paginator::NextUrl`] | [`Position::Url`] |
//! | Stripe `starting_after` / `has_more` | [`Paginator::Stripe`] | [`Position::Token`] |
//! | GraphQL `pageInfo.endCursor` / `hasNextPage` | [`Paginator::Connection`] | [`Position::Token`] |
//!
//! A cursor is plain serde data a workflow checkpoints; it never holds a
//! credential ([`scrub_url`]). A [`Traversal`] is fed each page and refuses a
//! repeated cursor, an empty page that names a next page, and a count that
//! disagrees with the vendor's total.

mod cursor;
mod error;
mod paginator;
mod path;
mod seen;
mod traversal;

pub use cursor::{PageCursor, Position, SECRET_PARAMS, scrub_url};
pub use error::PaginationError;
pub(crate) use paginator::kind_of;
pub use paginator::{PageView, Paginator};
pub use path::{InvalidPath, JsonPath, scalar_text};
pub use seen::{STALE_PAGES, SeenIds};
pub use traversal::{Paged, Traversal, check_page};
