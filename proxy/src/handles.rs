//! Metric handles for what is counted per request, looked up once per label
//! set and kept by each thread: a request then bumps an atomic instead of
//! building its label strings and hashing them into the registry. Bounded:
//! past [`MAX_LABEL_SETS`] a thread looks further label sets up each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

/// Label sets a thread keeps handles for, per metric. The per-request
/// metrics have a few dozen in practice (directions × status codes ×
/// deciding rules).
pub const MAX_LABEL_SETS: usize = 512;

/// Handles of one metric by label set, for use in a `thread_local!`.
pub struct Handles<K, H> {
    map: RefCell<HashMap<K, H>>,
}

impl<K: Hash + Eq, H: Clone> Default for Handles<K, H> {
    fn default() -> Self {
        Self {
            map: RefCell::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, H: Clone> Handles<K, H> {
    /// The handle for `key`, made by `make` the first time.
    pub fn get(&self, key: K, make: impl FnOnce(&K) -> H) -> H {
        if let Some(h) = self.map.borrow().get(&key) {
            return h.clone();
        }
        let h = make(&key);
        let mut map = self.map.borrow_mut();
        if map.len() < MAX_LABEL_SETS {
            map.insert(key, h.clone());
        }
        h
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_label_set_is_looked_up_once() {
        let h: Handles<u16, u16> = Handles::default();
        let made = Cell::new(0);
        for _ in 0..3 {
            assert_eq!(
                h.get(200, |k| {
                    made.set(made.get() + 1);
                    *k + 1
                }),
                201
            );
        }
        assert_eq!(made.get(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let h: Handles<usize, usize> = Handles::default();
        for k in 0..MAX_LABEL_SETS + 10 {
            assert_eq!(h.get(k, |k| *k), k);
        }
        assert_eq!(h.len(), MAX_LABEL_SETS);
        // Past the bound, a label set still gets its handle, made anew.
        let made = Cell::new(0);
        let k = MAX_LABEL_SETS + 5;
        assert_eq!(
            h.get(k, |k| {
                made.set(1);
                *k
            }),
            k
        );
        assert_eq!(made.get(), 1);
    }
}
