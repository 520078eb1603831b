//! The declarative REST source over real HTTP against the sandbox vendor:
//! every paginator through the ready profiles, incremental reads, the ids
//! listing, vendors whose paging is broken, malformed bodies, token expiry
//! mid-stream, and source files with mistakes in them.

mod broken;
mod common;
mod fake;
mod files;
mod incremental;
mod lookup;
mod paging;
