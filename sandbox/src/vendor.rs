//! The vendor's state: records, written records, credentials, limits and counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fastrand::Rng;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};

use super::api::QueryStore;
use super::auth::TokenStore;
use super::config::SandboxConfig;
use super::dest::{Collection, DestinationSnapshot};
use super::hostile::Hostile;
use super::limits::{DailyQuota, TokenBucket};
use super::mutation::{Mutation, MutationError, MutationOutcome, SchemaChange};
use super::refresh::RefreshStats;
use super::stats::{Stats, StatsSnapshot, StreamStats};
use super::store::{Behind, StreamData};
use super::stream::Stream;

/// In-process access to a running sandbox's data: what the admin HTTP API
/// does, without HTTP. Cheap to clone; every clone is the same vendor.
#[derive(Clone)]
pub struct Vendor {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: SandboxConfig,
    pub(crate) base_url: String,
    streams: [RwLock<StreamData>; 3],
    pub(crate) stats: Stats,
    destinations: Mutex<HashMap<String, Collection>>,
    tokens: Mutex<TokenStore>,
    queries: QueryStore,
    pub(crate) bucket: Option<Mutex<TokenBucket>>,
    pub(crate) quota: Option<Mutex<DailyQuota>>,
    pub(crate) concurrency: Option<Arc<Semaphore>>,
    fault_rng: Mutex<Rng>,
    /// The attacks made now: the configured ones until a test switches others on.
    hostile: Mutex<Hostile>,
    hold: watch::Sender<bool>,
    waiting: watch::Sender<usize>,
    /// Records under a legal hold, which refuse changes.
    held: Mutex<std::collections::HashSet<(Stream, u64)>>,
    /// One-record writes still to be raced by a change just before them.
    races: std::sync::atomic::AtomicU32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Vendor {
    /// Generates the data for `config` (already validated).
    pub(crate) fn new(config: SandboxConfig, base_url: String) -> Self {
        let now = config.clock.now();
        let as_of = config.as_of.unwrap_or(now).timestamp();
        let generate = |stream| {
            let records = match config.only {
                Some(only) if only != stream => 0,
                _ => config.records_per_stream,
            };
            RwLock::new(StreamData::generate(
                stream,
                records,
                config.seed,
                as_of,
                (config.quirks, config.lean),
            ))
        };
        let streams = Stream::ALL.map(generate);
        let bucket = config.rate_limit.as_ref().map(|limit| {
            Mutex::new(TokenBucket::new(
                limit.rate_per_sec,
                limit.burst,
                config.clock.elapsed(),
            ))
        });
        let quota = config
            .daily_quota
            .map(|total| Mutex::new(DailyQuota::new(total, now.date_naive())));
        let concurrency = config
            .max_concurrent
            .map(|cap| Arc::new(Semaphore::new(cap)));
        Self {
            inner: Arc::new(Inner {
                streams,
                stats: Stats::default(),
                destinations: Mutex::default(),
                tokens: Mutex::new(TokenStore::new(config.seed)),
                queries: QueryStore::default(),
                bucket,
                quota,
                concurrency,
                hostile: Mutex::new(config.hostile.clone()),
                fault_rng: Mutex::new(Rng::with_seed(config.seed ^ 0xfa17)),
                hold: watch::Sender::new(false),
                waiting: watch::Sender::new(0),
                held: Mutex::default(),
                races: std::sync::atomic::AtomicU32::new(0),
                base_url,
                config,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn read(&self, stream: Stream) -> RwLockReadGuard<'_, StreamData> {
        self.inner.streams[stream.index()]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, stream: Stream) -> RwLockWriteGuard<'_, StreamData> {
        self.inner.streams[stream.index()]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn tokens(&self) -> MutexGuard<'_, TokenStore> {
        lock(&self.inner.tokens)
    }

    pub(crate) fn queries(&self) -> &QueryStore {
        &self.inner.queries
    }

    /// The writable side's collections, by stream.
    pub(crate) fn destinations(&self) -> MutexGuard<'_, HashMap<String, Collection>> {
        lock(&self.inner.destinations)
    }

    /// Puts record `id` of the writable side's `stream` as someone other than the
    /// client left it (a record that exists before a pipeline patches it).
    pub fn seed_destination(&self, stream: &str, id: &str, body: Value) {
        self.destinations()
            .entry(stream.to_owned())
            .or_default()
            .seed(id, body);
    }

    /// What the writable side holds for `stream` and what its writes did (empty for a
    /// stream never written).
    pub fn destination(&self, stream: &str) -> DestinationSnapshot {
        self.destinations()
            .get(stream)
            .map(Collection::snapshot)
            .unwrap_or_default()
    }

    /// Draws from the seeded fault sequence: a roll in `[0, 1)` and a pick.
    pub(crate) fn fault_draw(&self) -> (f64, usize) {
        let mut rng = lock(&self.inner.fault_rng);
        (rng.f64(), rng.usize(..usize::MAX))
    }

    fn now_secs(&self) -> i64 {
        self.inner.config.clock.now().timestamp()
    }

    /// Called before each page of a listing is read, with the records the
    /// traversal has passed; fires an armed
    /// [`Mutation::UpdateWhilePaging`].
    pub(crate) fn before_page(&self, stream: Stream, behind: Option<Behind>) {
        if self.read(stream).is_armed() {
            let now = self.now_secs();
            self.write(stream).on_page_request(behind, now);
        }
    }

    /// The URL the sandbox is reached at, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Applies a [`Mutation`] to `stream`.
    pub fn mutate(
        &self,
        stream: Stream,
        mutation: Mutation,
    ) -> Result<MutationOutcome, MutationError> {
        let now = self.now_secs();
        let mut data = self.write(stream);
        let ids = match mutation {
            Mutation::Update { count } => data.update(count, now),
            Mutation::Create { count } => data.create(count, now),
            Mutation::Delete { count } => data.delete(count),
            Mutation::UpdateWhilePaging { count, after_pages } => {
                data.arm_paging_update(count, after_pages);
                Vec::new()
            }
            Mutation::AddField {
                field,
                value,
                touch,
            } => data.change_schema(SchemaChange::Add { field, value }, touch, now)?,
            Mutation::RenameField { from, to, touch } => {
                data.change_schema(SchemaChange::Rename { from, to }, touch, now)?
            }
            Mutation::RemoveField { field, touch } => {
                data.change_schema(SchemaChange::Remove { field }, touch, now)?
            }
            Mutation::ChangeFieldType { field, to, touch } => {
                data.change_schema(SchemaChange::Retype { field, to }, touch, now)?
            }
            Mutation::SetRawField { field, json, count } => {
                let raw = RawValue::from_string(json)
                    .map_err(|err| MutationError::InvalidJson(err.to_string()))?;
                data.set_raw(&field, &raw, count, now)
            }
            Mutation::AddFields { count, fields } => data.widen(count, fields, now),
            Mutation::Assign { field, value, ids } => {
                if field.is_empty() || crate::mutation::SYSTEM_FIELDS.contains(&field.as_str()) {
                    return Err(MutationError::SystemField(field));
                }
                let ids: Vec<u64> = ids.iter().filter_map(|id| id.parse().ok()).collect();
                data.assign(&field, &value, &ids, now)
            }
        };
        Ok(MutationOutcome {
            ids: ids.into_iter().map(|id| id.to_string()).collect(),
        })
    }

    /// Puts records `ids` of `stream` under a legal hold: `PATCH` and `DELETE` of them
    /// answer `409` until [`release_records`](Self::release_records).
    pub fn hold_records(&self, stream: Stream, ids: &[u64]) {
        lock(&self.inner.held).extend(ids.iter().map(|id| (stream, *id)));
    }

    /// Lifts every legal hold.
    pub fn release_records(&self) {
        lock(&self.inner.held).clear();
    }

    pub(crate) fn is_held(&self, stream: Stream, id: u64) -> bool {
        lock(&self.inner.held).contains(&(stream, id))
    }

    /// The next `count` one-record writes (`PATCH`, `DELETE`) each find their record
    /// changed just before they apply: a client's `If-Match` from before then fails.
    pub fn race_writes(&self, count: u32) {
        self.inner
            .races
            .store(count, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn take_race(&self) -> bool {
        self.inner
            .races
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |left| left.checked_sub(1),
            )
            .is_ok()
    }

    pub(crate) fn touch_record(&self, stream: Stream, id: u64) {
        let now = self.now_secs();
        self.write(stream).merge(id, &Map::new(), now);
    }

    pub(crate) fn remove_record(&self, stream: Stream, id: u64) -> bool {
        self.write(stream).remove(id)
    }

    pub(crate) fn merge_record(
        &self,
        stream: Stream,
        id: u64,
        fields: &Map<String, Value>,
    ) -> Option<bytes::Bytes> {
        let now = self.now_secs();
        self.write(stream).merge(id, fields, now)
    }

    /// Every live record of `stream`, in id order (numeric).
    pub fn records(&self, stream: Stream) -> Vec<Value> {
        self.read(stream).records()
    }

    /// The checksum of `stream`'s live records (see
    /// [`checksum`](super::checksum)).
    pub fn checksum(&self, stream: Stream) -> String {
        // Records are built by the sandbox with string ids, so this cannot fail.
        self.read(stream)
            .checksum()
            .unwrap_or_else(|error| format!("invalid: {error}"))
    }

    /// Requests to `route` that ended with `outcome`, as [`StatsSnapshot::count`]
    /// answers, without checksumming every stream as [`stats`](Self::stats) does: for
    /// counting while a benchmark runs.
    pub fn requests(&self, route: &str, outcome: &str) -> u64 {
        self.inner.stats.count(route, outcome)
    }

    /// Requests being handled at this instant: a test that kills a client waits for
    /// this to reach zero before it compares counts.
    pub fn in_flight(&self) -> u64 {
        self.inner.stats.in_flight()
    }

    /// Client connections the server has open at this instant. After a client is
    /// killed, zero means the server is done with everything it sent: each request was
    /// answered (and counted) or dropped with its connection. A benchmark that kills a
    /// worker waits for this before it reads the counts.
    pub fn open_connections(&self) -> u64 {
        self.inner.stats.connections()
    }

    /// Switches the vendor's attacks to `hostile` from the next request on.
    pub fn set_hostile(&self, hostile: Hostile) {
        *lock(&self.inner.hostile) = hostile;
    }

    /// The attacks made now.
    pub(crate) fn hostile(&self) -> Hostile {
        lock(&self.inner.hostile).clone()
    }

    /// A person authorizes the client: a new refresh token (of a new family), for
    /// `cairn auth set`.
    pub fn authorize(&self) -> cairn_connectors::secret::Secret {
        self.tokens().refresh.authorize()
    }

    /// Revokes every refresh token and the access tokens they bought, as a user who
    /// withdraws consent (or a long idle period) does.
    pub fn revoke_refresh_tokens(&self) {
        self.tokens().refresh.revoke_all();
    }

    /// Holds back the answer of each refresh that rotated a token for `stall` after the
    /// rotation took effect (`None`: answers at once): the window in which a client
    /// that dies loses the new refresh token.
    pub fn set_token_stall(&self, stall: Option<std::time::Duration>) {
        self.tokens().stall = stall;
    }

    /// The refresh counters, and how many answers were held back so far.
    pub fn refresh_stats(&self) -> (RefreshStats, u64) {
        let tokens = self.tokens();
        (tokens.refresh.stats, tokens.stalled)
    }

    /// Every OAuth access token issued so far, for tests that prove a token never
    /// leaks into a log, a table or an output.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.tokens().issued()
    }

    /// Counters and the current record sets, as `GET /admin/stats` reports.
    pub fn stats(&self) -> StatsSnapshot {
        let today = self.inner.config.clock.now().date_naive();
        let quota_used = self
            .inner
            .quota
            .as_ref()
            .map(|quota| lock(quota).used(today));
        let streams = Stream::ALL
            .into_iter()
            .map(|stream| {
                let data = self.read(stream);
                let stats = StreamStats {
                    records: data.len(),
                    checksum: data
                        .checksum()
                        .unwrap_or_else(|error| format!("invalid: {error}")),
                    updated_while_paging: data
                        .paging_updates()
                        .iter()
                        .map(u64::to_string)
                        .collect(),
                };
                (stream.name().to_owned(), stats)
            })
            .collect::<BTreeMap<_, _>>();
        self.inner.stats.snapshot(quota_used, streams)
    }

    /// Holds every API request that got past authentication and the limits
    /// until the returned guard is dropped. Tests use it to keep requests in
    /// flight deterministically (the concurrency cap, shutdown).
    pub fn hold(&self) -> Hold {
        self.inner.hold.send_replace(true);
        Hold {
            vendor: self.clone(),
        }
    }

    /// Waits here while a [`Hold`] is in place.
    pub(crate) async fn pass_hold(&self) {
        let mut held = self.inner.hold.subscribe();
        if !*held.borrow_and_update() {
            return;
        }
        self.inner.waiting.send_modify(|n| *n += 1);
        let _leave = Waiting(self);
        // An error means the sender is gone, i.e. the vendor is: stop waiting.
        let _ = held.wait_for(|held| !*held).await;
    }
}

impl std::fmt::Debug for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only what identifies it: the rest is data, and credentials.
        f.debug_struct("Vendor")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

struct Waiting<'a>(&'a Vendor);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.inner.waiting.send_modify(|n| *n -= 1);
    }
}

/// Keeps API requests waiting; see [`Vendor::hold`]. Dropping it lets them go.
#[derive(Debug)]
pub struct Hold {
    vendor: Vendor,
}

impl Hold {
    /// Resolves once `count` requests are waiting at the hold.
    pub async fn until_waiting(&self, count: usize) {
        let mut waiting = self.vendor.inner.waiting.subscribe();
        // The sender lives as long as the vendor this guard holds.
        let _ = waiting.wait_for(|n| *n >= count).await;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.vendor.inner.hold.send_replace(false);
    }
}
