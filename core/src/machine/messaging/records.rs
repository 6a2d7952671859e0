//! The records the messaging layer has loaded: a bounded map that also remembers what the
//! store does not have, so nothing is asked for twice.

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

/// Records by key, with absent ones remembered, bounded by `cap` (the oldest inserted are
/// dropped first: every change was handed to the store before, so dropping loses nothing).
pub(crate) struct Records<K, V> {
    map: HashMap<K, Option<V>>,
    order: VecDeque<K>,
    /// Asked for and not answered yet.
    loading: HashSet<K>,
}

impl<K: Clone, V: Clone> Clone for Records<K, V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            order: self.order.clone(),
            loading: self.loading.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Default for Records<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            loading: HashSet::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> Records<K, V> {
    pub(crate) fn lookup(&self, key: &K) -> Lookup<'_, V> {
        match self.map.get(key) {
            Some(Some(v)) => Lookup::Held(v),
            Some(None) => Lookup::Absent,
            None => Lookup::Unknown,
        }
    }

    pub(crate) fn is_known(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).and_then(Option::as_mut)
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
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > cap.max(1) {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
        if self.order.len() > 2 * cap.max(1) + 16 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
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
            .filter(|(k, v)| v.is_some() && f(k))
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
