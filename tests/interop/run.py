"""Interop driver (`make interop`): real memcached clients from Debian against real repcached
pairs — PHP sessions through the memcache and memcached extensions, pymemcache's HashClient,
Perl's Cache::Memcached, the libmemcached tools and twemproxy in front of two pairs — with
SIGKILL failovers. Prints one summary line per scenario with its counts; exits 1 if any fails.

Usage: python3 tests/interop/run.py [scenario…]   (default: all)
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from pairs import (  # noqa: E402
    Harness, InteropError, free_port, port_open, stats, text_command, wait_until,
)

from pymemcache.client.base import Client  # noqa: E402
from pymemcache.client.hash import HashClient  # noqa: E402
from pymemcache import exceptions as memcache_exceptions  # noqa: E402

SESSION_PHP = os.path.join(HERE, "session.php")
PERL_SUITE = os.path.join(HERE, "cache_memcached.pl")

# Requests per phase of the PHP failover scenarios: both up, holder dead, holder back, other
# dead, both back.
PHP_REQUESTS = 40
# Rounds of two concurrent requests of one session, each holding the session this long.
LOCK_ROUNDS = 5
LOCK_HOLD_MS = 300
PY_OPS_PER_PHASE = 2000
PROXY_KEYS = 400


def check(cond, what):
    if not cond:
        raise InteropError(what)


def ini_settings(name, **ports):
    """The `key = value` lines of tests/interop/NAME.ini with {PA}/{PB} filled in: the same
    files docs/PHP.md quotes."""
    out = []
    with open(os.path.join(HERE, name + ".ini")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            out.append(line.format(**ports).replace(" = ", "=", 1))
    return out


# ---------------------------------------------------------------------------------------------
# PHP sessions


class PhpSession:
    """Runs session.php as one request each time, with one extension's session settings."""

    def __init__(self, pair, ini_name, sid):
        self.pair = pair
        self.sid = sid
        self.settings = ini_settings(ini_name, PA=pair.a.port, PB=pair.b.port)
        self.requests = 0
        self.warnings = []
        self.failed = []

    def command(self, hold_ms=0):
        cmd = ["php"]
        for s in self.settings + ["display_errors=stderr", "log_errors=0"]:
            cmd += ["-d", s]
        return cmd + [SESSION_PHP, self.sid, str(hold_ms)]

    def finish(self, proc_out, proc_err, code, allowed_warnings, allowed_failures=()):
        """The request's JSON line; None when it failed in one of the `allowed_failures` ways
        (such a request wrote nothing: session_start failed before the script ran)."""
        self.requests += 1
        err = proc_err.strip()
        if code != 0 and err and any(f in err for f in allowed_failures):
            self.failed.append(err.splitlines()[0])
            return None
        if err:
            if not any(w in err for w in allowed_warnings):
                raise InteropError("request %d: php said: %s" % (self.requests, err[:500]))
            self.warnings.append(err.splitlines()[0])
        check(code == 0, "request %d: php exited %d: %s" % (self.requests, code, err[:300]))
        return json.loads(proc_out)

    def request(self, allowed_warnings=(), allowed_failures=()):
        r = subprocess.run(self.command(), capture_output=True, text=True, timeout=60)
        return self.finish(r.stdout, r.stderr, r.returncode, allowed_warnings, allowed_failures)


def get_hits(node):
    return int(stats(node.port).get("get_hits", "0"))


def php_failover(name, ini_name, allowed_warnings=(), allowed_failures=()):
    """The issue's scenario: count up, kill -9 the node holding the session, count on, bring it
    back, kill the other, count on, bring it back. The count must rise by one per request that
    succeeds: never reset, never an update lost. Requests may fail only in the client's known
    ways (`allowed_failures`), and fail outright (no session, nothing written)."""
    with Harness() as h:
        pair = h.pair(name)
        sess = PhpSession(pair, ini_name, "interop" + name)
        expected = 0
        failovers = 0

        def run(phase, n):
            nonlocal expected
            for _ in range(n):
                got = sess.request(allowed_warnings, allowed_failures)
                if got is None:
                    continue
                expected += 1
                check(got["count"] == expected,
                      "%s: %s: count %d after request %d, expected %d (reset or lost update)"
                      % (name, phase, got["count"], sess.requests, expected))

        run("both up", PHP_REQUESTS)
        # The holder is the node the extension reads the session from.
        before = {n.name: get_hits(n) for n in pair.nodes}
        run("both up", 1)
        read_from = [n for n in pair.nodes if get_hits(n) > before[n.name]]
        check(len(read_from) >= 1, "%s: no node served the session read" % name)
        holder = read_from[0]
        other = pair.other(holder)

        holder.kill9()
        failovers += 1
        run("%s killed" % holder.name, PHP_REQUESTS)
        pair.restart(holder)
        run("%s back" % holder.name, PHP_REQUESTS)
        other.kill9()
        failovers += 1
        run("%s killed" % other.name, PHP_REQUESTS)
        pair.restart(other)
        run("both back", PHP_REQUESTS)
        pair.wait_converged()
        locks = php_locking(pair, ini_name, name)
        check(len(sess.failed) < sess.requests // 2, "%s: most requests failed" % name)
        return ("requests=%d failovers=%d final_count=%d (= successful requests) holder=%s "
                "failed_requests=%d unlocked_requests=%d %s"
                % (sess.requests, failovers, expected, holder.name, len(sess.failed),
                   len(sess.warnings), locks))


def php_locking(pair, ini_name, name):
    """Two concurrent requests of one session, each holding it LOCK_HOLD_MS: both must finish
    (no deadlock), their lock-held intervals must not overlap, and neither increment may be lost."""
    sess = PhpSession(pair, ini_name, "lock" + name)
    count = 0
    max_wait = 0.0
    for rnd in range(LOCK_ROUNDS):
        procs = [subprocess.Popen(sess.command(LOCK_HOLD_MS), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise InteropError("%s: lock round %d: a request hung (deadlock)" % (name, rnd))
            results.append(sess.finish(out, err, p.returncode, ()))
        count += 2
        first, second = sorted(results, key=lambda r: r["locked_at"])
        check(second["locked_at"] >= first["released_at"],
              "%s: lock round %d: both requests held the session at once" % (name, rnd))
        check(sorted(r["count"] for r in results) == [count - 1, count],
              "%s: lock round %d: counts %s, expected %d and %d (lost update)"
              % (name, rnd, [r["count"] for r in results], count - 1, count))
        max_wait = max(max_wait, second["waited"])
    return "lock_rounds=%d lock_count=%d max_lock_wait_ms=%d" % (
        LOCK_ROUNDS, count, int(max_wait * 1000))


def scenario_php_memcache():
    return php_failover("memcache", "php-memcache")


def scenario_php_memcached():
    # libmemcached fails the one operation that finds a server dead, then ejects the server.
    # A PHP CLI process starts afresh each time, so every request that touches the dead node
    # pays that once: if the operation was the session lock the extension warns and goes on
    # unlocked; if it was the read, session_start fails (docs/PHP.md). Anything else fails the
    # scenario, and so does any reset or lost update.
    return php_failover(
        "memcached", "php-memcached",
        allowed_warnings=("Failed to write session lock: CONNECTION FAILURE",),
        allowed_failures=("error getting session from memcached: (",))


# ---------------------------------------------------------------------------------------------
# pymemcache


class Model:
    """What a single memcached would hold after the operations so far."""

    def __init__(self):
        self.data = {}


def random_value(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return b""
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 2:
        return b"x\r\nEND\r\n\x00VALUE k 0 1\r\n" + bytes([rng.randrange(256)])
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1000, 5000)))


class PyDriver:
    def __init__(self, pair, seed):
        self.rng = random.Random(seed)
        self.pair = pair
        self.client = HashClient(
            [("127.0.0.1", pair.a.port), ("127.0.0.1", pair.b.port)],
            connect_timeout=1, timeout=2, retry_attempts=0, dead_timeout=1,
            default_noreply=False, ignore_exc=False)
        self.model = {}
        self.blob_keys = ["py:b%d" % i for i in range(150)]
        self.num_keys = ["py:n%d" % i for i in range(50)]
        self.ops = 0
        self.by_kind = {}
        self.failovers = 0
        self.stale = []

    def attempt(self, fn):
        """Runs one operation; a connection error (the node just died) is retried and the
        HashClient moves the key to the surviving node."""
        for _ in range(10):
            try:
                return fn()
            except (OSError, memcache_exceptions.MemcacheUnexpectedCloseError):
                self.failovers += 1
        raise InteropError("an operation failed 10 times in a row")

    def expect(self, kind, key, got, want):
        if got != want:
            self.stale.append("%s %s: got %r, expected %r" % (
                kind, key, got if not isinstance(got, bytes) else got[:40],
                want if not isinstance(want, bytes) else want[:40]))

    def one(self):
        rng = self.rng
        c = self.client
        m = self.model
        kind = rng.choice(["set", "get", "get_many", "add", "replace", "append", "prepend",
                           "delete", "incr", "decr", "cas", "touch", "gets"])
        self.ops += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if kind in ("incr", "decr"):
            key = rng.choice(self.num_keys)
            delta = rng.randrange(1, 1000)
            if key not in m and rng.random() < 0.5:
                self.attempt(lambda: c.set(key, b"100"))
                m[key] = b"100"
            got = self.attempt(lambda: getattr(c, kind)(key, delta))
            if key in m:
                cur = int(m[key])
                new = cur + delta if kind == "incr" else max(0, cur - delta)
                # memcached rewrites a number in place when it fits, padding with spaces.
                digits = str(new).encode()
                m[key] = digits.ljust(len(m[key])) if len(digits) <= len(m[key]) else digits
                self.expect(kind, key, got, new)
            else:
                self.expect(kind, key, got, None)
            return
        key = rng.choice(self.blob_keys)
        if kind == "set":
            v = random_value(rng)
            self.expect(kind, key, self.attempt(lambda: c.set(key, v)), True)
            m[key] = v
        elif kind == "get":
            self.expect(kind, key, self.attempt(lambda: c.get(key)), m.get(key))
        elif kind == "get_many":
            keys = rng.sample(self.blob_keys + self.num_keys, 8)
            got = self.attempt(lambda: c.get_many(keys))
            self.expect(kind, ",".join(keys), got, {k: m[k] for k in keys if k in m})
        elif kind == "add":
            v = random_value(rng)
            self.expect(kind, key, self.attempt(lambda: c.add(key, v)), key not in m)
            m.setdefault(key, v)
        elif kind == "replace":
            v = random_value(rng)
            self.expect(kind, key, self.attempt(lambda: c.replace(key, v)), key in m)
            if key in m:
                m[key] = v
        elif kind in ("append", "prepend"):
            v = random_value(rng)[:100]
            got = self.attempt(lambda: getattr(c, kind)(key, v))
            self.expect(kind, key, got, key in m)
            if key in m:
                m[key] = m[key] + v if kind == "append" else v + m[key]
        elif kind == "delete":
            self.expect(kind, key, self.attempt(lambda: c.delete(key)), key in m)
            m.pop(key, None)
        elif kind == "touch":
            self.expect(kind, key, self.attempt(lambda: c.touch(key, 3600)), key in m)
        elif kind in ("cas", "gets"):
            value, token = self.attempt(lambda: c.gets(key))
            self.expect("gets", key, value, m.get(key))
            if token is None or kind == "gets":
                return
            if rng.random() < 0.3:
                # Someone else writes between gets and cas: the token must be refused.
                v = random_value(rng)
                self.attempt(lambda: c.set(key, v))
                m[key] = v
                self.expect("cas(stale)", key, self.attempt(lambda: c.cas(key, b"lost", token)),
                            False)
            else:
                v = random_value(rng)
                self.expect("cas", key, self.attempt(lambda: c.cas(key, v, token)), True)
                m[key] = v

    def run(self, n):
        for _ in range(n):
            self.one()
        if self.stale:
            raise InteropError("%d wrong/stale replies, first: %s"
                               % (len(self.stale), self.stale[:3]))


def served(node):
    s = stats(node.port)
    return sum(int(s.get(k, "0")) for k in ("cmd_get", "cmd_set", "cmd_touch"))


def scenario_pymemcache():
    with Harness() as h:
        pair = h.pair("py")
        d = PyDriver(pair, seed=7)
        d.run(PY_OPS_PER_PHASE)
        victim = pair.a
        # The model expects every write on the survivor: kill the node once they have left it
        # (the last ones may otherwise be lost, as documented, on a busy machine).
        victim.wait_sent()
        victim.kill9()
        d.run(PY_OPS_PER_PHASE)
        check(d.failovers > 0, "the HashClient never noticed the dead node")
        pair.restart(victim)
        # Keep going until the client has put the node back into rotation and sent it a good
        # share of the work: reads it serves must see every write made while it was away.
        base = served(victim)
        deadline = time.monotonic() + 30
        back_ops = 0
        while served(victim) - base < PY_OPS_PER_PHASE // 4 or back_ops < PY_OPS_PER_PHASE:
            check(time.monotonic() < deadline, "the client never used the returned node")
            d.run(100)
            back_ops += 100
        served_by_returned = served(victim) - base
        pair.wait_converged()
        # Both nodes, read directly, hold exactly what the model says.
        for node in pair.nodes:
            direct = Client(("127.0.0.1", node.port), connect_timeout=1, timeout=2)
            keys = d.blob_keys + d.num_keys
            got = direct.get_many(keys)
            direct.close()
            want = {k: d.model[k] for k in keys if k in d.model}
            check(got == want, "%s does not hold the model's data after the run" % node.name)
        kinds = " ".join("%s=%d" % kv for kv in sorted(d.by_kind.items()))
        return ("ops=%d failovers=%d ops_on_returned_node=%d stale_reads=0 keys_checked=%d "
                "live_keys=%d kinds: %s" % (d.ops, d.failovers, served_by_returned,
                                           2 * (len(d.blob_keys) + len(d.num_keys)),
                                           len(d.model), kinds))


# ---------------------------------------------------------------------------------------------
# Perl Cache::Memcached and the libmemcached tools


def perl(mode, port, count):
    r = subprocess.run(["perl", PERL_SUITE, mode, "127.0.0.1:%d" % port, str(count)],
                       capture_output=True, text=True, timeout=120)
    out = r.stdout
    check(r.returncode == 0 and "not ok" not in out,
          "Cache::Memcached %s failed (exit %d):\n%s%s" % (mode, r.returncode, out, r.stderr))
    return sum(1 for line in out.splitlines() if line.startswith("ok "))


def scenario_perl():
    with Harness() as h:
        pair = h.pair("perl")
        passed = perl("suite", pair.a.port, 200)
        pair.wait_converged()
        # What the suite left on A, read with the same client from B.
        verified = perl("verify", pair.b.port, 200)
        return "checks_on_A=%d checks_of_replica_on_B=%d" % (passed, verified)


def tool(args, timeout=60):
    r = subprocess.run(args, capture_output=True, timeout=timeout)
    check(r.returncode == 0, "%s exited %d: %s %s" % (args[0], r.returncode,
                                                      r.stdout[:300], r.stderr[:300]))
    return r.stdout


def scenario_libmemcached_tools():
    with Harness() as h:
        pair = h.pair("tools")
        a = "127.0.0.1:%d" % pair.a.port
        b = "127.0.0.1:%d" % pair.b.port
        work = os.path.join(h.logdir, "files")
        os.makedirs(work)
        files = {}
        rng = random.Random(3)
        for i in range(5):
            name = "blob%d.bin" % i
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200000)))
            with open(os.path.join(work, name), "wb") as f:
                f.write(data)
            files[name] = data
        tool(["memccp", "--servers=" + a, "--set"] + [os.path.join(work, n) for n in files])
        pair.wait_converged()
        for name, data in files.items():
            # memccp stores a file under its base name; read the copy on the other node.
            # memccat ends each value it prints with a newline.
            check(tool(["memccat", "--servers=" + b, name]) == data + b"\n",
                  "memccat from B does not return what memccp wrote to A for %s" % name)
        st = tool(["memcstat", "--servers=" + a]).decode()
        check("pid: %d" % pair.a.proc.pid in st, "memcstat does not show A's pid:\n" + st[:500])
        check("curr_items: %d" % len(files) in st, "memcstat curr_items:\n" + st[:800])
        dumped = set(tool(["memcdump", "--servers=" + b]).decode().split())
        check(dumped == set(files), "memcdump on B lists %s, expected %s" % (dumped, set(files)))
        capable = tool(["memccapable", "-h", "127.0.0.1", "-p", str(pair.a.port), "-a"]).decode()
        passed = capable.count("[pass]")
        check("All tests passed" in capable and passed > 0, "memccapable:\n" + capable)
        # memccapable flushed A; store again, then flush through the tool.
        tool(["memccp", "--servers=" + a, "--set"] + [os.path.join(work, n) for n in files])
        tool(["memcflush", "--servers=" + a])
        pair.wait_converged()
        for name in files:
            r = subprocess.run(["memccat", "--servers=" + b, name], capture_output=True,
                               timeout=30)
            check(r.returncode != 0 and r.stdout == b"",
                  "%s is still on B after memcflush on A" % name)
        return ("files=%d bytes=%d memccat_from_replica=%d memcdump_keys=%d "
                "memccapable_ascii_passed=%d flushed_on_both=%d"
                % (len(files), sum(map(len, files.values())), len(files), len(dumped), passed,
                   len(files)))


# ---------------------------------------------------------------------------------------------
# twemproxy in front of two pairs


NUTCRACKER_CONF = """\
{pool}:
  listen: 127.0.0.1:{listen}
  hash: fnv1a_64
  distribution: ketama
  timeout: 1000
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:{p1}:1 pair1
   - 127.0.0.1:{p2}:1 pair2
"""


def nutcracker(h, pool, p1, p2):
    """A twemproxy whose ketama ring names the pairs, not the nodes: two proxies, one over the
    A sides and one over the B sides, place every key on the same pair."""
    listen = free_port()
    conf = os.path.join(h.logdir, pool + ".yml")
    with open(conf, "w") as f:
        f.write(NUTCRACKER_CONF.format(pool=pool, listen=listen, p1=p1, p2=p2))
    binary = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    h.spawn([binary, "-c", conf, "-s", str(free_port()), "-a", "127.0.0.1",
             "-o", os.path.join(h.logdir, pool + ".log"), "-p", os.path.join(h.logdir,
                                                                            pool + ".pid")],
            pool + ".out")
    wait_until("nutcracker %s on port %d" % (pool, listen), lambda: port_open(listen), 15)
    return Client(("127.0.0.1", listen), connect_timeout=1, timeout=3, default_noreply=False)


def scenario_twemproxy():
    with Harness() as h:
        p1 = h.pair("pair1")
        p2 = h.pair("pair2")
        x = nutcracker(h, "proxyA", p1.a.port, p2.a.port)
        y = nutcracker(h, "proxyB", p1.b.port, p2.b.port)
        model = {}
        keys = ["tw:%d" % i for i in range(PROXY_KEYS)]
        for i, k in enumerate(keys):
            model[k] = ("v%d-" % i).encode() * (1 + i % 7)
            check(x.set(k, model[k]), "set %s through proxyA" % k)
        p1.wait_converged()
        p2.wait_converged()
        on1 = int(stats(p1.a.port)["curr_items"])
        on2 = int(stats(p2.a.port)["curr_items"])
        check(on1 + on2 == PROXY_KEYS and on1 > 0 and on2 > 0,
              "ketama spread %d keys as %d/%d" % (PROXY_KEYS, on1, on2))
        for k in keys:
            check(y.get(k) == model[k], "proxyB does not route %s like proxyA" % k)

        # A node of pair1 dies: proxyA fails pair1's keys, the client falls back to proxyB.
        p1.a.kill9()
        fallbacks = 0
        for i, k in enumerate(keys):
            model[k] = ("w%d-" % i).encode() * (1 + i % 5)
            try:
                ok = x.set(k, model[k])
            except (OSError, memcache_exceptions.MemcacheError):
                fallbacks += 1
                x.close()
                ok = y.set(k, model[k])
            check(ok, "set %s during the outage" % k)
        check(fallbacks > 0, "proxyA never failed although pair1.A is dead")
        for k in keys:
            check(y.get(k) == model[k], "proxyB lost %s during the outage" % k)
        p1.restart(p1.a)
        p1.wait_converged()
        x.close()
        stale = sum(1 for k in keys if x.get(k) != model[k])
        check(stale == 0, "%d keys stale through proxyA after pair1.A came back" % stale)
        return ("keys=%d on_pair1=%d on_pair2=%d killed=pair1.A proxyA_failures=%d "
                "fell_back_to_proxyB=%d stale_after_return=0 final_keys_checked=%d"
                % (PROXY_KEYS, on1, on2, fallbacks, fallbacks, 2 * PROXY_KEYS))


SCENARIOS = [
    ("php-memcache-sessions", scenario_php_memcache),
    ("php-memcached-sessions", scenario_php_memcached),
    ("pymemcache-hashclient", scenario_pymemcache),
    ("perl-cache-memcached", scenario_perl),
    ("libmemcached-tools", scenario_libmemcached_tools),
    ("twemproxy-two-pairs", scenario_twemproxy),
]


def main(argv):
    wanted = argv[1:]
    unknown = set(wanted) - {n for n, _ in SCENARIOS}
    if unknown:
        print("unknown scenario(s): %s" % ", ".join(sorted(unknown)), file=sys.stderr)
        return 2
    failed = 0
    for name, fn in SCENARIOS:
        if wanted and name not in wanted:
            continue
        t0 = time.monotonic()
        try:
            summary = fn()
            print("INTEROP PASS %-24s %s (%.1fs)" % (name, summary, time.monotonic() - t0),
                  flush=True)
        except Exception as e:  # every failure is reported, then the next scenario runs
            failed += 1
            print("INTEROP FAIL %-24s %s: %s (%.1fs)" % (name, type(e).__name__, e,
                                                         time.monotonic() - t0), flush=True)
            traceback.print_exc()
    print("INTEROP %s: %d scenario(s) failed" % ("FAILED" if failed else "OK", failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
