//! Every command-line option, its default and its validation: the only place defaults live.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit status for a bad command line (EX_USAGE), as the issue tracker and init scripts expect.
pub const EXIT_USAGE: i32 = 64;

/// The validated configuration a server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// `-p`: TCP port; 0 disables the TCP listeners (memcached's behaviour).
    pub port: u16,
    /// `-U`: only 0 (UDP off) is accepted until UDP exists.
    pub udp_port: u16,
    /// `-s`: serve a UNIX socket instead of TCP.
    pub unix_socket: Option<PathBuf>,
    /// `-a`: permission mask of the UNIX socket.
    pub unix_mask: u32,
    /// `-A`: allow the `shutdown` command.
    pub enable_shutdown: bool,
    /// `-l`: addresses to listen on, resolved, each with its port (default `port`).
    pub listen: Vec<SocketAddr>,
    /// The `-l` text as given, for `stats settings`-style reporting and logs.
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
    /// `-v` count (0–3).
    pub verbose: u8,
    /// `-P`: pid file (written with `-d`).
    pub pidfile: Option<PathBuf>,
    /// `-f`: accepted for compatibility (no slab classes here); reported in `stats settings`.
    pub growth_factor: f64,
    /// `-n`: accepted for compatibility; reported in `stats settings`.
    pub chunk_size: u32,
    /// `-L`: accepted for compatibility.
    pub large_pages: bool,
    /// `-D`: `stats detail` prefix delimiter.
    pub prefix_delimiter: char,
    /// `-t`: worker threads.
    pub threads: usize,
    /// `-R`: requests served per connection per wake-up before yielding.
    pub reqs_per_event: usize,
    /// `-C` clears this: every `gets` then reports CAS 0.
    pub cas_enabled: bool,
    /// `-b`: listen backlog.
    pub backlog: i32,
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
    pub maxconns_fast: bool,
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
            memory_limit: 64 * 1024 * 1024,
            evictions: true,
            max_conns: 1024,
            lock_memory: false,
            verbose: 0,
            pidfile: None,
            growth_factor: 1.25,
            chunk_size: 48,
            large_pages: false,
            prefix_delimiter: ':',
            threads: 4,
            reqs_per_event: 20,
            cas_enabled: true,
            backlog: 1024,
            item_size_max: 1024 * 1024,
            flush_enabled: true,
            dump_enabled: true,
            watch_enabled: true,
            extended: Vec::new(),
            idle_timeout: 0,
            maxconns_fast: true,
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

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Command, CliError> {
    if let Some(a) = args.first() {
        return Err(CliError(format!("unsupported argument: {a}")));
    }
    let mut cfg = Config::default();
    cfg.listen = vec![SocketAddr::from(([127, 0, 0, 1], cfg.port))];
    Ok(Command::Run(Box::new(cfg)))
}
