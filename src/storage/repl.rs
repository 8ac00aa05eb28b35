//! The store as replication sees it: reading a key's whole state (item or tombstone),
//! applying a peer's state by last-writer-wins on the version, walking every state for a
//! full copy in bounded chunks, and the convergence digest.

use std::sync::atomic::Ordering;

use super::item;
use super::shard::{self, Shard};
use super::store::{ItemRef, Step, Store};

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
    pub value: Option<&'a [u8]>,
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

fn state_of<'a>(store: &Store, s: &'a shard::Slot) -> StateRef<'a> {
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
        // A flush the peer's state predates has already removed it here (pairs compare
        // flushes by version, so the access time passed is irrelevant).
        if self.pair && self.flush_view().flushed(0, st.version, now) {
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
        if let Some(s) = cur.and_then(|i| sh.slot(i)) {
            if item::version(s.data()) >= st.version {
                return Step::Done(Applied::Older);
            }
        }
        let value = st.value.unwrap_or(&[]);
        let data = item::build(st.key, &[value], st.version, st.exptime, st.flags, now);
        match self.link(sh, st.key, hash, cur, data, now, credit, true) {
            Step::Done(true) => {
                if st.value.is_none() {
                    if let Some(i) = sh.find(hash, st.key) {
                        sh.mark_tombstone(i);
                        sh.c.total_items = sh.c.total_items.saturating_sub(1);
                    }
                }
                Step::Done(Applied::Applied)
            }
            Step::Done(false) => Step::Done(Applied::NoMemory),
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

    /// The number of live items and an order-independent digest over their (key, version):
    /// equal on both nodes exactly when they hold the same items at the same versions.
    pub fn digest(&self, now: u32) -> (u64, u64) {
        let flush = self.flush_view();
        let (mut count, mut sum) = (0u64, 0u64);
        for i in 0..self.shards.len() {
            let sh = self.shard(i);
            for pos in 0..sh.slot_count() {
                let Some(s) = sh.slot(pos as u32) else {
                    continue;
                };
                if !s.live() || s.is_tombstone() || shard::dead(s.data(), now, &flush).is_some() {
                    continue;
                }
                count += 1;
                sum = sum.wrapping_add(mix(key_hash(s.key()) ^ mix(item::version(s.data()))));
            }
        }
        (count, sum)
    }
}
