//! A shard's hash index: key hash to slot number, 4 bytes per bucket. Linear probing over
//! a table of any size (not only powers of two), grown by a quarter, so the index stays
//! between 64% and 80% full and costs 5 to 6.3 bytes per item. A general-purpose table
//! (hashbrown) needs 5 bytes per bucket and doubles, which is 5.7 to 11.4 bytes per item.

use allocator_api2::vec::from_elem_in;

use super::mapped::{map_vec, MapAlloc, MapVec};

/// An entry: a 7-bit tag from the hash (top bit clear) and a 24-bit slot number.
const EMPTY: u32 = u32::MAX;
/// A removed entry: probes go on past it, inserts may reuse it.
const GONE: u32 = u32::MAX - 1;
const IDX_MASK: u32 = (1 << 24) - 1;
/// Grow (or clean out removed entries) past this share of used buckets, in 1/100.
const MAX_LOAD: usize = 80;
/// Load right after a rebuild, in 1/100.
const REBUILT_LOAD: usize = 64;
const MIN_BUCKETS: usize = 16;

fn tag(hash: u64) -> u32 {
    ((hash >> 57) as u32) << 24
}

pub(crate) struct Index {
    e: MapVec<u32>,
    live: usize,
    /// Live and removed entries: what probes walk through.
    used: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            e: map_vec(),
            live: 0,
            used: 0,
        }
    }
}

impl Index {
    fn home(&self, hash: u64) -> usize {
        // The low 32 bits scaled to the table: any size works (the store takes the shard
        // from bits 32 and up, the tag from the top 7).
        ((u64::from(hash as u32) * self.e.len() as u64) >> 32) as usize
    }

    pub(crate) fn buckets(&self) -> usize {
        self.e.len()
    }

    /// The bucket a lookup of `hash` reads first.
    pub(crate) fn home_ptr(&self, hash: u64) -> *const u8 {
        self.e.as_ptr().wrapping_add(self.home(hash)).cast()
    }

    /// The slot whose entry has this hash and satisfies `is_key`.
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let n = self.e.len();
        if n == 0 {
            return None;
        }
        let t = tag(hash);
        let mut p = self.home(hash);
        for _ in 0..n {
            let e = *self.e.get(p)?;
            if e == EMPTY {
                return None;
            }
            if e != GONE && e & !IDX_MASK == t && is_key(e & IDX_MASK) {
                return Some(e & IDX_MASK);
            }
            p += 1;
            if p == n {
                p = 0;
            }
        }
        None
    }

    /// Adds slot `idx` under `hash`; the key must not be in the index. `hash_of` gives
    /// the hash of any slot already in it, for a rebuild.
    pub(crate) fn insert(&mut self, hash: u64, idx: u32, hash_of: impl Fn(u32) -> u64) {
        if (self.used + 1) * 100 > self.e.len() * MAX_LOAD {
            self.rebuild(self.live + 1, &hash_of);
        }
        let n = self.e.len();
        let mut p = self.home(hash);
        loop {
            let Some(e) = self.e.get_mut(p) else { return };
            if *e == EMPTY || *e == GONE {
                if *e == EMPTY {
                    self.used += 1;
                }
                *e = tag(hash) | (idx & IDX_MASK);
                self.live += 1;
                return;
            }
            p += 1;
            if p == n {
                p = 0;
            }
        }
    }

    /// Removes slot `idx`'s entry.
    pub(crate) fn remove(&mut self, hash: u64, idx: u32) {
        let n = self.e.len();
        if n == 0 {
            return;
        }
        let want = tag(hash) | (idx & IDX_MASK);
        let mut p = self.home(hash);
        for _ in 0..n {
            match self.e.get(p).copied() {
                None | Some(EMPTY) => return,
                Some(e) if e == want => break,
                Some(_) => {}
            }
            p += 1;
            if p == n {
                p = 0;
            }
        }
        if self.e.get(p) != Some(&want) {
            return;
        }
        self.live -= 1;
        // Ahead of an empty bucket no probe needs this entry, nor the removed entries
        // right before it: those become empty again.
        let prev = |q: usize| if q == 0 { n - 1 } else { q - 1 };
        let next = if p + 1 == n { 0 } else { p + 1 };
        if self.e.get(next) != Some(&EMPTY) {
            if let Some(e) = self.e.get_mut(p) {
                *e = GONE;
            }
            return;
        }
        if let Some(e) = self.e.get_mut(p) {
            *e = EMPTY;
            self.used -= 1;
        }
        let mut q = prev(p);
        while q != p {
            match self.e.get_mut(q) {
                Some(e) if *e == GONE => {
                    *e = EMPTY;
                    self.used -= 1;
                }
                _ => break,
            }
            q = prev(q);
        }
    }

    /// Makes room for `n` more entries in one step.
    pub(crate) fn reserve(&mut self, n: usize, hash_of: impl Fn(u32) -> u64) {
        if (self.used + n) * 100 > self.e.len() * MAX_LOAD {
            self.rebuild(self.live + n, &hash_of);
        }
    }

    /// Rebuilds the table for `want` live entries at the rebuilt load, dropping removed
    /// entries.
    fn rebuild(&mut self, want: usize, hash_of: &impl Fn(u32) -> u64) {
        let size = (want * 100 / REBUILT_LOAD + 1).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.e, from_elem_in(EMPTY, size, MapAlloc));
        self.live = 0;
        self.used = 0;
        for e in old {
            if e != EMPTY && e != GONE {
                let idx = e & IDX_MASK;
                let h = hash_of(idx);
                let mut p = self.home(h);
                while let Some(slot) = self.e.get_mut(p) {
                    if *slot == EMPTY {
                        *slot = e;
                        break;
                    }
                    p += 1;
                    if p == size {
                        p = 0;
                    }
                }
                self.live += 1;
                self.used += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of hashes, with forced collisions of the home bucket.
    fn h(i: u32) -> u64 {
        let x = u64::from(i % 700).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^ (x >> 29) ^ (u64::from(i) << 57)
    }

    #[test]
    fn random_inserts_and_removes_match_a_model() {
        let mut ix = Index::default();
        let mut model = std::collections::HashSet::new();
        let mut r: u64 = 12345;
        for _ in 0..200_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let i = (r % 3000) as u32;
            if model.contains(&i) {
                assert_eq!(ix.find(h(i), |j| j == i), Some(i));
                if r % 3 != 0 {
                    ix.remove(h(i), i);
                    model.remove(&i);
                    assert_eq!(ix.find(h(i), |j| j == i), None);
                }
            } else {
                assert_eq!(ix.find(h(i), |j| j == i), None);
                ix.insert(h(i), i, h);
                model.insert(i);
            }
            assert_eq!(ix.live, model.len());
            assert!(ix.used * 100 <= ix.e.len() * MAX_LOAD + 100);
        }
        for i in 0..3000 {
            assert_eq!(ix.find(h(i), |j| j == i).is_some(), model.contains(&i));
        }
    }

    #[test]
    fn stays_between_the_load_bounds_while_growing() {
        let mut ix = Index::default();
        for i in 0..100_000u32 {
            ix.insert(h(i), i, h);
            if i > 1000 {
                let load = ix.live * 100 / ix.buckets();
                assert!((REBUILT_LOAD - 1..=MAX_LOAD).contains(&load), "{load}");
            }
        }
        ix.reserve(50_000, h);
        assert!(ix.buckets() * MAX_LOAD >= 150_000 * 100);
        for i in 0..100_000u32 {
            assert_eq!(ix.find(h(i), |j| j == i), Some(i));
        }
    }
}
