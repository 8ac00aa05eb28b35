//! How the replication threads ask the kernel to schedule them: the live thread under
//! SCHED_BATCH, and a starting node's copy at a low priority, so that on a CPU the pair
//! shares, the node serving clients keeps the CPU.

/// Puts the calling thread under SCHED_BATCH: when a change wakes it, it does not preempt
/// the worker that made the change. On a core it shares with busy workers it then runs
/// when they block or their slice ends, sending hundreds of changes per wake-up instead of
/// a few, and the core stops paying two context switches per handful of writes. Workers
/// yield to it when a wake-up has waited too long (`DirtySet::overdue`). With a core of its
/// own it runs at once, as before.
pub(super) fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler only reads `param`; pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            log::debug!(
                "SCHED_BATCH for the replication thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The nice value under which a thread gets about `share_percent` of a CPU it shares with
/// one busy thread at nice 0. The kernel weighs nice 0 as 1024 and each step up as 1.25
/// times less, so the share s needs the weight 1024·s/(100−s).
pub(super) fn nice_for_share(share_percent: u8) -> i32 {
    let s = f64::from(share_percent.clamp(1, 100));
    if s >= 50.0 {
        return 0;
    }
    let weight = 1024.0 * s / (100.0 - s);
    let nice = (1024.0 / weight).ln() / 1.25f64.ln();
    nice.round().clamp(0.0, 19.0) as i32
}

/// Lowers the calling thread (only it: Linux keeps a nice value per thread) to `nice`,
/// unless it already runs lower. An unprivileged thread cannot raise itself back, so this
/// is for a thread that ends when the work it was lowered for is done.
pub(super) fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only acts on that thread id.
        let rc = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, nice.max(now))
        };
        if rc != 0 {
            log::debug!(
                "nice {nice} for the start-up copy: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nice_value_gives_the_copy_its_share() {
        assert_eq!(nice_for_share(5), 13);
        assert_eq!(nice_for_share(10), 10);
        assert_eq!(nice_for_share(1), 19);
        assert_eq!(nice_for_share(50), 0);
        assert_eq!(nice_for_share(100), 0);
        // The share the kernel then gives, against one nice-0 thread, is within a step.
        for share in 2u8..50 {
            let w = 1024.0 / 1.25f64.powi(nice_for_share(share));
            let got = 100.0 * w / (w + 1024.0);
            let want = f64::from(share);
            assert!(got > want / 1.3 && got < want * 1.3, "{share}%: {got}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowering_touches_only_the_calling_thread() {
        // SAFETY: getpriority reads the calling process's (main thread's) nice value.
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let seen = std::thread::spawn(|| {
            lower_priority(7);
            // SAFETY: as above, for this thread's id.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        })
        .join()
        .expect("thread");
        assert_eq!(seen, before.max(7));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, before);
    }
}
