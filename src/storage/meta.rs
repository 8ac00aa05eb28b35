//! The store operations behind the meta commands that classic commands have no equivalent
//! for: get with vivify/recache/stale state, invalidating delete, arithmetic with
//! auto-create and compare, and the debug view. Every write goes through the same
//! versioned link path as classic writes, so it replicates the same way.

use super::item;
use super::shard::{Shard, BIT_COUNTER, BIT_FETCHED, BIT_KEY_BINARY, BIT_STALE, BIT_WIN_SENT};
use super::store::{ItemRef, Lookup, Origin, Step, Store};

/// What `mg` asks of the store besides the lookup.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetOpts {
    /// `u`: leave the LRU position, access time and fetched mark alone.
    pub no_update: bool,
    /// `T` is present: in a pair the item takes a new version, so the new expiry wins on
    /// the peer too (memcached keeps the CAS; a single node does too).
    pub touch: bool,
    /// `N`: create an empty item on a miss.
    pub vivify: bool,
    /// `E`: the version a created or touched item takes, when above its current one.
    pub version: Option<u64>,
    /// The key came base64-encoded.
    pub key_binary: bool,
}

/// An item as `mg` sees it. The caller may change `exptime` (T, N) and set `won`; the
/// store writes both back when the callback returns.
#[derive(Debug)]
pub struct GetView<'a> {
    pub item: ItemRef<'a>,
    /// The item was created by this request (`N` on a miss).
    pub created: bool,
    pub stale: bool,
    /// A recache win was handed out before this request.
    pub win_sent: bool,
    pub key_binary: bool,
    /// Absolute unix seconds, 0 = never; starts as the item's.
    pub exptime: u32,
    /// Set by the caller when this request wins the recache.
    pub won: bool,
}

/// The outcome of `md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted, invalidated or emptied.
    Done,
    NotFound,
    /// The compare CAS did not match, or the chosen version is not above the current one.
    Exists,
}

/// What `md` asks for besides deletion.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteOpts {
    /// `C`: only when the item's CAS is this.
    pub compare: Option<u64>,
    /// `I`: mark stale and take a new version instead of deleting.
    pub invalidate: bool,
    /// `x`: keep the item but empty its value.
    pub remove_value: bool,
    /// `T` with `I`: a new exptime (absolute unix seconds).
    pub exptime: Option<u32>,
    /// `E`: the version the change takes.
    pub version: Option<u64>,
}

/// What `ma` asks for besides the delta.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArithOpts {
    /// `C`: only when the item's CAS is this (0 = no check, as memcached).
    pub compare: u64,
    /// `N` with `J`: on a miss, create the item with this value.
    pub vivify: Option<u64>,
    /// The exptime an existing item ends with (`T`), if it changes.
    pub exptime: Option<u32>,
    /// The exptime a created item ends with (`N`/`T`, the later one in the request).
    pub created_exptime: u32,
    /// `E`: the version the change takes.
    pub version: Option<u64>,
}

/// The outcome of `ma`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaArith {
    Value {
        value: u64,
        /// The CAS the item shows after the change.
        cas: u64,
        /// The exptime before this request's `T` (0 for a created item).
        exptime_before: u32,
        created: bool,
    },
    NotFound,
    Exists,
    NonNumeric,
    OutOfMemory,
}

/// What `me` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugView {
    pub key: Vec<u8>,
    pub key_binary: bool,
    pub exptime: u32,
    pub last_access: u32,
    pub cas: u64,
    pub fetched: bool,
    pub value_len: usize,
    pub flags: u32,
}

impl Store {
    fn shown(&self, version: u64) -> u64 {
        if self.cfg.cas_enabled {
            version
        } else {
            0
        }
    }

    /// `mg`: looks `key` up (creating it on a miss with `opts.vivify`) and calls `f` with
    /// the item; afterwards writes back the exptime and win the callback chose and, unless
    /// `no_update`, records the access. The lookup result counts a created item as a hit.
    pub fn meta_get<R>(
        &self,
        key: &[u8],
        opts: &GetOpts,
        now: u32,
        f: impl FnOnce(&mut GetView) -> R,
    ) -> (Lookup, Option<R>) {
        let (hash, si) = self.hash(key);
        let mut f = Some(f);
        self.with_room(
            si,
            (Lookup::Miss, None),
            |sh, credit| {
                let (i, created) = match self.find_or_vivify(sh, hash, key, opts, now, credit) {
                    Step::Done(Ok(x)) => x,
                    Step::Done(Err(l)) => return Step::Done((l, None)),
                    Step::NeedRoom(b) => return Step::NeedRoom(b),
                };
                let r = f
                    .take()
                    .map(|f| self.meta_get_hit(sh, i, created, key, opts, now, f));
                Step::Done((Lookup::Hit, r))
            },
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn meta_get_hit<R>(
        &self,
        sh: &mut Shard,
        i: u32,
        created: bool,
        key: &[u8],
        opts: &GetOpts,
        now: u32,
        f: impl FnOnce(&mut GetView) -> R,
    ) -> R {
        let retouch = opts.touch && self.pair && !created;
        if retouch {
            let cur = sh.slot(i).map(|s| item::version(s.data())).unwrap_or(0);
            let v = match opts.version {
                Some(v) if v > cur => v,
                _ => self.version_after(cur),
            };
            if let Some(mut s) = sh.slot_mut(i) {
                item::set_version(s.data_mut(), v);
            }
        }
        let (r, new_exp, exptime, won) = match sh.slot(i) {
            Some(s) => {
                let bits = s.bits();
                let exptime = item::exptime(s.data());
                let mut view = GetView {
                    item: self.item_ref(s),
                    created,
                    stale: bits & BIT_STALE != 0,
                    win_sent: bits & BIT_WIN_SENT != 0,
                    key_binary: bits & BIT_KEY_BINARY != 0,
                    exptime,
                    won: false,
                };
                let r = f(&mut view);
                (r, view.exptime, exptime, view.won)
            }
            None => {
                // Unreachable: the caller found or created slot i under this lock.
                let empty = ItemRef {
                    key,
                    value: &[],
                    flags: 0,
                    exptime: 0,
                    version: 0,
                    cas: 0,
                    last_access: now,
                    fetched: false,
                    repl_bits: 0,
                    counter: None,
                };
                let mut view = GetView {
                    item: empty,
                    created,
                    stale: false,
                    win_sent: false,
                    key_binary: false,
                    exptime: 0,
                    won: false,
                };
                (f(&mut view), 0, 0, false)
            }
        };
        let mut changed = retouch;
        if new_exp != exptime {
            sh.set_exptime(i, new_exp);
            changed |= self.pair;
        }
        if won {
            if let Some(mut s) = sh.slot_mut(i) {
                s.set_bits(s.bits() | BIT_WIN_SENT);
            }
        }
        if !opts.no_update {
            Self::touch_access(sh, i, now);
        }
        if changed {
            self.notify(sh, self.hash(key).0, key);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn find_or_vivify(
        &self,
        sh: &mut Shard,
        hash: u64,
        key: &[u8],
        opts: &GetOpts,
        now: u32,
        credit: &mut usize,
    ) -> Step<Result<(u32, bool), Lookup>> {
        let miss = match self.lookup(sh, hash, key, now) {
            Ok(i) => return Step::Done(Ok((i, false))),
            Err(l) => l,
        };
        if !opts.vivify {
            return Step::Done(Err(miss));
        }
        let tomb = sh.find(hash, key);
        let cur = tomb
            .and_then(|i| sh.slot(i))
            .map(|s| item::version(s.data()))
            .unwrap_or(0);
        let mut data = item::build(key, &[], 0, 0, 0, now);
        let origin = match opts.version {
            Some(v) if v > cur => {
                item::set_version(&mut data, v);
                Origin::LocalVersioned
            }
            _ => Origin::Local,
        };
        let bits = if opts.key_binary { BIT_KEY_BINARY } else { 0 };
        self.link(sh, key, hash, tomb, data, now, credit, origin)
            .map_done(|at| {
                let i = at.ok_or(miss)?;
                self.set_bits_of(sh, i, bits);
                Ok((i, true))
            })
    }

    /// `md`: deletes, invalidates (`I`) or empties (`x`) a live item.
    pub fn meta_delete(&self, key: &[u8], opts: &DeleteOpts, now: u32) -> DeleteOutcome {
        let (hash, si) = self.hash(key);
        let mut sh = self.shard(si);
        let Ok(i) = self.lookup(&mut sh, hash, key, now) else {
            return DeleteOutcome::NotFound;
        };
        let Some(s) = sh.slot(i) else {
            return DeleteOutcome::NotFound;
        };
        let cur = item::version(s.data());
        if opts.compare.is_some_and(|c| c != self.shown(cur)) {
            return DeleteOutcome::Exists;
        }
        let version = match opts.version {
            Some(v) if v <= cur => return DeleteOutcome::Exists,
            Some(v) => v,
            None => self.version_after(cur),
        };
        if !opts.invalidate && !opts.remove_value {
            self.unlink_versioned(&mut sh, i, now, version);
            self.notify(&mut sh, hash, key);
            return DeleteOutcome::Done;
        }
        let old_bits = s.bits();
        let mut exptime = item::exptime(s.data());
        let mut bits = old_bits & BIT_KEY_BINARY;
        if opts.invalidate {
            exptime = opts.exptime.unwrap_or(exptime);
            // The win token is cleared so the next reader can win the recache.
            bits |= BIT_STALE;
        } else {
            bits |= old_bits & (BIT_STALE | BIT_WIN_SENT);
        }
        if opts.remove_value {
            let data = item::build(s.key(), &[], version, exptime, item::flags(s.data()), now);
            // None: no page number left (see `arena::MAX_PAGES`); the value stays, and the
            // rest of the delete still applies.
            if let Some(old_cost) = sh.replace(i, data) {
                let new_cost = sh.slot(i).map(|s| s.cost()).unwrap_or(0);
                // An empty value is never larger than the one it replaces.
                self.release(old_cost.saturating_sub(new_cost));
                // replace() counted a stored item; emptying one is not a store.
                sh.c.total_items = sh.c.total_items.saturating_sub(1);
            }
        }
        let mut grow = false;
        if let Some(mut s) = sh.slot_mut(i) {
            let d = s.data_mut();
            item::set_version(d, version);
            grow = !item::set_exptime(d, exptime);
            let keep = s.bits() & (BIT_FETCHED | BIT_COUNTER);
            s.set_bits(keep | bits);
        }
        if grow {
            sh.set_exptime(i, exptime);
        }
        self.notify(&mut sh, hash, key);
        DeleteOutcome::Done
    }

    /// `ma`: memcached's do_add_delta plus auto-create, compare and TTL.
    pub fn meta_arith(
        &self,
        key: &[u8],
        incr: bool,
        delta: u64,
        opts: &ArithOpts,
        now: u32,
    ) -> MetaArith {
        let (hash, si) = self.hash(key);
        self.with_room(
            si,
            MetaArith::OutOfMemory,
            |sh, credit| self.meta_arith_locked(sh, hash, key, incr, delta, opts, now, credit),
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn meta_arith_locked(
        &self,
        sh: &mut Shard,
        hash: u64,
        key: &[u8],
        incr: bool,
        delta: u64,
        opts: &ArithOpts,
        now: u32,
        credit: &mut usize,
    ) -> Step<MetaArith> {
        let i = match self.lookup(sh, hash, key, now) {
            Ok(i) => i,
            Err(_) => return self.arith_vivify(sh, hash, key, opts, now, credit),
        };
        let Some(s) = sh.slot(i) else {
            return Step::Done(MetaArith::NotFound);
        };
        let cur = item::version(s.data());
        // memcached's order: an empty value is non-numeric before the CAS is compared.
        if s.value().is_empty() {
            return Step::Done(MetaArith::NonNumeric);
        }
        if opts.compare != 0 && opts.compare != self.shown(cur) {
            return Step::Done(MetaArith::Exists);
        }
        let Some(n) = item::parse_number(s.value()) else {
            return Step::Done(MetaArith::NonNumeric);
        };
        let version = match opts.version {
            Some(v) if v <= cur => return Step::Done(MetaArith::Exists),
            Some(v) => v,
            None => self.version_after(cur),
        };
        let exptime_before = item::exptime(s.data());
        let exptime = opts.exptime.unwrap_or(exptime_before);
        if self.pair {
            let op = (incr, delta);
            return self
                .counter_arith(sh, hash, key, i, op, n, version, exptime, now, credit)
                .map_done(|r| match r {
                    Some(value) => MetaArith::Value {
                        value,
                        cas: self.shown(version),
                        exptime_before,
                        created: false,
                    },
                    None => MetaArith::OutOfMemory,
                });
        }
        let value = if incr {
            n.wrapping_add(delta)
        } else {
            n.saturating_sub(delta)
        };
        let digits = value.to_string();
        if digits.len() <= s.value().len() {
            let mut grow = false;
            if let Some(mut s) = sh.slot_mut(i) {
                let klen = s.klen();
                let d = s.data_mut();
                item::set_version(d, version);
                item::set_time(d, now);
                grow = !item::set_exptime(d, exptime);
                let val = item::value_mut(d, klen);
                let (num, pad) = val.split_at_mut(digits.len());
                num.copy_from_slice(digits.as_bytes());
                pad.fill(b' ');
            }
            if grow {
                sh.set_exptime(i, exptime);
            }
            sh.bump(i);
            self.notify(sh, hash, key);
        } else {
            let data = item::build(
                key,
                &[digits.as_bytes()],
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
                Step::Done(Some(_)) => {}
                Step::Done(None) => return Step::Done(MetaArith::OutOfMemory),
                Step::NeedRoom(b) => return Step::NeedRoom(b),
            }
        }
        Step::Done(MetaArith::Value {
            value,
            cas: self.shown(version),
            exptime_before,
            created: false,
        })
    }

    fn arith_vivify(
        &self,
        sh: &mut Shard,
        hash: u64,
        key: &[u8],
        opts: &ArithOpts,
        now: u32,
        credit: &mut usize,
    ) -> Step<MetaArith> {
        let Some(initial) = opts.vivify else {
            return Step::Done(MetaArith::NotFound);
        };
        let tomb = sh.find(hash, key);
        let cur = tomb
            .and_then(|i| sh.slot(i))
            .map(|s| item::version(s.data()))
            .unwrap_or(0);
        let digits = initial.to_string();
        let mut data = item::build(key, &[digits.as_bytes()], 0, opts.created_exptime, 0, now);
        let origin = match opts.version {
            Some(v) if v <= cur => return Step::Done(MetaArith::Exists),
            Some(v) => {
                item::set_version(&mut data, v);
                Origin::LocalVersioned
            }
            None => Origin::Local,
        };
        self.link(sh, key, hash, tomb, data, now, credit, origin)
            .map_done(|at| {
                let Some(i) = at else {
                    return MetaArith::OutOfMemory;
                };
                let version = self.set_bits_of(sh, i, 0);
                MetaArith::Value {
                    value: initial,
                    cas: self.shown(version),
                    exptime_before: 0,
                    created: true,
                }
            })
    }

    /// `me`: the item's state without touching it (expiry and flush still apply).
    pub fn meta_debug(&self, key: &[u8], now: u32) -> Option<DebugView> {
        let (hash, si) = self.hash(key);
        let mut sh = self.shard(si);
        let i = self.lookup(&mut sh, hash, key, now).ok()?;
        let s = sh.slot(i)?;
        let d = s.data();
        Some(DebugView {
            key: s.key().to_vec(),
            key_binary: s.bits() & BIT_KEY_BINARY != 0,
            exptime: item::exptime(d),
            last_access: item::time(d),
            cas: self.shown(item::version(d)),
            fetched: s.bits() & BIT_FETCHED != 0,
            value_len: s.value().len(),
            flags: item::flags(d),
        })
    }
}
