//! Small building blocks: a fast deterministic hasher for integer keys, a string interner, and a
//! bitmap of ids (CPUs, GPUs).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A multiplicative hasher for integer keys (Fx-style). Deterministic: no random seed, so maps
/// behave the same from run to run (iteration order is still never relied upon).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(SEED);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// A `HashMap` with [`IdHasher`].
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Strings stored once, named by a small id.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    /// The id of `name`, adding it when new.
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The string with id `id`.
    pub(crate) fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// Heap bytes held (approximate).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.names.iter().map(|n| n.len() + 16).sum::<usize>() * 2
    }
}

/// Which of `len` ids are free; hands out the lowest free ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdSet {
    words: Vec<u64>,
    len: u32,
}

impl IdSet {
    /// All `len` ids free.
    pub(crate) fn full(len: u32) -> Self {
        let mut words = vec![u64::MAX; (len as usize).div_ceil(64)];
        let tail = len % 64;
        if tail != 0 {
            if let Some(last) = words.last_mut() {
                *last = (1u64 << tail) - 1;
            }
        }
        IdSet { words, len }
    }

    /// Takes the `n` lowest free ids (fewer if not enough are free).
    pub(crate) fn take(&mut self, n: u64) -> Vec<u32> {
        let mut out = Vec::with_capacity(n.min(1024) as usize);
        for (wi, word) in self.words.iter_mut().enumerate() {
            while *word != 0 && (out.len() as u64) < n {
                let bit = word.trailing_zeros();
                *word &= !(1u64 << bit);
                out.push(wi as u32 * 64 + bit);
            }
            if out.len() as u64 >= n {
                break;
            }
        }
        out
    }

    /// Gives ids back.
    pub(crate) fn give(&mut self, ids: &[u32]) {
        for &id in ids {
            if id < self.len {
                self.words[(id / 64) as usize] |= 1u64 << (id % 64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idset_hands_out_lowest_and_takes_back() {
        let mut s = IdSet::full(70);
        assert_eq!(s.take(3), vec![0, 1, 2]);
        let many = s.take(100);
        assert_eq!(many.len(), 67);
        assert_eq!(many.last(), Some(&69));
        s.give(&[1, 65]);
        assert_eq!(s.take(5), vec![1, 65]);
    }

    #[test]
    fn interner_is_stable() {
        let mut i = Interner::default();
        let a = i.intern("alice");
        let b = i.intern("bob");
        assert_eq!(i.intern("alice"), a);
        assert_ne!(a, b);
        assert_eq!(&**i.name(b), "bob");
    }
}
