//! The real `repcached` binary's command line: help, version, usage errors and the root rule.

use std::process::{Command, Output};

use repcached::config::{self, OPTIONS};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repcached"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("start the repcached binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_option_the_parser_defines() {
    for flag in ["-h", "--help"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        let longs = config::long_options();
        assert!(longs.len() > 30, "option table looks truncated: {longs:?}");
        for long in longs {
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} missing from {flag}"
            );
        }
        for o in OPTIONS.iter().filter(|o| !o.short.is_empty()) {
            assert!(
                help.contains(&format!("-{}", o.short)),
                "-{} missing",
                o.short
            );
        }
    }
}

#[test]
fn version_is_one_line() {
    for flag in ["-V", "--version"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            text(&out.stdout),
            format!("repcached {}\n", repcached::VERSION)
        );
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn license_prints_and_exits_zero() {
    let out = run(&["-i"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("BSD-3-Clause"));
}

/// Each bad command line exits 64 with exactly one line on stderr that names the flag.
#[test]
fn bad_command_lines_exit_64_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["-m", "abc"], "-m/--memory-limit"),
        (&["-t", "0"], "-t/--threads"),
        (&["-I", "2g", "-m", "64"], "-I/--max-item-size"),
        (&["-I", "33m", "-m", "64"], "-I/--max-item-size"),
        (&["-m", "1"], "-m/--memory-limit"),
        (&["-c", "0"], "-c/--conn-limit"),
        (&["-p", "70000"], "-p/--port"),
        (&["-U", "11211"], "-U/--udp-port"),
        (&["-B", "binary"], "-B/--protocol"),
        (&["-S"], "-S/--enable-sasl"),
        (&["-Z"], "-Z/--enable-ssl"),
        (&["-e", "/dev/shm/x"], "-e/--memory-file"),
        (&["-o", "foo"], "-o/--extended"),
        (&["-o", "ext_path=/tmp/x:1g"], "ext_path"),
        (&["-l", "[::1"], "-l/--listen"),
        (&["-p"], "-p"),
        (&["--port"], "--port"),
        (&["-X"], "-X"),
        (&["-x"], "-x"),
        (&["-X", "0"], "-X"),
        (&["--repl-timeout-ms", "10"], "--repl-timeout-ms"),
        (&["stray"], "stray"),
    ];
    for (args, flag) in cases {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.ends_with('\n'), "{args:?}: {err:?}");
        assert!(err.starts_with("repcached: "), "{args:?}: {err:?}");
        assert!(err.contains(flag), "{args:?}: {err:?} does not name {flag}");
    }
}

#[test]
fn unknown_flags_exit_64() {
    for flag in ["-z", "--bogus", "--disable_dumping"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(64), "{flag}");
        let err = text(&out.stderr);
        assert_eq!(err, format!("repcached: unknown option {flag}\n"));
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// memcached's rule. Only checkable as root: as anyone else the same command line would start
/// the server, which these tests do not do.
#[test]
fn root_without_user_is_refused() {
    if euid() != 0 {
        return;
    }
    let out = run(&["-p", "0"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        text(&out.stderr),
        "repcached: can't run as root without the -u switch\n"
    );
}

#[test]
fn unknown_user_is_refused_before_anything_starts() {
    if euid() != 0 {
        return;
    }
    let out = run(&["-u", "no-such-user-repcached", "-p", "0"]);
    assert_eq!(out.status.code(), Some(repcached::daemon::EXIT_OSERR));
    let err = text(&out.stderr);
    assert!(
        err.contains("can't find the user no-such-user-repcached"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A directory only root may write in, so a pid file there fails once the user switch worked.
fn root_only_dir(tag: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("repcached-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
    d
}

fn nobody_exists() -> bool {
    repcached::daemon::lookup_user("nobody").is_ok()
}

/// -u really drops root: the pid file (written after the switch) cannot go where only root
/// may write, and the failure is reported before any listener exists.
#[test]
fn user_switch_happens_before_the_pid_file() {
    if euid() != 0 || !nobody_exists() {
        return;
    }
    let dir = root_only_dir("user");
    let pid = dir.join("rc.pid");
    let out = run(&[
        "-u",
        "nobody",
        "-p",
        "0",
        "-P",
        pid.to_str().expect("utf-8 path"),
    ]);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(repcached::daemon::EXIT_OSERR),
        "{err}"
    );
    assert!(
        err.contains("could not write the pid file") && err.contains("ermission denied"),
        "{err}"
    );
    assert!(!pid.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// -d forks: the starting process exits 0 at once while the daemon carries on (here, to the
/// same pid-file failure as above). With -v the daemon keeps stderr, so its message shows up;
/// without it stdio goes to /dev/null and nothing does.
#[test]
fn daemonize_detaches_and_keeps_stderr_only_with_verbose() {
    if euid() != 0 || !nobody_exists() {
        return;
    }
    let dir = root_only_dir("daemon");
    let pid = dir.join("rc.pid");
    let pid_arg = pid.to_str().expect("utf-8 path");
    // output() waits for stderr to close, i.e. for the daemon too, which exits on the error.
    let out = run(&["-d", "-v", "-u", "nobody", "-p", "0", "-P", pid_arg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("could not write the pid file"), "{err}");
    let out = run(&["-d", "-u", "nobody", "-p", "0", "-P", pid_arg]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(!pid.exists());
    let _ = std::fs::remove_dir_all(dir);
}
