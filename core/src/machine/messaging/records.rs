//! The records the messaging layer has loaded: a bounded map that also remembers what the
//! store does not have, so nothing is asked for twice.
//!
//! Past its cap the oldest records are dropped (every change was handed to the store before,
//! so dropping loses nothing), except those used in this pass or the one before: the records a
//! waiting piece of work looks at are looked at again on every pass, so they stay until the
//! work is done. The map may exceed its cap by what the waiting work needs at once, which is
//! itself bounded (by the sends and messages that may wait, and what each needs); it never
//! drops a record the work is about to use, which would make it ask again and again.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// What is known about one record.
pub(crate) enum Lookup<'a, V> {
    /// Loaded (or created) and held.
    Held(&'a V),
    /// The store does not have it.
    Absent,
    /// Not loaded: ask the store.
    Unknown,
}

#[derive(Clone)]
struct Entry<V> {
    value: Option<V>,
    /// The pass it was last used in.
    used: Cell<u64>,
}

/// Records by key, with absent ones remembered, bounded by `cap` as the module docs say.
pub(crate) struct Records<K, V> {
    map: HashMap<K, Entry<V>>,
    order: VecDeque<K>,
    /// Asked for and not answered yet.
    loading: HashSet<K>,
    pass: Cell<u64>,
}

impl<K: Clone, V: Clone> Clone for Records<K, V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            order: self.order.clone(),
            loading: self.loading.clone(),
            pass: self.pass.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Default for Records<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            loading: HashSet::new(),
            pass: Cell::new(1),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Records<K, V> {
    /// Starts a new pass over the waiting work.
    pub(crate) fn next_pass(&self) {
        self.pass.set(self.pass.get() + 1);
    }

    fn touch(&self, e: &Entry<V>) {
        e.used.set(self.pass.get());
    }

    pub(crate) fn lookup(&self, key: &K) -> Lookup<'_, V> {
        match self.map.get(key) {
            Some(e) => {
                self.touch(e);
                match &e.value {
                    Some(v) => Lookup::Held(v),
                    None => Lookup::Absent,
                }
            }
            None => Lookup::Unknown,
        }
    }

    pub(crate) fn is_known(&self, key: &K) -> bool {
        self.map.get(key).inspect(|e| self.touch(e)).is_some()
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let pass = self.pass.get();
        self.map.get_mut(key).and_then(|e| {
            e.used.set(pass);
            e.value.as_mut()
        })
    }

    /// Marks `key` as asked for; false when it already was.
    pub(crate) fn start_loading(&mut self, key: &K) -> bool {
        self.loading.insert(key.clone())
    }

    /// Stores what the store answered (a record or `None`), unless something newer was put
    /// in meanwhile.
    pub(crate) fn loaded(&mut self, key: K, value: Option<V>, cap: usize) {
        self.loading.remove(&key);
        if !self.map.contains_key(&key) {
            self.put(key, value, cap);
        }
    }

    /// Puts a record (new or changed) in.
    pub(crate) fn put(&mut self, key: K, value: Option<V>, cap: usize) {
        let entry = Entry {
            value,
            used: Cell::new(self.pass.get()),
        };
        if self.map.insert(key.clone(), entry).is_none() {
            self.order.push_back(key);
        }
        self.evict(cap.max(1));
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    /// Drops the oldest records that were not used in this pass or the one before, until at
    /// most `cap` are held.
    fn evict(&mut self, cap: usize) {
        let recent = self.pass.get().saturating_sub(1);
        let mut kept = VecDeque::new();
        while self.map.len() > cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.map.get(&old) {
                Some(e) if e.used.get() >= recent => kept.push_back(old),
                Some(_) => {
                    self.map.remove(&old);
                }
                None => {}
            }
        }
        // Recently used ones go back to the front, in their order.
        while let Some(k) = kept.pop_back() {
            self.order.push_front(k);
        }
    }

    /// Forgets a record, so it is loaded again when needed.
    pub(crate) fn forget(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Forgets every record whose key matches; returns the keys of the held ones.
    pub(crate) fn forget_where(&mut self, mut f: impl FnMut(&K) -> bool) -> Vec<K> {
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|(k, e)| e.value.is_some() && f(k))
            .map(|(k, _)| k.clone())
            .collect();
        self.map.retain(|k, _| !f(k));
        gone
    }

    /// Forgets pending loads (the connection ended before the answer).
    pub(crate) fn clear_loading(&mut self) {
        self.loading.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_unused_and_keeps_what_work_uses() {
        let mut r: Records<u32, u32> = Records::default();
        for k in 0..4 {
            r.put(k, Some(k), 4);
        }
        // Two passes later nothing is recent; a fifth record evicts the oldest.
        r.next_pass();
        r.next_pass();
        r.put(4, Some(4), 4);
        assert!(!r.is_known(&0) && r.is_known(&1) && r.len() == 4);
        // Work needing more than the cap at once: all stay while it looks at them.
        r.next_pass();
        for k in 10..20 {
            r.put(k, Some(k), 4);
        }
        assert!((10..20).all(|k| matches!(r.lookup(&k), Lookup::Held(_))));
        // Once the work is done and two passes went by, the cap holds again.
        r.next_pass();
        r.next_pass();
        r.put(99, None, 4);
        assert_eq!(r.len(), 4);
    }
}
