//! Counter state of an incremented item in a pair: per-node increment and decrement totals
//! on top of the value and version (the base) of the write that created the number, its
//! encoding (an item-buffer trailer, which is also its wire form) and the join that merges
//! two states of the same base. See docs/ARCHITECTURE.md, "Counters in a pair".

use super::item;
use super::shard::{Shard, BIT_COUNTER};
use super::store::{Origin, Step, Store};

/// Bytes of one node's entry: node id u8, increment total u128, decrement total u128.
pub(crate) const ENTRY: usize = 33;
/// Bytes before the entries: base version u64, base value u64, floor u128.
const FIXED: usize = 32;

/// One node's totals. Totals are 128 bits wide so that memcached's wrapping 64-bit
/// increments (a delta can be 2^64 - 1) never overflow them in practice; they saturate
/// rather than wrap, so a max stays a max.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub node: u8,
    pub incr: u128,
    pub decr: u128,
}

/// A decoded counter state. Entries are kept sorted by node id, one per node, so equal
/// states have equal encodings (the digest hashes the bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Counter {
    /// Version of the state the counter started from (a set/add/replace, or whatever plain
    /// state the first increment found).
    pub base_version: u64,
    /// The number that state held.
    pub base_value: u64,
    /// Deficit forgiven: a node that increments a counter whose totals are below zero
    /// (concurrent decrements took more than there was) first lifts the floor so the
    /// increment starts from 0, as memcached's would. A max register: concurrent lifts of
    /// the same deficit count once.
    pub floor: u128,
    pub entries: Vec<Entry>,
}

/// Length of an encoding holding `n` entries (the last byte is `n`).
pub(crate) const fn encoded_len(n: usize) -> usize {
    FIXED + ENTRY * n + 1
}

fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
}

fn rd_u128(b: &[u8], off: usize) -> Option<u128> {
    b.get(off..off + 16)
        .and_then(|s| <[u8; 16]>::try_from(s).ok())
        .map(u128::from_le_bytes)
}

/// Length of the counter encoding that ends `tail` (read from its last byte), if `tail`
/// is long enough to hold it.
pub(crate) fn trailer_len(tail: &[u8]) -> Option<usize> {
    let n = usize::from(*tail.last()?);
    let len = encoded_len(n);
    (len <= tail.len()).then_some(len)
}

/// The base version of an encoding (its first field).
pub(crate) fn base_version_of(enc: &[u8]) -> Option<u64> {
    rd_u64(enc, 0)
}

/// True when `enc` is exactly one well-formed encoding: length matching its entry count,
/// node ids strictly increasing. Does not allocate.
pub fn encoding_valid(enc: &[u8]) -> bool {
    let Some(&n) = enc.last() else {
        return false;
    };
    if enc.len() != encoded_len(usize::from(n)) {
        return false;
    }
    let mut prev: Option<u8> = None;
    for k in 0..usize::from(n) {
        let Some(&node) = enc.get(FIXED + k * ENTRY) else {
            return false;
        };
        if prev.is_some_and(|p| p >= node) {
            return false;
        }
        prev = Some(node);
    }
    true
}

impl Counter {
    /// A counter starting from a plain state's version and number, with no totals yet.
    pub(crate) fn start(base_version: u64, base_value: u64) -> Counter {
        Counter {
            base_version,
            base_value,
            floor: 0,
            entries: Vec::new(),
        }
    }

    pub(crate) fn decode(enc: &[u8]) -> Option<Counter> {
        if !encoding_valid(enc) {
            return None;
        }
        let n = usize::from(*enc.last()?);
        let mut entries = Vec::with_capacity(n);
        for k in 0..n {
            let off = FIXED + k * ENTRY;
            entries.push(Entry {
                node: *enc.get(off)?,
                incr: rd_u128(enc, off + 1)?,
                decr: rd_u128(enc, off + 17)?,
            });
        }
        Some(Counter {
            base_version: rd_u64(enc, 0)?,
            base_value: rd_u64(enc, 8)?,
            floor: rd_u128(enc, 16)?,
            entries,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // At most 255 nodes can have entries (node ids are a byte), so the count fits.
        let n = self.entries.len().min(255);
        out.reserve(encoded_len(n));
        out.extend_from_slice(&self.base_version.to_le_bytes());
        out.extend_from_slice(&self.base_value.to_le_bytes());
        out.extend_from_slice(&self.floor.to_le_bytes());
        for e in self.entries.iter().take(n) {
            out.push(e.node);
            out.extend_from_slice(&e.incr.to_le_bytes());
            out.extend_from_slice(&e.decr.to_le_bytes());
        }
        out.push(n as u8);
    }

    pub(crate) fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// (everything that adds, everything that subtracts), saturating.
    fn sides(&self) -> (u128, u128) {
        let mut up = u128::from(self.base_value).saturating_add(self.floor);
        let mut down = 0u128;
        for e in &self.entries {
            up = up.saturating_add(e.incr);
            down = down.saturating_add(e.decr);
        }
        (up, down)
    }

    /// The number the counter shows: base + increments - decrements + floor, 0 when that
    /// is negative, otherwise modulo 2^64 (memcached's incr wraps).
    pub(crate) fn value(&self) -> u64 {
        let (up, down) = self.sides();
        if up >= down {
            (up - down) as u64
        } else {
            0
        }
    }

    /// How far below zero the totals are (0 when they are not).
    fn deficit(&self) -> u128 {
        let (up, down) = self.sides();
        down.saturating_sub(up)
    }

    fn entry_mut(&mut self, node: u8) -> &mut Entry {
        let at = match self.entries.binary_search_by_key(&node, |e| e.node) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(
                    i,
                    Entry {
                        node,
                        incr: 0,
                        decr: 0,
                    },
                );
                i
            }
        };
        &mut self.entries[at]
    }

    /// A local increment by `node`: memcached's wrapping add on the shown value.
    pub(crate) fn incr(&mut self, node: u8, delta: u64) {
        let deficit = self.deficit();
        if deficit > 0 {
            self.floor = self.floor.saturating_add(deficit);
        }
        let e = self.entry_mut(node);
        e.incr = e.incr.saturating_add(u128::from(delta));
    }

    /// A local decrement by `node`: memcached's clamp at 0 on the shown value. Only what
    /// was really subtracted is recorded, so a lone node's totals never go below zero.
    pub(crate) fn decr(&mut self, node: u8, delta: u64) {
        let taken = delta.min(self.value());
        let e = self.entry_mut(node);
        e.decr = e.decr.saturating_add(u128::from(taken));
    }

    /// Merges `other` (same base) into `self`: per node the larger totals, the larger floor.
    /// Commutative, associative and idempotent.
    pub(crate) fn join(&mut self, other: &Counter) {
        // One base version means one base write, so the base values agree; taking the max
        // keeps the join commutative even for states that break that rule.
        self.base_value = self.base_value.max(other.base_value);
        self.floor = self.floor.max(other.floor);
        for o in &other.entries {
            let e = self.entry_mut(o.node);
            e.incr = e.incr.max(o.incr);
            e.decr = e.decr.max(o.decr);
        }
    }
}

impl Store {
    /// incr/decr of live item `i` in a pair, whose shown value parsed as `cur`: the counter
    /// (started here on a plain item, from its version and number) takes this node's
    /// increment or decrement, the shown value is memcached's (padded in place when the
    /// digits fit, as memcached does), and the item takes `version` and `exptime`. Returns
    /// the new value, or None when there is no memory for the grown item.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn counter_arith(
        &self,
        sh: &mut Shard,
        hash: u64,
        key: &[u8],
        i: u32,
        op: (bool, u64),
        cur: u64,
        version: u64,
        exptime: u32,
        now: u32,
        credit: &mut usize,
    ) -> Step<Option<u64>> {
        let Some(s) = sh.slot(i) else {
            return Step::Done(None);
        };
        let had = s.counter().map(<[u8]>::len);
        let mut c = s
            .counter()
            .and_then(Counter::decode)
            .unwrap_or_else(|| Counter::start(item::version(s.data()), cur));
        let (incr, delta) = op;
        let me = self.hlc.node();
        if incr {
            c.incr(me, delta);
        } else {
            c.decr(me, delta);
        }
        let v = c.value();
        let old_len = s.value().len();
        let mut shown = v.to_string().into_bytes();
        let fits = shown.len() <= old_len;
        if fits {
            shown.resize(old_len, b' ');
        }
        let trailer = c.encoded();
        if fits && had == Some(trailer.len()) {
            let mut grow = false;
            if let Some(mut s) = sh.slot_mut(i) {
                let klen = s.klen();
                let d = s.data_mut();
                item::set_version(d, version);
                item::set_time(d, now);
                grow = !item::set_exptime(d, exptime);
                let region = item::value_mut(d, klen);
                if region.len() == shown.len() + trailer.len() {
                    let (val, tail) = region.split_at_mut(shown.len());
                    val.copy_from_slice(&shown);
                    tail.copy_from_slice(&trailer);
                }
            }
            if grow {
                sh.set_exptime(i, exptime);
            }
            sh.bump(i);
            self.notify(sh, hash, key);
            return Step::Done(Some(v));
        }
        // Where memcached would have written in place, the item keeps its state bits.
        let keep = if fits { s.bits() } else { 0 } | BIT_COUNTER;
        let data = item::build(
            key,
            &[&shown, &trailer],
            version,
            exptime,
            item::flags(s.data()),
            now,
        );
        match self.link(
            sh,
            key,
            hash,
            Some(i),
            data,
            now,
            credit,
            Origin::LocalVersioned,
        ) {
            Step::Done(Some(i)) => {
                if let Some(mut s) = sh.slot_mut(i) {
                    s.set_bits(keep);
                }
                Step::Done(Some(v))
            }
            Step::Done(None) => Step::Done(None),
            Step::NeedRoom(b) => Step::NeedRoom(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::Rng;

    fn joined(a: &Counter, b: &Counter) -> Counter {
        let mut m = a.clone();
        m.join(b);
        m
    }

    fn random_counter(rng: &mut Rng) -> Counter {
        let mut c = Counter::start(7, rng.below(100));
        for _ in 0..rng.below(20) {
            let node = 1 + rng.below(4) as u8;
            if rng.below(3) == 0 {
                c.decr(node, rng.below(50));
            } else {
                c.incr(node, rng.below(50));
            }
        }
        c
    }

    #[test]
    fn encoding_round_trips_and_is_validated() {
        let mut c = Counter::start(0x0102_0304_0506_0708, 42);
        assert_eq!(c.encoded().len(), encoded_len(0));
        c.incr(9, u64::MAX);
        c.incr(9, u64::MAX);
        c.decr(3, 5);
        c.floor = 77;
        let enc = c.encoded();
        assert_eq!(enc.len(), encoded_len(2));
        assert!(encoding_valid(&enc));
        assert_eq!(Counter::decode(&enc), Some(c.clone()));
        assert_eq!(base_version_of(&enc), Some(0x0102_0304_0506_0708));
        assert_eq!(
            trailer_len(&[b"value".as_slice(), &enc].concat()),
            Some(enc.len())
        );
        assert!(!encoding_valid(&enc[1..]));
        assert!(!encoding_valid(&[]));
        // Entries out of order are not canonical.
        let mut bad = enc.clone();
        bad.swap(FIXED, FIXED + ENTRY);
        assert!(!encoding_valid(&bad));
        assert_eq!(Counter::decode(&bad), None);
        // A count byte claiming more than the buffer holds.
        assert_eq!(trailer_len(&[1, 2, 3]), None);
    }

    #[test]
    fn local_operations_are_memcacheds() {
        // Every step checked against memcached 1.6.18's incr/decr on the shown value.
        let mut c = Counter::start(1, 5);
        let mut shown = 5u64;
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..10_000 {
            let d = match rng.below(4) {
                0 => rng.next(),
                _ => rng.below(20),
            };
            if rng.below(2) == 0 {
                c.incr(1, d);
                shown = shown.wrapping_add(d);
            } else {
                c.decr(1, d);
                shown = shown.saturating_sub(d);
            }
            assert_eq!(c.value(), shown);
        }
        let mut w = Counter::start(1, u64::MAX);
        w.incr(2, 1);
        assert_eq!(w.value(), 0, "incr wraps at 2^64");
        w.decr(2, 3);
        assert_eq!(w.value(), 0, "decr stops at 0");
        w.incr(2, 3);
        assert_eq!(w.value(), 3);
    }

    #[test]
    fn join_is_commutative_associative_idempotent() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let (a, b, c) = (
                random_counter(&mut rng),
                random_counter(&mut rng),
                random_counter(&mut rng),
            );
            assert_eq!(joined(&a, &b), joined(&b, &a));
            assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
            assert_eq!(joined(&a, &a), a);
            let ab = joined(&a, &b);
            assert_eq!(joined(&ab, &b), ab);
            assert_eq!(ab.encoded(), joined(&b, &a).encoded(), "canonical bytes");
        }
    }

    /// Two nodes count concurrently; states are sent after random steps, then delivered in
    /// random order with duplicates. Both end at the exact total.
    #[test]
    fn random_interleavings_and_duplicates_converge_to_the_exact_total() {
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let base = 1_000_000 + rng.below(1000);
            let mut nodes = [Counter::start(11, base), Counter::start(11, base)];
            let mut wires: [Vec<Counter>; 2] = [Vec::new(), Vec::new()];
            let mut net: i128 = i128::from(base);
            for _ in 0..400 {
                let n = rng.below(2) as usize;
                let d = rng.below(10);
                if rng.below(3) == 0 {
                    nodes[n].decr(n as u8 + 1, d);
                    net -= i128::from(d);
                } else {
                    nodes[n].incr(n as u8 + 1, d);
                    net += i128::from(d);
                }
                if rng.below(5) == 0 {
                    wires[n].push(nodes[n].clone());
                }
                // Some states arrive early.
                if rng.below(7) == 0 && !wires[1 - n].is_empty() {
                    let k = rng.below(wires[1 - n].len() as u64) as usize;
                    let m = wires[1 - n][k].clone();
                    nodes[n].join(&m);
                }
            }
            for n in 0..2 {
                wires[n].push(nodes[n].clone());
            }
            for n in 0..2 {
                let mut msgs = wires[1 - n].clone();
                msgs.extend(wires[1 - n].iter().filter(|_| rng.below(2) == 0).cloned());
                while !msgs.is_empty() {
                    let m = msgs.swap_remove(rng.below(msgs.len() as u64) as usize);
                    nodes[n].join(&m);
                }
            }
            assert_eq!(nodes[0], nodes[1], "seed {seed}");
            // The base is large enough that nothing clamped: the exact net total.
            assert_eq!(i128::from(nodes[0].value()), net, "seed {seed}");
        }
    }

    #[test]
    fn concurrent_decrements_clamp_and_a_later_increment_starts_from_zero() {
        let (mut a, mut b) = (Counter::start(1, 5), Counter::start(1, 5));
        a.decr(1, 5);
        b.decr(2, 4);
        let m = joined(&a, &b);
        assert_eq!(m.value(), 0, "5 - 5 - 4 clamps at 0");
        // Both nodes see the deficit and increment concurrently: it is forgiven once.
        let (mut a2, mut b2) = (m.clone(), m.clone());
        a2.incr(1, 1);
        b2.incr(2, 2);
        assert_eq!(a2.value(), 1);
        assert_eq!(b2.value(), 2);
        assert_eq!(joined(&a2, &b2).value(), 3);
        // Decrements never take more than the node saw.
        let mut c = Counter::start(1, 3);
        c.decr(1, 10);
        assert_eq!(c.entries[0].decr, 3);
    }
}
