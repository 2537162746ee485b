//! A map that remembers where its last keys are.
//!
//! The daemon looks up the same flow, process and peer for every
//! transition a summary record unfolds into, and for connection after
//! connection of one client: with the last few keys and their slots kept,
//! most lookups compare a key instead of hashing it and probing the table
//! (hashing a flow's key was a fifth of the daemon's per-record time).

use std::hash::Hash;

use indexmap::{map::Entry, IndexMap};

/// How many recent keys are kept: a loopback connection's two sockets
/// belong to two flows.
const RECENT: usize = 4;

pub struct RecentMap<K, V> {
    map: IndexMap<K, V, ahash::RandomState>,
    /// Keys looked up last and their index in `map`, most recent first.
    recent: [Option<(K, usize)>; RECENT],
}

impl<K, V> Default for RecentMap<K, V> {
    fn default() -> Self {
        Self {
            map: IndexMap::default(),
            recent: [const { None }; RECENT],
        }
    }
}

impl<K: Hash + Eq + Copy, V: Default> RecentMap<K, V> {
    /// The value at `key`, made with `V::default()` if it is not there.
    #[inline]
    pub fn entry_or_default(&mut self, key: &K) -> &mut V {
        // By reference: a key is copied only when it is new here, so a hit
        // compares fields in place.
        let known = self.recent.iter().find_map(|recent| match recent {
            Some((recent, index)) if recent == key => Some(*index),
            _ => None,
        });
        let index = known.unwrap_or_else(|| {
            let index = match self.map.entry(*key) {
                Entry::Occupied(entry) => entry.index(),
                Entry::Vacant(entry) => {
                    let index = entry.index();
                    entry.insert(V::default());
                    index
                }
            };
            self.recent.rotate_right(1);
            self.recent[0] = Some((*key, index));
            index
        });
        &mut self.map[index]
    }
}

impl<K: Hash + Eq, V> RecentMap<K, V> {
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    #[must_use]
    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    #[must_use]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn iter(&self) -> indexmap::map::Iter<'_, K, V> {
        self.map.iter()
    }

    /// Removes `key` (the last entry takes its index).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.forget_recent();
        self.map.swap_remove(key)
    }

    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.forget_recent();
        self.map.retain(keep);
    }

    fn forget_recent(&mut self) {
        self.recent = [const { None }; RECENT];
    }
}

impl<K: Hash + Eq, V> std::ops::Index<&K> for RecentMap<K, V> {
    type Output = V;

    /// # Panics
    /// When `key` is not in the map.
    fn index(&self, key: &K) -> &V {
        &self.map[key]
    }
}

impl<'a, K, V> IntoIterator for &'a RecentMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = indexmap::map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_find_their_values_after_inserts_and_removals() {
        let mut map = RecentMap::<u32, u64>::default();
        for round in 0..3 {
            for key in 0..10 {
                *map.entry_or_default(&key) += u64::from(key) + round;
            }
        }
        assert_eq!(map.get(&7), Some(&(3 * 7 + 3)));
        // 9, 8, 7 and 6 are recent; removing 2 moves 9 into its index.
        assert_eq!(map.remove(&2), Some(3 * 2 + 3));
        *map.entry_or_default(&9) += 1;
        assert_eq!(map.get(&9), Some(&(3 * 9 + 3 + 1)));
        map.retain(|key, _| key % 3 != 0);
        *map.entry_or_default(&8) += 1;
        *map.entry_or_default(&0) += 1;
        assert_eq!(map.get(&8), Some(&(3 * 8 + 3 + 1)));
        assert_eq!(map.get(&0), Some(&1));
        assert_eq!(map.get(&9), None);
        assert_eq!(map.len(), 6);
        let total: u64 = map.iter().map(|(_, value)| value).sum();
        let untouched: u64 = [1u64, 4, 5, 7].iter().map(|k| 3 * k + 3).sum();
        assert_eq!(total, untouched + (3 * 8 + 3 + 1) + 1);
    }
}
