//! A bounded map that forgets the least recently used half at a time.
//!
//! For caches that must stay bounded in a long-running daemon but do not
//! need an exact LRU: new and used entries go to a young generation; when
//! it is full it becomes the old one and the previous old one is dropped.
//! Every operation is O(1) with no clock and no ordering to maintain, and
//! the entries used last always survive.

use std::hash::Hash;

use crate::FastMap;

/// A map bounded to `capacity` (≥ 2) entries that drops the least recently
/// used half at a time: new and used entries go to `young`; a full `young`
/// becomes `old`, and the previous `old` is dropped.
#[derive(Debug)]
pub struct Generations<K, V> {
    // ahash: the call-site cache is looked up on the per-event path.
    young: FastMap<K, V>,
    old: FastMap<K, V>,
    capacity: usize,
}

impl<K: Eq + Hash, V> Generations<K, V> {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            young: FastMap::default(),
            old: FastMap::default(),
            capacity,
        }
    }

    /// Inserts or replaces `key`'s value as the most recently used entry.
    pub fn insert(&mut self, key: K, value: V) {
        if !self.young.contains_key(&key) && self.young.len() >= (self.capacity / 2).max(1) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    /// `key`'s value without marking it used: for looking, not for caching.
    #[must_use]
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// Marks `key` used (an old entry moves to `young`) without copying its
    /// value; false when it is absent.
    pub fn touch(&mut self, key: &K) -> bool {
        if self.young.contains_key(key) {
            return true;
        }
        match self.old.remove_entry(key) {
            Some((key, value)) => {
                self.insert(key, value);
                true
            }
            None => false,
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.young.is_empty() && self.old.is_empty()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Generations<K, V> {
    /// `key`'s value, marking it used: an old entry moves to `young`.
    pub fn get(&mut self, key: &K) -> Option<V> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(key.clone(), value.clone());
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Generations;

    /// Capacity 4: generations of 2. After 0..=4, `old` holds 2 and 3,
    /// `young` holds 4.
    fn filled() -> Generations<u32, u32> {
        let mut map = Generations::new(4);
        for i in 0..=4 {
            map.insert(i, i * 10);
        }
        map
    }

    #[test]
    fn drops_the_least_recently_used_half() {
        let map = filled();
        assert_eq!(map.len(), 3);
        assert!(map.peek(&0).is_none() && map.peek(&1).is_none());
        assert_eq!(map.peek(&2), Some(&20));
        assert_eq!(map.peek(&4), Some(&40));
    }

    #[test]
    fn get_promotes_and_peek_does_not() {
        let mut map = filled();
        assert_eq!(map.get(&2), Some(20));
        assert_eq!(map.peek(&3), Some(&30));
        // `young` (4, 2) is full: it becomes `old`, and 3 goes.
        map.insert(5, 50);
        assert_eq!(map.peek(&2), Some(&20));
        assert_eq!(map.peek(&3), None);
        assert_eq!(map.get(&7), None);
    }

    #[test]
    fn touch_promotes_like_get_without_copying() {
        let mut map = filled();
        assert!(map.touch(&2));
        map.insert(5, 50);
        assert_eq!(map.peek(&2), Some(&20));
        assert_eq!(map.peek(&3), None);
        assert!(!map.touch(&3));
    }

    #[test]
    fn keeps_the_recently_used_within_the_bound() {
        let mut map = Generations::new(4);
        assert!(map.is_empty());
        for i in 0..100 {
            map.insert(i, i);
            // The one used all along survives.
            assert_eq!(map.get(&0), Some(0));
            assert!(map.len() <= 4);
        }
        assert_eq!(map.get(&99), Some(99));
        assert_eq!(map.get(&50), None);
        assert!(!map.is_empty());
    }
}
