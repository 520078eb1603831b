//! The sandbox vendor over real HTTP on 127.0.0.1: every paginator, the
//! limiter, auth, faults, the admin API and idempotent writes.

mod admin;
mod auth;
mod common;
mod dest;
mod faults;
mod lifecycle;
mod limits;
mod paging;
