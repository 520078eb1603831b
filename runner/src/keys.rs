//! Concurrency keys: runs that share a key (a vendor credential, a tenant) count
//! against a worker's limit for that key, so one key's backlog cannot take every slot.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::store::KeyRoom;

/// How many runs of one concurrency key a worker executes at once.
///
/// Limits are per worker process: with several workers, a key runs at most the sum of
/// their limits at once. Runs without a key are limited only by the worker's slots.
#[derive(Clone, Debug, Default)]
pub struct KeyLimits {
    /// The limit of each named key.
    pub per_key: HashMap<String, usize>,
    /// The limit of every key not named in `per_key`; `None`: no limit.
    pub default: Option<usize>,
}

impl KeyLimits {
    fn of(&self, key: &str) -> Option<usize> {
        self.per_key.get(key).copied().or(self.default)
    }
}

/// The keys of the runs a worker executes now, and how many of each.
#[derive(Clone, Default)]
pub(crate) struct KeysInUse(Arc<Mutex<HashMap<String, usize>>>);

impl KeysInUse {
    /// Counts a run of `key` until the returned guard is dropped.
    pub(crate) fn take(&self, key: Option<String>) -> KeyHeld {
        if let Some(key) = &key {
            *self.lock().entry(key.clone()).or_default() += 1;
        }
        KeyHeld {
            keys: self.clone(),
            key,
        }
    }

    /// What a claim may take of each key under `limits`.
    pub(crate) fn room(&self, limits: &KeyLimits) -> KeyRoom {
        let in_use = self.lock();
        let mut room = KeyRoom {
            default_free: limits.default.map(clamp),
            ..KeyRoom::default()
        };
        let keys: BTreeSet<&String> = limits.per_key.keys().chain(in_use.keys()).collect();
        for key in keys {
            let Some(limit) = limits.of(key) else {
                continue;
            };
            let free = limit.saturating_sub(in_use.get(key).copied().unwrap_or(0));
            if free == 0 {
                room.full.push(key.clone());
            } else {
                room.limited.push(key.clone());
                room.free.push(clamp(free));
            }
        }
        room
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn clamp(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One run's hold on its key; see [`KeysInUse::take`].
pub(crate) struct KeyHeld {
    keys: KeysInUse,
    key: Option<String>,
}

impl Drop for KeyHeld {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            let mut in_use = self.keys.lock();
            if let Some(n) = in_use.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    in_use.remove(key);
                }
            }
        }
    }
}
