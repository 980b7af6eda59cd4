//! A set of [`Name`]s sized for the common case of a handful of members.
//!
//! Most connections are in no group or a few, and most users have one or two connections, yet a
//! hash set allocates a table of several buckets for its first member. `NameSet` holds a single
//! member inline (no allocation at all), up to [`SMALL_MAX`] in an unsorted vector (two words of
//! heap per member), and switches to a hash set only when it grows past that, so a pathological
//! user with thousands of connections still gets O(1) inserts and removals.
//!
//! Equality is by content, whatever the representation: a set that grew and shrank back compares
//! equal to one rebuilt from a snapshot, which replica-agreement checks rely on.

use std::collections::{hash_set, HashSet};
use std::slice;

use crate::Name;

/// Members kept in the vector form; one more switches to a hash set.
const SMALL_MAX: usize = 16;
/// A hash set that shrinks to this many members goes back to the vector form.
const SHRINK_AT: usize = SMALL_MAX / 2;

#[derive(Debug, Clone)]
pub(crate) enum NameSet {
    One(Name),
    /// Empty, or two to [`SMALL_MAX`] members.
    Small(Vec<Name>),
    /// Boxed so the enum stays three words (a `HashSet` inline is six): one sits in every
    /// connection and every user record.
    #[allow(clippy::box_collection)]
    Large(Box<HashSet<Name>>),
}

impl Default for NameSet {
    fn default() -> Self {
        NameSet::Small(Vec::new())
    }
}

impl NameSet {
    /// Adds `name`; false if it was already a member.
    pub(crate) fn insert(&mut self, name: Name) -> bool {
        match self {
            NameSet::One(first) => {
                if **first == *name {
                    return false;
                }
                *self = NameSet::Small(vec![first.clone(), name]);
                true
            }
            NameSet::Small(v) => {
                if v.iter().any(|n| **n == *name) {
                    return false;
                }
                if v.is_empty() {
                    *self = NameSet::One(name);
                } else if v.len() >= SMALL_MAX {
                    let mut set: HashSet<Name> = v.drain(..).collect();
                    set.insert(name);
                    *self = NameSet::Large(Box::new(set));
                } else {
                    v.push(name);
                }
                true
            }
            NameSet::Large(set) => set.insert(name),
        }
    }

    /// Removes `name`; false if it was not a member.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        match self {
            NameSet::One(first) => {
                if &**first != name {
                    return false;
                }
                *self = NameSet::default();
                true
            }
            NameSet::Small(v) => match v.iter().position(|n| &**n == name) {
                Some(i) => {
                    v.swap_remove(i);
                    if v.len() == 1 {
                        if let Some(last) = v.pop() {
                            *self = NameSet::One(last);
                        }
                    }
                    true
                }
                None => false,
            },
            NameSet::Large(set) => {
                let removed = set.remove(name);
                if set.len() <= SHRINK_AT {
                    *self = NameSet::Small(set.drain().collect());
                }
                removed
            }
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            NameSet::One(first) => &**first == name,
            NameSet::Small(v) => v.iter().any(|n| &**n == name),
            NameSet::Large(set) => set.contains(name),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            NameSet::One(_) => 1,
            NameSet::Small(v) => v.len(),
            NameSet::Large(set) => set.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The members, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        match self {
            NameSet::One(first) => Iter::Small(std::slice::from_ref(first).iter()),
            NameSet::Small(v) => Iter::Small(v.iter()),
            NameSet::Large(set) => Iter::Large(set.iter()),
        }
    }

    /// Empties the set, handing back the members.
    pub(crate) fn take(&mut self) -> Vec<Name> {
        match std::mem::take(self) {
            NameSet::One(first) => vec![first],
            NameSet::Small(v) => v,
            NameSet::Large(set) => set.into_iter().collect(),
        }
    }
}

impl PartialEq for NameSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|n| other.contains(n))
    }
}

impl Eq for NameSet {}

/// Iterator over a [`NameSet`].
pub(crate) enum Iter<'a> {
    Small(slice::Iter<'a, Name>),
    Large(hash_set::Iter<'a, Name>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Name;

    fn next(&mut self) -> Option<&'a Name> {
        match self {
            Iter::Small(it) => it.next(),
            Iter::Large(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(it) => it.size_hint(),
            Iter::Large(it) => it.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from(s)
    }

    fn sorted(set: &NameSet) -> Vec<String> {
        let mut v: Vec<String> = set.iter().map(|n| n.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn small_set_insert_remove_contains() {
        let mut s = NameSet::default();
        assert!(s.is_empty());
        assert!(s.insert(name("a")));
        assert!(!s.insert(name("a")));
        assert!(s.insert(name("b")));
        assert!(s.contains("a") && s.contains("b") && !s.contains("c"));
        assert_eq!(s.len(), 2);
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert_eq!(sorted(&s), vec!["b"]);
        assert!(matches!(s, NameSet::One(_)), "one member is held inline");
        assert!(s.remove("b"));
        assert!(s.is_empty());
        assert!(!s.remove("b"));
        assert!(s.insert(name("c")));
        assert!(matches!(s, NameSet::One(_)));
        assert!(!s.contains("b"));
        assert_eq!(sorted(&s), vec!["c"]);
    }

    #[test]
    fn grows_into_a_hash_set_and_shrinks_back() {
        let mut s = NameSet::default();
        for i in 0..40 {
            assert!(s.insert(name(&format!("n{i:02}"))));
        }
        assert!(matches!(s, NameSet::Large(_)));
        assert_eq!(s.len(), 40);
        assert!(!s.insert(name("n05")));
        for i in 0..35 {
            assert!(s.remove(&format!("n{i:02}")));
        }
        assert!(matches!(s, NameSet::Small(_)));
        assert_eq!(sorted(&s), vec!["n35", "n36", "n37", "n38", "n39"]);
    }

    #[test]
    fn equality_ignores_representation_and_order() {
        let mut grown = NameSet::default();
        for i in 0..20 {
            grown.insert(name(&format!("n{i}")));
        }
        for i in 0..10 {
            grown.remove(&format!("n{i}"));
        }
        // 10 members left: still a hash set (shrinks only at 8).
        assert!(matches!(grown, NameSet::Large(_)));
        let mut fresh = NameSet::default();
        for i in (10..20).rev() {
            fresh.insert(name(&format!("n{i}")));
        }
        assert!(matches!(fresh, NameSet::Small(_)));
        assert_eq!(grown, fresh);
        fresh.remove("n10");
        assert_ne!(grown, fresh);
    }

    #[test]
    fn three_words() {
        assert_eq!(
            std::mem::size_of::<NameSet>(),
            3 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn take_empties() {
        let mut s = NameSet::default();
        s.insert(name("x"));
        s.insert(name("y"));
        let mut taken: Vec<String> = s.take().iter().map(|n| n.to_string()).collect();
        taken.sort();
        assert_eq!(taken, vec!["x", "y"]);
        assert!(s.is_empty());
    }
}
