//! Counters behind `GET /admin/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Live counters, updated by the request path.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    requests: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    rate_limited: AtomicU64,
    tokens_issued: AtomicU64,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicU64,
    connections: AtomicU64,
}

/// A request being handled, or a connection open; counted until dropped.
pub(crate) struct Handling<'a>(&'a AtomicU64);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// Counts a request in flight until the returned guard is dropped (after its
    /// outcome is recorded, or when its client went away).
    pub(crate) fn handling(&self) -> Handling<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Handling(&self.in_flight)
    }

    /// Counts a request to `route` (method and path template) that ended with
    /// `outcome` (a status code, or `reset` for a dropped connection).
    pub(crate) fn record(&self, route: &str, outcome: &str) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let by_outcome = match requests.get_mut(route) {
            Some(by_outcome) => by_outcome,
            None => requests.entry(route.to_owned()).or_default(),
        };
        match by_outcome.get_mut(outcome) {
            Some(count) => *count += 1,
            None => {
                by_outcome.insert(outcome.to_owned(), 1);
            }
        }
    }

    /// Requests to `route` that ended with `outcome` so far.
    pub(crate) fn count(&self, route: &str, outcome: &str) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
            .and_then(|by_outcome| by_outcome.get(outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Requests being handled now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a client connection as open until the returned guard is dropped, which
    /// happens once the server is done with it: every request that came in on it has
    /// been answered, or dropped with the connection.
    pub(crate) fn connected(&self) -> Handling<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Handling(&self.connections)
    }

    /// Client connections open now.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn token_issued(&self) {
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fault(&self, kind: &'static str) {
        *self
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    pub(crate) fn snapshot(
        &self,
        quota_used: Option<u64>,
        streams: BTreeMap<String, StreamStats>,
    ) -> StatsSnapshot {
        StatsSnapshot {
            requests: self
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            faults: self
                .faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(kind, count)| ((*kind).to_owned(), *count))
                .collect(),
            quota_used,
            streams,
            in_flight: self.in_flight(),
        }
    }
}

/// What `GET /admin/stats` answers, and [`Vendor::stats`](super::Vendor::stats)
/// returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Requests by route (`"GET /v1/{stream}"`, the method and path template)
    /// and outcome (`"200"`, `"429"`, ... or `"reset"` when the connection
    /// was reset instead of answered). Unknown paths count under
    /// `"<METHOD> <unmatched>"`.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// 429 responses served, by the rate limit or the concurrency cap.
    pub rate_limited: u64,
    /// OAuth access tokens issued.
    pub tokens_issued: u64,
    /// Faults injected, by kind name (`"503"`, `"reset"`, ...).
    pub faults: BTreeMap<String, u64>,
    /// API requests counted against today's quota, when one is set.
    pub quota_used: Option<u64>,
    /// Requests being handled at this instant (not yet counted in `requests`).
    #[serde(default)]
    pub in_flight: u64,
    /// The live record set of each stream.
    pub streams: BTreeMap<String, StreamStats>,
}

impl StatsSnapshot {
    /// Requests to `route` that ended with `outcome`, 0 if none.
    pub fn count(&self, route: &str, outcome: &str) -> u64 {
        self.requests
            .get(route)
            .and_then(|by_outcome| by_outcome.get(outcome))
            .copied()
            .unwrap_or(0)
    }
}

/// One stream's record set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Live (not deleted) records.
    pub records: usize,
    /// Their checksum, as defined in [`checksum`](super::checksum).
    pub checksum: String,
    /// Ids updated behind a paging cursor by
    /// [`Mutation::UpdateWhilePaging`](super::Mutation::UpdateWhilePaging).
    pub updated_while_paging: Vec<String>,
}
