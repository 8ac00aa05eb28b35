//! Per-thread counters with memcached's names, summed on demand, and `stats reset`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Declares the counter set once so that the struct, the snapshot, the names and the
/// arithmetic cannot drift apart.
macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// One worker's counters. Each worker is the only writer of its own set, so a bump
        /// is a plain load and store (no locked read-modify-write on the request path);
        /// readers on other threads see values that are at most a moment old.
        #[derive(Default, Debug)]
        pub struct ThreadStats {
            $(pub $name: AtomicU64,)*
        }

        /// A plain-number copy of a counter set.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Counters {
            $(pub $name: u64,)*
        }

        impl ThreadStats {
            fn snapshot(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Counters {
            fn add(&mut self, o: &Counters) {
                $(self.$name = self.$name.wrapping_add(o.$name);)*
            }
            fn sub(&mut self, o: &Counters) {
                $(self.$name = self.$name.wrapping_sub(o.$name);)*
            }
        }
    };
}

counters!(
    cmd_get,
    cmd_set,
    cmd_flush,
    cmd_touch,
    cmd_meta,
    get_hits,
    get_misses,
    delete_misses,
    delete_hits,
    incr_misses,
    incr_hits,
    decr_misses,
    decr_hits,
    cas_misses,
    cas_hits,
    cas_badval,
    touch_hits,
    touch_misses,
    store_too_large,
    store_no_memory,
    auth_cmds,
    auth_errors,
    bytes_read,
    bytes_written,
    conn_yields,
    idle_kicks,
);

/// Adds `n` to a counter that only the calling thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// All workers' counter sets plus the baseline that `stats reset` moves forward.
#[derive(Default)]
pub struct Registry {
    threads: Mutex<Vec<Arc<ThreadStats>>>,
    /// Resetting subtracts a baseline instead of zeroing, because zeroing another
    /// thread's single-writer counters would race with its next bump.
    baseline: Mutex<Counters>,
}

impl Registry {
    /// Creates and registers the counter set of a new worker.
    pub fn register(&self) -> Arc<ThreadStats> {
        let t = Arc::new(ThreadStats::default());
        lock(&self.threads).push(Arc::clone(&t));
        t
    }

    fn raw_sum(&self) -> Counters {
        let mut sum = Counters::default();
        for t in lock(&self.threads).iter() {
            sum.add(&t.snapshot());
        }
        sum
    }

    /// The counters since start or since the last `stats reset`.
    pub fn sum(&self) -> Counters {
        let mut sum = self.raw_sum();
        sum.sub(&lock(&self.baseline));
        sum
    }

    pub fn reset(&self) {
        let now = self.raw_sum();
        *lock(&self.baseline) = now;
    }
}

/// Locks a mutex, carrying on with the data if a panicking thread poisoned it: counters
/// stay meaningful whatever happened to the thread that last held them.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// User and system CPU time of this process, in seconds with microseconds.
pub fn rusage() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a properly sized struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_threads_and_resets_to_zero() {
        let r = Registry::default();
        let a = r.register();
        let b = r.register();
        bump(&a.get_hits, 3);
        bump(&b.get_hits, 4);
        bump(&b.cmd_get, 1);
        assert_eq!(r.sum().get_hits, 7);
        r.reset();
        assert_eq!(r.sum(), Counters::default());
        bump(&a.get_hits, 2);
        assert_eq!(r.sum().get_hits, 2);
        assert_eq!(r.sum().cmd_get, 0);
    }
}
