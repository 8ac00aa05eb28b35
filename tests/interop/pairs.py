"""Process harness for the interop suite: repcached pairs on loopback, started, killed with
SIGKILL and restarted (by the PIDs started here) on fixed ports, with bounded polling.

Every server listens on 127.0.0.1 only, on ports found by binding port 0, and is stopped by
the PID this module started. Every wait polls with a deadline; nothing sleeps a fixed time
to let a server "settle".
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("REPCACHED", os.path.join(ROOT, "target", "release", "repcached"))

# A lost peer is noticed within well under a second, as in tests/common/pair.rs.
FAST = ["--repl-heartbeat-ms", "100", "--repl-timeout-ms", "600"]

READY_WITHIN = 30.0
SETTLE_WITHIN = 30.0
POLL = 0.02


class InteropError(Exception):
    """A scenario's expectation did not hold."""


def free_port():
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, within):
    """Polls `check` until it returns a true value (returned) or `within` seconds pass."""
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(POLL)
    raise InteropError("timed out after %.0fs waiting for %s" % (within, what))


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def text_command(port, line, end_markers=(b"END\r\n",), timeout=3.0):
    """Sends one text command and reads until one of `end_markers` ends the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\r\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while not any(buf.endswith(m) for m in end_markers):
            if time.monotonic() > deadline:
                raise OSError("no complete reply to %r from port %d" % (line, port))
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("port %d closed the connection on %r" % (port, line))
            buf += chunk
        return buf


def stats(port, sub=""):
    """`stats [sub]` as a dict; raises OSError when the node does not answer."""
    reply = text_command(port, ("stats " + sub).strip())
    out = {}
    for line in reply.decode("latin-1").split("\r\n"):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


class Node:
    """One repcached process; its ports stay fixed across restarts so its peer finds it."""

    def __init__(self, name, port, repl_port, peer_repl_port, logdir):
        self.name = name
        self.port = port
        self.repl_port = repl_port
        self.peer_repl_port = peer_repl_port
        self.proc = None
        self.starts = 0
        self.log_path = os.path.join(logdir, "%s.log" % name)

    def args(self):
        a = [BINARY, "-l", "127.0.0.1", "-p", str(self.port), "-X", str(self.repl_port),
             "-x", "127.0.0.1:%d" % self.peer_repl_port, "-v"]
        if os.geteuid() == 0:
            a += ["-u", "root"]
        return a + FAST

    def spawn(self):
        if self.proc is not None:
            raise InteropError("%s is already running" % self.name)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(("--- %s start #%d ---\n" % (self.name, self.starts)).encode())
        log.flush()
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def wait_ready(self):
        """Waits until this process answers `stats` with its own pid on its client port.

        A restarted node keeps that port closed until its start-up copy is done, so an open
        port means the copy is in."""
        def ready():
            if self.proc.poll() is not None:
                raise InteropError("%s exited with %s before serving; log %s"
                                   % (self.name, self.proc.returncode, self.log_path))
            try:
                return stats(self.port).get("pid") == str(self.proc.pid)
            except OSError:
                return False
        wait_until("%s to serve on port %d" % (self.name, self.port), ready, READY_WITHIN)

    def start(self):
        self.spawn()
        self.wait_ready()

    def kill9(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def alive(self):
        return self.proc is not None

    def link_state(self):
        try:
            return stats(self.port, "repl").get("repl_link_state")
        except OSError:
            return None

    def wait_sent(self):
        """Waits until every change this node made has reached its peer (nothing pending,
        nothing unacknowledged). A write acknowledged by a node that dies before it left is
        lost by design (docs/REPLICATION.md, "What asynchronous replication can lose"), so a
        test that kills a node and expects its writes on the peer waits for this first."""
        def sent():
            r = stats(self.port, "repl")
            return r.get("repl_pending_keys") == "0" and r.get("repl_unacked_keys") == "0"
        wait_until("%s to have sent its changes" % self.name, sent, SETTLE_WITHIN)


class Pair:
    """Two nodes that are each other's peer."""

    def __init__(self, name, logdir):
        pa, pb, ra, rb = (free_port() for _ in range(4))
        self.a = Node(name + ".A", pa, ra, rb, logdir)
        self.b = Node(name + ".B", pb, rb, ra, logdir)

    @property
    def nodes(self):
        return (self.a, self.b)

    def other(self, node):
        return self.b if node is self.a else self.a

    def by_port(self, port):
        return self.a if port == self.a.port else self.b

    def start(self):
        self.a.spawn()
        self.b.spawn()
        self.a.wait_ready()
        self.b.wait_ready()
        self.wait_linked()

    def wait_linked(self):
        wait_until("the link of %s/%s to come up" % (self.a.name, self.b.name),
                   lambda: all(n.link_state() == "connected" for n in self.nodes),
                   SETTLE_WITHIN)

    def converged(self):
        """Both nodes hold the same items with the same versions, nothing pending."""
        try:
            da, db = stats(self.a.port, "digest"), stats(self.b.port, "digest")
            ra, rb = stats(self.a.port, "repl"), stats(self.b.port, "repl")
        except OSError:
            return False
        return (da.get("digest") == db.get("digest")
                and da.get("digest_items") == db.get("digest_items")
                and ra.get("repl_pending_keys") == "0" and rb.get("repl_pending_keys") == "0")

    def wait_converged(self):
        wait_until("%s and %s to converge" % (self.a.name, self.b.name), self.converged,
                   SETTLE_WITHIN)

    def restart(self, node):
        """Starts a killed node again and waits for it to serve (its copy done) and link."""
        node.start()
        self.wait_linked()

    def stop(self):
        for n in self.nodes:
            n.stop()


class Harness:
    """Owns every process a scenario starts so that all of them are stopped at the end."""

    def __init__(self):
        self.logdir = tempfile.mkdtemp(prefix="repcached-interop-")
        self.pairs = []
        self.procs = []

    def pair(self, name):
        p = Pair(name, self.logdir)
        self.pairs.append(p)
        p.start()
        return p

    def spawn(self, args, log_name):
        log = open(os.path.join(self.logdir, log_name), "ab")
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        if exc_type is None:
            shutil.rmtree(self.logdir, ignore_errors=True)
        else:
            print("server logs kept in %s" % self.logdir, file=sys.stderr)
        return False

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
        for p in self.pairs:
            p.stop()
