<?php
//! One PHP request against a session store: increments $_SESSION['count'] of the session id
//! given on the command line and prints one JSON line the interop driver checks.
//!
//! Usage: php [-d session settings…] session.php SID [HOLD_MS]
//! HOLD_MS keeps the session (and with it the handler's lock) open that long, so that two
//! concurrent requests of one session overlap unless the lock serialises them.

$sid = $argv[1] ?? '';
$hold_ms = (int)($argv[2] ?? 0);
if ($sid === '') {
    fwrite(STDERR, "usage: session.php SID [HOLD_MS]\n");
    exit(64);
}

session_id($sid);
$started = microtime(true);
if (!session_start()) {
    fwrite(STDERR, "session_start failed\n");
    exit(2);
}
// The lock is held from here (session_start returned) until session_write_close.
$locked_at = microtime(true);
$before = $_SESSION['count'] ?? 0;
$_SESSION['count'] = $before + 1;
if ($hold_ms > 0) {
    usleep($hold_ms * 1000);
}
$released_at = microtime(true);
if (!session_write_close()) {
    fwrite(STDERR, "session_write_close failed\n");
    exit(3);
}
echo json_encode([
    'before' => $before,
    'count' => $_SESSION['count'],
    'waited' => $locked_at - $started,
    'locked_at' => $locked_at,
    'released_at' => $released_at,
]), "\n";
