//! The `repcached` binary: arguments to configuration, logging, process set-up, run, exit code.

use repcached::config::{self, Command};
use repcached::daemon;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::parse_args(&args) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Print(text)) => {
            print!("{text}");
            return;
        }
        Err(e) => {
            eprintln!("repcached: {e}");
            std::process::exit(config::EXIT_USAGE);
        }
    };
    init_logging(cfg.verbose);
    for w in config::warnings(&cfg) {
        log::warn!("{w}");
    }
    // memcached's rule, kept out of parse_args so its tests do not depend on who runs them:
    // a cache server has no business running as root, so root must name the user to become.
    if daemon::is_root() && cfg.user.is_none() {
        eprintln!("repcached: can't run as root without the -u switch");
        std::process::exit(config::EXIT_USAGE);
    }
    if let Err(e) = daemon::prepare(&cfg) {
        eprintln!("repcached: {e}");
        std::process::exit(daemon::EXIT_OSERR);
    }
    let pidfile = cfg.pidfile.clone();
    let code = repcached::server::run(*cfg);
    daemon::remove_pidfile(pidfile.as_deref());
    std::process::exit(code);
}

/// `-v` sets the level (none: warn, -v: info, -vv: debug, -vvv: trace); RUST_LOG, when set,
/// overrides it with env_logger's usual filter syntax.
fn init_logging(verbose: u8) {
    let level = repcached::server::level_filter(u32::from(verbose));
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    // Only fails if a logger is already installed, which nothing here does.
    let _ = builder.try_init();
}
