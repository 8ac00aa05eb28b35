//! Every command-line option, its default and its validation: the only place defaults live.
//!
//! The option set is memcached 1.6's (`memcached -h`), parsed with getopts from one table
//! ([`OPTIONS`]) that also produces the `-h` text, so the two cannot drift apart. Values are
//! checked strictly: where memcached's `atoi` would silently turn `-m 1g` into 1 MB, we refuse
//! with a one-line error naming the flag, and `main` exits with [`EXIT_USAGE`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Exit status for a bad command line (EX_USAGE), as the issue tracker and init scripts expect.
pub const EXIT_USAGE: i32 = 64;

/// Above this many worker threads memcached warns (and still starts); so do we.
pub const THREADS_WARN_ABOVE: usize = 64;

/// Smallest `-I` memcached accepts.
const ITEM_SIZE_MIN: usize = 1024;
/// Largest `-I` memcached accepts (one gigabyte).
const ITEM_SIZE_MAX: usize = 1024 * 1024 * 1024;
const MB: usize = 1024 * 1024;

/// `-B`: which protocol a new connection speaks. `binary` is refused until it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingProtocol {
    /// memcached's default: the first byte decides (0x80 would mean binary).
    Auto,
    Ascii,
}

impl BindingProtocol {
    /// The value memcached prints for `STAT binding_protocol`.
    pub fn stats_name(self) -> &'static str {
        match self {
            BindingProtocol::Auto => "auto-negotiate",
            BindingProtocol::Ascii => "ascii",
        }
    }
}

/// The validated configuration a server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// `-p`: TCP port; 0 disables the TCP listeners (memcached's behaviour), including any
    /// `-l host:port` entries.
    pub port: u16,
    /// `-U`: only 0 (UDP off) is accepted until UDP exists.
    pub udp_port: u16,
    /// `-s`: serve a UNIX socket instead of TCP (made absolute at parse time, so `-d`'s
    /// `chdir("/")` cannot move it).
    pub unix_socket: Option<PathBuf>,
    /// `-a`: permission mask of the UNIX socket.
    pub unix_mask: u32,
    /// `-A`: allow the `shutdown` command.
    pub enable_shutdown: bool,
    /// `-l`: addresses to listen on, resolved, each with its port (default `port`).
    /// Empty means every interface: bind `0.0.0.0` and `::` like memcached's INADDR_ANY.
    /// `*` in the list also means both wildcards.
    pub listen: Vec<SocketAddr>,
    /// The `-l` text as given (several `-l` joined by `,`), for `stats settings` (`inter`).
    pub listen_spec: Option<String>,
    /// `-d`: daemonize.
    pub daemonize: bool,
    /// `-r`: raise the core-file limit.
    pub enable_coredumps: bool,
    /// `-u`: user to switch to when started as root.
    pub user: Option<String>,
    /// `-m`: item memory in bytes.
    pub memory_limit: usize,
    /// `-M` clears this: answer `SERVER_ERROR out of memory storing object` instead of evicting.
    pub evictions: bool,
    /// `-c`: maximum simultaneous client connections.
    pub max_conns: usize,
    /// `-k`: mlockall.
    pub lock_memory: bool,
    /// `-v` count: 1 errors/warnings, 2 also client commands, 3 also internal state. More
    /// `v`s are counted (memcached reports the count in `stats settings`).
    pub verbose: u8,
    /// `-P`: pid file, made absolute at parse time (written whether or not `-d` is given,
    /// as memcached 1.6 does).
    pub pidfile: Option<PathBuf>,
    /// `-f`: accepted for compatibility (no slab classes here); reported in `stats settings`.
    pub growth_factor: f64,
    /// `-n`: accepted for compatibility; reported in `stats settings`.
    pub chunk_size: u32,
    /// `-L`: accepted for compatibility.
    pub large_pages: bool,
    /// `-D`: `stats detail` prefix delimiter.
    pub prefix_delimiter: char,
    /// `-D` also switches `stats detail` collection on from the start (memcached does).
    pub detail_enabled: bool,
    /// `-t`: worker threads.
    pub threads: usize,
    /// `-R`: requests served per connection per wake-up before yielding.
    pub reqs_per_event: usize,
    /// `-C` clears this: every `gets` then reports CAS 0.
    pub cas_enabled: bool,
    /// `-b`: listen backlog.
    pub backlog: i32,
    /// `-B`: `auto` or `ascii`.
    pub binding_protocol: BindingProtocol,
    /// `-I`: maximum item size in bytes.
    pub item_size_max: usize,
    /// `-F` clears this: `flush_all` is refused.
    pub flush_enabled: bool,
    /// `--disable-dumping` clears this.
    pub dump_enabled: bool,
    /// `-W` clears this.
    pub watch_enabled: bool,
    /// `-o` options, as (name, value) pairs in the order given, for `stats settings`.
    pub extended: Vec<(String, Option<String>)>,
    /// `-o idle_timeout`: seconds of client inactivity before closing (0 = never).
    pub idle_timeout: u32,
    /// `-o maxconns_fast` (default on): over-limit connections get an error and are closed.
    /// `-o no_maxconns_fast` and `-o no_modern` clear it.
    pub maxconns_fast: bool,
    /// `-x`: the peer of this node's pair (`host`, `host:port`, `[v6]:port`); None = alone.
    pub peer: Option<String>,
    /// `-X`: the replication port: where this node listens for its peer and, when `-x`
    /// names no port, where it dials.
    pub repl_port: u16,
    /// `--repl-listen`: address of the replication listener (default: the first `-l`
    /// address, or every interface).
    pub repl_listen: Option<SocketAddr>,
    /// `--repl-heartbeat-ms`: interval between heartbeats.
    pub repl_heartbeat_ms: u64,
    /// `--repl-timeout-ms`: a peer silent this long is down.
    pub repl_timeout_ms: u64,
    /// `--repl-bootstrap-timeout`: seconds a starting node keeps trying to finish its copy.
    pub repl_bootstrap_timeout: u64,
    /// `--cluster-name`: both nodes of a pair must carry the same one.
    pub cluster_name: String,
    /// `--repl-backlog-mb`: bound on changes waiting for the peer, in bytes.
    pub repl_backlog: usize,
    /// `--repl-copy-share`: percent of the time a full copy to the peer may take while
    /// clients keep the node busy (100: no limit).
    pub repl_copy_share: u8,
    /// `--repl-secret-file`: file holding the secret both nodes prove in the handshake.
    pub repl_secret_file: Option<PathBuf>,
    /// `--repl-drain-timeout-ms`: on SIGTERM, how long to keep sending pending changes.
    pub repl_drain_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 11211,
            udp_port: 0,
            unix_socket: None,
            unix_mask: 0o700,
            enable_shutdown: false,
            listen: Vec::new(),
            listen_spec: None,
            daemonize: false,
            enable_coredumps: false,
            user: None,
            memory_limit: 64 * MB,
            evictions: true,
            max_conns: 1024,
            lock_memory: false,
            verbose: 0,
            pidfile: None,
            growth_factor: 1.25,
            chunk_size: 48,
            large_pages: false,
            prefix_delimiter: ':',
            detail_enabled: false,
            threads: 4,
            reqs_per_event: 20,
            cas_enabled: true,
            backlog: 1024,
            binding_protocol: BindingProtocol::Auto,
            item_size_max: MB,
            flush_enabled: true,
            dump_enabled: true,
            watch_enabled: true,
            extended: Vec::new(),
            idle_timeout: 0,
            maxconns_fast: true,
            peer: None,
            repl_port: 11212,
            repl_listen: None,
            repl_heartbeat_ms: 1000,
            repl_timeout_ms: 3000,
            repl_bootstrap_timeout: 60,
            cluster_name: "repcached".to_string(),
            repl_backlog: 64 * 1024 * 1024,
            repl_copy_share: 5,
            repl_secret_file: None,
            repl_drain_timeout_ms: 10_000,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    /// Print this text to stdout and exit 0 (`-h`, `-V`, `-i`).
    Print(String),
}

/// A rejected command line: one line naming the flag; the process exits with [`EXIT_USAGE`].
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How far an option is honoured; drives the `-h` text and docs/FLAGS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Parsed, validated and reported in `stats settings`, with no effect on behaviour.
    Compat,
    /// Rejected with an explanation (the feature does not exist here).
    Refused,
}

/// One command-line option.
#[derive(Debug)]
pub struct OptSpec {
    /// Single letter, or "" when the option has only a long name.
    pub short: &'static str,
    /// Long name without `--`, or "" when the option has only a short name.
    pub long: &'static str,
    /// Placeholder of the value, or `None` for a flag.
    pub value: Option<&'static str>,
    /// `-h` text; `\n` starts a continuation line.
    pub help: &'static str,
    pub support: Support,
}

impl OptSpec {
    /// The name getopts looks the option up by.
    fn key(&self) -> &'static str {
        if self.short.is_empty() {
            self.long
        } else {
            self.short
        }
    }

    /// How errors name the option: `-m/--memory-limit`, `-D`, `--disable-dumping`.
    pub fn display_name(&self) -> String {
        match (self.short.is_empty(), self.long.is_empty()) {
            (false, false) => format!("-{}/--{}", self.short, self.long),
            (false, true) => format!("-{}", self.short),
            _ => format!("--{}", self.long),
        }
    }
}

const fn opt(
    short: &'static str,
    long: &'static str,
    value: Option<&'static str>,
    help: &'static str,
    support: Support,
) -> OptSpec {
    OptSpec {
        short,
        long,
        value,
        help,
        support,
    }
}

use Support::{Compat, Refused, Supported};

/// Every option the parser defines, in `-h` order. `-x`/`-X` are repcached's peer and
/// replication port, so memcached's `-X` is spelled `--disable-dumping` here.
pub const OPTIONS: &[OptSpec] = &[
    opt("p", "port", Some("num"), "TCP port to listen on (default: 11211; 0 turns TCP off)", Supported),
    opt("U", "udp-port", Some("num"), "UDP port (default: 0, off); only 0 is accepted: no UDP yet", Supported),
    opt("s", "unix-socket", Some("file"), "listen on this UNIX socket instead of TCP", Supported),
    opt("a", "unix-mask", Some("mask"), "permissions of the UNIX socket, octal (default: 700)", Supported),
    opt("A", "enable-shutdown", None, "allow the \"shutdown\" command", Supported),
    opt(
        "l",
        "listen",
        Some("addr"),
        "addresses to listen on (default: every interface): a comma-separated\n\
         list of IPv4, IPv6 (in brackets when a port follows) or host names,\n\
         each with an optional :port; '*' is every interface; repeatable",
        Supported,
    ),
    opt("d", "daemon", None, "run in the background as a daemon", Supported),
    opt("r", "enable-coredumps", None, "raise the core file size limit to the maximum", Supported),
    opt("u", "user", Some("user"), "switch to this user after start-up (required when started as root)", Supported),
    opt("m", "memory-limit", Some("num"), "memory for items, in megabytes (default: 64)", Supported),
    opt("M", "disable-evictions", None, "answer an out-of-memory error instead of evicting items", Supported),
    opt("c", "conn-limit", Some("num"), "maximum simultaneous connections (default: 1024)", Supported),
    opt("k", "lock-memory", None, "lock all paged memory into RAM (mlockall)", Supported),
    opt("v", "verbose", None, "log more: -v info, -vv debug (client commands), -vvv trace", Supported),
    opt("h", "help", None, "print this help and exit", Supported),
    opt("i", "license", None, "print the license and exit", Supported),
    opt("V", "version", None, "print the version and exit", Supported),
    opt("P", "pidfile", Some("file"), "write the process id to this file", Supported),
    opt("f", "slab-growth-factor", Some("num"), "slab chunk growth factor, > 1 (default: 1.25; no slabs here)", Compat),
    opt("n", "slab-min-size", Some("bytes"), "minimum slab chunk size (default: 48; no slabs here)", Compat),
    opt("L", "enable-largepages", None, "use large memory pages (accepted, no effect)", Compat),
    opt(
        "D",
        "",
        Some("char"),
        "delimiter between key prefix and id in per-prefix stats\n\
         (default: ':'); reported in stats settings (no per-prefix stats yet)",
        Compat,
    ),
    opt("t", "threads", Some("num"), "worker threads (default: 4)", Supported),
    opt("R", "max-reqs-per-event", Some("num"), "requests per connection before serving others (default: 20)", Supported),
    opt("C", "disable-cas", None, "do not keep CAS values (gets reports 0)", Supported),
    opt("b", "listen-backlog", Some("num"), "TCP listen backlog (default: 1024)", Supported),
    opt("B", "protocol", Some("name"), "auto or ascii (default: auto); binary is not supported", Supported),
    opt("I", "max-item-size", Some("size"), "largest item, bytes or with a k/m suffix (default: 1m, min: 1k,\nmax: 1024m, and at most half of -m)", Supported),
    opt("S", "enable-sasl", None, "SASL authentication: not supported", Refused),
    opt("F", "disable-flush-all", None, "refuse the flush_all command", Supported),
    opt("", "disable-dumping", None, "refuse stats cachedump/detail dump, lru_crawler metadump", Supported),
    opt("W", "disable-watch", None, "refuse the watch command", Supported),
    opt("Y", "auth-file", Some("file"), "ASCII authentication: not supported", Refused),
    opt("e", "memory-file", Some("file"), "restartable cache in a memory file: not supported", Refused),
    opt("Z", "enable-ssl", None, "TLS: not supported", Refused),
    opt("N", "napi-ids", Some("num"), "NAPI id based thread selection: not supported", Refused),
    opt("o", "extended", Some("list"), "comma-separated extended options, listed below", Supported),
    opt("x", "peer", Some("host[:port]"), "replicate with this peer (host, IPv4, or [IPv6]; port default: -X)", Supported),
    opt("X", "repl-port", Some("num"), "replication port: listen here for the peer, dial it here (default: 11212)", Supported),
    opt("", "repl-listen", Some("addr"), "address of the replication listener (default: first -l address,\nor every interface)", Supported),
    opt("", "repl-heartbeat-ms", Some("ms"), "interval between heartbeats to the peer (default: 1000)", Supported),
    opt("", "repl-timeout-ms", Some("ms"), "declare the peer down after this long without a frame (default: 3000)", Supported),
    opt("", "repl-bootstrap-timeout", Some("secs"), "give up a start-up copy from the peer and serve alone after this\nlong (default: 60)", Supported),
    opt("", "cluster-name", Some("name"), "name both nodes of a pair must share (default: repcached)", Supported),
    opt("", "repl-secret-file", Some("file"), "shared secret both nodes must prove (HMAC challenge-response);\nwithout it the replication port is open to anyone who reaches it", Supported),
    opt("", "repl-drain-timeout-ms", Some("ms"), "on SIGTERM, keep sending pending changes to the peer for at most\nthis long before exiting (default: 10000)", Supported),
    opt("", "repl-backlog-mb", Some("num"), "memory for changes not yet sent to the peer; beyond it the pair\nresyncs in full (default: 64)", Supported),
    opt("", "repl-copy-share", Some("percent"), "share of this node's time a full copy to the peer may take while\nclients keep it busy; 100 = no limit (default: 5)", Supported),
];

/// Whether an extended (`-o`) option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtArg {
    None,
    Required(&'static str),
    Optional(&'static str),
}

/// One `-o` name memcached 1.6 knows and we accept.
#[derive(Debug)]
pub struct ExtSpec {
    pub name: &'static str,
    pub arg: ExtArg,
    pub help: &'static str,
}

const fn ext(name: &'static str, arg: ExtArg, help: &'static str) -> ExtSpec {
    ExtSpec { name, arg, help }
}

/// The accepted `-o` names. memcached's `ext_*` (extstore), `ssl_*` (TLS), `proxy_*` and
/// `sock_cookie_id` are known but refused, since the features behind them do not exist here.
pub const EXTENDED: &[ExtSpec] = &[
    ext(
        "maxconns_fast",
        ExtArg::None,
        "over -c, send an error and close (default)",
    ),
    ext(
        "no_maxconns_fast",
        ExtArg::None,
        "at -c connections, stop accepting instead",
    ),
    ext(
        "hashpower",
        ExtArg::Required("n"),
        "initial hash table size power, 12-32",
    ),
    ext("no_hashexpand", ExtArg::None, "never grow the hash table"),
    ext(
        "slab_reassign",
        ExtArg::None,
        "allow slab pages to move between classes",
    ),
    ext(
        "no_slab_reassign",
        ExtArg::None,
        "keep slab pages where they are",
    ),
    ext(
        "slab_automove",
        ExtArg::Optional("0|1|2"),
        "slab page rebalancing mode (default: 1)",
    ),
    ext(
        "no_slab_automove",
        ExtArg::None,
        "no automatic slab page rebalancing",
    ),
    ext(
        "slab_automove_ratio",
        ExtArg::Required("ratio"),
        "free-chunk ratio that triggers a move, > 0 and <= 1",
    ),
    ext(
        "slab_automove_window",
        ExtArg::Required("n"),
        "rebalancing window, > 2",
    ),
    ext(
        "slab_automove_freeratio",
        ExtArg::Required("ratio"),
        "memory held free as a buffer",
    ),
    ext(
        "tail_repair_time",
        ExtArg::Required("secs"),
        "force-free a stuck LRU tail after this long, >= 10",
    ),
    ext(
        "hash_algorithm",
        ExtArg::Required("name"),
        "jenkins, murmur3 (default) or xxh3",
    ),
    ext("lru_crawler", ExtArg::None, "run the LRU crawler (default)"),
    ext("no_lru_crawler", ExtArg::None, "do not run the LRU crawler"),
    ext(
        "lru_crawler_sleep",
        ExtArg::Required("usecs"),
        "crawler pause between items, 0-1000000 (default: 100)",
    ),
    ext(
        "lru_crawler_tocrawl",
        ExtArg::Required("n"),
        "items crawled per class per run (default: 0, all)",
    ),
    ext(
        "lru_maintainer",
        ExtArg::None,
        "run the segmented LRU maintainer (default)",
    ),
    ext(
        "no_lru_maintainer",
        ExtArg::None,
        "do not run the LRU maintainer",
    ),
    ext(
        "hot_lru_pct",
        ExtArg::Required("pct"),
        "memory share of the hot LRU, 1-79 (default: 20)",
    ),
    ext(
        "warm_lru_pct",
        ExtArg::Required("pct"),
        "memory share of the warm LRU, 1-79 (default: 40)",
    ),
    ext(
        "hot_max_factor",
        ExtArg::Required("f"),
        "hot items idle longer than cold age * f go cold (default: 0.2)",
    ),
    ext(
        "warm_max_factor",
        ExtArg::Required("f"),
        "warm items idle longer than cold age * f go cold (default: 2.0)",
    ),
    ext(
        "temporary_ttl",
        ExtArg::Required("secs"),
        "items with a shorter TTL go to the temporary LRU (default: 61)",
    ),
    ext(
        "idle_timeout",
        ExtArg::Required("secs"),
        "close client connections idle this long (default: 0, never)",
    ),
    ext(
        "watcher_logbuf_size",
        ExtArg::Required("kb"),
        "per-watcher log buffer (default: 256)",
    ),
    ext(
        "worker_logbuf_size",
        ExtArg::Required("kb"),
        "per-worker log buffer (default: 64)",
    ),
    ext(
        "slab_sizes",
        ExtArg::Required("n-n-..."),
        "explicit slab class sizes, increasing",
    ),
    ext(
        "slab_chunk_max",
        ExtArg::Required("bytes"),
        "largest slab chunk (default: 524288)",
    ),
    ext(
        "track_sizes",
        ExtArg::None,
        "enable the \"stats sizes\" report",
    ),
    ext(
        "no_inline_ascii_resp",
        ExtArg::None,
        "memcached 1.5 compatibility; no effect",
    ),
    ext(
        "inline_ascii_resp",
        ExtArg::None,
        "memcached 1.5 compatibility; no effect",
    ),
    ext(
        "modern",
        ExtArg::None,
        "today's defaults (currently nothing more)",
    ),
    ext(
        "no_modern",
        ExtArg::None,
        "memcached 1.4 defaults: no LRU maintainer, no maxconns_fast, ...",
    ),
    ext(
        "no_chunked_items",
        ExtArg::None,
        "do not chain large items from slab chunks",
    ),
    ext(
        "drop_privileges",
        ExtArg::None,
        "sandbox the process after start-up",
    ),
    ext(
        "no_drop_privileges",
        ExtArg::None,
        "do not sandbox the process",
    ),
    ext(
        "resp_obj_mem_limit",
        ExtArg::Required("mb"),
        "deprecated, no effect (see read_buf_mem_limit)",
    ),
    ext(
        "read_buf_mem_limit",
        ExtArg::Required("mb"),
        "limit for connection buffers (default: 0, unlimited)",
    ),
];

/// The long option names the parser defines, for tests and docs that must list them all.
pub fn long_options() -> Vec<&'static str> {
    OPTIONS
        .iter()
        .map(|o| o.long)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `-V` output.
pub fn version_text() -> String {
    format!("repcached {}\n", crate::VERSION)
}

/// `-i` output: the license the crate is published under (Cargo.toml `license`).
pub fn license_text() -> String {
    format!(
        "repcached {} is licensed under the {} license:\n\n{}",
        crate::VERSION,
        env!("CARGO_PKG_LICENSE"),
        BSD_3_CLAUSE
    )
}

const BSD_3_CLAUSE: &str = "\
Copyright (c) the repcached authors. All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.
3. Neither the name of the copyright holder nor the names of its contributors
   may be used to endorse or promote products derived from this software
   without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS \"AS IS\"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
";

/// `-h` output, generated from [`OPTIONS`] and [`EXTENDED`].
pub fn help_text() -> String {
    const COL: usize = 30;
    let mut out = format!(
        "repcached {} - a memcached-compatible cache server\n\nUsage: repcached [options]\n\n",
        crate::VERSION
    );
    for o in OPTIONS {
        let mut left = match (o.short.is_empty(), o.long.is_empty()) {
            (false, false) => format!("  -{}, --{}", o.short, o.long),
            (false, true) => format!("  -{}", o.short),
            _ => format!("      --{}", o.long),
        };
        if let Some(v) = o.value {
            if o.long.is_empty() {
                left.push_str(&format!(" <{v}>"));
            } else {
                left.push_str(&format!("=<{v}>"));
            }
        }
        let mut lines = o.help.lines();
        let first = lines.next().unwrap_or("");
        if left.len() < COL {
            out.push_str(&format!("{left:<COL$}{first}\n"));
        } else {
            out.push_str(&format!("{left}\n{:COL$}{first}\n", ""));
        }
        for l in lines {
            out.push_str(&format!("{:COL$}{}\n", "", l.trim_start()));
        }
    }
    out.push_str("\nExtended options (-o name[=value],name...):\n");
    for e in EXTENDED {
        let left = match e.arg {
            ExtArg::None => format!("  {}", e.name),
            ExtArg::Required(v) => format!("  {}=<{v}>", e.name),
            ExtArg::Optional(v) => format!("  {}[=<{v}>]", e.name),
        };
        if left.len() < COL {
            out.push_str(&format!("{left:<COL$}{}\n", e.help));
        } else {
            out.push_str(&format!("{left}\n{:COL$}{}\n", "", e.help));
        }
    }
    out.push_str(
        "\nNot supported: UDP (-U other than 0), the binary protocol (-B binary), SASL (-S),\n\
         ASCII authentication (-Y), memory files (-e), TLS (-Z, -o ssl_*), NAPI ids (-N),\n\
         extstore (-o ext_*), the proxy (-o proxy_*) and -o sock_cookie_id.\n",
    );
    out
}

/// Warnings a valid configuration still deserves; `main` logs them once logging is up.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if cfg.threads > THREADS_WARN_ABOVE {
        w.push(format!(
            "-t {}: more than {THREADS_WARN_ABOVE} worker threads is not recommended; \
             use at most the number of cores",
            cfg.threads
        ));
    }
    if cfg.extended.iter().any(|(n, _)| n == "resp_obj_mem_limit") {
        w.push(
            "-o resp_obj_mem_limit is deprecated and has no effect; see read_buf_mem_limit".into(),
        );
    }
    w
}

fn spec(key: &str) -> &'static OptSpec {
    // Only called with keys of OPTIONS entries, all present; fall back to the last entry
    // rather than panicking should a caller ever pass a wrong key.
    OPTIONS
        .iter()
        .find(|o| o.short == key || (o.short.is_empty() && o.long == key))
        .unwrap_or(&OPTIONS[OPTIONS.len() - 1])
}

fn err(key: &str, msg: impl std::fmt::Display) -> CliError {
    CliError(format!("{}: {msg}", spec(key).display_name()))
}

fn getopts_options() -> getopts::Options {
    let mut g = getopts::Options::new();
    for o in OPTIONS {
        // Every option is "multi" so that repeating one is not an error: the last value wins
        // (and -l, -o, -v accumulate), as with memcached's getopt loop.
        match o.value {
            Some(hint) => g.optmulti(o.short, o.long, o.help, hint),
            None => g.optflagmulti(o.short, o.long, o.help),
        };
    }
    g
}

/// Names a getopts option name (a letter or a long name) the way the user typed it.
fn dashed(name: &str) -> String {
    if name.chars().count() == 1 {
        format!("-{name}")
    } else {
        format!("--{name}")
    }
}

fn getopts_error(f: getopts::Fail) -> CliError {
    use getopts::Fail::*;
    match f {
        UnrecognizedOption(n) => CliError(format!("unknown option {}", dashed(&n))),
        ArgumentMissing(n) => CliError(format!("{}: missing argument", dashed(&n))),
        UnexpectedArgument(n) => CliError(format!("{}: takes no argument", dashed(&n))),
        OptionMissing(n) | OptionDuplicated(n) => CliError(format!("{}: invalid use", dashed(&n))),
    }
}

fn last(m: &getopts::Matches, key: &str) -> Option<String> {
    m.opt_strs(key).pop()
}

fn number<T: FromStr>(key: &str, raw: &str, what: &str) -> Result<T, CliError> {
    // Digits only (Rust's parse would also take a leading '+'); memcached's atoi would take
    // "12abc" as 12, which hides typos, so anything else is refused.
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(key, format!("invalid value '{raw}': expected {what}")));
    }
    raw.parse::<T>()
        .map_err(|_| err(key, format!("'{raw}' is out of range: expected {what}")))
}

fn float(key: &str, raw: &str, what: &str) -> Result<f64, CliError> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(err(key, format!("invalid value '{raw}': expected {what}"))),
    }
}

fn absolute(key: &str, raw: &str) -> Result<PathBuf, CliError> {
    if raw.is_empty() {
        return Err(err(key, "empty path"));
    }
    let p = Path::new(raw);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    // Made absolute now because -d changes directory to / before the file is used.
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| err(key, format!("cannot resolve relative path '{raw}': {e}")))
}

/// `-I` value: bytes, or a number with a k/K or m/M suffix (memcached takes no `g`).
fn item_size(raw: &str) -> Result<usize, CliError> {
    let (digits, mult) = match raw.as_bytes().last() {
        Some(b'k' | b'K') => (&raw[..raw.len() - 1], 1024usize),
        Some(b'm' | b'M') => (&raw[..raw.len() - 1], MB),
        _ => (raw, 1),
    };
    let what = "a size in bytes, optionally with a k or m suffix (1k to 1024m)";
    let n: usize = number("I", digits, what)
        .map_err(|_| err("I", format!("invalid value '{raw}': expected {what}")))?;
    n.checked_mul(mult)
        .ok_or_else(|| err("I", format!("'{raw}' is above the 1024m maximum item size")))
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Command, CliError> {
    let m = getopts_options().parse(args).map_err(getopts_error)?;
    if let Some(free) = m.free.first() {
        return Err(CliError(format!("unexpected argument '{free}'")));
    }
    if m.opt_present("h") {
        return Ok(Command::Print(help_text()));
    }
    if m.opt_present("V") {
        return Ok(Command::Print(version_text()));
    }
    if m.opt_present("i") {
        return Ok(Command::Print(license_text()));
    }
    for o in OPTIONS.iter().filter(|o| o.support == Refused) {
        if m.opt_present(o.key()) {
            return Err(err(o.key(), refusal(o.key())));
        }
    }

    let mut cfg = Config::default();
    if let Some(v) = last(&m, "p") {
        cfg.port = number("p", &v, "a TCP port number, 0-65535")?;
    }
    if let Some(v) = last(&m, "U") {
        cfg.udp_port = number("U", &v, "a UDP port number, 0-65535")?;
        if cfg.udp_port != 0 {
            return Err(err(
                "U",
                format!("UDP is not supported yet; only -U 0 (off) is accepted, not {v}"),
            ));
        }
    }
    if let Some(v) = last(&m, "s") {
        cfg.unix_socket = Some(absolute("s", &v)?);
    }
    if let Some(v) = last(&m, "a") {
        cfg.unix_mask = match u32::from_str_radix(&v, 8) {
            Ok(mask) if mask <= 0o777 && v.bytes().all(|b| b.is_ascii_digit()) => mask,
            _ => {
                return Err(err(
                    "a",
                    format!("invalid mask '{v}': expected octal 0-777"),
                ))
            }
        };
    }
    cfg.enable_shutdown = m.opt_present("A");
    cfg.daemonize = m.opt_present("d");
    cfg.enable_coredumps = m.opt_present("r");
    if let Some(v) = last(&m, "u") {
        if v.is_empty() {
            return Err(err("u", "empty user name"));
        }
        cfg.user = Some(v);
    }
    let memory_given = last(&m, "m");
    if let Some(v) = &memory_given {
        let mb: usize = number("m", v, "a whole number of megabytes")?;
        cfg.memory_limit = mb.checked_mul(MB).ok_or_else(|| {
            err(
                "m",
                format!("'{v}' megabytes is more than this machine can address"),
            )
        })?;
    }
    cfg.evictions = !m.opt_present("M");
    if let Some(v) = last(&m, "c") {
        cfg.max_conns = number("c", &v, "a number of connections, at least 1")?;
        if cfg.max_conns == 0 {
            return Err(err("c", "maximum connections must be greater than 0"));
        }
    }
    cfg.lock_memory = m.opt_present("k");
    cfg.verbose = u8::try_from(m.opt_count("v")).unwrap_or(u8::MAX);
    if let Some(v) = last(&m, "P") {
        cfg.pidfile = Some(absolute("P", &v)?);
    }
    if let Some(v) = last(&m, "f") {
        cfg.growth_factor = float("f", &v, "a number greater than 1")?;
        if cfg.growth_factor <= 1.0 {
            return Err(err(
                "f",
                format!("growth factor must be greater than 1, not {v}"),
            ));
        }
    }
    if let Some(v) = last(&m, "n") {
        cfg.chunk_size = number("n", &v, "a size in bytes, at least 1")?;
        if cfg.chunk_size == 0 {
            return Err(err("n", "chunk size must be greater than 0"));
        }
    }
    cfg.large_pages = m.opt_present("L");
    if let Some(v) = last(&m, "D") {
        let mut chars = v.chars();
        cfg.prefix_delimiter = match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii() => c,
            (None, _) => return Err(err("D", "no delimiter given")),
            _ => return Err(err("D", format!("'{v}' is not a single ASCII character"))),
        };
        cfg.detail_enabled = true;
    }
    if let Some(v) = last(&m, "t") {
        cfg.threads = number("t", &v, "a number of threads, at least 1")?;
        if cfg.threads == 0 {
            return Err(err("t", "number of threads must be greater than 0"));
        }
    }
    if let Some(v) = last(&m, "R") {
        cfg.reqs_per_event = number("R", &v, "a number of requests, at least 1")?;
        if cfg.reqs_per_event == 0 {
            return Err(err("R", "requests per event must be greater than 0"));
        }
    }
    cfg.cas_enabled = !m.opt_present("C");
    if let Some(v) = last(&m, "b") {
        cfg.backlog = number("b", &v, "a queue length, 0 or more")?;
    }
    if let Some(v) = last(&m, "B") {
        cfg.binding_protocol = match v.as_str() {
            "auto" => BindingProtocol::Auto,
            "ascii" => BindingProtocol::Ascii,
            "binary" => {
                return Err(err(
                    "B",
                    "the binary protocol is not supported; use auto or ascii",
                ))
            }
            _ => {
                return Err(err(
                    "B",
                    format!("invalid protocol '{v}': expected auto or ascii"),
                ))
            }
        };
    }
    let item_given = last(&m, "I");
    if let Some(v) = &item_given {
        cfg.item_size_max = item_size(v)?;
        if cfg.item_size_max < ITEM_SIZE_MIN {
            return Err(err("I", format!("'{v}' is below the 1k minimum item size")));
        }
        if cfg.item_size_max > ITEM_SIZE_MAX {
            return Err(err(
                "I",
                format!("'{v}' is above the 1024m maximum item size"),
            ));
        }
    }
    // memcached's rule: an item may take at most half of the memory limit.
    if cfg.item_size_max > cfg.memory_limit / 2 {
        return Err(match (&item_given, &memory_given) {
            (Some(i), _) => err(
                "I",
                format!(
                    "item size limit {i} is more than half of the memory limit (-m {} MB)",
                    cfg.memory_limit / MB
                ),
            ),
            (None, _) => err(
                "m",
                format!(
                    "{} MB is less than twice the item size limit ({} bytes); raise -m or lower -I",
                    cfg.memory_limit / MB,
                    cfg.item_size_max
                ),
            ),
        });
    }
    cfg.flush_enabled = !m.opt_present("F");
    cfg.dump_enabled = !m.opt_present("disable-dumping");
    cfg.watch_enabled = !m.opt_present("W");

    for list in m.opt_strs("o") {
        apply_extended(&mut cfg, &list)?;
    }
    check_extended(&cfg)?;

    let listen = m.opt_strs("l");
    if !listen.is_empty() {
        cfg.listen = parse_listen(&listen, cfg.port)?;
        cfg.listen_spec = Some(listen.join(","));
    }
    replication_options(&m, &mut cfg)?;
    Ok(Command::Run(Box::new(cfg)))
}

fn replication_options(m: &getopts::Matches, cfg: &mut Config) -> Result<(), CliError> {
    if let Some(v) = last(m, "X") {
        cfg.repl_port = number("X", &v, "a TCP port number, 1-65535")?;
        if cfg.repl_port == 0 {
            return Err(err("X", "the replication port must not be 0".to_string()));
        }
    }
    if let Some(v) = last(m, "x") {
        if v.is_empty() || v.contains(char::is_whitespace) {
            return Err(err("x", format!("invalid peer address '{v}'")));
        }
        cfg.peer = Some(v);
    }
    if let Some(v) = last(m, "repl-listen") {
        let addrs = listen_entry(&v, cfg.repl_port)?;
        cfg.repl_listen = addrs.first().copied();
    }
    let positive = |key: &str, what: &str| -> Result<Option<u64>, CliError> {
        match last(m, key) {
            None => Ok(None),
            Some(v) => match number::<u64>(key, &v, what)? {
                0 => Err(err(key, format!("'{v}' must be at least 1"))),
                n => Ok(Some(n)),
            },
        }
    };
    if let Some(n) = positive("repl-heartbeat-ms", "milliseconds")? {
        cfg.repl_heartbeat_ms = n;
    }
    if let Some(n) = positive("repl-timeout-ms", "milliseconds")? {
        cfg.repl_timeout_ms = n;
    }
    if cfg.repl_timeout_ms <= cfg.repl_heartbeat_ms {
        return Err(err(
            "repl-timeout-ms",
            format!(
                "the peer timeout ({} ms) must be longer than the heartbeat interval ({} ms)",
                cfg.repl_timeout_ms, cfg.repl_heartbeat_ms
            ),
        ));
    }
    if let Some(n) = positive("repl-drain-timeout-ms", "milliseconds")? {
        cfg.repl_drain_timeout_ms = n;
    }
    if let Some(n) = positive("repl-bootstrap-timeout", "seconds")? {
        cfg.repl_bootstrap_timeout = n;
    }
    if let Some(n) = positive("repl-backlog-mb", "megabytes")? {
        cfg.repl_backlog = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(MB))
            .ok_or_else(|| err("repl-backlog-mb", format!("{n} is too large")))?;
    }
    if let Some(n) = positive("repl-copy-share", "percent")? {
        cfg.repl_copy_share = u8::try_from(n)
            .ok()
            .filter(|&p| p <= 100)
            .ok_or_else(|| err("repl-copy-share", format!("'{n}' must be at most 100")))?;
    }
    if let Some(v) = last(m, "repl-secret-file") {
        cfg.repl_secret_file = Some(absolute("repl-secret-file", &v)?);
    }
    if let Some(v) = last(m, "cluster-name") {
        if v.is_empty() || v.len() > 255 {
            return Err(err("cluster-name", "must be 1 to 255 bytes".to_string()));
        }
        cfg.cluster_name = v;
    }
    Ok(())
}

fn refusal(key: &str) -> &'static str {
    match key {
        "S" => "SASL authentication is not supported (it needs the binary protocol)",
        "Y" => "ASCII authentication (auth files) is not supported",
        "e" => "memory files (restartable cache) are not supported",
        "Z" => "TLS is not supported",
        "N" => "NAPI id based thread selection is not supported",
        _ => "not supported",
    }
}

// ---------------------------------------------------------------------------------------------
// -l

fn parse_listen(specs: &[String], default_port: u16) -> Result<Vec<SocketAddr>, CliError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    // memcached splits on both ',' and ';' and skips empty pieces (strtok).
    for entry in specs
        .iter()
        .flat_map(|s| s.split([',', ';']))
        .filter(|e| !e.is_empty())
    {
        for addr in listen_entry(entry, default_port)? {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    Ok(out)
}

fn listen_entry(entry: &str, default_port: u16) -> Result<Vec<SocketAddr>, CliError> {
    if entry.starts_with("proto[")
        || entry.starts_with("tag[")
        || entry.starts_with("notls:")
        || entry.starts_with("mtls:")
    {
        return Err(err(
            "l",
            format!("listener prefixes (proto[], tag[], notls, mtls) are not supported: '{entry}'"),
        ));
    }
    let (host, port_text) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| err("l", format!("invalid IPv6 address '{entry}': missing ']'")))?;
        match after {
            "" => (inside, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (inside, Some(p)),
                None => {
                    return Err(err(
                        "l",
                        format!("unexpected '{after}' after the address in '{entry}'"),
                    ))
                }
            },
        }
    } else {
        match entry.matches(':').count() {
            0 => (entry, None),
            1 => match entry.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (entry, None),
            },
            // Several colons and no brackets: a bare IPv6 address, without a port.
            _ => (entry, None),
        }
    };
    if host.is_empty() {
        return Err(err("l", format!("no address in '{entry}'")));
    }
    let port = match port_text {
        None => default_port,
        Some(p) => number("l", p, "a port number, 0-65535")
            .map_err(|_| err("l", format!("invalid port '{p}' in '{entry}'")))?,
    };
    if host == "*" {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err("l", format!("cannot resolve '{host}': {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(err("l", format!("'{host}' resolves to no address")));
    }
    Ok(addrs)
}

// ---------------------------------------------------------------------------------------------
// -o

fn apply_extended(cfg: &mut Config, list: &str) -> Result<(), CliError> {
    for item in list.split(',') {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        if name.is_empty() {
            return Err(err("o", format!("empty extended option in '{list}'")));
        }
        let Some(ext) = EXTENDED.iter().find(|e| e.name == name) else {
            return Err(err("o", unknown_extended(name)));
        };
        match (ext.arg, value) {
            (ExtArg::None, Some(v)) => {
                return Err(err("o", format!("{name} takes no value (got '{v}')")))
            }
            (ExtArg::Required(hint), None | Some("")) => {
                return Err(err("o", format!("{name} needs a value: {name}=<{hint}>")))
            }
            _ => {}
        }
        let v = value.unwrap_or("");
        validate_extended(cfg, name, v)?;
        cfg.extended
            .push((name.to_string(), value.map(str::to_string)));
    }
    Ok(())
}

fn unknown_extended(name: &str) -> String {
    if name.starts_with("ext_") {
        format!("{name}: extstore (external storage) is not supported")
    } else if name.starts_with("ssl_") {
        format!("{name}: TLS is not supported")
    } else if name.starts_with("proxy_") {
        format!("{name}: the proxy is not supported")
    } else if name == "sock_cookie_id" {
        format!("{name}: socket cookies are not supported")
    } else {
        format!("unknown extended option '{name}'")
    }
}

fn ext_number<T: FromStr>(name: &str, v: &str, what: &str) -> Result<T, CliError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            "o",
            format!("{name}: invalid value '{v}': expected {what}"),
        ));
    }
    v.parse::<T>().map_err(|_| {
        err(
            "o",
            format!("{name}: '{v}' is out of range: expected {what}"),
        )
    })
}

fn ext_float(name: &str, v: &str, what: &str) -> Result<f64, CliError> {
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        _ => Err(err(
            "o",
            format!("{name}: invalid value '{v}': expected {what}"),
        )),
    }
}

fn ext_range<T: PartialOrd + FromStr>(
    name: &str,
    v: &str,
    lo: T,
    hi: T,
    what: &str,
) -> Result<T, CliError> {
    let n: T = ext_number(name, v, what)?;
    if n < lo || n > hi {
        return Err(err(
            "o",
            format!("{name}: '{v}' is out of range: expected {what}"),
        ));
    }
    Ok(n)
}

fn validate_extended(cfg: &mut Config, name: &str, v: &str) -> Result<(), CliError> {
    match name {
        "maxconns_fast" => cfg.maxconns_fast = true,
        "no_maxconns_fast" => cfg.maxconns_fast = false,
        // memcached's no_modern turns maxconns_fast off too (1.4 behaviour).
        "no_modern" => cfg.maxconns_fast = false,
        "hashpower" => {
            ext_range::<u32>(name, v, 12, 32, "12 to 32")?;
        }
        // Without a value it means mode 1.
        "slab_automove" if !v.is_empty() => {
            ext_range::<u32>(name, v, 0, 2, "0, 1 or 2")?;
        }
        "slab_automove_ratio" => {
            let r = ext_float(name, v, "a ratio > 0 and <= 1")?;
            if r <= 0.0 || r > 1.0 {
                return Err(err("o", format!("{name}: '{v}' must be > 0 and <= 1")));
            }
        }
        "slab_automove_window" => {
            ext_range::<u32>(name, v, 3, u32::MAX, "a number greater than 2")?;
        }
        "slab_automove_freeratio" => {
            let r = ext_float(name, v, "a ratio from 0 to 1")?;
            if !(0.0..=1.0).contains(&r) {
                return Err(err("o", format!("{name}: '{v}' must be from 0 to 1")));
            }
        }
        "tail_repair_time" => {
            ext_range::<u32>(name, v, 10, u32::MAX, "seconds, at least 10")?;
        }
        "hash_algorithm" if !matches!(v, "jenkins" | "murmur3" | "xxh3") => {
            return Err(err(
                "o",
                format!("{name}: unknown algorithm '{v}' (jenkins, murmur3 or xxh3)"),
            ));
        }
        "lru_crawler_sleep" => {
            ext_range::<u32>(name, v, 0, 1_000_000, "microseconds, 0 to 1000000")?;
        }
        "lru_crawler_tocrawl" | "temporary_ttl" | "read_buf_mem_limit" | "resp_obj_mem_limit" => {
            ext_number::<u32>(name, v, "a 32-bit whole number")?;
        }
        "hot_lru_pct" | "warm_lru_pct" => {
            ext_range::<u32>(name, v, 1, 79, "a percentage from 1 to 79")?;
        }
        "hot_max_factor" | "warm_max_factor" => {
            let f = ext_float(name, v, "a number greater than 0")?;
            if f <= 0.0 {
                return Err(err("o", format!("{name}: '{v}' must be greater than 0")));
            }
        }
        "idle_timeout" => cfg.idle_timeout = ext_number(name, v, "seconds, 0 for never")?,
        "watcher_logbuf_size" | "worker_logbuf_size" => {
            // Given in kilobytes and used in bytes, so it must survive the * 1024.
            ext_range::<u32>(name, v, 0, u32::MAX / 1024, "a size in kilobytes")?;
        }
        "slab_chunk_max" => {
            ext_range::<u32>(name, v, 1, u32::MAX, "a size in bytes, at least 1")?;
        }
        // Checked once every option is known, because -n and slab_chunk_max bound it.
        "slab_sizes" => {}
        _ => {}
    }
    Ok(())
}

/// Rules that relate several options, checked after all of them are read.
fn check_extended(cfg: &Config) -> Result<(), CliError> {
    let find = |name: &str| -> Option<&str> {
        cfg.extended
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    };
    let pct = |name: &str, default: u32| -> u32 {
        find(name).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let hot = pct("hot_lru_pct", 20);
    let warm = pct("warm_lru_pct", 40);
    if hot + warm > 80 {
        return Err(err(
            "o",
            format!("hot_lru_pct + warm_lru_pct must not exceed 80 (got {hot} + {warm})"),
        ));
    }
    // The LRU maintainer is on by default; the last of lru_maintainer / no_lru_maintainer /
    // no_modern decides.
    let maintainer = cfg
        .extended
        .iter()
        .rev()
        .find_map(|(n, _)| match n.as_str() {
            "lru_maintainer" => Some(true),
            "no_lru_maintainer" | "no_modern" => Some(false),
            _ => None,
        })
        .unwrap_or(true);
    if find("temporary_ttl").is_some() && !maintainer {
        return Err(err(
            "o",
            "temporary_ttl needs the LRU maintainer (drop no_lru_maintainer / no_modern)",
        ));
    }
    if let Some(list) = find("slab_sizes") {
        let max: u32 = find("slab_chunk_max")
            .and_then(|v| v.parse().ok())
            .unwrap_or(512 * 1024);
        check_slab_sizes(list, cfg.chunk_size, max)?;
    }
    Ok(())
}

/// memcached's slab_sizes rules: each class within [-n, slab_chunk_max] and more than 8 bytes
/// (the chunk alignment) above the previous one.
fn check_slab_sizes(list: &str, min: u32, max: u32) -> Result<(), CliError> {
    let mut prev: Option<u32> = None;
    // A trailing '-' is tolerated, as memcached does.
    for piece in list.split('-').filter(|p| !p.is_empty()) {
        let size: u32 = ext_number("slab_sizes", piece, "sizes in bytes separated by '-'")?;
        if size < min || size > max {
            return Err(err(
                "o",
                format!("slab_sizes: {size} is outside {min} (-n) to {max} (slab_chunk_max)"),
            ));
        }
        if let Some(p) = prev {
            if size <= p.saturating_add(8) {
                return Err(err(
                    "o",
                    format!("slab_sizes: {size} must be more than 8 bytes above the previous {p}"),
                ));
            }
        }
        prev = Some(size);
    }
    if prev.is_none() {
        return Err(err("o", "slab_sizes: no sizes given"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, CliError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args(&v)
    }

    fn cfg(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Run(c)) => *c,
            other => panic!("{args:?} did not give a config: {other:?}"),
        }
    }

    /// Asserts a one-line error that names `flag`, and returns it.
    fn fails(args: &[&str], flag: &str) -> String {
        match parse(args) {
            Err(CliError(msg)) => {
                assert!(!msg.contains('\n'), "{args:?}: multi-line error {msg:?}");
                assert!(
                    msg.contains(flag),
                    "{args:?}: error {msg:?} does not name {flag}"
                );
                msg
            }
            Ok(other) => panic!("{args:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn defaults_match_memcached() {
        let c = cfg(&[]);
        assert_eq!(c.port, 11211);
        assert_eq!(c.udp_port, 0);
        assert_eq!(c.unix_socket, None);
        assert_eq!(c.unix_mask, 0o700);
        assert!(!c.enable_shutdown);
        assert!(c.listen.is_empty());
        assert_eq!(c.listen_spec, None);
        assert!(!c.daemonize && !c.enable_coredumps && !c.lock_memory && !c.large_pages);
        assert_eq!(c.user, None);
        assert_eq!(c.memory_limit, 64 * 1024 * 1024);
        assert!(c.evictions);
        assert_eq!(c.max_conns, 1024);
        assert_eq!(c.verbose, 0);
        assert_eq!(c.pidfile, None);
        assert_eq!(c.growth_factor, 1.25);
        assert_eq!(c.chunk_size, 48);
        assert_eq!(c.prefix_delimiter, ':');
        assert!(!c.detail_enabled);
        assert_eq!(c.threads, 4);
        assert_eq!(c.reqs_per_event, 20);
        assert!(c.cas_enabled);
        assert_eq!(c.backlog, 1024);
        assert_eq!(c.binding_protocol, BindingProtocol::Auto);
        assert_eq!(c.item_size_max, 1024 * 1024);
        assert!(c.flush_enabled && c.dump_enabled && c.watch_enabled);
        assert!(c.extended.is_empty());
        assert_eq!(c.idle_timeout, 0);
        assert!(c.maxconns_fast);
    }

    #[test]
    fn port_and_udp_port() {
        assert_eq!(cfg(&["-p", "12345"]).port, 12345);
        assert_eq!(cfg(&["--port=0"]).port, 0);
        assert_eq!(cfg(&["--port", "99"]).port, 99);
        assert_eq!(cfg(&["-p11"]).port, 11);
        // Repeats are not an error: the last one wins, like getopt in memcached.
        assert_eq!(cfg(&["-p", "1", "-p", "2"]).port, 2);
        fails(&["-p", "70000"], "-p/--port");
        fails(&["-p", "abc"], "-p/--port");
        fails(&["-p", "-1"], "-p/--port");
        fails(&["-p", ""], "-p/--port");
        assert_eq!(cfg(&["-U", "0"]).udp_port, 0);
        assert_eq!(cfg(&["--udp-port=0"]).udp_port, 0);
        let msg = fails(&["-U", "11211"], "-U/--udp-port");
        assert!(msg.contains("UDP"), "{msg}");
        fails(&["-U", "x"], "-U/--udp-port");
    }

    #[test]
    fn unix_socket_and_mask() {
        let c = cfg(&["-s", "/tmp/mc.sock", "-a", "0770"]);
        assert_eq!(c.unix_socket, Some(PathBuf::from("/tmp/mc.sock")));
        assert_eq!(c.unix_mask, 0o770);
        assert_eq!(cfg(&["--unix-mask=600"]).unix_mask, 0o600);
        let rel = cfg(&["--unix-socket", "mc.sock"]).unix_socket;
        let want = std::env::current_dir().map(|d| d.join("mc.sock")).ok();
        assert_eq!(rel, want);
        fails(&["-a", "999"], "-a/--unix-mask");
        fails(&["-a", "1000"], "-a/--unix-mask");
        fails(&["-a", "abc"], "-a/--unix-mask");
        fails(&["-a", "+7"], "-a/--unix-mask");
        fails(&["-s", ""], "-s/--unix-socket");
    }

    #[test]
    fn boolean_flags() {
        let c = cfg(&[
            "-A",
            "-d",
            "-r",
            "-M",
            "-k",
            "-L",
            "-C",
            "-F",
            "--disable-dumping",
            "-W",
        ]);
        assert!(c.enable_shutdown && c.daemonize && c.enable_coredumps);
        assert!(!c.evictions && c.lock_memory && c.large_pages && !c.cas_enabled);
        assert!(!c.flush_enabled && !c.dump_enabled && !c.watch_enabled);
        let c = cfg(&[
            "--enable-shutdown",
            "--daemon",
            "--enable-coredumps",
            "--disable-evictions",
            "--lock-memory",
            "--enable-largepages",
            "--disable-cas",
            "--disable-flush-all",
            "--disable-watch",
        ]);
        assert!(c.enable_shutdown && c.daemonize && c.enable_coredumps);
        assert!(!c.evictions && c.lock_memory && c.large_pages && !c.cas_enabled);
        assert!(!c.flush_enabled && c.dump_enabled && !c.watch_enabled);
        // Grouped short flags.
        let c = cfg(&["-dAM"]);
        assert!(c.daemonize && c.enable_shutdown && !c.evictions);
        fails(&["--daemon=yes"], "--daemon");
    }

    #[test]
    fn verbose_counts() {
        assert_eq!(cfg(&["-v"]).verbose, 1);
        assert_eq!(cfg(&["-vv"]).verbose, 2);
        assert_eq!(cfg(&["-vvv"]).verbose, 3);
        assert_eq!(cfg(&["-v", "--verbose", "-v"]).verbose, 3);
    }

    #[test]
    fn user_and_pidfile() {
        assert_eq!(cfg(&["-u", "nobody"]).user.as_deref(), Some("nobody"));
        assert_eq!(cfg(&["--user=daemon"]).user.as_deref(), Some("daemon"));
        fails(&["-u", ""], "-u/--user");
        assert_eq!(
            cfg(&["-P", "/run/mc.pid"]).pidfile,
            Some(PathBuf::from("/run/mc.pid"))
        );
        let rel = cfg(&["--pidfile", "mc.pid"]).pidfile;
        assert_eq!(rel, std::env::current_dir().map(|d| d.join("mc.pid")).ok());
        fails(&["-P", ""], "-P/--pidfile");
        fails(&["-P"], "-P");
    }

    #[test]
    fn memory_limit() {
        assert_eq!(cfg(&["-m", "128"]).memory_limit, 128 << 20);
        assert_eq!(cfg(&["--memory-limit=2"]).memory_limit, 2 << 20);
        // memcached's atoi reads "1g" as 1 MB; refusing is kinder than a surprise.
        fails(&["-m", "1g"], "-m/--memory-limit");
        fails(&["-m", "abc"], "-m/--memory-limit");
        fails(&["-m", "-5"], "-m/--memory-limit");
        fails(&["-m", "99999999999999999999"], "-m/--memory-limit");
        // -m must leave room for two items of the default 1 MB limit, as in memcached.
        let msg = fails(&["-m", "1"], "-m/--memory-limit");
        assert!(msg.contains("twice"), "{msg}");
        fails(&["-m", "0"], "-m/--memory-limit");
        assert_eq!(cfg(&["-m", "1", "-I", "512k"]).memory_limit, 1 << 20);
    }

    #[test]
    fn connection_limit() {
        assert_eq!(cfg(&["-c", "10"]).max_conns, 10);
        assert_eq!(cfg(&["--conn-limit=50000"]).max_conns, 50000);
        fails(&["-c", "0"], "-c/--conn-limit");
        fails(&["-c", "abc"], "-c/--conn-limit");
    }

    #[test]
    fn slab_tuning_flags() {
        let c = cfg(&["-f", "1.5", "-n", "96"]);
        assert_eq!(c.growth_factor, 1.5);
        assert_eq!(c.chunk_size, 96);
        assert_eq!(cfg(&["--slab-growth-factor=2"]).growth_factor, 2.0);
        assert_eq!(cfg(&["--slab-min-size=10"]).chunk_size, 10);
        fails(&["-f", "1"], "-f/--slab-growth-factor");
        fails(&["-f", "0.5"], "-f/--slab-growth-factor");
        fails(&["-f", "x"], "-f/--slab-growth-factor");
        fails(&["-f", "inf"], "-f/--slab-growth-factor");
        fails(&["-f", "NaN"], "-f/--slab-growth-factor");
        fails(&["-n", "0"], "-n/--slab-min-size");
        fails(&["-n", "x"], "-n/--slab-min-size");
    }

    #[test]
    fn prefix_delimiter() {
        let c = cfg(&["-D", "/"]);
        assert_eq!(c.prefix_delimiter, '/');
        assert!(c.detail_enabled);
        fails(&["-D", ""], "-D");
        fails(&["-D", "ab"], "-D");
        fails(&["-D", "é"], "-D");
    }

    #[test]
    fn threads_and_reqs() {
        assert_eq!(cfg(&["-t", "1"]).threads, 1);
        assert_eq!(cfg(&["--threads=8"]).threads, 8);
        fails(&["-t", "0"], "-t/--threads");
        fails(&["-t", "abc"], "-t/--threads");
        let many = cfg(&["-t", "65"]);
        assert_eq!(many.threads, 65);
        assert_eq!(warnings(&many).len(), 1);
        assert!(warnings(&cfg(&["-t", "64"])).is_empty());
        assert_eq!(cfg(&["-R", "5"]).reqs_per_event, 5);
        assert_eq!(cfg(&["--max-reqs-per-event=100"]).reqs_per_event, 100);
        fails(&["-R", "0"], "-R/--max-reqs-per-event");
        fails(&["-R", "x"], "-R/--max-reqs-per-event");
    }

    #[test]
    fn backlog_and_protocol() {
        assert_eq!(cfg(&["-b", "4096"]).backlog, 4096);
        assert_eq!(cfg(&["--listen-backlog=0"]).backlog, 0);
        fails(&["-b", "-5"], "-b/--listen-backlog");
        fails(&["-b", "3000000000"], "-b/--listen-backlog");
        assert_eq!(
            cfg(&["-B", "ascii"]).binding_protocol,
            BindingProtocol::Ascii
        );
        assert_eq!(
            cfg(&["--protocol=auto"]).binding_protocol,
            BindingProtocol::Auto
        );
        assert_eq!(BindingProtocol::Auto.stats_name(), "auto-negotiate");
        assert_eq!(BindingProtocol::Ascii.stats_name(), "ascii");
        let msg = fails(&["-B", "binary"], "-B/--protocol");
        assert!(msg.contains("binary protocol is not supported"), "{msg}");
        fails(&["-B", "foo"], "-B/--protocol");
    }

    #[test]
    fn max_item_size() {
        assert_eq!(cfg(&["-I", "2m"]).item_size_max, 2 << 20);
        assert_eq!(cfg(&["-I", "2M"]).item_size_max, 2 << 20);
        assert_eq!(cfg(&["-I", "512k"]).item_size_max, 512 << 10);
        assert_eq!(cfg(&["-I", "1K"]).item_size_max, 1024);
        assert_eq!(cfg(&["--max-item-size=1024"]).item_size_max, 1024);
        assert_eq!(cfg(&["-I", "1024m", "-m", "2048"]).item_size_max, 1 << 30);
        fails(&["-I", "1000"], "-I/--max-item-size");
        fails(&["-I", "1025m", "-m", "4096"], "-I/--max-item-size");
        fails(&["-I", "2g", "-m", "64"], "-I/--max-item-size");
        fails(&["-I", "2g", "-m", "8192"], "-I/--max-item-size");
        fails(&["-I", "abc"], "-I/--max-item-size");
        fails(&["-I", "m"], "-I/--max-item-size");
        fails(&["-I", "99999999999999999999m"], "-I/--max-item-size");
        // memcached: "Cannot set item size limit higher than 1/2 of memory max."
        let msg = fails(&["-I", "33m", "-m", "64"], "-I/--max-item-size");
        assert!(msg.contains("half"), "{msg}");
        assert_eq!(cfg(&["-I", "32m", "-m", "64"]).item_size_max, 32 << 20);
    }

    #[test]
    fn refused_options() {
        for (args, flag) in [
            (&["-S"][..], "-S/--enable-sasl"),
            (&["--enable-sasl"][..], "-S/--enable-sasl"),
            (&["-Y", "/etc/auth"][..], "-Y/--auth-file"),
            (&["-e", "/dev/shm/mc"][..], "-e/--memory-file"),
            (&["-Z"][..], "-Z/--enable-ssl"),
            (&["-N", "2"][..], "-N/--napi-ids"),
        ] {
            let msg = fails(args, flag);
            assert!(msg.contains("not supported"), "{msg}");
        }
    }

    #[test]
    fn replication_options() {
        let c = cfg(&[]);
        assert_eq!((c.peer.as_deref(), c.repl_port), (None, 11212));
        assert_eq!((c.repl_heartbeat_ms, c.repl_timeout_ms), (1000, 3000));
        let c = cfg(&["-x", "[::1]:9", "-X", "7000", "--repl-listen", "127.0.0.1"]);
        assert_eq!(c.peer.as_deref(), Some("[::1]:9"));
        assert_eq!(c.repl_port, 7000);
        assert_eq!(
            c.repl_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        let c = cfg(&[
            "--repl-heartbeat-ms",
            "100",
            "--repl-timeout-ms",
            "400",
            "--cluster-name",
            "c1",
        ]);
        assert_eq!((c.repl_heartbeat_ms, c.repl_timeout_ms), (100, 400));
        assert_eq!(c.cluster_name, "c1");
        assert_eq!(cfg(&["--repl-backlog-mb", "2"]).repl_backlog, 2 * MB);
        assert_eq!(cfg(&["--repl-copy-share", "100"]).repl_copy_share, 100);
        assert_eq!(cfg(&[]).repl_copy_share, 5);
        assert!(fails(&["-X", "0"], "-X").contains("must not be 0"));
        assert!(fails(&["--repl-timeout-ms", "500"], "--repl-timeout-ms").contains("longer"));
        assert!(fails(&["--repl-heartbeat-ms", "0"], "--repl-heartbeat-ms").contains("at least 1"));
        assert!(fails(&["--cluster-name", ""], "--cluster-name").contains("1 to 255"));
        assert!(fails(&["--repl-copy-share", "0"], "--repl-copy-share").contains("at least 1"));
        assert!(fails(&["--repl-copy-share", "101"], "--repl-copy-share").contains("at most 100"));
    }

    #[test]
    fn bad_command_lines() {
        assert_eq!(fails(&["-z"], "-z"), "unknown option -z");
        assert_eq!(fails(&["--bogus"], "--bogus"), "unknown option --bogus");
        assert_eq!(fails(&["-p"], "-p"), "-p: missing argument");
        assert_eq!(fails(&["--port"], "--port"), "--port: missing argument");
        fails(&["stray"], "stray");
    }

    #[test]
    fn print_commands() {
        for a in ["-h", "--help"] {
            match parse(&[a]) {
                Ok(Command::Print(t)) => assert!(t.contains("Usage: repcached")),
                other => panic!("{a}: {other:?}"),
            }
        }
        for a in ["-V", "--version"] {
            match parse(&[a]) {
                Ok(Command::Print(t)) => assert_eq!(t, format!("repcached {}\n", crate::VERSION)),
                other => panic!("{a}: {other:?}"),
            }
        }
        for a in ["-i", "--license"] {
            match parse(&[a]) {
                Ok(Command::Print(t)) => assert!(t.contains("BSD-3-Clause")),
                other => panic!("{a}: {other:?}"),
            }
        }
        // Help wins over values that would be refused.
        assert!(matches!(parse(&["-t", "0", "-h"]), Ok(Command::Print(_))));
    }

    #[test]
    fn help_lists_every_option_and_extended_name() {
        let h = help_text();
        for o in OPTIONS {
            if !o.long.is_empty() {
                assert!(h.contains(&format!("--{}", o.long)), "--{} missing", o.long);
            }
            if !o.short.is_empty() {
                assert!(h.contains(&format!("-{}", o.short)), "-{} missing", o.short);
            }
        }
        for e in EXTENDED {
            assert!(h.contains(e.name), "{} missing", e.name);
        }
    }

    #[test]
    fn flags_doc_lists_every_option() {
        let doc = include_str!("../docs/FLAGS.md");
        for o in OPTIONS {
            if !o.long.is_empty() {
                assert!(
                    doc.contains(&format!("`--{}`", o.long)),
                    "--{} missing",
                    o.long
                );
            }
            if !o.short.is_empty() {
                assert!(
                    doc.contains(&format!("`-{}", o.short)),
                    "-{} missing",
                    o.short
                );
            }
        }
        for e in EXTENDED {
            assert!(doc.contains(&format!("`{}", e.name)), "{} missing", e.name);
        }
    }

    #[test]
    fn listen_addresses() {
        let v4 = SocketAddr::from(([127, 0, 0, 1], 11211));
        assert_eq!(cfg(&["-l", "127.0.0.1"]).listen, vec![v4]);
        assert_eq!(
            cfg(&["-l", "127.0.0.1:9000"]).listen,
            vec![SocketAddr::from(([127, 0, 0, 1], 9000))]
        );
        // -p given after -l still sets the port of entries without one.
        assert_eq!(
            cfg(&["-l", "127.0.0.1", "-p", "7"]).listen,
            vec![SocketAddr::from(([127, 0, 0, 1], 7))]
        );
        let v6: SocketAddr = "[::1]:11211".parse().unwrap();
        assert_eq!(cfg(&["-l", "::1"]).listen, vec![v6]);
        assert_eq!(cfg(&["-l", "[::1]"]).listen, vec![v6]);
        assert_eq!(
            cfg(&["-l", "[::1]:9001"]).listen,
            vec!["[::1]:9001".parse::<SocketAddr>().unwrap()]
        );
        // Lists, ';', repeats, duplicates and empty pieces.
        let c = cfg(&["-l", "127.0.0.1,[::1]:5;127.0.0.2,,", "--listen=127.0.0.1"]);
        assert_eq!(
            c.listen,
            vec![
                v4,
                "[::1]:5".parse().unwrap(),
                SocketAddr::from(([127, 0, 0, 2], 11211))
            ]
        );
        assert_eq!(
            c.listen_spec.as_deref(),
            Some("127.0.0.1,[::1]:5;127.0.0.2,,,127.0.0.1")
        );
        let any = cfg(&["-l", "*:8"]).listen;
        assert_eq!(
            any,
            vec![
                SocketAddr::from(([0, 0, 0, 0], 8)),
                "[::]:8".parse::<SocketAddr>().unwrap()
            ]
        );
        // Host names resolve (localhost is in every /etc/hosts).
        let lh = cfg(&["-l", "localhost:9"]).listen;
        assert!(!lh.is_empty());
        assert!(
            lh.iter().all(|a| a.ip().is_loopback() && a.port() == 9),
            "{lh:?}"
        );
        fails(&["-l", "[::1"], "-l/--listen");
        fails(&["-l", "[::1]x"], "-l/--listen");
        fails(&["-l", "127.0.0.1:abc"], "-l/--listen");
        fails(&["-l", "127.0.0.1:70000"], "-l/--listen");
        fails(&["-l", ":11211"], "-l/--listen");
        fails(&["-l", "no-such-host.invalid"], "-l/--listen");
        fails(&["-l", "proto[ascii]:127.0.0.1"], "-l/--listen");
        fails(&["-l", "notls:127.0.0.1:1"], "-l/--listen");
    }

    #[test]
    fn extended_options_are_recorded_in_order() {
        let c = cfg(&[
            "-o",
            "modern,hashpower=20",
            "-o",
            "track_sizes,slab_automove=2",
        ]);
        let names: Vec<(&str, Option<&str>)> = c
            .extended
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("modern", None),
                ("hashpower", Some("20")),
                ("track_sizes", None),
                ("slab_automove", Some("2"))
            ]
        );
    }

    #[test]
    fn every_known_extended_name_is_accepted() {
        for e in EXTENDED {
            let item = match e.arg {
                ExtArg::None => e.name.to_string(),
                ExtArg::Optional(_) => e.name.to_string(),
                ExtArg::Required(_) => format!("{}={}", e.name, sample_value(e.name)),
            };
            let c = cfg(&["-o", &item]);
            assert_eq!(c.extended.len(), 1, "{item}");
            assert_eq!(c.extended[0].0, e.name);
        }
    }

    fn sample_value(name: &str) -> &'static str {
        match name {
            "hashpower" => "16",
            "slab_automove_ratio" | "slab_automove_freeratio" | "hot_max_factor" => "0.5",
            "slab_automove_window" | "tail_repair_time" => "30",
            "hash_algorithm" => "xxh3",
            "hot_lru_pct" | "warm_lru_pct" => "20",
            "slab_sizes" => "100-200-400",
            "slab_chunk_max" => "524288",
            _ => "1",
        }
    }

    #[test]
    fn idle_timeout_and_maxconns_fast_are_typed() {
        assert_eq!(cfg(&["-o", "idle_timeout=30"]).idle_timeout, 30);
        assert!(!cfg(&["-o", "no_maxconns_fast"]).maxconns_fast);
        assert!(cfg(&["-o", "no_maxconns_fast,maxconns_fast"]).maxconns_fast);
        assert!(!cfg(&["-o", "no_modern"]).maxconns_fast);
        assert!(cfg(&["-o", "no_modern", "-o", "maxconns_fast"]).maxconns_fast);
    }

    #[test]
    fn extended_errors() {
        let msg = fails(&["-o", "foo"], "-o/--extended");
        assert!(msg.contains("unknown extended option 'foo'"), "{msg}");
        fails(&["-o", "modern,,track_sizes"], "-o/--extended");
        fails(&["-o", "=5"], "-o/--extended");
        fails(&["-o", "hashpower"], "hashpower");
        fails(&["-o", "hashpower=11"], "hashpower");
        fails(&["-o", "hashpower=33"], "hashpower");
        fails(&["-o", "hashpower=abc"], "hashpower");
        fails(&["-o", "idle_timeout"], "idle_timeout");
        fails(&["-o", "idle_timeout=abc"], "idle_timeout");
        fails(&["-o", "idle_timeout=-1"], "idle_timeout");
        fails(&["-o", "maxconns_fast=0"], "maxconns_fast");
        fails(&["-o", "slab_automove=3"], "slab_automove");
        fails(&["-o", "slab_automove_ratio=0"], "slab_automove_ratio");
        fails(&["-o", "slab_automove_window=2"], "slab_automove_window");
        fails(&["-o", "tail_repair_time=5"], "tail_repair_time");
        fails(&["-o", "hash_algorithm=md5"], "hash_algorithm");
        fails(&["-o", "lru_crawler_sleep=1000001"], "lru_crawler_sleep");
        fails(&["-o", "lru_crawler_tocrawl=-1"], "lru_crawler_tocrawl");
        fails(&["-o", "hot_lru_pct=80"], "hot_lru_pct");
        fails(
            &["-o", "hot_lru_pct=50,warm_lru_pct=40"],
            "hot_lru_pct + warm_lru_pct",
        );
        assert_eq!(
            cfg(&["-o", "hot_lru_pct=40,warm_lru_pct=40"])
                .extended
                .len(),
            2
        );
        fails(&["-o", "hot_max_factor=0"], "hot_max_factor");
        fails(&["-o", "warm_max_factor=-1"], "warm_max_factor");
        fails(&["-o", "read_buf_mem_limit=abc"], "read_buf_mem_limit");
        fails(&["-o", "slab_chunk_max=0"], "slab_chunk_max");
        fails(
            &["-o", "no_lru_maintainer,temporary_ttl=61"],
            "temporary_ttl",
        );
        fails(
            &["-o", "temporary_ttl=61", "-o", "no_modern"],
            "temporary_ttl",
        );
        assert_eq!(
            cfg(&["-o", "no_lru_maintainer,lru_maintainer,temporary_ttl=5"])
                .extended
                .len(),
            3
        );
        fails(&["-o", "slab_sizes=47"], "slab_sizes");
        fails(&["-o", "slab_sizes=524289"], "slab_sizes");
        fails(&["-o", "slab_sizes=100-90"], "slab_sizes");
        fails(&["-o", "slab_sizes=100-108"], "slab_sizes");
        fails(&["-o", "slab_sizes=abc"], "slab_sizes");
        assert_eq!(cfg(&["-o", "slab_sizes=100-109-"]).extended.len(), 1);
        assert_eq!(cfg(&["-n", "10", "-o", "slab_sizes=20"]).extended.len(), 1);
        for (o, what) in [
            ("ext_path=/tmp/x:64m", "extstore"),
            ("ssl_key=x", "TLS"),
            ("proxy_config=x", "proxy"),
            ("sock_cookie_id=1", "not supported"),
        ] {
            let msg = fails(&["-o", o], "-o/--extended");
            assert!(msg.contains(what), "{msg}");
        }
    }

    #[test]
    fn deprecated_extended_option_warns() {
        let c = cfg(&["-o", "resp_obj_mem_limit=1"]);
        assert!(warnings(&c).iter().any(|w| w.contains("deprecated")));
        assert!(warnings(&cfg(&[])).is_empty());
    }

    #[test]
    fn long_options_come_from_the_table() {
        let l = long_options();
        assert!(l.contains(&"port") && l.contains(&"disable-dumping") && l.contains(&"extended"));
        assert_eq!(
            l.len(),
            OPTIONS.iter().filter(|o| !o.long.is_empty()).count()
        );
        assert!(!l.iter().any(|n| n.is_empty()));
    }
}
