//! Counts by key, for the few keys a flow has: its call sites and its
//! closers.
//!
//! A flow counts a call site or a closer at every connection it closes,
//! and it nearly always has one to three of each: a linear search of a
//! few keys held inline compares them instead of hashing them (about 130
//! of a normal-close record's 6,250 instructions, valgrind). Past those,
//! keys go to a hash map, so a flow with many call sites is counted right
//! too.

use std::hash::Hash;

use smallvec::SmallVec;

use crate::FastMap;

/// Keys counted inline before the hash map takes the rest.
const INLINE: usize = 4;

#[derive(Clone, Debug)]
pub struct Tally<K> {
    /// The first keys met, each with its count.
    few: SmallVec<[(K, u64); INLINE]>,
    /// Keys met after `few` was full. A key is in one of the two, never both.
    many: FastMap<K, u64>,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self {
            few: SmallVec::new(),
            many: FastMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash> Tally<K> {
    /// Adds `n` to `key`'s count.
    #[inline]
    pub fn add(&mut self, key: K, n: u64) {
        if let Some((_, count)) = self.few.iter_mut().find(|(known, _)| *known == key) {
            *count += n;
        } else if self.few.len() < INLINE {
            self.few.push((key, n));
        } else {
            *self.many.entry(key).or_default() += n;
        }
    }

    /// Every key with its count, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &u64)> + '_ {
        self.few.iter().map(|(key, n)| (key, n)).chain(&self.many)
    }

    /// How many keys were counted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.few.len() + self.many.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.few.is_empty()
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (&key, &n) in other.iter() {
            self.add(key, n);
        }
    }
}

impl<K: Copy + Eq + Hash> FromIterator<(K, u64)> for Tally<K> {
    fn from_iter<I: IntoIterator<Item = (K, u64)>>(counts: I) -> Self {
        let mut tally = Self::default();
        for (key, n) in counts {
            tally.add(key, n);
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_a_hash_map_for_few_and_many_keys() {
        let mut tally = Tally::default();
        let mut expected: FastMap<u32, u64> = FastMap::default();
        // Keys 0..10 in an order that revisits early and late ones, so
        // keys are met again both inline and past the inline ones.
        for round in 0..3u64 {
            for key in [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 0] {
                tally.add(key, round + 1);
                *expected.entry(key).or_default() += round + 1;
            }
        }
        let counted: FastMap<u32, u64> = tally.iter().map(|(&k, &n)| (k, n)).collect();
        assert_eq!(counted, expected);
        assert_eq!(tally.len(), expected.len());
        assert_eq!(tally.few.len(), INLINE);

        let mut merged: Tally<u32> = [(1, 10), (42, 1)].into_iter().collect();
        merged.merge(&tally);
        assert_eq!(merged.len(), expected.len() + 1);
        let one = merged.iter().find(|(&k, _)| k == 1).map(|(_, &n)| n);
        assert_eq!(one, Some(10 + expected[&1]));
    }
}
