//! Concurrent holders per key (sessions per address, per device, connections waiting for
//! their Hello per address), each bounded; a [`Held`] place is given back when dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// How many places each key holds now, at most `max` each (`0`: no limit). Keys holding no
/// place are removed, so the map is as large as the number of keys holding places.
#[derive(Debug)]
pub(crate) struct Tally<K> {
    max: u32,
    counts: Mutex<HashMap<K, u32>>,
}

impl<K: Hash + Eq + Copy> Tally<K> {
    /// A tally allowing `max` places per key (`0`: unlimited).
    pub(crate) fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for `key`, or `None` when it holds `max` already.
    pub(crate) fn try_hold(self: &Arc<Self>, key: K) -> Option<Held<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if self.max != 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Held {
            tally: Arc::clone(self),
            key,
        })
    }

    /// Places `key` holds now.
    pub(crate) fn held(&self, key: &K) -> u32 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, key: &K) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(key);
            }
        }
    }
}

/// One place in a [`Tally`], given back on drop.
#[derive(Debug)]
pub(crate) struct Held<K: Hash + Eq + Copy> {
    tally: Arc<Tally<K>>,
    key: K,
}

impl<K: Hash + Eq + Copy> Drop for Held<K> {
    fn drop(&mut self) {
        self.tally.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_key_and_given_back_on_drop() {
        let t = Tally::new(2);
        let a1 = t.try_hold('a').expect("first");
        let a2 = t.try_hold('a').expect("second");
        assert!(t.try_hold('a').is_none(), "a third place for a");
        let b = t.try_hold('b').expect("b has its own places");
        assert_eq!((t.held(&'a'), t.held(&'b')), (2, 1));
        drop(a1);
        let a3 = t.try_hold('a').expect("a place was given back");
        drop((a2, a3, b));
        assert_eq!((t.held(&'a'), t.held(&'b')), (0, 0));
        assert!(
            t.counts.lock().expect("lock").is_empty(),
            "no key left behind"
        );

        let unlimited = Tally::new(0);
        let many: Vec<_> = (0..100)
            .map(|_| unlimited.try_hold(1u8).expect("unlimited"))
            .collect();
        assert_eq!(unlimited.held(&1), 100);
        drop(many);
        assert_eq!(unlimited.held(&1), 0);
    }
}
