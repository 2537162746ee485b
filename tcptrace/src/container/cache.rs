//! A bounded map whose entries may carry a deadline.
//!
//! Container identities are looked up once per cgroup and then read at
//! every scrape; a node that churns pods would grow an unbounded map
//! forever, so the least recently used entries go when it is full. What
//! could not be resolved (a cgroup not found yet, a runtime that has not
//! written its state) is kept only until its deadline, so it is asked
//! again rather than remembered as unknown.

use std::{hash::Hash, time::Instant};

use crate::FastMap;

pub struct Bounded<K, V> {
    map: FastMap<K, Slot<V>>,
    capacity: usize,
    /// Advances at each use: the order of last use.
    clock: u64,
}

struct Slot<V> {
    value: V,
    used: u64,
    expires: Option<Instant>,
}

impl<K: Hash + Eq + Copy, V> Bounded<K, V> {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            map: FastMap::default(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The value, unless absent or past its deadline (then it is dropped).
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        if self
            .map
            .get(key)
            .is_some_and(|s| s.expires.is_some_and(|e| e <= now))
        {
            self.map.remove(key);
            return None;
        }
        self.clock += 1;
        let slot = self.map.get_mut(key)?;
        slot.used = self.clock;
        Some(&slot.value)
    }

    /// Whether `get` would return a value (without counting as a use).
    #[must_use]
    pub fn holds(&self, key: &K, now: Instant) -> bool {
        self.map
            .get(key)
            .is_some_and(|s| s.expires.is_none_or(|e| e > now))
    }

    pub fn insert(&mut self, key: K, value: V, expires: Option<Instant>) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.make_room();
        }
        self.clock += 1;
        self.map.insert(
            key,
            Slot {
                value,
                used: self.clock,
                expires,
            },
        );
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops what has expired, then, if that was not enough, the least
    /// recently used eighth: one sort per many inserts, not one per insert.
    fn make_room(&mut self) {
        let now = Instant::now();
        self.map.retain(|_, s| s.expires.is_none_or(|e| e > now));
        if self.map.len() < self.capacity {
            return;
        }
        // Uses are distinct (the clock advances at each), so dropping up to
        // the n-th smallest drops exactly n.
        let mut uses: Vec<u64> = self.map.values().map(|s| s.used).collect();
        let drop = (self.capacity / 8)
            .max(self.map.len() + 1 - self.capacity)
            .min(uses.len());
        let (_, threshold, _) = uses.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        self.map.retain(|_, s| s.used > threshold);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bounded_by_least_recent_use() {
        let now = Instant::now();
        let mut cache = Bounded::new(16);
        for key in 0..16 {
            cache.insert(key, key * 10, None);
        }
        // Key 0 is used, so 1 and 2 are the oldest.
        assert_eq!(cache.get(&0, now), Some(&0));
        cache.insert(100, 1000, None);
        assert!(cache.len() <= 16);
        assert!(cache.holds(&0, now) && cache.holds(&100, now));
        assert!(!cache.holds(&1, now) && !cache.holds(&2, now));
        assert!(cache.holds(&15, now));
    }

    #[test]
    fn entries_with_a_deadline_expire() {
        let now = Instant::now();
        let mut cache = Bounded::new(4);
        cache.insert(1, "unknown", Some(now + Duration::from_secs(5)));
        cache.insert(2, "known", None);
        assert_eq!(cache.get(&1, now), Some(&"unknown"));
        let later = now + Duration::from_secs(6);
        assert!(!cache.holds(&1, later));
        assert_eq!(cache.get(&1, later), None);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&2, later), Some(&"known"));
    }

    #[test]
    fn capacity_of_one_keeps_the_newest() {
        let now = Instant::now();
        let mut cache = Bounded::new(1);
        cache.insert(1, 1, None);
        cache.insert(2, 2, None);
        assert_eq!(cache.len(), 1);
        assert!(cache.holds(&2, now));
        assert!(!cache.is_empty());
    }
}
