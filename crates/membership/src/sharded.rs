//! A map by name split over [`SHARDS`] hash maps.
//!
//! A hub's connection and user tables hold an entry per connection: a million entries in one
//! `HashMap` means that the apply which makes it grow rehashes all of them at once, under the
//! state's write lock (0.4 s at a million connections, measured by the scale simulator). Split
//! over 64 maps, a growth rehashes one sixty-fourth. A key's shard comes from an unseeded hash
//! (the same in every process of one build); equality ignores shards, so nothing depends on it
//! across builds. Inside a shard the map is an ordinary `HashMap`.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::Name;

/// Maps a table is split over.
pub(crate) const SHARDS: usize = 64;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Sharded<V> {
    /// Empty until the first insert (most hubs' tables stay small or empty).
    shards: Vec<HashMap<Name, V>>,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Sharded { shards: Vec::new() }
    }
}

fn shard_of(key: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % SHARDS as u64) as usize
}

impl<V> Sharded<V> {
    fn shard(&self, key: &str) -> Option<&HashMap<Name, V>> {
        self.shards.get(shard_of(key))
    }

    fn shard_mut(&mut self, key: &str) -> &mut HashMap<Name, V> {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| HashMap::new()).collect();
        }
        &mut self.shards[shard_of(key)]
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.shard(key)?.get(key)
    }

    pub(crate) fn get_key_value(&self, key: &str) -> Option<(&Name, &V)> {
        self.shard(key)?.get_key_value(key)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if self.shards.is_empty() {
            return None;
        }
        self.shard_mut(key).get_mut(key)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn insert(&mut self, key: Name, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        if self.shards.is_empty() {
            return None;
        }
        self.shard_mut(key).remove(key)
    }

    pub(crate) fn entry(&mut self, key: Name) -> Entry<'_, Name, V> {
        self.shard_mut(&key).entry(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Name, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }
}

impl<V: PartialEq> PartialEq for Sharded<V> {
    /// The same entries, however the shards were allocated.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<V: Eq> Eq for Sharded<V> {}

impl<V> FromIterator<(Name, V)> for Sharded<V> {
    fn from_iter<I: IntoIterator<Item = (Name, V)>>(items: I) -> Self {
        let mut map = Sharded::default();
        for (k, v) in items {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn behaves_like_one_map(ops in prop::collection::vec((0u8..3, 0u16..300, any::<u32>()), 0..400)) {
            let mut sharded: Sharded<u32> = Sharded::default();
            let mut plain: HashMap<Name, u32> = HashMap::new();
            for (op, key, value) in ops {
                let key: Name = format!("k{key}").into();
                match op {
                    0 => prop_assert_eq!(sharded.insert(key.clone(), value), plain.insert(key, value)),
                    1 => prop_assert_eq!(sharded.remove(&key), plain.remove(&key)),
                    _ => {
                        *sharded.entry(key.clone()).or_insert(0) += 1;
                        *plain.entry(key).or_insert(0) += 1;
                    }
                }
                prop_assert_eq!(sharded.len(), plain.len());
                prop_assert_eq!(sharded.is_empty(), plain.is_empty());
            }
            for (k, v) in &plain {
                prop_assert_eq!(sharded.get(k), Some(v));
                prop_assert!(sharded.contains_key(k));
            }
            prop_assert_eq!(sharded.iter().count(), plain.len());
            // Equal to a copy built in another order, and to nothing else.
            let rebuilt: Sharded<u32> = plain.clone().into_iter().collect();
            prop_assert!(sharded == rebuilt);
            let mut other = rebuilt.clone();
            other.insert("extra".into(), 1);
            prop_assert!(sharded != other);
        }
    }

    #[test]
    fn shards_are_chosen_alike_everywhere() {
        // A fixed hash: the shard of a key does not depend on the process.
        assert_eq!(shard_of("connection-1"), shard_of("connection-1"));
        let spread: std::collections::HashSet<usize> =
            (0..1000).map(|i| shard_of(&format!("c{i}"))).collect();
        assert_eq!(spread.len(), SHARDS);
    }
}
