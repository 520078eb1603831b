//! One stream's records, kept in id order with their JSON pre-serialized so a
//! page response is a concatenation, not a serialization.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use fastrand::Rng;
use serde_json::Value;
use serde_json::value::RawValue;

use super::config::Quirks;
use super::generate;
use super::mutation::SchemaChange;
use super::stored::StoredRecord;
use super::stream::Stream;
use cairn_connectors::checksum::{ChecksumError, checksum_maps};

const YEAR_SECS: i64 = 365 * 24 * 3600;

/// An interval of Unix milliseconds; each end optional, inclusive or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) lower: Option<(i64, bool)>,
    pub(crate) upper: Option<(i64, bool)>,
}

impl Bounds {
    fn contains(&self, value: i64) -> bool {
        let above = match self.lower {
            Some((bound, true)) => value >= bound,
            Some((bound, false)) => value > bound,
            None => true,
        };
        let below = match self.upper {
            Some((bound, true)) => value <= bound,
            Some((bound, false)) => value < bound,
            None => true,
        };
        above && below
    }

    /// Narrows to values above `bound`, keeping the tighter of two lower ends.
    pub(crate) fn above(&mut self, bound: i64, inclusive: bool) {
        let tighter = match self.lower {
            Some((old, old_inclusive)) => {
                bound > old || (bound == old && !inclusive && old_inclusive)
            }
            None => true,
        };
        if tighter {
            self.lower = Some((bound, inclusive));
        }
    }

    /// Narrows to values below `bound`, keeping the tighter of two upper ends.
    pub(crate) fn below(&mut self, bound: i64, inclusive: bool) {
        let tighter = match self.upper {
            Some((old, old_inclusive)) => {
                bound < old || (bound == old && !inclusive && old_inclusive)
            }
            None => true,
        };
        if tighter {
            self.upper = Some((bound, inclusive));
        }
    }
}

/// Which records a listing returns: by their timestamps, and (a search) by e-mail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecordFilter {
    pub(crate) created: Bounds,
    pub(crate) updated: Bounds,
    /// Records whose `email` is this address, compared without regard to case.
    pub(crate) email: Option<String>,
}

impl RecordFilter {
    fn matches(&self, record: &StoredRecord) -> bool {
        self.created.contains(record.created * 1000)
            && self.updated.contains(record.updated * 1000)
            && self.email.as_ref().is_none_or(|email| {
                record
                    .text("email")
                    .is_some_and(|held| held.trim().eq_ignore_ascii_case(email.trim()))
            })
    }
}

/// One page of a keyset traversal.
pub(crate) struct Page {
    pub(crate) records: Vec<Bytes>,
    /// The id of the last record on the page: the next cursor.
    pub(crate) last_id: Option<u64>,
    pub(crate) has_more: bool,
}

/// The records a traversal has already passed, for changes behind a cursor.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Behind {
    /// Ascending keyset: ids up to and including this one.
    UpTo(u64),
    /// Descending keyset: ids from this one up.
    From(u64),
    /// Offset paging: the first n records.
    First(usize),
}

struct PagingTrigger {
    pages_left: u32,
    count: usize,
}

pub(crate) struct StreamData {
    stream: Stream,
    quirks: Quirks,
    records: BTreeMap<u64, StoredRecord>,
    next_id: u64,
    newest_update: i64,
    population: u64,
    schema: Vec<SchemaChange>,
    rng: Rng,
    trigger: Option<PagingTrigger>,
    paging_updates: Vec<u64>,
}

impl StreamData {
    /// `count` records created over the year before `as_of`, ids ascending
    /// with creation time, each updated at some point since its creation.
    pub(crate) fn generate(
        stream: Stream,
        count: usize,
        seed: u64,
        as_of: i64,
        (quirks, lean): (Quirks, bool),
    ) -> Self {
        let mut rng = Rng::with_seed(seed ^ stream.salt());
        let population = count as u64;
        let start = as_of - YEAR_SECS;
        let step = YEAR_SECS / i64::try_from(count.max(1)).unwrap_or(i64::MAX);
        let mut records = BTreeMap::new();
        let mut newest_update = start;
        for index in 0..count {
            let id = index as u64 + 1;
            let created = start + step * index as i64 + rng.i64(0..=step.max(1) - 1);
            let updated = rng.i64(created..as_of.max(created + 1));
            newest_update = newest_update.max(updated);
            let fields = if lean {
                generate::lean(id, created, updated)
            } else {
                generate::record(stream, id, created, updated, population, &mut rng)
            };
            let record = StoredRecord::new(created, updated, fields, quirks.omit_nulls);
            records.insert(id, record);
        }
        Self {
            stream,
            quirks,
            records,
            next_id: population + 1,
            newest_update,
            population,
            schema: Vec::new(),
            rng: Rng::with_seed(seed.rotate_left(29) ^ stream.salt()),
            trigger: None,
            paging_updates: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// A keyset page: records after `after` (below it when descending) that
    /// match `filter`.
    pub(crate) fn page(
        &self,
        after: Option<u64>,
        descending: bool,
        filter: &RecordFilter,
        limit: usize,
    ) -> Page {
        let matching = |(_, record): &(&u64, &StoredRecord)| filter.matches(record);
        // Records the listing already served before this page (a quirk needs them).
        let served_before = |from: u64| -> Vec<(&u64, &StoredRecord)> {
            // In the order they were served: descending listings served the lowest last.
            if descending {
                let mut before: Vec<_> = self.records.range(from..).filter(matching).collect();
                before.reverse();
                before
            } else {
                let mut before: Vec<_> =
                    self.records.range(..=from).rev().filter(matching).collect();
                before.reverse();
                before
            }
        };
        let Quirks {
            page_overlap,
            stop_after,
            ..
        } = self.quirks;
        let (repeated, position) = match after {
            Some(from) if page_overlap > 0 || stop_after.is_some() => {
                let before = served_before(from);
                let repeated: Vec<(u64, Bytes)> = before
                    .iter()
                    .skip(before.len().saturating_sub(page_overlap))
                    .map(|(id, record)| (**id, record.json.clone()))
                    .collect();
                (repeated, before.len())
            }
            _ => (Vec::new(), 0),
        };
        // A listing that stops early says it has no more once it has served this many.
        let allowed = stop_after.map_or(usize::MAX, |stop| stop.saturating_sub(position));
        let want = limit.min(allowed);
        let mut taken: Vec<(u64, Bytes)> = Vec::with_capacity(want.min(1024) + 1);
        let mut take = |iter: &mut dyn Iterator<Item = (&u64, &StoredRecord)>| {
            for (id, record) in iter.filter(matching).take(want + 1) {
                taken.push((*id, record.json.clone()));
            }
        };
        if descending {
            let upper = after.map_or(Bound::Unbounded, Bound::Excluded);
            take(&mut self.records.range((Bound::Unbounded, upper)).rev());
        } else {
            let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
            take(&mut self.records.range((lower, Bound::Unbounded)));
        }
        let has_more = taken.len() > want && want == limit;
        taken.truncate(want);
        let last_id = taken.last().map(|(id, _)| *id);
        Page {
            last_id,
            records: repeated
                .into_iter()
                .chain(taken)
                .map(|(_, json)| json)
                .collect(),
            has_more,
        }
    }

    /// The record with id `id`, as served.
    pub(crate) fn get(&self, id: u64) -> Option<Bytes> {
        self.records.get(&id).map(|record| record.json.clone())
    }

    /// How many records match `filter`.
    pub(crate) fn count(&self, filter: &RecordFilter) -> usize {
        self.records.values().filter(|r| filter.matches(r)).count()
    }

    /// Records `offset..offset + limit` in id order, and how many there are.
    pub(crate) fn offset_page(&self, offset: usize, limit: usize) -> (usize, Vec<Bytes>) {
        // An overlap shifts the window back, as records added at the head of a listing
        // during offset paging do: the page repeats records and the listing's tail is
        // never reached. A listing that stops early serves nothing past its stop.
        let start = if offset > 0 {
            offset.saturating_sub(self.quirks.page_overlap)
        } else {
            0
        };
        let end = self.quirks.stop_after.unwrap_or(usize::MAX);
        let records = self
            .records
            .values()
            .skip(start)
            .take(limit.min(end.saturating_sub(start)))
            .map(|record| record.json.clone())
            .collect();
        (self.records.len(), records)
    }

    /// Ids after `after`, and whether more follow.
    pub(crate) fn ids_page(&self, after: Option<u64>, limit: usize) -> (Vec<u64>, bool) {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut ids: Vec<u64> = self
            .records
            .range((lower, Bound::Unbounded))
            .map(|(id, _)| *id)
            .take(limit + 1)
            .collect();
        let has_more = ids.len() > limit;
        ids.truncate(limit);
        (ids, has_more)
    }

    /// The vendor time for a change made at `now`: never at or before an
    /// earlier change, so whatever changes lands after every cursor taken
    /// before it.
    fn stamp(&mut self, now: i64) -> i64 {
        self.newest_update = now.max(self.newest_update + 1);
        self.newest_update
    }

    fn choose(&mut self, candidates: Vec<u64>, count: usize) -> Vec<u64> {
        let mut candidates = candidates;
        let count = count.min(candidates.len());
        for i in 0..count {
            let j = self.rng.usize(i..candidates.len());
            candidates.swap(i, j);
        }
        candidates.truncate(count);
        candidates.sort_unstable();
        candidates
    }

    fn update_ids(&mut self, ids: &[u64], now: i64) {
        let stamp = self.stamp(now);
        let field = generate::volatile_field(self.stream);
        for id in ids {
            let value = self.rng.u32(1..1_000_000);
            if let Some(record) = self.records.get_mut(id) {
                if record.fields.get(field).is_some_and(Value::is_number) {
                    record.fields.insert(field.to_owned(), Value::from(value));
                }
                record.touch(stamp);
                record.refresh(self.quirks.omit_nulls);
            }
        }
    }

    pub(crate) fn update(&mut self, count: usize, now: i64) -> Vec<u64> {
        let all = self.records.keys().copied().collect();
        let ids = self.choose(all, count);
        self.update_ids(&ids, now);
        ids
    }

    pub(crate) fn create(&mut self, count: usize, now: i64) -> Vec<u64> {
        let stamp = self.stamp(now);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.next_id;
            self.next_id += 1;
            let mut fields = generate::record(
                self.stream,
                id,
                stamp,
                stamp,
                self.population,
                &mut self.rng,
            );
            for change in &self.schema {
                change.apply(id, &mut fields);
            }
            let record = StoredRecord::new(stamp, stamp, fields, self.quirks.omit_nulls);
            self.records.insert(id, record);
            ids.push(id);
        }
        ids
    }

    /// Removes record `id`; whether it was there.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        self.records.remove(&id).is_some()
    }

    /// Sets top-level `fields` (system fields excepted) of record `id` and bumps its
    /// change time; the record as served after, if it exists.
    pub(crate) fn merge(
        &mut self,
        id: u64,
        fields: &serde_json::Map<String, Value>,
        now: i64,
    ) -> Option<Bytes> {
        let stamp = self.stamp(now);
        let omit_nulls = self.quirks.omit_nulls;
        let record = self.records.get_mut(&id)?;
        for (field, value) in fields {
            if !crate::mutation::SYSTEM_FIELDS.contains(&field.as_str()) {
                record.raw_fields.retain(|(name, _)| name != field);
                record.fields.insert(field.clone(), value.clone());
            }
        }
        record.touch(stamp);
        record.refresh(omit_nulls);
        Some(record.json.clone())
    }

    pub(crate) fn delete(&mut self, count: usize) -> Vec<u64> {
        let all = self.records.keys().copied().collect();
        let ids = self.choose(all, count);
        for id in &ids {
            self.records.remove(id);
        }
        ids
    }

    /// Applies a checked schema change to every record and remembers it for
    /// records created later.
    pub(crate) fn change_schema(
        &mut self,
        change: SchemaChange,
        touch: bool,
        now: i64,
    ) -> Result<Vec<u64>, super::mutation::MutationError> {
        change.check(|field| self.records.values().any(|r| r.fields.contains_key(field)))?;
        let stamp = if touch { Some(self.stamp(now)) } else { None };
        let mut changed = Vec::new();
        for (id, record) in &mut self.records {
            if change.apply(*id, &mut record.fields) {
                if let Some(stamp) = stamp {
                    record.touch(stamp);
                }
                record.refresh(self.quirks.omit_nulls);
                changed.push(*id);
            }
        }
        self.schema.push(change);
        Ok(changed)
    }

    pub(crate) fn arm_paging_update(&mut self, count: usize, after_pages: u32) {
        self.trigger = Some(PagingTrigger {
            pages_left: after_pages,
            count,
        });
    }

    pub(crate) fn is_armed(&self) -> bool {
        self.trigger.is_some()
    }

    /// Counts a page request and fires an armed paging update when due and
    /// there is something behind the cursor to update.
    pub(crate) fn on_page_request(&mut self, behind: Option<Behind>, now: i64) {
        let Some(trigger) = &mut self.trigger else {
            return;
        };
        if trigger.pages_left > 0 {
            trigger.pages_left -= 1;
            return;
        }
        let count = trigger.count;
        let passed: Vec<u64> = match behind {
            None => return,
            Some(Behind::UpTo(id)) => self.records.range(..=id).map(|(id, _)| *id).collect(),
            Some(Behind::From(id)) => self.records.range(id..).map(|(id, _)| *id).collect(),
            Some(Behind::First(n)) => self.records.keys().take(n).copied().collect(),
        };
        if passed.is_empty() {
            return;
        }
        self.trigger = None;
        let ids = self.choose(passed, count);
        self.update_ids(&ids, now);
        self.paging_updates.extend(ids);
    }

    pub(crate) fn paging_updates(&self) -> &[u64] {
        &self.paging_updates
    }

    pub(crate) fn checksum(&self) -> Result<String, ChecksumError> {
        let views: Vec<_> = self.records.values().map(StoredRecord::view).collect();
        checksum_maps(views.iter().enumerate())
    }

    pub(crate) fn records(&self) -> Vec<Value> {
        self.records
            .values()
            .map(|r| Value::Object(r.view()))
            .collect()
    }

    /// Sets top-level `field` to `value` on the records `ids` that exist, bumping their
    /// change time; returns those.
    pub(crate) fn assign(&mut self, field: &str, value: &Value, ids: &[u64], now: i64) -> Vec<u64> {
        let stamp = self.stamp(now);
        let mut changed = Vec::new();
        for id in ids {
            if let Some(record) = self.records.get_mut(id) {
                record.raw_fields.retain(|(name, _)| name != field);
                record.fields.insert(field.to_owned(), value.clone());
                record.touch(stamp);
                record.refresh(self.quirks.omit_nulls);
                changed.push(*id);
            }
        }
        changed
    }

    /// Serves `field` of `count` random records (every record when `count` is `None`)
    /// as the JSON text `raw`, bumping their change time (`updated_at` itself keeps its
    /// new text until the record changes again).
    pub(crate) fn set_raw(
        &mut self,
        field: &str,
        raw: &RawValue,
        count: Option<usize>,
        now: i64,
    ) -> Vec<u64> {
        let all: Vec<u64> = self.records.keys().copied().collect();
        let ids = match count {
            Some(count) => self.choose(all, count),
            None => all,
        };
        let stamp = self.stamp(now);
        for id in &ids {
            if let Some(record) = self.records.get_mut(id) {
                record.touch(stamp);
                record.set_raw(field, raw.to_owned());
                record.refresh(self.quirks.omit_nulls);
            }
        }
        ids
    }

    /// Gives `count` random records `fields` more fields (`extra_0`, `extra_1`, ...),
    /// bumping their change time.
    pub(crate) fn widen(&mut self, count: usize, fields: usize, now: i64) -> Vec<u64> {
        let all = self.records.keys().copied().collect();
        let ids = self.choose(all, count);
        let stamp = self.stamp(now);
        for id in &ids {
            if let Some(record) = self.records.get_mut(id) {
                for n in 0..fields {
                    record.fields.insert(format!("extra_{n}"), Value::from(n));
                }
                record.touch(stamp);
                record.refresh(self.quirks.omit_nulls);
            }
        }
        ids
    }
}
