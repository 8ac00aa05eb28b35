//! Process-level start-up: resource limits, user switch, daemonizing, memory locking, pid file.
//!
//! [`prepare`] runs once, in `main`, after the command line is parsed and logging is up and
//! before `server::run` binds anything. Its order is memcached 1.6's, and it matters:
//!
//! 1. `-r` core limit, then the open-file limit for `-c`: raising a hard limit needs root, so
//!    both come before the user switch.
//! 2. `-u` user switch (root only): before any socket exists, so ports and the UNIX socket
//!    are bound as the unprivileged user, exactly as memcached does.
//! 3. `-d` daemonize (fork + setsid): the process must still be single-threaded here, since
//!    only the forking thread survives a fork. Nothing before this point may spawn a thread.
//! 4. `-k` mlockall: memory locks are not inherited across fork, so this follows `-d`.
//! 5. `-P` pid file: after the fork, so it holds the daemon's pid. It is written before the
//!    listeners are bound (memcached writes it just after), so a supervisor that waits for
//!    the file may still find the port closed for a moment.

use std::ffi::{CString, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Exit status for a start-up failure of the operating system's making (EX_OSERR).
pub const EXIT_OSERR: i32 = 71;

/// Descriptors the process needs beyond the `-c` client connections: listeners, the pid file,
/// log output, and per worker its poll instance, waker and hand-off. Generous on purpose:
/// running out of descriptors means refusing clients.
const FD_HEADROOM_FIXED: libc::rlim_t = 64;
const FD_HEADROOM_PER_THREAD: libc::rlim_t = 4;

/// The type glibc gives resource numbers; other C libraries use a plain int.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

/// True when the real or effective user is root (memcached checks both).
pub fn is_root() -> bool {
    // SAFETY: getuid/geteuid cannot fail and touch no memory.
    unsafe { libc::getuid() == 0 || libc::geteuid() == 0 }
}

/// glibc grows a heap 128 KiB at a time by default, one `brk`/`mprotect` (and, for a
/// thread's heap, a split of its memory mapping) per step: filling a cache, or receiving a
/// full copy of a million items, makes over a thousand such calls. A 32 MiB step makes a
/// handful; the untouched part of a step costs address space, not memory. Setting it fixes
/// the mmap threshold at glibc's default of 128 KiB (instead of letting it float up), which
/// is what `storage::arena::malloc_cost` assumes anyway.
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread
    // starts, and a failure (0) leaves the defaults.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TOP_PAD, 32 * 1024 * 1024);
    }
}

/// Applies every process-level setting of `cfg`, in the order documented above.
///
/// With `-d` the calling process exits inside this function (status 0) and only the daemon
/// returns from it.
pub fn prepare(cfg: &Config) -> Result<(), String> {
    tune_malloc();
    if cfg.enable_coredumps {
        raise_core_limit()?;
    }
    raise_nofile_limit(cfg.max_conns, cfg.threads)?;
    if let Some(user) = &cfg.user {
        if is_root() {
            switch_user(user)?;
            if cfg.enable_coredumps {
                // The kernel stops dumping a process that changed its uid; -r asks for dumps.
                keep_dumpable();
            }
        }
    }
    if cfg.daemonize {
        // memcached's rule: -r keeps the working directory (cores land there), -v keeps
        // stdio (so the messages asked for still go somewhere).
        daemonize(!cfg.enable_coredumps, cfg.verbose == 0)?;
    }
    if cfg.lock_memory {
        lock_memory();
    }
    if let Some(path) = &cfg.pidfile {
        write_pidfile(path)?;
    }
    Ok(())
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn get_rlimit(resource: Resource) -> Result<libc::rlimit, String> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return Err(os_err("getrlimit"));
    }
    Ok(r)
}

fn set_rlimit(resource: Resource, cur: libc::rlim_t, max: libc::rlim_t) -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: r is a valid rlimit.
    if unsafe { libc::setrlimit(resource, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `-r`: core files as large as allowed: unlimited when permitted, else the hard limit.
fn raise_core_limit() -> Result<(), String> {
    let old = get_rlimit(libc::RLIMIT_CORE)?;
    if set_rlimit(libc::RLIMIT_CORE, libc::RLIM_INFINITY, libc::RLIM_INFINITY).is_err() {
        // Not allowed to raise the hard limit: settle for it. A failure shows in the check.
        let _ = set_rlimit(libc::RLIMIT_CORE, old.rlim_max, old.rlim_max);
    }
    let now = get_rlimit(libc::RLIMIT_CORE)?;
    if now.rlim_cur == 0 {
        return Err("-r: failed to ensure core file creation (core size limit is 0)".into());
    }
    Ok(())
}

/// Open-file limit for `-c` connections plus headroom. memcached sets soft and hard limits to
/// exactly `-c`, which can lower them; this only ever raises, the soft limit first.
fn raise_nofile_limit(max_conns: usize, threads: usize) -> Result<(), String> {
    let as_rlim = |n: usize| libc::rlim_t::try_from(n).unwrap_or(libc::rlim_t::MAX);
    let need = as_rlim(max_conns)
        .saturating_add(FD_HEADROOM_FIXED)
        .saturating_add(FD_HEADROOM_PER_THREAD.saturating_mul(as_rlim(threads)));
    let cur = get_rlimit(libc::RLIMIT_NOFILE)?;
    let (soft, hard) = (cur.rlim_cur, cur.rlim_max);
    let infinite = libc::RLIM_INFINITY;
    if soft == infinite || soft >= need {
        return Ok(());
    }
    let result = if hard == infinite || hard >= need {
        set_rlimit(libc::RLIMIT_NOFILE, need, hard)
    } else {
        set_rlimit(libc::RLIMIT_NOFILE, need, need)
    };
    result.map_err(|e| {
        format!(
            "-c {max_conns}: failed to raise the open-file limit to {need} (soft {soft}, hard {hard}): {e}; \
             start as root or ask for fewer connections"
        )
    })
}

/// A user's uid and gid, from the password database.
pub fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let c_name = CString::new(name).map_err(|_| format!("-u: invalid user name {name:?}"))?;
    let mut buf_len = 16 * 1024;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; buf_len];
        // SAFETY: all-zero is a valid passwd (null pointers, zero ids); getpwnam_r fills it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the length given; the strings pwd points to live
        // in buf, which outlives their only use (none: just the ids are copied out).
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf_len < 1024 * 1024 {
            buf_len *= 4;
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "-u: cannot look up user {name}: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() {
            return Err(format!("-u: can't find the user {name} to switch to"));
        }
        return Ok((pwd.pw_uid, pwd.pw_gid));
    }
}

/// `-u`: become `name` for good (supplementary groups, gid, then uid).
fn switch_user(name: &str) -> Result<(), String> {
    let (uid, gid) = lookup_user(name)?;
    // SAFETY: setgroups with a zero count reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        let e = io::Error::last_os_error();
        // EPERM means there were no privileges to drop groups with: nothing left to drop.
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(format!(
                "-u {name}: failed to drop supplementary groups: {e}"
            ));
        }
    }
    // SAFETY: plain syscalls on integer ids; gid first, since after setuid it is not allowed.
    if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
        return Err(os_err(&format!(
            "-u {name}: failed to assume the identity of user {name}"
        )));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn keep_dumpable() {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong) } != 0 {
        log::warn!(
            "{}",
            os_err("-r: could not keep the process dumpable after -u")
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_dumpable() {}

/// `-d`: fork, let the parent exit 0, and detach the child into its own session.
fn daemonize(chdir_root: bool, close_stdio: bool) -> Result<(), String> {
    // A daemon must not die when the terminal that started it goes away.
    // SAFETY: installing SIG_IGN is always sound.
    if unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(os_err("-d: failed to ignore SIGHUP"));
    }
    use std::io::Write;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process is single-threaded here (see the module comment), so the child is
    // a complete copy; the parent leaves through _exit without running destructors twice.
    match unsafe { libc::fork() } {
        -1 => return Err(os_err("-d: fork failed")),
        0 => {}
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: plain syscall.
    if unsafe { libc::setsid() } == -1 {
        return Err(os_err("-d: setsid failed"));
    }
    if chdir_root {
        std::env::set_current_dir("/").map_err(|e| format!("-d: chdir / failed: {e}"))?;
    }
    if close_stdio {
        let null = CString::new("/dev/null").map_err(|e| e.to_string())?;
        // SAFETY: null is a valid C string; the descriptors are ours to replace.
        unsafe {
            let fd = libc::open(null.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return Err(os_err("-d: cannot open /dev/null"));
            }
            for target in 0..=2 {
                if libc::dup2(fd, target) < 0 {
                    return Err(os_err("-d: cannot redirect stdio to /dev/null"));
                }
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// `-k`: lock current and future memory. Failure is a warning, as in memcached: the server
/// works without it, just with the risk of being paged out.
fn lock_memory() {
    // SAFETY: plain syscall.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        log::warn!(
            "{}",
            os_err("-k: mlockall() failed, continuing without locked memory")
        );
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// `-P`: write this process's id, atomically (temporary file, then rename), so a reader never
/// sees a half-written pid. A stale file naming a live process is overwritten with a warning.
pub fn write_pidfile(path: &Path) -> Result<(), String> {
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    if let Ok(old) = std::fs::read_to_string(path) {
        if let Ok(pid) = old.trim().parse::<libc::pid_t>() {
            // SAFETY: signal 0 only checks that the process exists.
            if pid > 0 && pid != me && unsafe { libc::kill(pid, 0) } == 0 {
                log::warn!(
                    "-P: pid file {} named running process {pid}; overwriting it",
                    path.display()
                );
            }
        }
    }
    let tmp = tmp_path(path);
    let write = std::fs::write(&tmp, format!("{me}\n")).and_then(|()| std::fs::rename(&tmp, path));
    write.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("-P: could not write the pid file {}: {e}", path.display())
    })
}

/// Removes the pid file on a clean exit; a file already gone is fine.
pub fn remove_pidfile(path: Option<&Path>) {
    if let Some(p) = path {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("could not remove the pid file {}: {e}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn scratch_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "repcached-daemon-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    #[test]
    fn pidfile_holds_our_pid_and_is_removed() {
        let dir = scratch_dir();
        let p = dir.join("mc.pid");
        std::fs::write(&p, "not a pid").expect("seed");
        write_pidfile(&p).expect("write");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text, format!("{}\n", std::process::id()));
        assert!(!tmp_path(&p).exists());
        remove_pidfile(Some(&p));
        assert!(!p.exists());
        // Already gone: no error, no panic.
        remove_pidfile(Some(&p));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pidfile_in_missing_directory_is_an_error() {
        let p = scratch_dir().join("no/such/dir/mc.pid");
        let e = write_pidfile(&p).expect_err("must fail");
        assert!(e.starts_with("-P:") && e.contains("mc.pid"), "{e}");
    }

    #[test]
    fn nofile_limit_covers_connections_and_headroom() {
        raise_nofile_limit(100, 4).expect("raising within the hard limit");
        let r = get_rlimit(libc::RLIMIT_NOFILE).expect("getrlimit");
        assert!(r.rlim_cur >= 100 + FD_HEADROOM_FIXED + 4 * FD_HEADROOM_PER_THREAD);
    }

    #[test]
    fn impossible_nofile_limit_is_refused() {
        // Far above the kernel's nr_open ceiling, so even root cannot have it.
        let before = get_rlimit(libc::RLIMIT_NOFILE).expect("getrlimit");
        let e = raise_nofile_limit(1 << 40, 4).expect_err("must fail");
        assert!(e.starts_with("-c "), "{e}");
        let after = get_rlimit(libc::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(before.rlim_cur, after.rlim_cur);
        assert_eq!(before.rlim_max, after.rlim_max);
    }

    #[test]
    fn core_limit_is_raised_then_restored() {
        let before = get_rlimit(libc::RLIMIT_CORE).expect("getrlimit");
        match raise_core_limit() {
            Ok(()) => {
                let now = get_rlimit(libc::RLIMIT_CORE).expect("getrlimit");
                assert!(now.rlim_cur > 0);
                assert!(now.rlim_cur >= before.rlim_cur);
            }
            // Only possible when the hard limit itself is 0 and we may not raise it.
            Err(e) => {
                assert_eq!(before.rlim_max, 0, "{e}");
                assert!(!is_root());
            }
        }
        // Lowering back is always permitted.
        set_rlimit(libc::RLIMIT_CORE, before.rlim_cur, before.rlim_max).expect("restore");
    }

    #[test]
    fn users_are_looked_up() {
        assert_eq!(lookup_user("root").expect("root exists"), (0, 0));
        let e = lookup_user("no-such-user-repcached").expect_err("unknown user");
        assert!(
            e.contains("can't find the user no-such-user-repcached"),
            "{e}"
        );
        assert!(lookup_user("a\0b").is_err());
    }
}
