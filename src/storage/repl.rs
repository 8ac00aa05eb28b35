//! The store as replication sees it: reading a key's whole state (item or tombstone),
//! applying a peer's state by last-writer-wins on the version, walking every state for a
//! full copy in bounded chunks, and the convergence digest.

use std::sync::atomic::Ordering;

use super::counter::{self, Counter};
use super::item::{self, NewItem};
use super::shard::{self, Shard, BIT_COUNTER};
use super::store::{ItemRef, Origin, Step, Store};

/// A key's state as it travels between the nodes.
#[derive(Debug)]
pub enum StateRef<'a> {
    Live(ItemRef<'a>),
    Tombstone { key: &'a [u8], version: u64 },
}

/// A state received from the peer. `value: None` is a tombstone.
#[derive(Clone, Copy, Debug)]
pub struct RemoteState<'a> {
    pub key: &'a [u8],
    pub version: u64,
    pub flags: u32,
    pub exptime: u32,
    /// The replicated state bits (stale, binary key).
    pub meta: u8,
    pub value: Option<&'a [u8]>,
    /// The counter state of an incremented item (see `counter.rs` for the encoding).
    pub counter: Option<&'a [u8]>,
}

/// What applying a remote state did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was newer and is now the key's state.
    Applied,
    /// The local state is as new or newer (or a flush already covers it): ignored.
    Older,
    /// No memory for it (evictions off and the store full).
    NoMemory,
}

/// Where a full copy stands: shard, then arena position within it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyCursor {
    pub shard: usize,
    pub pos: u32,
}

/// FNV-1a over the key: the digest must be the same function on both nodes, so it cannot
/// use the randomly seeded table hash.
fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads (key, version) so that a sum of them is a good
/// order-independent fingerprint.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Orders a local state against a remote one with the same version: a tombstone below any
/// item, then by value, client flags, expiry and state bits.
fn content_order(s: shard::Slot<'_>, st: &RemoteState) -> std::cmp::Ordering {
    let local = (!s.is_tombstone()).then(|| s.value());
    let d = s.data();
    (
        local,
        item::flags(d),
        item::exptime(d),
        s.bits() & shard::REPLICATED_BITS,
    )
        .cmp(&(
            st.value,
            st.flags,
            st.exptime,
            st.meta & shard::REPLICATED_BITS,
        ))
}

/// Which of two states of a key survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Winner {
    Local,
    Remote,
    /// Two counters of the same base: their join.
    Merge,
}

/// States order by base version (an item's own version unless it is a counter, whose base
/// is the state it started from): a `set`, `delete` or flush after the base replaces the
/// counter whatever increments followed on the other node. Equal bases: two counters
/// merge, a counter beats the plain state it started from, two plain states fall back to
/// the version and content rule.
fn winner(s: shard::Slot<'_>, st: &RemoteState) -> Winner {
    let local_base = s.base_version();
    let remote_base = st
        .counter
        .and_then(counter::base_version_of)
        .unwrap_or(st.version);
    if remote_base != local_base {
        return if remote_base > local_base {
            Winner::Remote
        } else {
            Winner::Local
        };
    }
    match (s.counter().is_some(), st.counter.is_some()) {
        (true, true) => Winner::Merge,
        (false, true) => Winner::Remote,
        (true, false) => Winner::Local,
        (false, false) => {
            let local = item::version(s.data());
            // Equal versions only arise from client-chosen ones (meta `E`) used on both
            // nodes; the content then decides, the same way on both sides.
            if st.version > local
                || (st.version == local && content_order(s, st) == std::cmp::Ordering::Less)
            {
                Winner::Remote
            } else {
                Winner::Local
            }
        }
    }
}

/// Everything of a live counter state except the key, owned.
struct Merged {
    version: u64,
    flags: u32,
    exptime: u32,
    meta: u8,
    value: Vec<u8>,
    counter: Vec<u8>,
}

/// The join of a local and a remote counter state of the same base: the counters joined,
/// the higher version, flags/expiry/state bits of the state with the higher version. The
/// shown value is that state's if its counter already is the join (keeping memcached's
/// in-place padding); otherwise the join's number in plain digits. A function of the two
/// states alone, symmetric in them, so both nodes compute the same result.
fn merge(s: shard::Slot<'_>, st: &RemoteState) -> Option<Merged> {
    let lc = Counter::decode(s.counter()?)?;
    let rc = Counter::decode(st.counter?)?;
    let mut m = lc.clone();
    m.join(&rc);
    let d = s.data();
    let local = (
        item::version(d),
        s.value(),
        item::flags(d),
        item::exptime(d),
        s.bits() & shard::REPLICATED_BITS,
        lc == m,
    );
    let remote = (
        st.version,
        st.value.unwrap_or(&[]),
        st.flags,
        st.exptime,
        st.meta & shard::REPLICATED_BITS,
        rc == m,
    );
    // Ties (equal versions) go to the larger content, as for plain states.
    let hi = if (remote.0, remote.1, remote.2, remote.3, remote.4)
        > (local.0, local.1, local.2, local.3, local.4)
    {
        remote
    } else {
        local
    };
    let value = if hi.5 {
        hi.1.to_vec()
    } else {
        m.value().to_string().into_bytes()
    };
    Some(Merged {
        version: hi.0,
        flags: hi.2,
        exptime: hi.3,
        meta: hi.4,
        value,
        counter: m.encoded(),
    })
}

pub(super) fn state_of<'a>(store: &Store, s: shard::Slot<'a>) -> StateRef<'a> {
    if s.is_tombstone() {
        StateRef::Tombstone {
            key: s.key(),
            version: item::version(s.data()),
        }
    } else {
        StateRef::Live(store.item_ref(s))
    }
}

impl Store {
    pub fn node_id(&self) -> u8 {
        self.hlc.node()
    }

    /// Picks a new random node id different from `taken` and moves the clock to it.
    pub fn reroll_node_id(&self, taken: u8) -> u8 {
        let mut id = self.hlc.node();
        let mut seed = self.hlc.now_ms() ^ u64::from(std::process::id());
        while id == taken || id == 0 {
            seed = mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
            id = (seed & 0xff) as u8;
        }
        self.hlc.set_node(id);
        id
    }

    /// The clock's latest version (sent in heartbeats).
    pub fn clock_now(&self) -> u64 {
        self.hlc.next()
    }

    /// Advances the clock past a version seen from the peer.
    pub fn observe(&self, version: u64) {
        self.hlc.observe(version);
    }

    /// Sizes the tables for `items` more states spread over the shards (a full copy is about
    /// to arrive). Capped by the memory limit, so a bogus figure cannot reserve much.
    pub fn reserve(&self, items: u64) {
        // No state takes less than a slot, its share of the index and a minimal buffer.
        let fits = (self.memory_limit() / 64) as u64;
        let per_shard = (items.min(fits) / self.shards.len() as u64) as usize;
        let per_shard = per_shard + per_shard / 8;
        for i in 0..self.shards.len() {
            self.shard(i).reserve(per_shard);
        }
    }

    /// Tombstones deleted before `unix_secs` may be dropped by the background sweep.
    pub fn set_tombstone_horizon(&self, unix_secs: u32) {
        self.tomb_horizon.fetch_max(unix_secs, Ordering::Relaxed);
    }

    /// Calls `f` with the current state of `key` (a live item, an expired one that has not
    /// been swept yet, or a tombstone). Returns false when the store has nothing for it.
    pub fn read_state(&self, key: &[u8], _now: u32, f: impl FnOnce(StateRef)) -> bool {
        let (hash, si) = self.hash(key);
        let sh = self.shard(si);
        match sh.find(hash, key).and_then(|i| sh.slot(i)) {
            Some(s) => {
                f(state_of(self, s));
                true
            }
            None => false,
        }
    }

    /// Applies a peer's state if its version is higher than the local one: the rule that
    /// makes both nodes converge whatever the order, delay or duplication of states.
    pub fn apply(&self, st: RemoteState, now: u32) -> Applied {
        self.hlc.observe(st.version);
        if st.key.is_empty() || st.key.len() > item::MAX_KEY {
            return Applied::Older;
        }
        if st
            .counter
            .is_some_and(|c| !counter::encoding_valid(c) || st.value.is_none())
        {
            return Applied::Older;
        }
        // A flush the peer's state predates has already removed it here (pairs compare
        // flushes by version, so the access time passed is irrelevant; a counter by the
        // version it started from, like the item it would have flushed).
        let base = st
            .counter
            .and_then(counter::base_version_of)
            .unwrap_or(st.version);
        if self.pair && self.flush_view().flushed(0, base, now) {
            return Applied::Older;
        }
        let (hash, si) = self.hash(st.key);
        self.with_room(
            si,
            Applied::NoMemory,
            |sh, credit| self.apply_locked(sh, hash, &st, now, credit),
            now,
        )
    }

    fn apply_locked(
        &self,
        sh: &mut Shard,
        hash: u64,
        st: &RemoteState,
        now: u32,
        credit: &mut usize,
    ) -> Step<Applied> {
        let cur = sh.find(hash, st.key);
        let mut merged = None;
        if let Some(s) = cur.and_then(|i| sh.slot(i)) {
            match winner(s, st) {
                Winner::Local => return Step::Done(Applied::Older),
                Winner::Remote => {}
                Winner::Merge => {
                    let Some(m) = merge(s, st) else {
                        return Step::Done(Applied::Older);
                    };
                    let d = s.data();
                    let same = m.version == item::version(d)
                        && m.value == s.value()
                        && Some(&m.counter[..]) == s.counter()
                        && m.flags == item::flags(d)
                        && m.exptime == item::exptime(d)
                        && m.meta == s.bits() & shard::REPLICATED_BITS;
                    if same {
                        return Step::Done(Applied::Older);
                    }
                    merged = Some(m);
                }
            }
        }
        let parts = [st.value.unwrap_or(&[]), st.counter.unwrap_or(&[])];
        let (data, bits): (NewItem, u8) = match &merged {
            Some(m) => (
                item::build(
                    st.key,
                    &[&m.value, &m.counter],
                    m.version,
                    m.exptime,
                    m.flags,
                    now,
                )
                .into(),
                m.meta | BIT_COUNTER,
            ),
            None => {
                let bits = st.meta & shard::REPLICATED_BITS;
                let bits = if st.counter.is_some() {
                    bits | BIT_COUNTER
                } else {
                    bits
                };
                // The state's bytes are in the link's buffer, never in the store: the
                // item is written straight into its chunk.
                let draft = item::Draft {
                    key: st.key,
                    parts: &parts,
                    version: st.version,
                    exptime: st.exptime,
                    flags: st.flags,
                    time: now,
                };
                (draft.into(), bits)
            }
        };
        match self.link(sh, st.key, hash, cur, data, now, credit, Origin::Remote) {
            Step::Done(Some(i)) => {
                // link() leaves a new or replaced slot with no bits: only set ones need a write.
                if bits != 0 {
                    self.set_bits_of(sh, i, bits);
                }
                if st.value.is_none() {
                    sh.mark_tombstone(i);
                    sh.c.total_items = sh.c.total_items.saturating_sub(1);
                }
                Step::Done(Applied::Applied)
            }
            Step::Done(None) => Step::Done(Applied::NoMemory),
            Step::NeedRoom(b) => Step::NeedRoom(b),
        }
    }

    /// Visits up to `max` states (items, dead or alive, and tombstones) from `cursor` on,
    /// one shard lock held for the chunk. Returns true when the whole store was walked.
    pub fn copy_chunk(
        &self,
        cursor: &mut CopyCursor,
        max: usize,
        _now: u32,
        mut f: impl FnMut(StateRef),
    ) -> bool {
        let mut seen = 0;
        while cursor.shard < self.shards.len() {
            let sh = self.shard(cursor.shard);
            let end = sh.slot_count();
            while (cursor.pos as usize) < end {
                if seen == max {
                    return false;
                }
                sh.prefetch_ahead(cursor.pos);
                if let Some(s) = sh.slot(cursor.pos).filter(|s| s.live()) {
                    f(state_of(self, s));
                    seen += 1;
                }
                cursor.pos += 1;
            }
            cursor.shard += 1;
            cursor.pos = 0;
        }
        true
    }

    /// The number of live items and an order-independent digest over their (key, version,
    /// counter totals): equal on both nodes exactly when they hold the same items at the
    /// same versions (and incremented items with the same totals).
    pub fn digest(&self, now: u32) -> (u64, u64) {
        let flush = self.flush_view();
        let (mut count, mut sum) = (0u64, 0u64);
        for i in 0..self.shards.len() {
            let sh = self.shard(i);
            for pos in 0..sh.slot_count() {
                sh.prefetch_ahead(pos as u32);
                let Some(s) = sh.slot(pos as u32) else {
                    continue;
                };
                if !s.live() || s.is_tombstone() || shard::dead(s, now, &flush).is_some() {
                    continue;
                }
                count += 1;
                // A counter's totals are part of its identity: two nodes can hold the same
                // version with different totals until the last states have crossed.
                let v = item::version(s.data()) ^ s.counter().map_or(0, key_hash);
                sum = sum.wrapping_add(mix(key_hash(s.key()) ^ mix(v)));
            }
        }
        (count, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::Rng;
    use crate::storage::{hlc, ArithOutcome, FlushState, StoreCmd, StoreConfig};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const NOW: u32 = 1_700_000_000;

    /// A pair-mode store with its own node id on a shared manual clock.
    fn node(id: u8, clock: &Arc<AtomicU64>) -> Store {
        let c = Arc::clone(clock);
        let cfg = StoreConfig {
            memory_limit: 64 << 20,
            evictions: true,
            item_size_max: 1 << 20,
            cas_enabled: true,
            shards: 4,
            node_id: id,
        };
        Store::new(cfg)
            .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
            .replicated()
    }

    /// An owned copy of a state, as it would sit in a frame in flight.
    #[derive(Clone, Debug)]
    struct Msg {
        key: Vec<u8>,
        version: u64,
        flags: u32,
        exptime: u32,
        value: Option<Vec<u8>>,
        counter: Option<Vec<u8>>,
    }

    fn capture(s: &Store, key: &[u8]) -> Option<Msg> {
        let mut out = None;
        s.read_state(key, NOW, |st| {
            out = Some(match st {
                StateRef::Live(it) => Msg {
                    key: it.key.to_vec(),
                    version: it.version,
                    flags: it.flags,
                    exptime: it.exptime,
                    value: Some(it.value.to_vec()),
                    counter: it.counter.map(<[u8]>::to_vec),
                },
                StateRef::Tombstone { key, version } => Msg {
                    key: key.to_vec(),
                    version,
                    flags: 0,
                    exptime: 0,
                    value: None,
                    counter: None,
                },
            })
        });
        out
    }

    fn deliver(s: &Store, m: &Msg) -> Applied {
        s.apply(
            RemoteState {
                key: &m.key,
                version: m.version,
                flags: m.flags,
                exptime: m.exptime,
                meta: 0,
                value: m.value.as_deref(),
                counter: m.counter.as_deref(),
            },
            NOW,
        )
    }

    /// One random client operation on `s`; returns the key it touched.
    fn random_op(s: &Store, rng: &mut Rng) -> Vec<u8> {
        let key = format!("k{}", rng.below(12)).into_bytes();
        let v = format!("{}", rng.below(1000)).into_bytes();
        match rng.below(8) {
            0..=2 => {
                s.store(StoreCmd::Set, &key, rng.below(4) as u32, 0, &v, 0, NOW);
            }
            3 => {
                s.delete(&key, NOW);
            }
            4 => {
                s.store(StoreCmd::Append, &key, 0, 0, b"+", 0, NOW);
            }
            5 => {
                s.arith(&key, true, 1 + rng.below(5), NOW);
            }
            6 => {
                s.touch(&key, 1000 + rng.below(100) as i32, NOW);
            }
            _ => {
                s.store(StoreCmd::Add, &key, 0, 0, &v, 0, NOW);
            }
        }
        key
    }

    fn full_state(s: &Store) -> Vec<(Vec<u8>, u64, Option<Vec<u8>>)> {
        let mut all = Vec::new();
        let mut cur = CopyCursor::default();
        while !s.copy_chunk(&mut cur, 7, NOW, |st| match st {
            StateRef::Live(it) => all.push((it.key.to_vec(), it.version, Some(it.value.to_vec()))),
            StateRef::Tombstone { key, version } => all.push((key.to_vec(), version, None)),
        }) {}
        all.sort();
        all
    }

    #[test]
    fn any_delivery_order_with_duplicates_converges() {
        for seed in 1..=40u64 {
            let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
            let (a, b) = (node(1, &clock), node(2, &clock));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
            for _ in 0..300 {
                // Both nodes write concurrently: some steps share a millisecond.
                if rng.below(3) == 0 {
                    clock.fetch_add(1, Ordering::SeqCst);
                }
                let (src, out) = if rng.below(2) == 0 {
                    (&a, &mut to_b)
                } else {
                    (&b, &mut to_a)
                };
                let key = random_op(src, &mut rng);
                if let Some(m) = capture(src, &key) {
                    out.push(m);
                }
                // Some messages arrive early, interleaved with new writes.
                if rng.below(4) == 0 && !to_b.is_empty() {
                    let m = to_b.remove(rng.below(to_b.len() as u64) as usize);
                    deliver(&b, &m);
                }
            }
            // Shuffle, duplicate, deliver.
            for (dst, msgs) in [(&b, &mut to_b), (&a, &mut to_a)] {
                let mut copies = msgs.clone();
                copies.extend(msgs.iter().filter(|_| rng.below(3) == 0).cloned());
                while !copies.is_empty() {
                    let m = copies.swap_remove(rng.below(copies.len() as u64) as usize);
                    deliver(dst, &m);
                }
            }
            assert_eq!(a.digest(NOW), b.digest(NOW), "seed {seed}: digests differ");
            assert_eq!(full_state(&a), full_state(&b), "seed {seed}: states differ");
        }
    }

    #[test]
    fn applying_is_idempotent_and_keeps_the_higher_version() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let (a, b) = (node(1, &clock), node(2, &clock));
        a.store(StoreCmd::Set, b"k", 0, 0, b"old", 0, NOW);
        let old = capture(&a, b"k").expect("state");
        clock.fetch_add(5, Ordering::SeqCst);
        a.store(StoreCmd::Set, b"k", 0, 0, b"new", 0, NOW);
        let new = capture(&a, b"k").expect("state");
        assert_eq!(deliver(&b, &new), Applied::Applied);
        assert_eq!(
            deliver(&b, &new),
            Applied::Older,
            "a duplicate changes nothing"
        );
        assert_eq!(
            deliver(&b, &old),
            Applied::Older,
            "a late older state loses"
        );
        assert_eq!(a.digest(NOW), b.digest(NOW));
        // The receiver's clock moved past what it saw: its next write orders after it.
        b.store(StoreCmd::Set, b"k", 0, 0, b"b", 0, NOW);
        assert!(capture(&b, b"k").expect("state").version > new.version);
    }

    #[test]
    fn tombstones_stop_older_states_and_stay_invisible() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let (a, b) = (node(1, &clock), node(2, &clock));
        a.store(StoreCmd::Set, b"k", 0, 0, b"v", 0, NOW);
        let live = capture(&a, b"k").expect("state");
        clock.fetch_add(1, Ordering::SeqCst);
        assert!(a.delete(b"k", NOW));
        let tomb = capture(&a, b"k").expect("tombstone");
        assert!(tomb.value.is_none() && tomb.version > live.version);
        // B hears of the delete before the set it follows.
        assert_eq!(deliver(&b, &tomb), Applied::Applied);
        assert_eq!(deliver(&b, &live), Applied::Older);
        for s in [&a, &b] {
            assert_eq!(s.get(b"k", NOW, |_| ()).1, None);
            assert!(!s.delete(b"k", NOW), "a tombstone is not an item");
            assert_eq!(s.stats(NOW).curr_items, 0);
            assert_eq!(s.stats(NOW).tombstones, 1);
        }
        // A new write takes the tombstone's place.
        assert_eq!(
            b.store(StoreCmd::Add, b"k", 0, 0, b"again", 0, NOW),
            crate::storage::StoreOutcome::Stored
        );
        assert_eq!(b.stats(NOW).tombstones, 0);
        assert_eq!(b.stats(NOW).curr_items, 1);
    }

    #[test]
    fn reserve_sizes_tables_without_changing_contents() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let a = node(1, &clock);
        a.store(StoreCmd::Set, b"k", 0, 0, b"v", 0, NOW);
        let before = a.digest(NOW);
        a.reserve(100_000);
        assert!(a.stats(NOW).hash_bytes > 100_000);
        assert_eq!(a.digest(NOW), before);
        for i in 0..1000 {
            a.store(
                StoreCmd::Set,
                format!("k{i}").as_bytes(),
                0,
                0,
                b"v",
                0,
                NOW,
            );
        }
        assert_eq!(a.digest(NOW).0, 1001);
        // A huge announced count is capped by the memory limit.
        a.reserve(u64::MAX);
    }

    #[test]
    fn tombstones_past_the_horizon_are_swept() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let a = node(1, &clock);
        a.store(StoreCmd::Set, b"k", 0, 0, b"v", 0, NOW);
        a.delete(b"k", NOW);
        for _ in 0..8 {
            a.reap(NOW + 100);
        }
        assert_eq!(
            a.stats(NOW).tombstones,
            1,
            "kept until replication says it is safe"
        );
        a.set_tombstone_horizon(NOW + 1);
        for _ in 0..8 {
            a.reap(NOW + 100);
        }
        assert_eq!(a.stats(NOW).tombstones, 0);
        assert_eq!(a.used_bytes(), 0);
    }

    #[test]
    fn a_replicated_flush_removes_older_states_on_both_nodes() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let (a, b) = (node(1, &clock), node(2, &clock));
        a.store(StoreCmd::Set, b"old", 0, 0, b"v", 0, NOW);
        let old = capture(&a, b"old").expect("state");
        clock.fetch_add(1, Ordering::SeqCst);
        a.flush_all(0, NOW);
        let fs: FlushState = a.flush_state();
        b.apply_flush_state(fs);
        assert_eq!(
            deliver(&b, &old),
            Applied::Older,
            "a state the flush predates"
        );
        clock.fetch_add(1, Ordering::SeqCst);
        a.store(StoreCmd::Set, b"new", 0, 0, b"v", 0, NOW);
        assert_eq!(
            deliver(&b, &capture(&a, b"new").expect("state")),
            Applied::Applied
        );
        assert_eq!(a.digest(NOW), b.digest(NOW));
        assert_eq!(b.digest(NOW).0, 1);
    }

    #[test]
    fn touch_takes_a_new_version_in_a_pair() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let (a, b) = (node(1, &clock), node(2, &clock));
        a.store(StoreCmd::Set, b"k", 0, 0, b"v", 0, NOW);
        deliver(&b, &capture(&a, b"k").expect("state"));
        a.touch(b"k", 100, NOW);
        let touched = capture(&a, b"k").expect("state");
        assert_eq!(deliver(&b, &touched), Applied::Applied);
        assert_eq!(capture(&b, b"k").expect("state").exptime, NOW + 100);
        let _ = hlc::node_of(touched.version);
    }

    #[test]
    fn node_ids_can_move_and_versions_keep_rising() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let a = node(7, &clock);
        let before = a.clock_now();
        let id = a.reroll_node_id(7);
        assert_ne!(id, 7);
        assert_ne!(id, 0);
        let after = a.clock_now();
        assert!(after > before);
        assert_eq!(hlc::node_of(after), id);
    }

    fn value_of(s: &Store, key: &[u8]) -> Option<Vec<u8>> {
        s.get(key, NOW, |it| it.value.to_vec()).1
    }

    /// Delivers every message of `msgs` to `dst` in a random order, some twice.
    fn deliver_shuffled(dst: &Store, msgs: &[Msg], rng: &mut Rng) {
        let mut copies = msgs.to_vec();
        copies.extend(msgs.iter().filter(|_| rng.below(3) == 0).cloned());
        while !copies.is_empty() {
            let m = copies.swap_remove(rng.below(copies.len() as u64) as usize);
            deliver(dst, &m);
        }
    }

    #[test]
    fn concurrent_increments_on_both_nodes_all_survive() {
        for seed in 1..=30u64 {
            let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
            let (a, b) = (node(1, &clock), node(2, &clock));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            a.store(StoreCmd::Set, b"n", 5, 0, b"1000", 0, NOW);
            deliver(&b, &capture(&a, b"n").expect("state"));
            let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
            let mut net: i64 = 1000;
            for _ in 0..500 {
                if rng.below(2) == 0 {
                    clock.fetch_add(1, Ordering::SeqCst);
                }
                let (src, dst, out) = if rng.below(2) == 0 {
                    (&a, &b, &mut to_b)
                } else {
                    (&b, &a, &mut to_a)
                };
                let d = rng.below(4);
                if rng.below(4) == 0 {
                    src.arith(b"n", false, d, NOW);
                    net -= d as i64;
                } else {
                    src.arith(b"n", true, d, NOW);
                    net += d as i64;
                }
                if rng.below(3) == 0 {
                    out.push(capture(src, b"n").expect("state"));
                }
                if rng.below(10) == 0 {
                    deliver(dst, &capture(src, b"n").expect("state"));
                }
            }
            to_b.push(capture(&a, b"n").expect("state"));
            to_a.push(capture(&b, b"n").expect("state"));
            deliver_shuffled(&b, &to_b, &mut rng);
            deliver_shuffled(&a, &to_a, &mut rng);
            let (va, vb) = (capture(&a, b"n"), capture(&b, b"n"));
            let (va, vb) = (va.expect("a"), vb.expect("b"));
            assert_eq!(a.digest(NOW), b.digest(NOW), "seed {seed}");
            assert_eq!(va.version, vb.version, "seed {seed}");
            assert_eq!(va.value, vb.value, "seed {seed}");
            assert_eq!(va.counter, vb.counter, "seed {seed}");
            assert_eq!(va.flags, 5, "flags survive the counter");
            let shown = va.value.expect("live");
            let n: i64 = String::from_utf8_lossy(&shown)
                .trim_end()
                .parse()
                .expect("n");
            assert_eq!(n, net, "seed {seed}: the exact net total");
        }
    }

    #[test]
    fn a_set_after_the_base_replaces_the_counter_on_both_nodes() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let (a, b) = (node(1, &clock), node(2, &clock));
        a.store(StoreCmd::Set, b"n", 0, 0, b"10", 0, NOW);
        deliver(&b, &capture(&a, b"n").expect("state"));
        clock.fetch_add(1, Ordering::SeqCst);
        a.arith(b"n", true, 1, NOW);
        clock.fetch_add(1, Ordering::SeqCst);
        // The set on B is newer than the base but older than B's later increments.
        b.store(StoreCmd::Set, b"n", 0, 0, b"500", 0, NOW);
        clock.fetch_add(1, Ordering::SeqCst);
        a.arith(b"n", true, 1, NOW);
        let (sa, sb) = (capture(&a, b"n").expect("a"), capture(&b, b"n").expect("b"));
        assert!(sa.version > sb.version, "A's counter state is the newest");
        assert_eq!(deliver(&a, &sb), Applied::Applied, "the set wins by base");
        assert_eq!(deliver(&b, &sa), Applied::Older);
        assert_eq!(value_of(&a, b"n"), Some(b"500".to_vec()));
        assert_eq!(a.digest(NOW), b.digest(NOW));
        // Counting starts again from the set's value, on both nodes.
        a.arith(b"n", true, 2, NOW);
        b.arith(b"n", true, 3, NOW);
        deliver(&b, &capture(&a, b"n").expect("a"));
        deliver(&a, &capture(&b, b"n").expect("b"));
        assert_eq!(value_of(&a, b"n"), Some(b"505".to_vec()));
        assert_eq!(value_of(&b, b"n"), Some(b"505".to_vec()));
        assert_eq!(a.digest(NOW), b.digest(NOW));
        // A delete wins over increments on the old base too.
        clock.fetch_add(1, Ordering::SeqCst);
        assert!(a.delete(b"n", NOW));
        b.arith(b"n", true, 1, NOW);
        deliver(&b, &capture(&a, b"n").expect("a"));
        deliver(&a, &capture(&b, b"n").expect("b"));
        assert_eq!(value_of(&a, b"n"), None);
        assert_eq!(value_of(&b, b"n"), None);
    }

    #[test]
    fn a_flush_removes_counters_started_before_it() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let (a, b) = (node(1, &clock), node(2, &clock));
        a.store(StoreCmd::Set, b"n", 0, 0, b"1", 0, NOW);
        deliver(&b, &capture(&a, b"n").expect("state"));
        clock.fetch_add(1, Ordering::SeqCst);
        a.flush_all(0, NOW);
        clock.fetch_add(1, Ordering::SeqCst);
        // B increments after the flush, before hearing of it.
        b.arith(b"n", true, 1, NOW);
        let late = capture(&b, b"n").expect("b");
        assert_eq!(deliver(&a, &late), Applied::Older);
        b.apply_flush_state(a.flush_state());
        assert_eq!(value_of(&b, b"n"), None);
        assert_eq!(a.digest(NOW), b.digest(NOW));
    }

    #[test]
    fn the_shown_value_keeps_memcacheds_padding_and_plain_items_pay_nothing() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let a = node(1, &clock);
        a.store(StoreCmd::Set, b"n", 0, 0, b"10", 0, NOW);
        let plain = a.used_bytes();
        assert_eq!(capture(&a, b"n").expect("state").counter, None);
        assert_eq!(a.arith(b"n", false, 1, NOW), ArithOutcome::Value(9));
        assert_eq!(value_of(&a, b"n"), Some(b"9 ".to_vec()));
        assert!(a.used_bytes() > plain, "the counter is paid for");
        assert_eq!(a.arith(b"n", true, 991, NOW), ArithOutcome::Value(1000));
        assert_eq!(value_of(&a, b"n"), Some(b"1000".to_vec()));
        assert_eq!(a.arith(b"n", false, 2000, NOW), ArithOutcome::Value(0));
        assert_eq!(value_of(&a, b"n"), Some(b"0   ".to_vec()));
        // A set makes it a plain item again.
        a.store(StoreCmd::Set, b"n", 0, 0, b"10", 0, NOW);
        assert_eq!(a.used_bytes(), plain);
        assert_eq!(capture(&a, b"n").expect("state").counter, None);
        // An append does too, and the counter bytes never show.
        a.arith(b"n", true, 1, NOW);
        a.store(StoreCmd::Append, b"n", 0, 0, b"x", 0, NOW);
        assert_eq!(value_of(&a, b"n"), Some(b"11x".to_vec()));
        assert_eq!(capture(&a, b"n").expect("state").counter, None);
        // A touch keeps the counter.
        a.store(StoreCmd::Set, b"t", 0, 0, b"1", 0, NOW);
        a.arith(b"t", true, 1, NOW);
        assert!(a.touch(b"t", 100, NOW));
        assert!(capture(&a, b"t").expect("state").counter.is_some());
        assert_eq!(value_of(&a, b"t"), Some(b"2".to_vec()));
        // Outside a pair, incr keeps no counter at all.
        let single = Store::new(StoreConfig {
            memory_limit: 1 << 20,
            evictions: true,
            item_size_max: 1 << 20,
            cas_enabled: true,
            shards: 1,
            node_id: 1,
        });
        single.store(StoreCmd::Set, b"n", 0, 0, b"10", 0, NOW);
        let before = single.used_bytes();
        single.arith(b"n", true, 1, NOW);
        assert_eq!(single.used_bytes(), before);
        assert_eq!(capture(&single, b"n").expect("state").counter, None);
    }

    #[test]
    fn a_corrupt_counter_state_is_ignored() {
        let clock = Arc::new(AtomicU64::new(u64::from(NOW) * 1_000_000));
        let a = node(1, &clock);
        let st = RemoteState {
            key: b"k",
            version: 5,
            flags: 0,
            exptime: 0,
            meta: 0,
            value: Some(b"1"),
            counter: Some(&[1, 2, 3]),
        };
        assert_eq!(a.apply(st, NOW), Applied::Older);
        assert_eq!(value_of(&a, b"k"), None);
    }
}
